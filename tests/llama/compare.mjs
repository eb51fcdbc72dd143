// compare.mjs — runs a GGUF written by bitgrad (bg_export_gguf) with
// llama.cpp through node-llama-cpp (its prebuilt CPU libraries; nothing is
// built or downloaded) and prints llama.cpp's next-token distribution after
// every position, for tests/test_gguf.c to compare with bitgrad's runtime.
//
//   node tests/llama/compare.mjs MODEL.gguf WINDOW ID,ID,... [f32-cache]
//
// The ids are evaluated in windows of WINDOW positions, each on an emptied
// context sequence (positions 0..WINDOW-1, as bitgrad's runtime after
// bg_lm_reset). The context holds 2 * WINDOW: node-llama-cpp makes room in
// a full context before its last token (a context shift: after 128 tokens
// in a context of 128, the sequence holds 64), so that position would see
// only part of the window. Output: "vocab V", then one line per position with the V
// probabilities in id order (temperature 1, top-k = V, no min-p / top-p:
// the full softmax of the logits), then "done". llama.cpp keeps keys and
// values in f16 by default; "f32-cache" keeps them in f32 (and turns flash
// attention off), to see the graph without that rounding.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, windowArg, idsArg, cacheArg] = process.argv.slice(2);
const window = Number(windowArg);
const ids = (idsArg ?? "").split(",").filter((s) => s.length).map(Number);
if (!modelPath || !(window > 0) || ids.length === 0 || ids.some((t) => !Number.isInteger(t) || t < 0) ||
    (cacheArg !== undefined && cacheArg !== "f32-cache")) {
    console.error("usage: node compare.mjs MODEL.gguf WINDOW ID,ID,... [f32-cache]");
    process.exit(2);
}

const llama = await getLlama({build: "never", gpu: false, logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const vocab = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
const f32Cache = cacheArg === "f32-cache" ?
    {experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", flashAttention: false} : {};
const context = await model.createContext({contextSize: 2 * window, batchSize: window, threads: 1, ...f32Cache});
const sequence = context.getSequence();
const sampling = {temperature: 1, topK: vocab, topP: 1, minP: 0};

const lines = [`vocab ${vocab}`];
for (let start = 0; start < ids.length; start += window) {
    await sequence.clearHistory();
    const chunk = ids.slice(start, start + window);
    const out = await sequence.controlledEvaluate(
        chunk.map((t) => [t, {generateNext: {probabilities: true, options: sampling}}]));
    for (let i = 0; i < chunk.length; i++) {
        const p = out[i]?.next?.probabilities;
        if (!p) throw new Error(`no probabilities for position ${start + i}`);
        const row = new Array(vocab).fill(0);
        for (const [t, v] of p) row[t] = v;
        lines.push(row.join(" "));
    }
}
lines.push("done");
process.stdout.write(lines.join("\n") + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
