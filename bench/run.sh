#!/usr/bin/env bash
# Runs invoker and its alternatives on the same workloads in one run and
# prints a table of figures, ratios and invoker's targets.
#
#   bash bench/run.sh BUILD_DIR [--quick] [--workers N] [--reps N]
#
# BUILD_DIR is a cmake build directory of the project (configure it with
# -DCMAKE_BUILD_TYPE=Release for meaningful figures); the bench programs
# are built there if needed.  A full run takes a few minutes on 2 cores and
# rewrites bench/RESULTS.md; --quick takes well under a minute and writes
# its table to a temporary file only.  A missed target never fails the
# run.  A run that does not complete is listed in the table; it makes the
# script exit non-zero when it is invoker's or a C baseline's (our code),
# not when it is a Python pool's (third-party code, whose rare hangs are
# its own finding, not a broken suite).
set -u

usage() {
    echo "usage: bash bench/run.sh BUILD_DIR [--quick] [--workers N] [--reps N]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
BUILD=$1
shift
QUICK=0
WORKERS=2
REPS=
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --workers) [ $# -ge 2 ] || usage; WORKERS=$2; shift ;;
    --reps) [ $# -ge 2 ] || usage; REPS=$2; shift ;;
    *) usage ;;
    esac
    shift
done
case $WORKERS in '' | *[!0-9]* | 0) usage ;; esac

HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
START=$(date +%s)

# ---- sizes ----------------------------------------------------------------
if [ $QUICK = 1 ]; then
    : "${REPS:=1}"
    TRIV=10000 TRIV_PT=2000 TRIV_FORK=300 CPU=200 PAY=50 PAY_PY=30
    HANG=4 CRASH=50 NCRASH=5 RESTART_MIB="0 256 1024" NRESTART=5
    BIG1=100 BIG64=1000 BIG16=6
    BOUND=0.5 TMO=30 MODE=quick CACHE_TASKS=20000 REPLAY=100000 JPAIRS=5
else
    : "${REPS:=5}"   # medians of 5: on a shared VM one slow spell moves a median of 3
    TRIV=100000 TRIV_PT=20000 TRIV_FORK=2000 CPU=2000 PAY=500 PAY_PY=200
    HANG=20 CRASH=200 NCRASH=20 RESTART_MIB="0 1024 4096" NRESTART=10
    BIG1=300 BIG64=3000 BIG16=20
    BOUND=1.0 TMO=60 MODE=full CACHE_TASKS=100000 REPLAY=1000000 JPAIRS=3
fi
case $REPS in '' | *[!0-9]* | 0) usage ;; esac

# ---- prerequisites ----------------------------------------------------------
if [ ! -x "$PY" ]; then
    echo "run.sh: $PY is missing (Debian's python3 package)" >&2
    exit 1
fi
if ! "$PY" -c 'import pebble, joblib' 2>/dev/null; then
    echo "run.sh: installing python3-pebble python3-joblib" >&2
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y python3-pebble python3-joblib >&2 ||
        { $SUDO apt-get update >&2 && $SUDO apt-get install -y python3-pebble python3-joblib >&2; } ||
        echo "run.sh: could not install them; the pebble and joblib rows will fail" >&2
fi
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    echo "run.sh: $BUILD is not a cmake build directory" >&2
    exit 1
fi
TMP=$(mktemp -d /tmp/invoker-bench.XXXXXX)
# The journal's rows put their files on a tmpfs when there is one: they
# measure what the journal costs invoker (records built, written, kept),
# not how long this machine's disk, shared with whatever else runs, takes
# to sync; an invoker-journal-disk row gives the same on $TMP's disk.
JDIR=$TMP
if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
    JDIR=$(mktemp -d /dev/shm/invoker-bench.XXXXXX)
fi
if ! cmake --build "$BUILD" --target bench_baselines bench_invoker bench_journal -j "$(nproc)" >"$TMP/build.log" 2>&1; then
    cat "$TMP/build.log" >&2
    echo "run.sh: building the bench programs in $BUILD failed" >&2
    exit 1
