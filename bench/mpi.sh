#!/usr/bin/env bash
# libinvoker_mpi's figures: mpiexec -np 3 (rank 0 coordinating, ranks 1
# and 2 serving with one worker each) against a local invoker of two
# workers, over shared memory and over TCP only (--mca btl tcp,self, Open
# MPI: it stands for separate machines).  Runs are interleaved and
# repeated; the medians are printed with the targets.
#
#   bash bench/mpi.sh BUILD_DIR [REPS]      (a Release build with MPI)
set -u
build=${1:?usage: bench/mpi.sh BUILD_DIR [REPS]}
reps=${2:-3}
exe=$build/bench/bench_mpi
[ -x "$exe" ] || { echo "no $exe: configure with MPI and build bench_mpi" >&2; exit 2; }
mpiexec=(mpiexec -n 3)
version=$(mpiexec --version 2>&1 || true)
tcp=()
if [[ $version == *"Open MPI"* || $version == *OpenRTE* ]]; then
    mpiexec+=(--oversubscribe)
    [[ $(id -u) != 0 ]] || mpiexec+=(--allow-run-as-root)
    tcp=(--mca btl tcp,self)
fi

field() { grep -o "$1=[0-9.]*" | head -n 1 | cut -d= -f2; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A got
for ((i = 1; i <= reps; i++)); do
    got[cpu_local]+="$("$exe" cpu --local | field tasks_per_s) "
    for net in shm tcp; do
        extra=()
        [[ $net == tcp ]] && extra=("${tcp[@]}")
        [[ $net == tcp && ${#tcp[@]} -eq 0 ]] && continue
        got[cpu_$net]+="$("${mpiexec[@]}" "${extra[@]}" "$exe" cpu | field tasks_per_s) "
        got[trivial_$net]+="$("${mpiexec[@]}" "${extra[@]}" "$exe" trivial | field tasks_per_s) "
        got[idle_$net]+="$("${mpiexec[@]}" "${extra[@]}" "$exe" idle | field rank0_cpu) "
    done
done
med() { tr ' ' '\n' <<<"${got[$1]:-}" | grep . | median; }
local_cpu=$(med cpu_local)
printf '%-34s %s\n' "1 ms CPU tasks, 2 local workers" "$local_cpu tasks/s (runs: ${got[cpu_local]})"
for net in shm tcp; do
    [[ -n ${got[cpu_$net]:-} ]] || continue
    c=$(med cpu_$net) t=$(med trivial_$net) i=$(med idle_$net)
    printf '%-34s %s tasks/s, efficiency %.3f (target >= 0.9) (runs: %s)\n' \
        "1 ms CPU tasks, MPI $net" "$c" "$(awk -v a="$c" -v b="$local_cpu" 'BEGIN { print a / b }')" "${got[cpu_$net]}"
    printf '%-34s %s tasks/s (target >= 50000) (runs: %s)\n' "trivial tasks, MPI $net" "$t" "${got[trivial_$net]}"
    printf '%-34s %.1f%% of a core (target < 5%%) (runs: %s)\n' "rank 0 CPU, 100 ms tasks, MPI $net" \
        "$(awk -v a="$i" 'BEGIN { print 100 * a }')" "${got[idle_$net]}"
done
