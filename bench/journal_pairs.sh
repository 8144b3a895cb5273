#!/usr/bin/env bash
# The journal's cost on the trivial workload, in interleaved pairs (one
# run without a journal, then one with it in DIR), the ratio of each pair
# and their median: a shared machine's slow spells hit one pair, not the
# median.
#
#   bash bench/journal_pairs.sh BUILD_DIR [TASKS] [PAIRS] [DIR]
#
# Defaults: 200000 tasks, 9 pairs, /dev/shm (a tmpfs: the journal's own
# cost; a directory on a disk adds its fdatasyncs).  2 workers.
set -euo pipefail
B=${1:?usage: bash bench/journal_pairs.sh BUILD_DIR [TASKS] [PAIRS] [DIR]}/bench/bench_invoker
N=${2:-200000}
R=${3:-9}
D=${4:-/dev/shm}
rate() { sed -n 's/.*workload=trivial .*tasks_per_s=\([0-9.]*\).*/\1/p'; }
for _ in $(seq "$R"); do
    a=$("$B" trivial invoker --tasks "$N" --workers 2 | rate)
    b=$("$B" trivial invoker --tasks "$N" --workers 2 --journal "$D" | rate)
    echo "$a $b"
done | /usr/bin/python3 -c '
import statistics, sys
p = [tuple(map(float, l.split())) for l in sys.stdin]
r = sorted(b / a for a, b in p)
print("pairs (with / without):", " ".join("%.2f" % x for x in r))
print("median: without %.0f tasks/s, with %.0f tasks/s, ratio %.3f (%.3f-%.3f, %d pairs)" % (
    statistics.median(a for a, _ in p), statistics.median(b for _, b in p),
    statistics.median(r), r[0], r[-1], len(r)))'
