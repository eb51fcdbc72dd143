#!/usr/bin/env node
// run_model.js — runs an ONNX file with onnxruntime-node (a runtime that is
// not bitgrad's) on one input and writes the first output, for
// tests/test_onnx.c.
//
//   node tests/onnx/run_model.js MODEL.onnx INPUT OUT.bin
//
// INPUT is either a raw little-endian float32 file followed by its dims
// ("x.bin:256,784"), or a .json file {"dims": [256, 784], "data": [...]}.
// The model's first input gets it. OUT.bin receives the first output as raw
// little-endian float32; stdout gets one JSON line {"output", "dims"}.
// graphOptimizationLevel 'basic' keeps ORT from fusing QDQ pairs into
// integer kernels, so the numbers are the graph's own float arithmetic.
// Exit status: 0 on success, 2 on bad arguments, 1 on any other failure
// (including onnxruntime-node missing: run scripts/install-deps.sh).
'use strict';

const fs = require('fs');
const path = require('path');

function fail(code, msg) {
  process.stderr.write(`run_model.js: ${msg}\n`);
  process.exit(code);
}

function readInput(spec) {
  if (spec.endsWith('.json')) {
    const j = JSON.parse(fs.readFileSync(spec, 'utf8'));
    if (!Array.isArray(j.dims) || !Array.isArray(j.data)) fail(2, `${spec}: needs "dims" and "data" arrays`);
    return { dims: j.dims.map(Number), data: Float32Array.from(j.data) };
  }
  const colon = spec.lastIndexOf(':');
  if (colon < 0) fail(2, `input must be FILE.json or FILE.bin:D0,D1,...: ${spec}`);
  const file = spec.slice(0, colon);
  const dims = spec.slice(colon + 1).split(',').map(Number);
  if (dims.some((d) => !Number.isInteger(d) || d <= 0)) fail(2, `bad dims in ${spec}`);
  const buf = fs.readFileSync(file);
  const n = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== 4 * n) fail(2, `${file} holds ${buf.length} bytes, dims [${dims}] need ${4 * n}`);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = buf.readFloatLE(4 * i);
  return { dims, data };
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 3) fail(2, 'usage: node run_model.js MODEL.onnx INPUT(.json | .bin:DIMS) OUT.bin');
  const [modelPath, inputSpec, outPath] = args;
  let ort;
  try {
    ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));
  } catch (e) {
    fail(1, `onnxruntime-node is not installed in ${__dirname}/node_modules (run scripts/install-deps.sh): ${e.message}`);
  }
  const input = readInput(inputSpec);
  const session = await ort.InferenceSession.create(modelPath, {
    graphOptimizationLevel: 'basic',
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
  });
  const feeds = {};
  feeds[session.inputNames[0]] = new ort.Tensor('float32', input.data, input.dims);
  const results = await session.run(feeds);
  const name = session.outputNames[0];
  const out = results[name];
  if (out.type !== 'float32') fail(1, `output ${name} is ${out.type}, expected float32`);
  const buf = Buffer.alloc(4 * out.data.length);
  for (let i = 0; i < out.data.length; i++) buf.writeFloatLE(out.data[i], 4 * i);
  fs.writeFileSync(outPath, buf);
  process.stdout.write(JSON.stringify({ output: name, dims: out.dims }) + '\n');
}

main().catch((e) => fail(1, e && e.message ? e.message : String(e)));
