// `lenet-edge bench --on browser`, in the page: the run's models in LiteRT.js on the split's images,
// measured as lenet_edge/harness.py measures on the host: the raw outputs of every image (accuracy and
// agreement are computed from them by the caller), then interleaved timing rounds, each running every
// model once on image (round mod n) in an order rotated every round, after warm-up rounds.
//
// One image end to end = uint8 -> the model's input by a 256-entry table, written into the input buffer;
// run; the output read; argmax. "invoke" is the run alone. performance.now() in a cross-origin isolated
// page (5 us steps in Chromium; the resolution found is returned).

import {Classifier, argmax, loadRuntime} from "./lenet.js";

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function timerResolution() {  // the smallest step performance.now() takes here, in microseconds
  let smallest = Infinity;
  for (let i = 0; i < 200; i++) {
    const a = performance.now();
    let b = performance.now();
    while (b === a) b = performance.now();
    smallest = Math.min(smallest, b - a);
  }
  return smallest * 1000;
}

// job: {models: [{name, url}], images: url of n*784 uint8, n, runs, warmup}
window.runBench = async (job) => {
  const runtime = await loadRuntime("./");
  const images = new Uint8Array(await (await fetch(job.images)).arrayBuffer());
  if (images.length !== job.n * 784) throw new Error(`expected ${job.n * 784} image bytes, got ${images.length}`);
  const image = (i) => images.subarray(i * 784, (i + 1) * 784);
  const models = {}, results = {};
  for (const {name, url} of job.models) {
    try {
      const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
      const t0 = performance.now();
      models[name] = await Classifier.load(bytes, {needMetadata: false});
      const loadMs = performance.now() - t0;
      const {input, output} = models[name].info;
      results[name] = {load_ms: loadMs, input, output, has_metadata: Boolean(models[name].info.metadata)};
    } catch (e) {
      results[name] = {error: `${e.constructor.name}: ${e.message}`};
    }
  }
  const names = Object.keys(models);
  document.getElementById("status").textContent = `accuracy on ${job.n} images`;
  for (const name of names) {
    const model = models[name];
    const raw = new model.outputArray(job.n * 10);
    try {
      for (let i = 0; i < job.n; i++) raw.set(model.run(image(i)), i * 10);
      results[name].raw = toBase64(new Uint8Array(raw.buffer));
      results[name].raw_dtype = model.info.output.dtype;
    } catch (e) {
      results[name] = {error: `${e.constructor.name}: ${e.message}`};
      delete models[name];
    }
  }
  const live = names.filter((name) => models[name]);
  document.getElementById("status").textContent = `latency: ${job.warmup} + ${job.runs} interleaved rounds`;
  const latency = Object.fromEntries(live.map((n) => [n, new Float64Array(job.runs)]));
  const invoke = Object.fromEntries(live.map((n) => [n, new Float64Array(job.runs)]));
  let sink = 0;
  for (let r = 0; r < job.warmup + job.runs; r++) {
    const shift = r % live.length;
    const order = live.slice(shift).concat(live.slice(0, shift));
    const img = image(r % job.n);
    for (const name of order) {
      const model = models[name];
      const t0 = performance.now();
      model.setImage(img);
      const t1 = performance.now();
      const out = model.execute();
      const t2 = performance.now();
      sink += argmax(model.read(out));
      const t3 = performance.now();
      if (r >= job.warmup) {
        latency[name][r - job.warmup] = (t3 - t0) * 1000;
        invoke[name][r - job.warmup] = (t2 - t1) * 1000;
      }
    }
  }
  for (const name of live) {
    results[name].latency_us = Array.from(latency[name]);
    results[name].invoke_us = Array.from(invoke[name]);
    models[name].delete();
  }
  document.getElementById("status").textContent = "done";
  return {
    models: results,
    runtime: {variant: runtime.variant, threads: runtime.threads},
    timer: {name: "performance.now", resolution_us: timerResolution(), cross_origin_isolated: self.crossOriginIsolated},
    user_agent: navigator.userAgent,
    checksum: sink,
  };
};
window.benchReady = true;
document.getElementById("status").textContent = "ready";
