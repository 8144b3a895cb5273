#!/usr/bin/env bash
# Runs every test under valgrind memcheck, the MPI scenarios too.  The
# parent must not leak; the workers are forks that end with _exit()
# holding the parent's heap, so their reports are silenced
# (--child-silent-after-fork) rather than read.
set -euo pipefail
build=${1:?usage: valgrind.sh BUILD_DIR}
status=0
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    start=$(date +%s)
    if INVOKER_UNDER_VALGRIND=1 valgrind --quiet --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --child-silent-after-fork=yes \
        --track-fds=no "$t" >"/tmp/valgrind-$name.log" 2>&1; then
        echo "valgrind $name: ok ($(( $(date +%s) - start )) s)"
    else
        echo "valgrind $name: FAILED"; tail -40 "/tmp/valgrind-$name.log"; status=1
    fi
done

# The MPI scenarios, each rank under valgrind (every one but
# mpi_relay_stop, whose job ends in MPI_Abort), when the build has them.
# Open MPI's own allocations are suppressed (.ci/mpi.supp); the agents
# and workers are forks, silenced as above.
if ctest --test-dir "$build" -N -L mpi | grep 'mpi_once' >/dev/null; then
    here=$(cd "$(dirname "$0")" && pwd)
    launcher="valgrind;--quiet;--error-exitcode=99;--leak-check=full"
    launcher+=";--errors-for-leak-kinds=definite,indirect;--child-silent-after-fork=yes"
    launcher+=";--num-callers=50;--suppressions=$here/mpi.supp"
    cmake "$build" -DINVOKER_MPI_TEST_LAUNCHER="$launcher" >/dev/null
    start=$(date +%s)
    if ctest --test-dir "$build" -L mpi -E 'mpi_relay_stop|mpi_core_clean' --output-on-failure \
        >/tmp/valgrind-mpi.log 2>&1; then
        echo "valgrind MPI scenarios: ok ($(( $(date +%s) - start )) s)"
    else
        echo "valgrind MPI scenarios: FAILED"; tail -80 /tmp/valgrind-mpi.log; status=1
    fi
    cmake "$build" -DINVOKER_MPI_TEST_LAUNCHER= >/dev/null
fi
exit $status
