#!/usr/bin/env bash
# cli.sh — `mpirun -np 2 bitgrad lm train` end to end: trains 4 steps
# data-parallel (rank 0 alone writes the checkpoint and prints), resumes it
# under 2 ranks (bit for bit the uninterrupted run's checkpoint) and under 1
# (which says what changes); a bad file stops both ranks with its message and
# a non-zero exit, not a hang (ctest's timeout guards that).
#   tests/dist/cli.sh BITGRAD
set -euo pipefail
bitgrad=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
fail() { echo "FAIL: $*"; exit 1; }
for i in $(seq 3000); do echo "in the beginning was the word and the word was light $((i % 7))"; done > "$tmp/text.txt"
small=(--data "$tmp/text.txt" --bitnet --d 32 --layers 2 --heads 2 --ff 64 --ctx 16 --batch 8 --warmup 1
       --eval-every 1000 --eval-batches 1 --threads 1)

mpirun -np 2 "$bitgrad" lm train "${small[@]}" --steps 4 --out "$tmp/full.st" --log "$tmp/full.jsonl" > "$tmp/full.txt"
grep -q "data parallel: 2 ranks" "$tmp/full.txt" || fail "no data-parallel summary: $(cat "$tmp/full.txt")"
[ "$(grep -c '^lm train:' "$tmp/full.txt")" = 1 ] || fail "more than one rank printed"
mpirun -np 2 "$bitgrad" lm train "${small[@]}" --steps 4 --stop-after 2 --out "$tmp/half.st" --log "$tmp/half.jsonl" > /dev/null
mpirun -np 2 "$bitgrad" lm train "${small[@]}" --steps 4 --resume "$tmp/half.st" --out "$tmp/resumed.st" --log "$tmp/half.jsonl" > /dev/null
# The weights, through the export (the checkpoints' quantizer call counters
# also count the extra validation pass of the stopped run).
"$bitgrad" export "$tmp/full.st" "$tmp/full.bgx" > /dev/null
"$bitgrad" export "$tmp/resumed.st" "$tmp/resumed.bgx" > /dev/null
cmp -s "$tmp/full.bgx" "$tmp/resumed.bgx" || fail "stop at 2 + resume under 2 ranks differs from 4 steps under 2 ranks"
"$bitgrad" lm train "${small[@]}" --steps 4 --resume "$tmp/half.st" --out "$tmp/one.st" --log "$tmp/one.jsonl" > "$tmp/one.txt"
grep -q "was trained on 2 rank(s), this run has 1" "$tmp/one.txt" || fail "no note on resuming under 1 rank: $(cat "$tmp/one.txt")"

set +e
mpirun -np 2 "$bitgrad" lm train "${small[@]}" --steps 4 --resume "$tmp/missing.st" --out "$tmp/x.st" > "$tmp/bad.txt" 2>&1
rc=$?
set -e
[ "$rc" != 0 ] || fail "a missing checkpoint exited 0"
grep -q "missing.st" "$tmp/bad.txt" || fail "no message naming the file: $(cat "$tmp/bad.txt")"
echo "dist cli: 4 steps on 2 ranks, resume bit for bit on 2, note on 1, a bad file exits $rc"
