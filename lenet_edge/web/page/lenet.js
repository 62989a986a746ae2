// A lenet-edge classifier in LiteRT.js (@litertjs/core: LiteRT compiled to WebAssembly, XNNPACK kernels).
//
// LiteRT.js's Tensor class knows float32, int32 and uint8 only, and its loadAndCompile() refuses a model
// whose input or output is int8 ("Element type INT8 is not supported"). Its WebAssembly bindings take
// any element type, so this module loads, compiles and runs the model through them: one host-memory
// input buffer of the model's own type, filled in place; the output buffer read in place.
//
// An image becomes the model's input as in lenet_edge/runtimes/base.py: x = pixel / 255 for a float
// input; q = clamp(round(x / scale) + zero_point) for an integer one (with QAT's 1/255 and -128,
// q = pixel - 128), through a 256-entry table.

import {loadLiteRt, supportsFeature} from "./litert.js";
import {classifierInfo} from "./tflite.js";

const ELEMENT = {float32: 1, uint8: 3, int8: 9};  // litert::ElementType
const ARRAYS = {float32: Float32Array, uint8: Uint8Array, int8: Int8Array};

let runtime = null;

// Load the WebAssembly runtime once (the files beside this page): {wasm, environment, variant}.
export async function loadRuntime(directory = "./") {
  if (!runtime) {
    const liteRt = await loadLiteRt(directory);
    const relaxed = await supportsFeature("relaxedSimd");  // LiteRT.js loads its relaxed-SIMD build when true
    runtime = {
      liteRt,
      wasm: liteRt.liteRtWasm,
      environment: liteRt.getDefaultEnvironment(),
      variant: relaxed ? "litert_wasm_internal (relaxed SIMD)" : "litert_wasm_compat_internal (SIMD)",
      threads: liteRt.liteRtWasm.getThreadCount(),
    };
  }
  return runtime;
}

function inputTable(input) {  // pixel 0-255 -> the model's input value
  const table = new ARRAYS[input.dtype](256);
  for (let p = 0; p < 256; p++) {
    const x = Math.fround(p / 255);
    if (input.dtype === "float32") {
      table[p] = x;
    } else {
      const lo = input.dtype === "int8" ? -128 : 0, hi = input.dtype === "int8" ? 127 : 255;
      table[p] = Math.min(Math.max(roundEven(Math.fround(x / Math.fround(input.scale))) + input.zeroPoint, lo), hi);
    }
  }
  return table;
}

function roundEven(x) {  // numpy's rint: halves to even
  const f = Math.floor(x), d = x - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

export class Classifier {
  // `bytes`: the .tflite file; throws tflite.ModelProblem for a model the page cannot use.
  static async load(bytes, {needMetadata = true} = {}) {
    const info = classifierInfo(bytes, {needMetadata});
    const rt = await loadRuntime();
    return new Classifier(rt, bytes, info).ready();
  }

  constructor(rt, bytes, info) {
    const {wasm, environment} = rt;
    this.rt = rt;
    this.info = info;
    this.table = inputTable(info.input);
    this.pointer = wasm._malloc(bytes.byteLength);  // LiteRT reads the model in place: it stays allocated
    wasm.HEAPU8.set(bytes, this.pointer);
    this.model = wasm.loadModel(environment.liteRtEnvironment, this.pointer, bytes.byteLength);
    this.compiled = wasm.compileModel(environment.liteRtEnvironment, this.model, {
      environment, accelerator: "wasm", cpuOptions: {numThreads: 1}, gpuOptions: {}, webNNOptions: {},
    });
    const dims = new wasm.VectorInt32();
    for (const d of [1, 28, 28, 1]) dims.push_back(d);
    const layout = wasm.LiteRtLayout.create(dims);
    dims.delete();
    const type = wasm.LiteRtRankedTensorType.create({value: ELEMENT[info.input.dtype]}, layout);
    layout.delete();
    this.inputBytes = type.bytes();
    this.buffer = wasm.LiteRtTensorBuffer.createManaged(environment.liteRtEnvironment, wasm.LiteRtTensorBufferType.HOST_MEMORY, type, this.inputBytes);
    type.delete();
    this.outputArray = ARRAYS[info.output.dtype];
  }

  async ready() {  // compileModel may answer with a promise (JSPI builds)
    if (this.compiled instanceof Promise) this.compiled = await this.compiled;
    return this;
  }

  // Write one 28x28 uint8 image into the input buffer.
  setImage(image) {
    const {wasm} = this.rt;
    const at = this.buffer.lock(wasm.LiteRtTensorBufferLockMode.WRITE);
    const view = new this.table.constructor(wasm.HEAPU8.buffer, at, 784);
    for (let i = 0; i < 784; i++) view[i] = this.table[image[i]];
    this.buffer.unlock();
  }

  // Run the model on the image last set; the output buffer, to `read`.
  execute() {
    const outputs = this.compiled.run(0, [this.buffer]);
    if (!Array.isArray(outputs)) {  // an Emscripten vector
      const output = outputs.get(0);
      outputs.delete();
      return output;
    }
    return outputs[0];
  }

  // The raw output (a copy, in the output's own type); frees the output buffer.
  read(output) {
    const {wasm} = this.rt;
    const at = output.lock(wasm.LiteRtTensorBufferLockMode.READ);
    const raw = new this.outputArray(wasm.HEAPU8.buffer.slice(at, at + 10 * this.outputArray.BYTES_PER_ELEMENT));
    output.unlock();
    output.delete();
    return raw;
  }

  invoke() {
    return this.read(this.execute());
  }

  run(image) {
    this.setImage(image);
    return this.invoke();
  }

  // Float logits: the raw output, dequantized for an integer one.
  logits(raw) {
    const {output} = this.info;
    return Array.from(raw, (q) => (output.dtype === "float32" ? q : (q - output.zeroPoint) * output.scale));
  }

  // [[digit, probability], ...] best first (softmax over the logits; ties: the lower digit first).
  ranked(raw) {
    const logits = this.logits(raw);
    const top = Math.max(...logits);
    const e = logits.map((z) => Math.exp(z - top));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((v, d) => [d, v / sum]).sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  }

  delete() {
    const {wasm} = this.rt;
    this.buffer.delete();
    this.compiled.delete();
    this.model.delete();
    wasm._free(this.pointer);
  }
}

// argmax of a raw output: the first of equal maxima, as numpy's.
export function argmax(raw) {
  let best = 0;
  for (let i = 1; i < raw.length; i++) if (raw[i] > raw[best]) best = i;
  return best;
}
