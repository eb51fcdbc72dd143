#!/usr/bin/env bash
# compare_fmnist.sh — trains the Fashion-MNIST MLP (or CNN) with bitgrad and
# with PyTorch, same settings (batch 128, Adam lr 1e-3, seed 0), alternating
# the two programs over several rounds, and prints the training loop's
# seconds per epoch (median and min-max over rounds; loading and testing not
# counted on either side), accuracy, peak RSS and the ratios. PyTorch runs at
# its fastest thread setting, probed once first (torch_fmnist.py --best-args).
# Waits for a quiet machine before starting (refuses after a minute unless
# --force) and marks every run during which other processes took CPU.
#
#   bash bench/compare_fmnist.sh [--model mlp|cnn] [--epochs N] [--rounds N]
#                                [--build DIR] [--force]
#
# Needs a build (cmake -S . -B build && cmake --build build -j) and Debian's
# python3-torch (bash scripts/install-deps.sh --reference).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/quiet.sh

model=mlp
epochs=
rounds=3
build=build
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --model) model=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --force) force=1; shift ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare_fmnist.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$epochs" ]; then
    if [ "$model" = mlp ]; then epochs=3; else epochs=1; fi
fi
exe="$build/fmnist_$model"
if [ ! -x "$exe" ]; then
    echo "compare_fmnist.sh: $exe not found; build first: cmake -S . -B $build && cmake --build $build -j" >&2
    exit 1
fi

if ! quiet_wait 60; then
    if [ "$force" = 0 ]; then
        echo "compare_fmnist.sh: the machine has not been quiet for a second in a minute (load $(cut -d' ' -f1-3 /proc/loadavg)); stop the other work or pass --force" >&2
        exit 3
    fi
    echo "compare_fmnist.sh: the machine is not quiet; going on (--force), runs are marked" >&2
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

echo "--- PyTorch's fastest thread setting for the $model"
torch_args=$(/usr/bin/python3 bench/torch_fmnist.py --model "$model" --best-args)
echo "PyTorch runs with: ${torch_args:-(its defaults)}"

# Mean training seconds per epoch, last accuracy: "epoch 1/5 ... acc 84.2% ... (train 11.8 s, test 0.5 s)".
summary() {
    awk '/^epoch / { for (i = 1; i <= NF; i++) { if ($i == "acc") acc = $(i + 1); if ($i == "(train") train += $(i + 1) }; n++ }
         END { sub("%", "", acc); printf "%.3f %s\n", train / n, acc }' "$1"
}

noisy=0
for r in $(seq "$rounds"); do
    for who in bitgrad torch; do
        if [ $who = bitgrad ]; then
            measured "$exe" --epochs "$epochs" > "$logs/out.txt"
        else
            # shellcheck disable=SC2086  # torch_args is a list of flags
            measured /usr/bin/python3 bench/torch_fmnist.py --model "$model" --epochs "$epochs" $torch_args > "$logs/out.txt"
        fi
        read -r train acc < <(summary "$logs/out.txt")
        echo "$train" >> "$logs/$who.train"
        echo "$acc" > "$logs/$who.acc"
        echo "$RUN_RSS" > "$logs/$who.rss"
        mark=$(other_mark)
        [ -n "$mark" ] && noisy=$((noisy + 1))
        printf 'round %d %-8s %s s per epoch, test acc %s%%, peak RSS %s MiB%s\n' "$r" "$who" "$train" "$acc" "$RUN_RSS" "$mark"
    done
done

b=$(median_range < "$logs/bitgrad.train")
t=$(median_range < "$logs/torch.train")
echo
echo "$model, $epochs epoch(s) x $rounds rounds; training loop seconds per epoch, median (min-max)"
printf '%-8s %-24s %9s %13s\n' "" "s per epoch" "test acc" "peak RSS MiB"
printf '%-8s %-24s %8s%% %13s\n' bitgrad "$b" "$(cat "$logs/bitgrad.acc")" "$(cat "$logs/bitgrad.rss")"
printf '%-8s %-24s %8s%% %13s\n' PyTorch "$t" "$(cat "$logs/torch.acc")" "$(cat "$logs/torch.rss")"
target=1.75
[ "$model" = cnn ] && target=2
awk -v b="${b%% *}" -v t="${t%% *}" -v br="$(cat "$logs/bitgrad.rss")" -v tr="$(cat "$logs/torch.rss")" \
    -v ba="$(cat "$logs/bitgrad.acc")" -v ta="$(cat "$logs/torch.acc")" -v target="$target" 'BEGIN {
    printf "bitgrad epoch is %.2fx faster than PyTorch at its best (target >= %s)\n", t / b, target
    printf "bitgrad peak RSS is %.2f of PyTorch'"'"'s (target <= 0.25)\n", br / tr
    printf "accuracy difference bitgrad - PyTorch: %+.2f points (last round; target within 0.5)\n", ba - ta
}'
if [ "$noisy" -gt 0 ]; then
    echo "NOT QUIET: other processes took CPU during $noisy of $((2 * rounds)) runs (marked above); do not quote these figures"
fi
