#!/usr/bin/env bash
# compare_fmnist.sh — trains the Fashion-MNIST MLP (or CNN) with bitgrad and
# with PyTorch back to back, same settings (batch 128, Adam lr 1e-3, seed 0),
# and prints each one's accuracy, mean epoch time and peak RSS, and the
# ratios. PyTorch runs at its best thread setting (torch_fmnist.py --best
# probes them first).
#
#   bash bench/compare_fmnist.sh [--model mlp|cnn] [--epochs N] [--build DIR]
#
# Needs a build (cmake -S . -B build && cmake --build build -j) and Debian's
# python3-torch (bash scripts/install-deps.sh --reference).
set -euo pipefail
cd "$(dirname "$0")/.."

model=mlp
epochs=
build=build
while [ $# -gt 0 ]; do
    case "$1" in
        --model) model=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare_fmnist.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$epochs" ]; then
    if [ "$model" = mlp ]; then epochs=5; else epochs=3; fi
fi
exe="$build/fmnist_$model"
if [ ! -x "$exe" ]; then
    echo "compare_fmnist.sh: $exe not found; build first: cmake -S . -B $build && cmake --build $build -j" >&2
    exit 1
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

echo "--- bitgrad: $exe --epochs $epochs"
"$exe" --epochs "$epochs" | tee "$logs/bitgrad.txt"
echo "--- PyTorch: bench/torch_fmnist.py --model $model --epochs $epochs --best"
/usr/bin/python3 bench/torch_fmnist.py --model "$model" --epochs "$epochs" --best | tee "$logs/torch.txt"

# "epoch 1/5  train loss 0.5  test acc 84.2%  12.3 s (train 11.8 s, test 0.5 s)"
summary() {
    awk '
        /^epoch / { for (i = 1; i <= NF; i++) {
                        if ($i == "acc") acc = $(i + 1)
                        if ($i == "s" && !got) { total += $(i - 1); got = 1 }
                        if ($i == "(train") train += $(i + 1) }
                    n++; got = 0 }
        /peak RSS/ { for (i = 1; i <= NF; i++) if ($i == "RSS") rss = $(i + 1) }
        END { sub("%", "", acc); printf "%s %.3f %.3f %s\n", acc, total / n, train / n, rss }' "$1"
}
read -r b_acc b_epoch b_train b_rss < <(summary "$logs/bitgrad.txt")
read -r t_acc t_epoch t_train t_rss < <(summary "$logs/torch.txt")

echo
printf '%-10s %10s %14s %14s %14s\n' "" "test acc" "epoch s (mean)" "train s (mean)" "peak RSS MiB"
printf '%-10s %9s%% %14s %14s %14s\n' bitgrad "$b_acc" "$b_epoch" "$b_train" "$b_rss"
printf '%-10s %9s%% %14s %14s %14s\n' PyTorch "$t_acc" "$t_epoch" "$t_train" "$t_rss"
awk -v be="$b_epoch" -v te="$t_epoch" -v br="$b_rss" -v tr="$t_rss" -v ba="$b_acc" -v ta="$t_acc" 'BEGIN {
    printf "bitgrad epoch is %.2fx faster than PyTorch at its best (target >= 1.3)\n", te / be
    printf "bitgrad peak RSS is %.2f of PyTorch'"'"'s (target <= 0.25)\n", br / tr
    printf "accuracy difference bitgrad - PyTorch: %+.2f points (target within 0.5)\n", ba - ta
}'
