#!/usr/bin/env bash
# test_cli.sh BITGRAD OUTDIR — the `bitgrad` program end to end on a short
# run: demo (1 teacher epoch, 1 student epoch through all four phases), the files
# and figures it promises, the summary's agreement and size figures, then the
# other subcommands on its outputs and their errors on bad input.
set -u
bitgrad=$1
out=$2
rm -rf "$out"
mkdir -p "$out"
fails=0
check() {   # check "what" command...
    local what=$1
    shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}

"$bitgrad" demo --teacher-epochs 1 --epochs 1 --out "$out/demo" --threads 2 >"$out/demo.log" 2>&1
check "demo exits 0" test $? -eq 0
for f in teacher.safetensors student.safetensors student.bgx train.jsonl plots/training.png plots/weights.png \
    plots/ternary.png plots/sqnr.png; do
    check "demo wrote $f" test -s "$out/demo/$f"
done
check "demo prints the summary" grep -q "^summary" "$out/demo.log"
agree=$(sed -n 's/.*(export; \([0-9.]*\)% same class as fake-quant).*/\1/p' "$out/demo.log")
check "integer runtime agrees with fake-quant on >= 99.9% ($agree%)" awk -v a="${agree:-0}" 'BEGIN { exit !(a >= 99.9) }'
ratio=$(sed -n 's/.*export \/ f32 parameters = 1\/\([0-9.]*\).*/\1/p' "$out/demo.log")
check "export <= 1/12 of the f32 parameters (1/$ratio)" awk -v r="${ratio:-0}" 'BEGIN { exit !(r >= 12) }'
acc=$(sed -n 's/.*ternary student, integer runtime *\([0-9.]*\)%.*/\1/p' "$out/demo.log")
check "student learned (integer runtime accuracy $acc% > 80%)" awk -v a="${acc:-0}" 'BEGIN { exit !(a > 80) }'

"$bitgrad" export "$out/demo/student.safetensors" "$out/s.bgx" >"$out/export.log" 2>&1
check "export exits 0" test $? -eq 0
"$bitgrad" infer "$out/s.bgx" --data fashion-mnist >"$out/infer.log" 2>&1
check "infer exits 0" test $? -eq 0
check "infer prints the accuracy" grep -q "accuracy 0\.[89]" "$out/infer.log"
"$bitgrad" plot "$out/demo/train.jsonl" --out "$out/replot" >"$out/plot.log" 2>&1
check "plot redraws the figures" test -s "$out/replot/training.png"

printf '{"type":"step","step":1,"loss":0.5}\n{"type":"step","step":2,"loss":"x"}\n' >"$out/bad.jsonl"
"$bitgrad" plot "$out/bad.jsonl" --out "$out/badplot" >"$out/badplot.log" 2>&1
check "plot of a bad log exits 1" test $? -eq 1
check "plot names the bad line" grep -q 'line 2: "loss" is not a number' "$out/badplot.log"
"$bitgrad" export "$out/missing.safetensors" "$out/m.bgx" >"$out/missing.log" 2>&1
check "export of a missing checkpoint exits 1" test $? -eq 1
check "and writes nothing" test ! -e "$out/m.bgx"
# outputs that would replace an input or a device node are refused; nothing changes
ck="$out/demo/student.safetensors"
cp "$ck" "$out/ck-copy"
"$bitgrad" export "$ck" "$ck" >"$out/same.log" 2>&1
check "export onto its own checkpoint exits 2" test $? -eq 2
check "and says why" grep -q "the output $ck is the checkpoint itself: refusing to overwrite an input" "$out/same.log"
ln -s "$ck" "$out/alias.safetensors"
"$bitgrad" export "$ck" "$out/alias.safetensors" --format onnx >"$out/alias.log" 2>&1
check "export onto a link to its checkpoint exits 2" test $? -eq 2
check "and says why" grep -q "is the same file as the checkpoint $ck: refusing" "$out/alias.log"
"$bitgrad" finetune "$ck" --out "$ck" >"$out/ft-same.log" 2>&1
check "finetune onto its own checkpoint exits 2" test $? -eq 2
check "the checkpoint is unchanged" cmp -s "$ck" "$out/ck-copy"
check "the link is still a link" test -L "$out/alias.safetensors"
for fmt in bitgrad onnx; do
    "$bitgrad" export "$ck" /dev/null --format $fmt >"$out/devnull.log" 2>&1
    check "export ($fmt) to /dev/null exits 1" test $? -eq 1
    check "and says why" grep -q "/dev/null: exists and is not a regular file (a character device), refusing to replace it" \
        "$out/devnull.log"
    check "/dev/null is still a character device" test -c /dev/null
