#!/usr/bin/env bash
# Runs every test under valgrind memcheck.  The parent must not leak; the
# workers are forks that end with _exit() holding the parent's heap, so
# their reports are silenced (--child-silent-after-fork) rather than read.
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
exit $status
