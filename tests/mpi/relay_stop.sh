#!/usr/bin/env bash
# mpi_relay_stop under the launcher: rank 0 reports every task once, then
# invoker_destroy ends the job with MPI_Abort: the launcher exits non-zero,
# and nothing of the job is left.
#   bash relay_stop.sh EXE MPIEXEC ARGS...
set -u
exe=$1
shift
out=$(timeout 100 "$@" "$exe" 2>&1)
rc=$?
echo "$out"
echo "launcher exit status: $rc"
fail() { echo "FAIL: $*"; exit 1; }
grep -q '^REPORTED-ONCE 300 of 300$' <<<"$out" || fail "rank 0 did not report every task once"
grep -q '^DESTROYING$' <<<"$out" || fail "rank 0 never reached invoker_destroy"
grep -q 'RETURNED-FROM-DESTROY' <<<"$out" && fail "invoker_destroy returned despite a stuck relay"
[[ $rc -ne 0 ]] || fail "the launcher exited 0 after MPI_Abort"
[[ $rc -ne 124 ]] || fail "the job did not end"
sleep 1
left=$(pgrep -f "^$exe( |$)" || true)
[[ -z $left ]] || fail "processes left behind: $left"
echo "ok"
