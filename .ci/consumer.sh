#!/usr/bin/env bash
# Builds and installs invoker to a temporary prefix, then uses it the way
# another project would: find_package (shared and static), pkg-config, and
# add_subdirectory of the source tree.  Each consumer runs tests/consumer.
#
#   bash .ci/consumer.sh [source-dir]      (default: this repository)
#
# Environment: CC (default cc), KEEP=1 keeps the work directory.
set -euo pipefail

src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
cc=${CC:-cc}
jobs=$(nproc 2>/dev/null || echo 4)
work=$(mktemp -d "${TMPDIR:-/tmp}/invoker-consumer.XXXXXX")
cleanup() { if [[ ${KEEP:-0} == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
prefix=$work/prefix

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "consumer.sh: $*" >&2; exit 1; }

step "build and install $src to $prefix"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DINVOKER_BUILD_TESTS=OFF -DINVOKER_BUILD_EXAMPLES=OFF -DINVOKER_BUILD_BENCH=OFF \
    -DINVOKER_INSTALL=ON -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build "$work/build" -j "$jobs" >/dev/null
cmake --install "$work/build" >/dev/null

pc=$(find "$prefix" -name invoker.pc -path '*/pkgconfig/*' | head -n 1)
[[ -n $pc ]] || fail "invoker.pc not installed"
pc_dir=$(dirname "$pc")
libdir=$(dirname "$pc_dir")
for f in "$prefix/include/invoker.h" "$libdir/libinvoker.a" "$libdir/libinvoker.so" \
         "$libdir/cmake/invoker/invokerConfig.cmake" \
         "$libdir/cmake/invoker/invokerConfigVersion.cmake" \
         "$prefix/share/man/man3/invoker.3"; do
    [[ -e $f ]] || fail "not installed: $f"
done
soname=$(objdump -p "$libdir/libinvoker.so" | awk '$1 == "SONAME" { print $2 }')
[[ $soname == libinvoker.so.[0-9]* ]] || fail "bad SONAME '$soname'"
[[ -e $libdir/$soname ]] || fail "$soname not installed"
echo "installed: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"

step "exported symbols: only the public invoker_* API"
all_exported=$(nm -D --defined-only "$libdir/libinvoker.so" | awk '$2 ~ /^[TDBRWV]$/ { print $3 }')
# The scheduler's seam for libinvoker_mpi: exported, declared in the
# uninstalled src/sched/invoker_sched.h and nowhere else.
sched=$(grep -o '^invoker__sched_[a-z_]*' <<<"$all_exported" | sort || true)
sched_declared=$(grep -o 'invoker__sched_[a-z_]*(' "$src/src/sched/invoker_sched.h" | tr -d '(' | sort)
[[ $sched == "$sched_declared" ]] ||
    fail "seam exports differ from src/sched/invoker_sched.h: $(diff <(echo "$sched") <(echo "$sched_declared") | tr '\n' ' ')"
if grep -rq 'invoker__sched' "$prefix/include"; then fail "the seam's header is installed"; fi
exported=$(grep -v '^invoker__sched_' <<<"$all_exported")
bad=$(grep -v '^invoker_[a-z]' <<<"$exported" | grep -v '^_init$\|^_fini$' || true)
[[ -z $bad ]] || fail "non-public symbols exported: $(tr '\n' ' ' <<<"$bad")"
declared=$(grep '^INVOKER_API' "$prefix/include/invoker.h" | grep -o 'invoker_[a-z_]*(' \
           | tr -d '(' | sort)
[[ $(sort <<<"$exported") == "$declared" ]] ||
    fail "exports differ from the header: $(diff <(sort <<<"$exported") <(echo "$declared") | tr '\n' ' ')"
echo "$(wc -l <<<"$exported") symbols, as declared in invoker.h"

step "find_package(invoker) with CMAKE_PREFIX_PATH"
cmake -S "$src/tests/consumer" -B "$work/fp" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/fp" -j "$jobs" >/dev/null
"$work/fp/consumer"
"$work/fp/consumer_static"
if readelf -d "$work/fp/consumer_static" | grep -q 'libinvoker\.so'; then
    fail "consumer_static links the shared library"
fi

step "find_package(invoker 2) must fail (SameMajorVersion)"
if cmake -S "$src/tests/consumer" -B "$work/fp2" -DCMAKE_PREFIX_PATH="$prefix" \
        -DINVOKER_CONSUMER_WANT=2 >/dev/null 2>&1; then
    fail "find_package(invoker 2) accepted version 1"
fi
echo "refused, as it should be"

step "pkg-config"
if ! command -v pkg-config >/dev/null; then
    [[ $(id -u) == 0 ]] || fail "pkg-config missing and not root to install it"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config >/dev/null
fi
export PKG_CONFIG_PATH=$libdir/pkgconfig
version=$(pkg-config --modversion invoker)
echo "invoker.pc version $version: $(pkg-config --cflags --libs invoker)"
grep -q "^#define INVOKER_VERSION_MAJOR ${version%%.*}\$" "$prefix/include/invoker.h" ||
    fail "invoker.pc version $version disagrees with the header"
# shellcheck disable=SC2046  # word splitting of pkg-config's flags is intended
"$cc" -std=c11 -Wall -Wextra -Werror -o "$work/pc_consumer" "$src/tests/consumer/main.c" \
    $(pkg-config --cflags --libs invoker)
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$work/pc_consumer"

if [[ -e $libdir/libinvoker_mpi.so ]]; then
    step "libinvoker_mpi: find_package(invoker COMPONENTS mpi) and pkg-config invoker-mpi"
    for f in "$prefix/include/invoker_mpi.h" "$libdir/libinvoker_mpi.a" "$pc_dir/invoker-mpi.pc" \
             "$libdir/cmake/invoker/invokerMpiTargets.cmake"; do
        [[ -e $f ]] || fail "not installed: $f"
    done
    mpi_exported=$(nm -D --defined-only "$libdir/libinvoker_mpi.so" |
                   awk '$2 ~ /^[TDBRWV]$/ { print $3 }' | grep -v '^_init$\|^_fini$' | sort)
    mpi_declared=$(grep '^INVOKER_API' "$prefix/include/invoker_mpi.h" |
                   grep -o 'invoker_[a-z_]*(' | tr -d '(' | sort)
    [[ $mpi_exported == "$mpi_declared" ]] ||
        fail "libinvoker_mpi exports differ from invoker_mpi.h: $(tr '\n' ' ' <<<"$mpi_exported")"
    mpiexec=(mpiexec -n 2)
    mpiexec_version=$(mpiexec --version 2>&1 || true)
    if [[ $mpiexec_version == *"Open MPI"* || $mpiexec_version == *OpenRTE* ]]; then
        mpiexec+=(--oversubscribe)
        [[ $(id -u) != 0 ]] || mpiexec+=(--allow-run-as-root)
    fi
    cmake -S "$src/tests/consumer_mpi" -B "$work/mpi" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
    cmake --build "$work/mpi" -j "$jobs" >/dev/null
    "${mpiexec[@]}" "$work/mpi/consumer_mpi"
    # shellcheck disable=SC2046  # word splitting of pkg-config's flags is intended
    mpicc -std=c11 -Wall -Wextra -Werror -o "$work/pc_consumer_mpi" \
        "$src/tests/consumer_mpi/main.c" $(pkg-config --cflags --libs invoker-mpi)
    LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        "${mpiexec[@]}" "$work/pc_consumer_mpi"
fi

step "add_subdirectory of the source tree (as FetchContent does)"
cmake -S "$src/tests/consumer" -B "$work/sub" -DINVOKER_SOURCE_DIR="$src" >/dev/null
cmake --build "$work/sub" -j "$jobs" >/dev/null
"$work/sub/consumer"
"$work/sub/consumer_static"

step "all consumers passed"
