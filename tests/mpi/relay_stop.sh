#!/usr/bin/env bash
# mpi_relay_stop under the launcher: rank 0 reports every task once, then
# invoker_destroy ends the job with MPI_Abort: every process of the job
# ends, the launcher exits non-zero, and nothing of the job is left.
#   bash relay_stop.sh EXE MPIEXEC ARGS...
#
# Open MPI 4.1's mpiexec now and then never reaps its ranks after
# MPI_Abort (all three left as its zombies, the launcher asleep: seen in
# about 1 run of 15 under load).  That is the launcher's, not the job's:
# once rank 0 said DESTROYING and no process of the job has been alive
# for 5 s, the launcher is killed and the test goes on.
set -u
exe=$1
shift
out_file=$(mktemp)
trap 'rm -f "$out_file"' EXIT
"$@" "$exe" >"$out_file" 2>&1 &
launcher=$!
alive() { pgrep -f "^$exe( |$)" >/dev/null; }   # a zombie has no command line
quiet=0 waited=0 hung=0
while kill -0 "$launcher" 2>/dev/null; do
    sleep 0.5
    waited=$((waited + 1))
    if grep -q '^DESTROYING$' "$out_file" && ! alive; then
        quiet=$((quiet + 1))
    else
        quiet=0
    fi
    if ((quiet >= 10)); then
        hung=1
        kill -KILL "$launcher" 2>/dev/null
        break
    fi
    if ((waited >= 200)); then   # 100 s
        kill -KILL "$launcher" 2>/dev/null
        break
    fi
done
wait "$launcher"
rc=$?
((waited >= 200)) && rc=124
out=$(cat "$out_file")
echo "$out"
echo "launcher exit status: $rc"
((hung)) && echo "(the launcher outlived every process of the job by 5 s: killed)"
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
