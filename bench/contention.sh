#!/usr/bin/env bash
# contention.sh — the MLP epoch (examples/fmnist_mlp, 784-512-512-10, batch
# 128, Adam) at the default thread count and at 1 thread, on a quiet machine
# and with one competing CPU-bound process (a bounded busy loop this script
# starts and stops), alternating the runs; prints each run's epoch seconds,
# the medians and the ratios default / 1 thread under each condition.
# Extra environment for the runs (e.g. OMP_WAIT_POLICY=passive) can be given
# with --env.
#
#   bash bench/contention.sh [--rounds N] [--build DIR] [--env VAR=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
build=build
envs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "contention.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
exe="$build/fmnist_mlp"
[ -x "$exe" ] || { echo "contention.sh: $exe not built" >&2; exit 1; }
busy_pid=
stop_busy() { [ -n "$busy_pid" ] && kill "$busy_pid" 2>/dev/null; busy_pid=; }
trap stop_busy EXIT

# One epoch's training seconds (the example prints "train X s").
epoch_s() {
    env "${envs[@]}" "$exe" --epochs 1 --threads "$1" | sed -n 's/.*(train \([0-9.]*\) s.*/\1/p' | tail -1
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

declare -A runs
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
    for load in quiet busy; do
        if [ $load = busy ]; then
            timeout 600 bash -c 'while :; do :; done' &
            busy_pid=$!
            sleep 1
        fi
        for t in 0 1; do
            s=$(epoch_s $t)
            runs[$load.$t]+="$s "
            echo "round $r, $load, threads $t (0 = default): $s s"
        done
        stop_busy
    done
done
for load in quiet busy; do
    d=$(echo ${runs[$load.0]} | tr ' ' '\n' | median)
    o=$(echo ${runs[$load.1]} | tr ' ' '\n' | median)
    echo "$load: default threads $d s, 1 thread $o s, default / 1 thread $(awk -v a="$d" -v b="$o" 'BEGIN {printf "%.2f", a / b}')"
done
