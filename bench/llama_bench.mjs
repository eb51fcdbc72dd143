// llama_bench.mjs — llama.cpp's speed on a GGUF (through node-llama-cpp,
// its prebuilt CPU libraries, from tests/llama/node_modules) for
// bench/lm_infer.c: prefill tokens/s for PREFILL tokens and decode
// tokens/s for DECODE greedy tokens after a 16-token prompt, ROUNDS times.
//
//   node bench/llama_bench.mjs MODEL.gguf THREADS PREFILL DECODE ROUNDS
//
// One unprinted warm-up round first, then one line per round:
// "round R prefill TOKENS_PER_S decode TOKENS_PER_S".
import {createRequire} from "node:module";
import {fileURLToPath} from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "tests", "llama", "package.json"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));

const [modelPath, threadsArg, prefillArg, decodeArg, roundsArg] = process.argv.slice(2);
const [threads, prefill, decode, rounds] = [threadsArg, prefillArg, decodeArg, roundsArg].map(Number);
if (!modelPath || !(threads > 0) || !(prefill > 0) || !(decode > 0) || !(rounds > 0)) {
    console.error("usage: node llama_bench.mjs MODEL.gguf THREADS PREFILL DECODE ROUNDS");
    process.exit(2);
}
const llama = await getLlama({build: "never", gpu: false, logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const context = await model.createContext({contextSize: 2 * (prefill + decode + 16), batchSize: prefill, threads});
const sequence = context.getSequence();
const text = "In the beginning God created the heaven ";
const ids = Array.from({length: prefill + 16}, (_, i) => text.charCodeAt(i % text.length));

for (let r = -1; r < rounds; r++) {
    await sequence.clearHistory();
    let t0 = performance.now();
    await sequence.evaluateWithoutGeneratingNewTokens(ids.slice(0, prefill));
    const prefillS = (performance.now() - t0) / 1e3;
    await sequence.clearHistory();
    await sequence.evaluateWithoutGeneratingNewTokens(ids.slice(0, 15));
    // Each token yielded after the first costs one decode of one position.
    let n = 0;
    t0 = performance.now();
    for await (const token of sequence.evaluate([ids[15]], {temperature: 0})) {
        void token;
        if (++n === 1) t0 = performance.now();
        if (n === decode + 1) break;
    }
    const decodeS = (performance.now() - t0) / 1e3;
    if (r >= 0) console.log(`round ${r} prefill ${(prefill / prefillS).toFixed(1)} decode ${(decode / decodeS).toFixed(1)}`);
}
await context.dispose();
await model.dispose();
await llama.dispose();
