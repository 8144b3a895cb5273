#!/usr/bin/env bash
# Runs every example with cheap evaluations (--cost-ms 0.1: a few seconds
# in all) and checks that each exits 0.  Each example checks its own result
# (the optimum reached within its stated tolerance, or for flaky the failure
# counts adding up) and exits non-zero otherwise; --help must work too.
#
#   bash examples/run_examples.sh BUILD_DIR
set -u

build=${1:?usage: run_examples.sh BUILD_DIR}
dir=$build/examples
failed=0

run() {
    local name=$1
    shift
    local exe=$dir/$name
    if [ ! -x "$exe" ]; then
        echo "=== $name: $exe not found (was the project built?)"
        failed=$((failed + 1))
        return
    fi
    echo "=== $name $*"
    local start end rc
    start=$(date +%s%N)
    timeout 60 "$exe" "$@"
    rc=$?
    end=$(date +%s%N)
    if [ "$rc" -eq 0 ]; then
        echo "=== $name: ok ($(( (end - start) / 1000000 )) ms)"
        echo
    else
        echo "=== $name: FAILED with status $rc"
        echo
        failed=$((failed + 1))
    fi
}

for name in quickstart cmaes async_de flaky event_loop simulator; do
    if ! "$dir/$name" --help >/dev/null; then
        echo "=== $name --help: FAILED"
        failed=$((failed + 1))
    fi
done

run quickstart --evals 9
run cmaes --cost-ms 0.1
run async_de --cost-ms 0.1
run async_de --cost-ms 0.1 --sync
# flaky predicts every outcome from the argument, so an evaluation that a
# loaded machine (CI's) stalls past the timeout would count as a wrong
# prediction: 0.5 s rather than the default 0.1 s leaves room for that.
run flaky --cost-ms 0.1 --timeout 0.5
run flaky --cost-ms 0.1 --retries 0 --seed 7 --timeout 0.5
run event_loop --cost-ms 0.1
# An external program per evaluation: a hang costs its timeout (0.5 s, so
# that a loaded CI machine does not take a slow run for a hang).
run simulator --cost-ms 0.5 --timeout 0.5

# Resume: cmaes with a journal, killed with SIGKILL mid-run, then run again
# with the same options: it must finish and say that evaluations came from
# the journal.
journal=$(mktemp -u /tmp/invoker-cmaes-journal.XXXXXX)
echo "=== cmaes --journal: killed after 1 s, then resumed"
timeout -s KILL 1 "$dir/cmaes" --cost-ms 0.5 --journal "$journal" >/dev/null
out=$(timeout 120 "$dir/cmaes" --cost-ms 0.5 --journal "$journal")
rc=$?
echo "$out" | tail -7
cached=$(echo "$out" | sed -n 's/^from the journal \([0-9]*\) .*/\1/p')
if [ "$rc" -eq 0 ] && [ -n "$cached" ] && [ "$cached" -gt 0 ]; then
    echo "=== cmaes --journal: ok ($cached evaluations answered from the journal)"
else
    echo "=== cmaes --journal: FAILED (status $rc, answered '${cached}')"
    failed=$((failed + 1))
fi
echo
rm -f "$journal" "$journal".corrupt.*

# Built with libinvoker_mpi: cmaes and async_de again over 3 MPI ranks
# (rank 0 driving, two serving ranks of one worker each).
if "$dir/cmaes" --help | grep -q -- '--mpi'; then
    mpiexec=(mpiexec -n 3)
    mpiexec_version=$(mpiexec --version 2>&1 || true)
    if [[ $mpiexec_version == *"Open MPI"* || $mpiexec_version == *OpenRTE* ]]; then
        mpiexec+=(--oversubscribe)
        [[ $(id -u) != 0 ]] || mpiexec+=(--allow-run-as-root)
    fi
    run_mpi() {
        local name=$1
        shift
        echo "=== ${mpiexec[*]} $name $*"
        if timeout 120 "${mpiexec[@]}" "$dir/$name" "$@"; then
            echo "=== $name under MPI: ok"
            echo
        else
            echo "=== $name under MPI: FAILED"
            echo
            failed=$((failed + 1))
        fi
    }
    run_mpi cmaes --mpi --workers 1 --cost-ms 0.1
    run_mpi async_de --mpi --workers 1 --cost-ms 0.1
fi

if [ "$failed" -ne 0 ]; then
    echo "$failed example run(s) failed"
    exit 1
fi
echo "all examples passed"
