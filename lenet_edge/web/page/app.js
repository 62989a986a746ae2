// The page: draw a digit (mouse, touch, pen) or drop an image or a .tflite model; the model runs here,
// through LiteRT.js, on the same 28x28 input `lenet-edge predict` would compute (preprocess.js), and the
// three likeliest digits show as you draw. The model's own metadata gives the labels; a model the page
// cannot use, a file that is not an image, a runtime that does not load: each is said in the page.
//
// window.lenet is the page's state for scripts and tests: {state: "loading" | "ready" | "error",
// result: {digit, label, persian, confidence, top: [[digit, p], ...]} | null, error, input (the 28x28
// image last classified), model (name, version, input dtype)}.

import {Classifier, loadRuntime} from "./lenet.js";
import {CANVAS, fromBlob, fromRgba} from "./preprocess.js";
import {ModelProblem} from "./tflite.js";

const STROKE = 20;  // px on the 280 px pad: a pen stroke about a tenth of the digit's height, as on paper

const $ = (id) => document.getElementById(id);
const pad = $("pad"), ink = pad.getContext("2d", {willReadFrequently: true});
const state = (window.lenet = {state: "loading", result: null, error: null, input: null, model: null});
let classifier = null, pending = false, drawing = null;

function showError(message) {
  state.error = message;
  $("error").textContent = message;
  $("error").hidden = !message;
}

// No model to run (none loaded, or none usable): the page says so instead of inviting a drawing.
function noModel(line) {
  state.state = "error";
  $("model-line").textContent = line;
  $("status").textContent = "Nothing can be read until a model is loaded: drop a .tflite model exported by lenet-edge.";
}

function clearPad() {
  ink.globalCompositeOperation = "source-over";
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
  state.result = null;
  state.input = null;
  $("top").replaceChildren();
  $("status").textContent = classifier ? "Draw a digit." : $("status").textContent;
  drawSeen(new Uint8Array(CANVAS * CANVAS));
}

function drawSeen(image) {
  const seen = $("seen").getContext("2d");
  const pixels = seen.createImageData(CANVAS, CANVAS);
  for (let i = 0; i < image.length; i++) {
    pixels.data.set([image[i], image[i], image[i], 255], 4 * i);
  }
  seen.putImageData(pixels, 0, 0);
}

function label(digit) {
  const info = classifier.info;
  return {latin: info.labels ? info.labels[digit] : String(digit), persian: info.displayNames ? info.displayNames[digit] : String(digit)};
}

// Classify the pixels of a canvas (opaque RGBA) and show the top three.
function classify(rgba, width, height) {
  show(fromRgba(rgba, width, height));
}

// Show what the model reads and, if it has ink, the three likeliest digits.
function show(input) {
  state.input = Array.from(input);
  drawSeen(input);
  if (!input.some((v) => v > 0)) {
    state.result = null;
    $("top").replaceChildren();
    $("status").textContent = "No ink yet: draw a digit.";
    return;
  }
  const ranked = classifier.ranked(classifier.run(input));
  const [digit, confidence] = ranked[0];
  state.result = {digit, label: label(digit).latin, persian: label(digit).persian, confidence, top: ranked.slice(0, 3)};
  $("top").replaceChildren(...ranked.slice(0, 3).map(([d, p]) => {
    const item = document.createElement("li");
    item.dataset.digit = d;
    const {latin, persian} = label(d);
    item.innerHTML = `<span class="fa" lang="fa"></span><span class="latin"></span><span class="bar"><i></i></span><span class="pct"></span>`;
    item.querySelector(".fa").textContent = persian;
    item.querySelector(".latin").textContent = latin;
    item.querySelector("i").style.width = `${(100 * p).toFixed(1)}%`;
    item.querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
    return item;
  }));
  $("status").textContent = `Read as ${label(digit).persian} (${label(digit).latin}), ${(100 * confidence).toFixed(1)}% sure.`;
}

function classifyPad() {
  if (!classifier || pending) return;
  pending = true;
  requestAnimationFrame(() => {  // at most once a frame while drawing
    pending = false;
    classify(ink.getImageData(0, 0, pad.width, pad.height).data, pad.width, pad.height);
  });
}

