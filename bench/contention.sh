#!/usr/bin/env bash
# contention.sh — training at the default thread count (auto), at 1 thread
# and at 2 pinned threads, on a quiet machine and with one competing
# CPU-bound process (a bounded busy loop this script starts and stops),
# alternating the runs; prints each run's seconds, the medians (min-max) and
# the ratios: under load auto / 1 thread (target <= 1.15), quiet auto / 2
# threads (auto must keep the 2-thread speed).
#
# Workloads: mlp = one epoch of examples/fmnist_mlp (784-512-512-10, batch
# 128, Adam); cnn = one epoch of examples/fmnist_cnn; lm = 12 steps of
# `bitgrad lm train --bitnet` (d 256, 4 layers, batch 16, ctx 128).
# Extra environment for the runs (e.g. OMP_WAIT_POLICY=passive): --env.
#
#   bash bench/contention.sh [--workload mlp|cnn|lm] [--rounds N] [--build DIR]
#                            [--env VAR=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/quiet.sh

rounds=3
build=build
workload=mlp
envs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --workload) workload=$2; shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "contention.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$workload" in
    mlp | cnn) exe="$build/fmnist_$workload" ;;
    lm) exe="$build/bitgrad" ;;
    *) echo "contention.sh: --workload is mlp, cnn or lm, not '$workload'" >&2; exit 2 ;;
esac
[ -x "$exe" ] || { echo "contention.sh: $exe not built" >&2; exit 1; }
tmp=$(mktemp -d)
busy_pid=
stop_busy() { [ -n "$busy_pid" ] && kill "$busy_pid" 2>/dev/null; busy_pid=; }
trap 'stop_busy; rm -rf "$tmp"' EXIT

# Seconds of the training loop: the examples print "(train X s", lm train
# "wrote F (N steps, X s, ...)".
run_s() {
    if [ "$workload" = lm ]; then
        env "${envs[@]}" "$exe" lm train --bitnet --steps 12 --warmup 2 --batch 16 --eval-every 1000 \
            --eval-batches 1 --threads "$1" --out "$tmp/lm.st" --log "$tmp/lm.jsonl" |
            sed -n 's/^wrote .* steps, \([0-9.]*\) s,.*/\1/p'
    else
        env "${envs[@]}" "$exe" --epochs 1 --threads "$1" | sed -n 's/.*(train \([0-9.]*\) s.*/\1/p' | tail -1
    fi
}

quiet_wait 60 || echo "contention.sh: the machine was not quiet before the start (load $(cut -d' ' -f1-3 /proc/loadavg)); quiet rows may be slow" >&2
for r in $(seq "$rounds"); do
    for load in quiet busy; do
        if [ $load = busy ]; then
            timeout 900 bash -c 'while :; do :; done' &
            busy_pid=$!
            sleep 1
        fi
        for t in 0 1 2; do
            s=$(run_s $t)
            echo "$s" >> "$tmp/$load.$t"
            echo "round $r, $load, threads $t (0 = auto): $s s"
        done
        stop_busy
    done
done
echo "$workload: seconds, median (min-max) over $rounds rounds"
for load in quiet busy; do
    printf '%-6s auto %s   1 thread %s   2 threads %s\n' "$load" "$(median_range < "$tmp/$load.0")" \
        "$(median_range < "$tmp/$load.1")" "$(median_range < "$tmp/$load.2")"
done
m() { median_range < "$tmp/$1" | cut -d' ' -f1; }
awk -v ba="$(m busy.0)" -v b1="$(m busy.1)" -v b2="$(m busy.2)" -v qa="$(m quiet.0)" -v q2="$(m quiet.2)" -v q1="$(m quiet.1)" 'BEGIN {
    printf "under load: auto / 1 thread %.2f (target <= 1.15); 2 pinned threads / 1 thread %.2f\n", ba / b1, b2 / b1
    printf "quiet: auto / 2 threads %.2f (target ~1); 1 thread / 2 threads %.2f\n", qa / q2, q1 / q2
}'