done
check "no temporary file beside /dev/null" test -z "$(ls /dev | grep '^null\.tmp-')"
# a stale temporary file of a killed export is removed by the next export of the same path
touch -d '1 hour ago' "$out/s.bgx.tmp-K1ll3d" "$out/s.bgx.tmp-K1ll3" "$out/t.bgx.tmp-K1ll3d"
"$bitgrad" export "$ck" "$out/s.bgx" >"$out/export2.log" 2>&1
check "export over a previous export exits 0" test $? -eq 0
check "and removes the stale temporary file" test ! -e "$out/s.bgx.tmp-K1ll3d"
check "but not other names" test -e "$out/s.bgx.tmp-K1ll3" -a -e "$out/t.bgx.tmp-K1ll3d"

# a NaN weight stops fine-tuning at its first step (exit 1) and writes no
# checkpoint over a good one (the NaN is written into the file's first
# parameter value with the same few lines any safetensors reader would use)
/usr/bin/python3 - "$out/demo/teacher.safetensors" "$out/nan.safetensors" <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
off = 8 + n + json.loads(b[8:8 + n])["0.weight"]["data_offsets"][0]
b[off:off + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(b)
PY
cp "$ck" "$out/good.safetensors"
"$bitgrad" finetune "$out/nan.safetensors" --epochs 1 --schedule none --out "$out/good.safetensors" \
    --log "$out/nan.jsonl" >"$out/ft-nan.log" 2>&1
check "finetune of a NaN weight exits 1" test $? -eq 1
check "and names the step" grep -q "train_epoch: step 0: fake_quant: the absmean range of x \[512,784\] is not finite" \
    "$out/ft-nan.log"
check "the good checkpoint is unchanged" cmp -s "$ck" "$out/good.safetensors"

# the language model: a tiny run on a text file, resume, sample, bad input
head -c 20000 /usr/share/common-licenses/GPL-3 >"$out/text.txt"
lmargs=(--data "$out/text.txt" --steps 6 --warmup 1 --eval-every 3 --eval-batches 1 --batch 4 --ctx 32 --d 32
    --layers 1 --heads 2 --ff 64)
"$bitgrad" lm train "${lmargs[@]}" --out "$out/lm6.safetensors" --log "$out/lm.jsonl" >"$out/lm.log" 2>&1
check "lm train exits 0" test $? -eq 0
check "lm train prints bits per byte" grep -q "^step 6: train loss .*bits/byte" "$out/lm.log"
"$bitgrad" lm train "${lmargs[@]}" --stop-after 3 --out "$out/lm3.safetensors" --log "$out/lm3.jsonl" >/dev/null 2>&1 &&
    "$bitgrad" lm train "${lmargs[@]}" --resume "$out/lm3.safetensors" --out "$out/lm3+3.safetensors" \
        --log "$out/lm3.jsonl" >"$out/lm-resume.log" 2>&1
check "lm train --resume exits 0" test $? -eq 0
check "3 + 3 resumed steps give the same losses as 6" test \
    "$(grep '^step 6:' "$out/lm.log")" = "$(grep '^step 6:' "$out/lm-resume.log")"
check "and byte-identical checkpoints (parameters, AdamW moments, rng, data position)" \
    cmp -s "$out/lm6.safetensors" "$out/lm3+3.safetensors"
"$bitgrad" lm train "${lmargs[@]}" --schedule int8@0,int4@2,ternary@4 --out "$out/lmq6.safetensors" \
    --log "$out/lmq.jsonl" >"$out/lmq.log" 2>&1 &&
    "$bitgrad" lm train "${lmargs[@]}" --schedule int8@0,int4@2,ternary@4 --stop-after 3 \
        --out "$out/lmq3.safetensors" --log "$out/lmq3.jsonl" >/dev/null 2>&1 &&
    "$bitgrad" lm train "${lmargs[@]}" --schedule int8@0,int4@2,ternary@4 --resume "$out/lmq3.safetensors" \
        --out "$out/lmq3+3.safetensors" --log "$out/lmq3.jsonl" >/dev/null 2>&1
check "a progressive BitNet run resumes byte-identically across a schedule change" \
    cmp -s "$out/lmq6.safetensors" "$out/lmq3+3.safetensors"
check "and announces the phases" grep -q "schedule moves to ternary" "$out/lmq.log"
"$bitgrad" plot "$out/lmq.jsonl" --out "$out/lmplot" >/dev/null 2>&1
check "bitgrad plot draws an LM log (validation nats, phases)" test -s "$out/lmplot/training.png"
check "and the ternary layers' histograms and SQNR" test -s "$out/lmplot/weights.png" -a -s "$out/lmplot/sqnr.png"
check "with SQNR at the end of each of the 3 phases" test \
    "$(grep -c '"type":"metrics","step":\(2\|4\|6\),"layer":"blk.0.attn_q"' "$out/lmq.jsonl")" = 3
"$bitgrad" lm sample "$out/lm6.safetensors" --prompt "The " -n 20 --seed 1 >"$out/sample.txt" 2>&1
"$bitgrad" export "$out/lmq6.safetensors" "$out/lmq.bgx" >"$out/lm-export.log" 2>&1
check "export of a ternary LM exits 0" test $? -eq 0
"$bitgrad" export "$out/lmq6.safetensors" "$out/lmq.gguf" --format gguf --type f16 >"$out/gguf.log" 2>&1
check "export --format gguf exits 0" test $? -eq 0 -a -s "$out/lmq.gguf"
check "and the file is GGUF v3" test "$(head -c 4 "$out/lmq.gguf")" = GGUF
"$bitgrad" export "$out/lmq6.safetensors" "$out/no.gguf" --format gguf --type tq2_0 >"$out/gguf-tq.log" 2>&1
check "a TQ type on widths that are not multiples of 256 exits 1, writing nothing" test $? -eq 1 -a ! -e "$out/no.gguf"
check "and says why" grep -q "TQ2_0 needs rows that are multiples of 256 elements" "$out/gguf-tq.log"
"$bitgrad" generate "$out/lmq.bgx" --prompt "The " -n 100 --temperature 0 >"$out/gen.txt" 2>"$out/gen.err"
check "generate exits 0 and continues the prompt past the context (a shift)" \
    test "$(head -c 4 "$out/gen.txt")" = "The " -a "$(wc -c <"$out/gen.txt")" -eq 105
check "and prints its speed" grep -q "^prefill [0-9]* tokens .* tokens/s); decode [0-9]* tokens .*; t2, " "$out/gen.err"
"$bitgrad" generate "$out/lmq.bgx" --prompt "$(head -c 40 "$out/text.txt")" >"$out/gen-long.log" 2>&1
check "generate refuses a prompt longer than the context" grep -q "the prompt is 40 bytes, longer than the context of 32" "$out/gen-long.log"
"$bitgrad" generate "$out/s.bgx" --prompt "x" >"$out/gen-mlp.log" 2>&1
check "generate refuses an MLP export" grep -q "not a language model (an export of a layer stack: use bg_infer_load)" "$out/gen-mlp.log"
check "lm sample exits 0 and continues the prompt" grep -q "^The " "$out/sample.txt"
"$bitgrad" lm sample "$out/lm6.safetensors" --prompt "$(head -c 40 "$out/text.txt")" -n 2 >"$out/long.log" 2>&1
check "a prompt longer than the context exits 1" test $? -eq 1
check "and says why" grep -q "the prompt is 40 tokens, longer than the context of 32" "$out/long.log"
head -c 50 "$out/text.txt" >"$out/short.txt"
"$bitgrad" lm train "${lmargs[@]}" --data "$out/short.txt" --out "$out/no.safetensors" >"$out/short.log" 2>&1
check "a text shorter than a window exits 1" test $? -eq 1
check "and says why" grep -q "shorter than one window of 33 (context 32 + 1)" "$out/short.log"
"$bitgrad" lm train "${lmargs[@]}" --data "$out/missing.txt" >"$out/missing-text.log" 2>&1
check "a missing text exits 1 naming it" grep -q "text: $out/missing.txt: no such file" "$out/missing-text.log"
"$bitgrad" lm train --d 30 --heads 4 >"$out/heads.log" 2>&1
check "a width that does not divide into the heads exits 2" test $? -eq 2
check "and says why" grep -q "d_model 30 does not divide into 4 heads" "$out/heads.log"

"$bitgrad" demo --epochs zero >"$out/usage.log" 2>&1
check "bad option exits 2" test $? -eq 2
check "and says why" grep -q "expected an integer" "$out/usage.log"
"$bitgrad" nosuchcommand >/dev/null 2>&1
check "unknown command exits 2" test $? -eq 2

# finetune on the user's own .npy arrays (written by Debian's numpy)
/usr/bin/python3 - "$out" <<'PY'
import sys
import numpy as np
r = np.random.default_rng(0)
y = r.integers(0, 10, 300)
x = (r.random((300, 784)) * 60).astype(np.uint8)
x[np.arange(300), y * 70] = 255
np.save(sys.argv[1] + "/x.npy", x)
np.save(sys.argv[1] + "/y.npy", y)
np.save(sys.argv[1] + "/vx.npy", x[:100].astype(np.float32) / 255)
np.save(sys.argv[1] + "/vy.npy", y[:100].astype(np.int32))
np.save(sys.argv[1] + "/y5.npy", y[:5])
PY
"$bitgrad" finetune "$out/demo/teacher.safetensors" --data "$out/x.npy" --labels "$out/y.npy" \
    --val-data "$out/vx.npy" --val-labels "$out/vy.npy" --epochs 1 --schedule none --threads 2 \
    --out "$out/ft-npy.safetensors" --log "$out/ft-npy.jsonl" >"$out/ft-npy.log" 2>&1
check "finetune --data x.npy --labels y.npy exits 0" test $? -eq 0
check "and says what it trains on" grep -q "300 training examples of 784 features, 10 classes, from $out/x.npy; evaluating on $out/vx.npy" "$out/ft-npy.log"
check "and saves the checkpoint" test -s "$out/ft-npy.safetensors"
"$bitgrad" finetune "$out/demo/teacher.safetensors" --data "$out/x.npy" --labels "$out/y5.npy" \
    --out "$out/ft-bad.safetensors" --log "$out/ft-bad.jsonl" >"$out/ft-bad.log" 2>&1
check "finetune with fewer labels than examples exits 1" test $? -eq 1
check "and says why" grep -q "dataset_from_npy: $out/x.npy has 300 examples but $out/y5.npy has 5 labels" "$out/ft-bad.log"
"$bitgrad" finetune "$out/demo/teacher.safetensors" --data "$out/x.npy" >"$out/ft-nolabels.log" 2>&1
check "finetune --data x.npy without --labels exits 2" test $? -eq 2

# Automatic precision on the demo's float teacher.
t="$out/demo/teacher.safetensors"
"$bitgrad" ptq "$t" --wspec int4 --gptq --calib 4 --threads 2 --out "$out/ptq.safetensors" >"$out/ptq.log" 2>&1
check "ptq --wspec int4 --gptq exits 0" test $? -eq 0
check "and prints the float and the quantized accuracy" grep -q "weights int4, activations float, GPTQ: test accuracy" "$out/ptq.log"
check "and saves the checkpoint" test -s "$out/ptq.safetensors"
"$bitgrad" ptq "$out/demo/student.safetensors" --wspec int4 --out "$out/ptq2.safetensors" >"$out/ptq-q.log" 2>&1
check "ptq of a quantized checkpoint exits 1" test $? -eq 1
check "and says why" grep -q "is already quantized; ptq starts from a float checkpoint" "$out/ptq-q.log"
# A budget of all-ternary and no accuracy drop allowed: the gate moves the
# most sensitive layers up, one per round, and stops.
"$bitgrad" autoquant "$t" --budget-kib 182 --max-drop 0 --steps 20 --rounds 8 --calib 4 --threads 2 \
    --out "$out/aq.safetensors" --export "$out/aq.bgx" --plots "$out/aqplots" >"$out/aq.log" 2>&1
check "autoquant exits 0" test $? -eq 0
check "autoquant prints the sensitivity table" grep -q "^sensitivity: calibration loss increase" "$out/aq.log"
check "and a choice within the budget" grep -Eq "^chosen under 182 KiB: 1[0-8][0-9]\.[0-9] KiB" "$out/aq.log"
check "and at least one gate round" grep -q "(gate: the most sensitive layer up one width" "$out/aq.log"
check "and stops (the drop is met or every layer is at 8 bits)" \
    grep -Eq "every layer is at 8 bits: the gate stops|drop -?[0-9.e-]+, allowed 0\)" "$out/aq.log"
check "and writes the export" test -s "$out/aq.bgx"
check "and the two figures" test -s "$out/aqplots/sensitivity.png" -a -s "$out/aqplots/rounds.png"
"$bitgrad" autoquant "$t" --budget-kib 10 --max-drop 1 --plots "$out/aqp2" >"$out/aq-small.log" 2>&1
check "autoquant under an impossible budget exits 1" test $? -eq 1
check "and says the smallest size" grep -q "is below the smallest choice" "$out/aq-small.log"

echo "$fails failed"
test "$fails" -eq 0
