#!/usr/bin/env bash
# Builds and runs each fuzz target for SECONDS (default 20) from the
# committed seed corpus: fuzz/run.sh [SECONDS].  New inputs go to a scratch
# copy of the corpus, not the repository.  Non-zero on any crash, leak,
# timeout or out-of-memory (libFuzzer's own exit status).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
out=${FUZZ_BUILD:-build-fuzz}
bash fuzz/build.sh "$out"
status=0
for t in frame slot journal; do
    work=$(mktemp -d)
    cp fuzz/corpus/$t/* "$work"/
    echo "fuzz_$t: ${secs} s"
    if ! "$out/fuzz_$t" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$out/crash-$t-" "$work" \
            >"$out/fuzz_$t.log" 2>&1; then
        echo "fuzz_$t: FAILED"; tail -40 "$out/fuzz_$t.log"; status=1
    else
        grep -E '^stat::number_of_executed_units|^Done' "$out/fuzz_$t.log" || true
    fi
    rm -rf "$work"
done
exit $status
