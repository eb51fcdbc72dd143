#!/usr/bin/env bash
# lm_memory.sh — peak RSS of one language-model training process: bitgrad
# (`bitgrad lm train`, the quality rows' model: d 256, 4 layers, d_ff 768,
# ctx 128, batch 32) fp32 and BitNet, with the blocks recomputed in the
# backward (the default) and with --no-recompute, against PyTorch's
# bench/torch_lm.py on the same model at its fastest setting (1 torch
# thread, OPENBLAS_NUM_THREADS=2). Each run is its own process measured by
# /usr/bin/time -v; prints MiB and the ratio to PyTorch's run of that kind.
#
#   bash bench/lm_memory.sh [--steps N] [--build DIR]
#
# Needs a build and Debian's python3-torch (bash scripts/install-deps.sh --reference).
set -euo pipefail
cd "$(dirname "$0")/.."

steps=6
build=build
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) steps=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "lm_memory.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Peak RSS in MiB of the command's process tree.
peak_mib() {
    /usr/bin/time -v "$@" > "$tmp/out" 2> "$tmp/time" || { cat "$tmp/out" "$tmp/time" >&2; exit 1; }
    awk '/Maximum resident set size/ {printf "%.0f", $6 / 1024}' "$tmp/time"
}

torch_fp32=$(OPENBLAS_NUM_THREADS=2 peak_mib /usr/bin/python3 bench/torch_lm.py --time-only "$steps" --threads 1)
torch_bitnet=$(OPENBLAS_NUM_THREADS=2 peak_mib /usr/bin/python3 bench/torch_lm.py --time-only "$steps" --threads 1 --bitnet)
echo "PyTorch (1 torch thread, OPENBLAS_NUM_THREADS=2), $steps steps: fp32 $torch_fp32 MiB, BitNet $torch_bitnet MiB"
for kind in fp32 bitnet; do
    ref=$torch_fp32; flag=
    if [ $kind = bitnet ]; then ref=$torch_bitnet; flag=--bitnet; fi
    for rc in "" --no-recompute; do
        mib=$(peak_mib "$build/bitgrad" lm train --steps "$steps" --warmup 1 --eval-batches 2 $flag $rc \
            --out "$tmp/lm.safetensors" --log "$tmp/lm.jsonl")
        printf 'bitgrad %-6s %-15s %5d MiB  = %.2f of PyTorch'"'"'s\n' $kind "${rc:-recompute}" "$mib" \
            "$(awk -v a="$mib" -v b="$ref" 'BEGIN {print a / b}')"
    done
done