fi
BIN=$BUILD/bench
BT=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
case $BT in
Release | RelWithDebInfo | MinSizeRel) ;;
*) echo "run.sh: warning: $BUILD is a '${BT:-no type}' build; the library is not optimized" >&2 ;;
esac

RAW=$TMP/results.txt
LOG=$TMP/stderr.log
: >"$RAW"
FAILS=0

CITERS=$("$BIN/bench_baselines" calibrate)
PYITERS=$("$PY" "$HERE/pools.py" calibrate)
echo "run.sh: $MODE run, $WORKERS workers, $REPS repetition(s); raw output in $TMP" >&2
echo "run.sh: busy loop: $CITERS C iterations, $PYITERS Python iterations per ~1 ms" >&2

# run WORKLOAD LABEL C|I|P ARGS...: one alternative (C: bench_baselines,
# I: bench_invoker, P: pools.py), bounded by a timeout.
run() {
    local wl=$1 label=$2 prog=$3 rc t0 t1
    shift 3
    local -a cmd
    case $prog in
    C) cmd=("$BIN/bench_baselines" "$@" --iters "$CITERS") ;;
    I) cmd=("$BIN/bench_invoker" "$@" --iters "$CITERS") ;;
    J) cmd=("$BIN/bench_journal" "$@" --iters "$CITERS") ;;
    P) cmd=("$PY" "$HERE/pools.py" "$@" --iters "$PYITERS") ;;
    esac
    t0=$(date +%s%N)
    echo "== $wl $label rep=$REP: ${cmd[*]}" >>"$LOG"
    timeout -k 5 "$TMO" "${cmd[@]}" --workers "$WORKERS" --rep "$REP" >>"$RAW" 2>>"$LOG"
    rc=$?
    t1=$(date +%s%N)
    printf 'run.sh: %-8s %-16s rep %s %6.1f s%s\n' "$wl" "$label" "$REP" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')" \
        "$([ $rc = 0 ] || echo "  FAILED rc=$rc")" >&2
    if [ $rc != 0 ]; then
        echo "FAILED workload=$wl impl=$label rep=$REP rc=$rc" >>"$RAW"
        [ "$prog" = P ] || FAILS=$((FAILS + 1))
    fi
}

# How long an alternative that cannot time out or lose tasks gets before
# it is declared hanging: the ideal time plus a margin.
# pebble is given three times the ideal: it does time tasks out, ~0.1 s late.
HANG_BOUND=$(awk -v n=$HANG -v w=$WORKERS -v b=$BOUND 'BEGIN { print int((n + w - 1) / w) * 0.1 + b }')
HANG_BOUND_PEBBLE=$(awk -v n=$HANG -v w=$WORKERS -v b=$BOUND 'BEGIN { print int((n + w - 1) / w) * 0.3 + b }')
CRASH_BOUND=$(awk -v n=$CRASH -v w=$WORKERS -v b=$BOUND 'BEGIN { print n * 0.003 / w + 1 + b }')
RESTART_BOUND=$((TMO / 3))
CRASH_BOUND_PEBBLE=$(awk -v c=$NCRASH -v x="$CRASH_BOUND" 'BEGIN { print x + c * 0.2 }')

