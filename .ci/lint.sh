#!/usr/bin/env bash
# Static analysis: cppcheck and clang-tidy (.clang-tidy) over src/, plus
# clang-tidy over tests/consumer.  Any finding fails the run.  src/mpi/
# (libinvoker_mpi) is checked too: its compile commands exist where CMake
# found an MPI.
#
#   bash .ci/lint.sh [source-dir]       (default: this repository)
#
# clang-tidy needs compile_commands.json: BUILD_DIR names a configured
# build tree that has one; otherwise a temporary one is configured.
set -euo pipefail

src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
cd "$src"

need() {   # need <command> <debian package>
    command -v "$1" >/dev/null && return
    [[ $(id -u) == 0 ]] || { echo "lint.sh: $1 missing (apt-get install $2)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need cppcheck cppcheck
need clang-tidy clang-tidy
need cmake cmake

status=0

echo "==> cppcheck $(cppcheck --version | awk '{print $2}')"
if ! cppcheck --quiet --enable=warning,performance,portability --error-exitcode=1 \
        --inline-suppr -I include -I src --std=c11 src/; then
    echo "cppcheck: findings above" >&2
    status=1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/invoker-lint.XXXXXX")
trap 'rm -rf "$work"' EXIT
build=${BUILD_DIR:-}
if [[ -z $build || ! -f $build/compile_commands.json ]]; then
    build=$work/build
    cmake -S "$src" -B "$build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
        -DINVOKER_BUILD_TESTS=OFF -DINVOKER_BUILD_EXAMPLES=OFF -DINVOKER_BUILD_BENCH=OFF \
        >/dev/null
fi

echo "==> $(clang-tidy --version | grep -i 'version' | head -n 1 | sed 's/^ *//')"
# One clang-tidy per file, in parallel, each into its own log; the checks
# are in .clang-tidy.  The consumer is not in the compile database.
mkdir "$work/logs"
# Every source under src/: the core's layers and src/mpi/.
# shellcheck disable=SC2016  # expanded by the inner sh, on purpose
find src -name '*.c' | sort | xargs -P "$(nproc 2>/dev/null || echo 4)" -I{} \
    sh -c 'clang-tidy --quiet -p "$1" "$2" >"$3/$(printf %s "$2" | tr / _).log" 2>/dev/null || true' \
    sh "$build" {} "$work/logs"
clang-tidy --quiet tests/consumer/main.c -- -std=c11 -Iinclude \
    >"$work/logs/consumer.log" 2>/dev/null || true
cat "$work/logs"/*.log >"$work/tidy.log"
findings=$(grep -cE '^[^ ].*:[0-9]+:[0-9]+: (warning|error):' "$work/tidy.log" || true)
if [[ $findings -ne 0 ]]; then
    cat "$work/tidy.log"
    echo "clang-tidy: $findings finding(s)" >&2
    status=1
else
    echo "clang-tidy: no findings"
fi

exit $status