// --- drawing: pointer events cover mouse, touch and pen -------------------------------------------------

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  showError(null);
  drawing = {id: event.pointerId, last: point(event)};
  ink.fillStyle = "#fff";
  ink.beginPath();
  ink.arc(...drawing.last, STROKE / 2, 0, 2 * Math.PI);
  ink.fill();
  classifyPad();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing || event.pointerId !== drawing.id) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  ink.strokeStyle = "#fff";
  ink.lineWidth = STROKE;
  ink.lineCap = ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(...drawing.last);
  for (const e of events.length ? events : [event]) {
    drawing.last = point(e);
    ink.lineTo(...drawing.last);
  }
  ink.stroke();
  classifyPad();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, (event) => {
    if (drawing && event.pointerId === drawing.id) {
      drawing = null;
      classifyPad();
    }
  });
}
$("clear").addEventListener("click", clearPad);

// --- files: images and models, dropped or opened --------------------------------------------------------

async function openFile(file) {
  showError(null);
  const head = new Uint8Array(await file.slice(0, 8).arrayBuffer());
  const tflite = head.length === 8 && String.fromCharCode(...head.subarray(4, 8)) === "TFL3";
  if (tflite || file.name.toLowerCase().endsWith(".tflite")) {
    await useModel(new Uint8Array(await file.arrayBuffer()), file.name);
    return;
  }
  let image;
  try {
    image = await fromBlob(file, file.name);
  } catch (e) {
    showError(e.message + ".");
    return;
  }
  const {bitmap} = image;
  if (classifier) show(image.input);
  // the pad shows the image, letterboxed
  clearPadKeepResult();
  const s = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
  ink.drawImage(bitmap, (pad.width - bitmap.width * s) / 2, (pad.height - bitmap.height * s) / 2, bitmap.width * s, bitmap.height * s);
  bitmap.close();
}

function clearPadKeepResult() {
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
}

$("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) openFile(file).catch((e) => showError(`${file.name}: ${e.message}`));
  event.target.value = "";
});
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const [file] = event.dataTransfer.files;
  if (!file) {
    showError("Nothing to read in what was dropped: drop an image file of a digit, or a .tflite model.");
    return;
  }
  openFile(file).catch((e) => showError(`${file.name}: ${e.message}`));
});

// --- the model ----------------------------------------------------------------------------------------

async function useModel(bytes, name) {
  let loaded;
  try {
    loaded = await Classifier.load(bytes);
  } catch (e) {
    const why = e instanceof ModelProblem ? e.message : `LiteRT.js cannot run it (${e.message})`;
    showError(`${name}: ${why}.${classifier ? " The previous model stays in use." : ""}`);
    if (!classifier) noModel("No usable model.");
    return;
  }
  if (classifier) classifier.delete();
  classifier = loaded;
  const meta = classifier.info.metadata;
  state.model = {file: name, name: meta.name, version: meta.version, input: classifier.info.input.dtype};
  $("model-line").textContent = `${meta.name || name}${meta.version ? `, version ${meta.version}` : ""}: ${classifier.info.input.dtype} input, ${name}.`;
  const about = $("about-list");
  about.replaceChildren();
  for (const [term, value] of [["Model", meta.description], ["Author", meta.author], ["Licence", meta.license],
    ["Input", meta.inputs[0]?.description], ["Output", meta.outputs[0]?.description]]) {
    if (!value) continue;
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    about.append(dt, dd);
  }
  $("about").hidden = false;
  state.state = "ready";
  if (state.input) classifyPad();
  else $("status").textContent = "Draw a digit.";
}

async function start() {
  clearPad();
  const url = new URLSearchParams(location.search).get("model") || "model.tflite";
  try {
    const runtime = await loadRuntime("./");
    $("runtime-line").textContent = `Runs offline in this page: LiteRT.js, ${runtime.variant}, ${runtime.threads} thread. Nothing is uploaded.`;
  } catch (e) {
    noModel("The runtime did not load.");
    showError(`LiteRT.js did not load (${e.message}). Serve this folder over HTTP (lenet-edge serve-web RUN), not from file://.`);
    return;
  }
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    response = null;
  }
  if (!response || !response.ok) {
    noModel("No model loaded.");
    showError(`${url}: cannot be fetched (${response ? response.status + " " + response.statusText : "network error"}); drop a .tflite model on the page.`);
    return;
  }
  await useModel(new Uint8Array(await response.arrayBuffer()), url.split("/").pop());
}

start();