for REP in $(seq 1 "$REPS"); do
    # 1. trivial objective: tasks/s
    run trivial invoker         I trivial invoker --tasks $TRIV
    run trivial invoker-journal I trivial invoker --journal "$JDIR" --tasks $TRIV
    run trivial invoker-journal-disk I trivial invoker --journal "$TMP" --label invoker-journal-disk --tasks $TRIV
    # More pairs of the two, interleaved and the same tasks, under other
    # repetition numbers: the journal's ratio is the median of its pairs,
    # and one pair is at the mercy of one slow spell of a shared machine.
    R0=$REP
    for J in $(seq 2 "$JPAIRS"); do
        REP=$((R0 * 100 + J))
        run trivial invoker         I trivial invoker --tasks $TRIV
        run trivial invoker-journal I trivial invoker --journal "$JDIR" --tasks $TRIV
    done
    REP=$R0
    run trivial invoker-window  I trivial invoker-window --depth 64 --tasks $TRIV
    run trivial serial          C trivial serial --tasks $TRIV
    run trivial pthread         C trivial pthread --tasks $TRIV
    run trivial pipe-depth1     C trivial pipe --depth 1 --tasks $TRIV
    run trivial pipe-depth64    C trivial pipe --depth 64 --tasks $TRIV
    run trivial fork            C trivial fork --tasks $TRIV_FORK
    run trivial py-serial       P trivial serial --tasks $TRIV
    run trivial py-pool-apply   P trivial pool-apply --tasks $TRIV_PT
    run trivial py-pool-imap1   P trivial pool-imap1 --tasks $TRIV_PT
    run trivial py-pool-imapN   P trivial pool-imapN --tasks $TRIV
    run trivial py-ppe          P trivial ppe --tasks $TRIV_PT
    run trivial py-ppe-map      P trivial ppe-map --tasks $TRIV
    run trivial py-pebble       P trivial pebble --tasks $TRIV_PT
    run trivial py-joblib       P trivial joblib --tasks $TRIV

    # 2. ~1 ms CPU-bound objective: efficiency against the serial loop
    run cpu serial              C cpu serial --tasks $CPU
    run cpu invoker             I cpu invoker --tasks $CPU
    run cpu invoker-journal     I cpu invoker --journal "$JDIR" --tasks $CPU
    run cpu pthread             C cpu pthread --tasks $CPU
    run cpu pipe-depth1         C cpu pipe --depth 1 --tasks $CPU
    run cpu pipe-depth64        C cpu pipe --depth 64 --tasks $CPU
    run cpu fork                C cpu fork --tasks $CPU
    run cpu py-serial           P cpu serial --tasks $CPU
    run cpu py-pool-apply       P cpu pool-apply --tasks $CPU
    run cpu py-pool-imapN       P cpu pool-imapN --tasks $CPU
    run cpu py-ppe              P cpu ppe --tasks $CPU
    run cpu py-pebble           P cpu pebble --tasks $CPU
    run cpu py-joblib           P cpu joblib --tasks $CPU

    # 3. 1 MiB argument echoed as a 1 MiB result: MiB/s
    run payload invoker         I payload invoker --tasks $PAY
    run payload serial          C payload serial --tasks $PAY
    run payload pthread         C payload pthread --tasks $PAY
    run payload pipe-64k        C payload pipe --tasks $PAY
    run payload pipe-1024k      C payload pipe --pipe-size 1048576 --tasks $PAY
    run payload fork            C payload fork --tasks $PAY
    run payload py-pool-apply   P payload pool-apply --tasks $PAY_PY
    run payload py-pool-imap1   P payload pool-imap1 --tasks $PAY_PY
    run payload py-ppe          P payload ppe --tasks $PAY_PY
    run payload py-pebble       P payload pebble --tasks $PAY_PY
    run payload py-joblib       P payload joblib --tasks $PAY_PY

    # 4. hanging tasks, 0.1 s timeout: report and restart latency
    run hang invoker            I hang --tasks $HANG --timeout 0.1
    run hang fork               C hang fork --tasks $HANG --timeout 0.1
    run hang pthread            C hang pthread --tasks $HANG --timeout 0.1 --bound "$HANG_BOUND"
    run hang py-pebble          P hang pebble --tasks $HANG --timeout 0.1 --bound "$HANG_BOUND_PEBBLE"
    run hang py-pool-apply      P hang pool-apply --tasks $HANG --timeout 0.1 --bound "$HANG_BOUND"
    run hang py-ppe             P hang ppe --tasks $HANG --timeout 0.1 --bound "$HANG_BOUND"
    run hang py-joblib          P hang joblib --tasks $HANG --timeout 0.1 --bound "$HANG_BOUND"

    # 5. tasks that kill their worker among normal ones
    run crash invoker           I crash --tasks $CRASH --crashes $NCRASH
    run crash fork              C crash fork --tasks $CRASH --crashes $NCRASH
    run crash pthread           C crash pthread --tasks $CRASH --crashes $NCRASH
    run crash py-pebble         P crash pebble --tasks $CRASH --crashes $NCRASH --bound "$CRASH_BOUND_PEBBLE"
    run crash py-pool-apply     P crash pool-apply --tasks $CRASH --crashes $NCRASH --bound "$CRASH_BOUND"
    run crash py-ppe            P crash ppe --tasks $CRASH --crashes $NCRASH --bound "$CRASH_BOUND"
    run crash py-joblib         P crash joblib --tasks $CRASH --crashes $NCRASH --bound "$CRASH_BOUND"

    # 8. large arguments, a fresh buffer each, all submitted then waited
    #    for, timed from the first submit; the pipe limit beside each size
    for SZ in 65536:$BIG64 1048576:$BIG1 16777216:$BIG16; do
        B=${SZ%%:*} N=${SZ##*:}
        run bigarg pipe-1024k   C bigarg pipe --pipe-size 1048576 --bytes "$B" --tasks "$N"
        run bigarg invoker      I bigarg invoker --bytes "$B" --tasks "$N" --passes 3
        run bigarg zerocopy     I bigarg invoker-zerocopy --bytes "$B" --tasks "$N" --passes 3
    done
    run argmem invoker          I argmem invoker --bytes 1048576 --tasks $BIG1
    run argmem zerocopy         I argmem invoker-zerocopy --bytes 1048576 --tasks $BIG1
done

# 6. restart cost as the parent grows (once: each run times several restarts)
REP=1
# 7. the cache's lookup and the journal's replay (once: each run repeats)
run cache invoker J cache --tasks $CACHE_TASKS
run replay invoker J replay --tasks $REPLAY --journal "$TMP"
for MIB in $RESTART_MIB; do
    AVAIL=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
    if [ "$AVAIL" -lt $((MIB + 1024)) ]; then
        echo "SKIP workload=restart mem_mib=$MIB reason=only_${AVAIL}_MiB_available" >>"$RAW"
        echo "run.sh: restart with $MIB MiB skipped: only $AVAIL MiB available" >&2
        continue
    fi
    run restart invoker         I restart --mem-mib "$MIB" --crashes $NRESTART
    run restart fork            C restart fork --mem-mib "$MIB" --crashes $NRESTART
    run restart py-pool-apply   P restart pool-apply --mem-mib "$MIB" --crashes $NRESTART --bound $RESTART_BOUND
    run restart py-pebble       P restart pebble --mem-mib "$MIB" --crashes $NRESTART --bound $RESTART_BOUND
done

# ---- the table ----------------------------------------------------------------
END=$(date +%s)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
PYVER=$("$PY" -c 'import sys, pebble, joblib; print("%d.%d.%d" % sys.version_info[:3], "pebble", pebble.__version__, "joblib", joblib.__version__)' 2>/dev/null |
    tr ' ' '_')
if [ $QUICK = 1 ]; then
    OUTFILE=$TMP/RESULTS.md
else
    OUTFILE=$HERE/RESULTS.md
fi
# Measurements made by hand (how a change was chosen) follow the tables.
NOTES=()
[ -f "$HERE/NOTES.md" ] && NOTES=(--notes "$HERE/NOTES.md")
"$PY" "$HERE/report.py" "$RAW" --out "$OUTFILE" \
    --meta "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --meta "machine=$(nproc) CPUs (nproc), $CPU_MODEL, Linux $(uname -r)" \
    --meta "memory=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" \
    --meta "mode=$MODE" --meta "reps=$REPS" --meta "workers=$WORKERS" \
    --meta "build=$BT" --meta "python=$PYVER" \
    --meta "c_iters=$CITERS" --meta "py_iters=$PYITERS" \
    --meta "wall=$((END - START)) s for the whole suite" "${NOTES[@]}" || FAILS=$((FAILS + 1))
if [ $QUICK = 0 ]; then
    {
        echo "## Raw results"
        echo
        echo '```'
        cat "$RAW"
        echo '```'
    } >>"$OUTFILE"
fi
[ "$JDIR" = "$TMP" ] || rmdir "$JDIR" 2>/dev/null
echo "run.sh: table written to $OUTFILE; raw results and stderr in $TMP ($((END - START)) s)" >&2
[ $FAILS = 0 ]
