#!/usr/bin/env bash
# Builds the libFuzzer targets with clang: fuzz/build.sh [OUTDIR] [--seeds]
# (OUTDIR defaults to build-fuzz).  --seeds also rebuilds fuzz/corpus/ with
# make_seeds.  Installs clang and libclang-rt-14-dev with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-fuzz}
seeds=${2:-}
export DEBIAN_FRONTEND=noninteractive
have_rt() { ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; }
if ! command -v clang >/dev/null || ! have_rt; then
    apt-get update -qq && apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
mkdir -p "$out"
common=(-std=c11 -D_GNU_SOURCE -I include -I src -I fuzz -g -O1
        -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror)
san=("-fsanitize=fuzzer,address,undefined" -fno-sanitize-recover=all -fno-omit-frame-pointer)
for t in frame slot; do
    clang "${common[@]}" "${san[@]}" fuzz/fuzz_$t.c src/local/proto.c -o "$out/fuzz_$t"
done
# The journal's decoder is pure, but journal.c's file functions come along
# and reach the rest of the library: all of the core (src/ but src/mpi/) is
# linked.
mapfile -t core < <(find src -path src/mpi -prune -o -name '*.c' -print | sort)
clang "${common[@]}" "${san[@]}" fuzz/fuzz_journal.c "${core[@]}" -o "$out/fuzz_journal"
if [ "$seeds" = --seeds ]; then
    clang "${common[@]}" fuzz/make_seeds.c "${core[@]}" -o "$out/make_seeds"
    rm -rf fuzz/corpus/frame fuzz/corpus/slot fuzz/corpus/journal
    mkdir -p fuzz/corpus/frame fuzz/corpus/slot fuzz/corpus/journal
    "$out/make_seeds" fuzz/corpus
fi
echo "fuzz targets in $out"
