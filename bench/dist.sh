#!/usr/bin/env bash
# dist.sh — data-parallel training of the language model (`bitgrad lm train
# --bitnet`, d 256, 4 layers, batch 32 x 128 tokens): 2 ranks x 1 thread
# (mpirun -np 2) against 1 rank x 1 thread, alternating over rounds; prints
# tokens/s (median, min-max) and the ratio (target >= 1.8), the gradient
# allreduce's time per step and the bytes each rank reduces per step, and
# from those bytes the expected speed-up on N machines over 10, 25 and 100
# Gbit/s links (a ring allreduce sends 2 (N-1)/N of them per rank per step).
#
#   bash bench/dist.sh [--rounds N] [--steps N] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/quiet.sh

rounds=3
steps=12
build=build
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "dist.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
exe="$build/bitgrad"
[ -x "$exe" ] || { echo "dist.sh: $exe not built" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "dist.sh: mpirun not found (bash scripts/install-deps.sh)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

train=(lm train --bitnet --steps "$steps" --warmup 2 --batch 32 --eval-every 100000 --eval-batches 1 --threads 1
       --out "$tmp/lm.st" --log "$tmp/lm.jsonl")
quiet_wait 60 || echo "dist.sh: the machine was not quiet before the start; runs are marked" >&2
for r in $(seq "$rounds"); do
    for ranks in 1 2; do
        if [ "$ranks" = 1 ]; then
            measured "$exe" "${train[@]}" > "$tmp/out.txt"
        else
            measured mpirun -np 2 "$exe" "${train[@]}" > "$tmp/out.txt"
        fi
        tps=$(sed -n 's/^wrote .* s, \([0-9]*\) tokens\/s)/\1/p' "$tmp/out.txt")
        echo "$tps" >> "$tmp/tps.$ranks"
        if [ "$ranks" = 2 ]; then
            sed -n 's/.*allreduce \([0-9.]*\) ms per step, \([0-9.]*\) MiB.*/\1 \2/p' "$tmp/out.txt" >> "$tmp/comm"
        fi
        printf 'round %d, %d rank(s) x 1 thread: %s tokens/s%s\n' "$r" "$ranks" "$tps" "$(other_mark)"
    done
done
one=$(median_range < "$tmp/tps.1")
two=$(median_range < "$tmp/tps.2")
comm_ms=$(cut -d' ' -f1 "$tmp/comm" | median_range | cut -d' ' -f1)
mib=$(cut -d' ' -f2 "$tmp/comm" | tail -1)
echo "tokens/s, median (min-max) over $rounds rounds of $steps steps (loading and one validation batch included)"
echo "1 rank x 1 thread:  $one"
echo "2 ranks x 1 thread: $two"
awk -v a="${one%% *}" -v b="${two%% *}" -v c="$comm_ms" -v m="$mib" -v tok=4096 'BEGIN {
    printf "2 ranks / 1 rank: %.2fx (target >= 1.8)\n", b / a
    step = tok / a * 1000   # ms per step of one rank alone
    printf "gradient allreduce: %.2f ms per step (%.1f%% of a 2-rank step); %.2f MiB reduced per rank per step\n",
           c, 100 * c / (tok / b * 1000), m
    printf "expected speed-up on N machines (one rank each, %.0f ms of compute per step, ring allreduce of %.2f MiB):\n", step, m
    printf "  %-10s %8s %8s %8s\n", "link", "N=2", "N=8", "N=32"
    split("10 25 100", gb, " ")
    for (i = 1; i <= 3; i++) {
        printf "  %3d Gbit/s", gb[i]
        split("2 8 32", ns, " ")
        for (j = 1; j <= 3; j++) {
            n = ns[j]; bytes = 2 * (n - 1) / n * m * 1048576
            t = bytes * 8 / (gb[i] * 1e9) * 1000   # ms on the wire, not overlapped
            printf " %7.2fx", n * step / (step + t)
        }
        printf "\n"
    }
}'
