// What a .tflite file says about itself, read in the page: its input and output tensors (type, shape,
// quantization) from the model flatbuffer, and its TFLite metadata (labels, input normalization, name,
// version, author, licence) from the TFLITE_METADATA buffer and the zip of label files appended to it.
//
// A flatbuffer table starts with a signed offset back to its vtable; the vtable lists, per field slot,
// the field's offset inside the table (0: absent). Slots below are the schemas' declaration order
// (schema.fbs for the model, metadata_schema.fbs for the metadata; a union takes two slots).

export class ModelProblem extends Error {}

const TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"};
const MODEL = {subgraphs: 2, buffers: 4, metadata: 6};
const SUBGRAPH = {tensors: 0, inputs: 1, outputs: 2};
const TENSOR = {shape: 0, type: 1, name: 3, quantization: 4};
const QUANTIZATION = {scale: 2, zeroPoint: 3};
const BUFFER = {data: 0};
const METADATA_ENTRY = {name: 0, buffer: 1};
// metadata_schema.fbs
const META = {name: 0, description: 1, version: 2, subgraphs: 3, author: 4, license: 5, minParserVersion: 7};
const META_SUBGRAPH = {inputs: 2, outputs: 3};
const META_TENSOR = {name: 0, description: 1, content: 3, processUnits: 4, associatedFiles: 6};
const CONTENT = {type: 0, properties: 1};
const IMAGE_PROPERTIES = {colorSpace: 0};
const PROCESS_UNIT = {type: 0, options: 1};
const NORMALIZATION = {mean: 0, std: 1};
const FILE = {name: 0, type: 2, locale: 3};
const COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"};
const TENSOR_AXIS_LABELS = 2;

class Flatbuffer {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  check(position, size) {
    if (position < 0 || position + size > this.bytes.length) throw new ModelProblem("the file is truncated or not a flatbuffer");
  }
  u8(p) { this.check(p, 1); return this.view.getUint8(p); }
  u16(p) { this.check(p, 2); return this.view.getUint16(p, true); }
  i32(p) { this.check(p, 4); return this.view.getInt32(p, true); }
  u32(p) { this.check(p, 4); return this.view.getUint32(p, true); }
  f32(p) { this.check(p, 4); return this.view.getFloat32(p, true); }
  i64(p) { this.check(p, 8); return Number(this.view.getBigInt64(p, true)); }
  root() { return this.u32(0); }
  field(table, slot) {  // absolute position of a field, or 0 when absent
    const vtable = table - this.i32(table);
    const entry = 4 + 2 * slot;
    if (entry >= this.u16(vtable)) return 0;
    const offset = this.u16(vtable + entry);
    return offset ? table + offset : 0;
  }
  follow(p) { return p + this.u32(p); }
  table(table, slot) { const p = this.field(table, slot); return p ? this.follow(p) : 0; }
  scalar(table, slot, read, fallback = 0) { const p = this.field(table, slot); return p ? read.call(this, p) : fallback; }
  string(table, slot) {
    const p = this.field(table, slot);
    if (!p) return null;
    const start = this.follow(p), length = this.u32(start);
    this.check(start + 4, length);
    return new TextDecoder().decode(this.bytes.subarray(start + 4, start + 4 + length));
  }
  vector(table, slot) {  // {start, length} of a vector's elements, or null
    const p = this.field(table, slot);
    if (!p) return null;
    const at = this.follow(p);
    return {start: at + 4, length: this.u32(at)};
  }
  tables(table, slot) {
    const v = table ? this.vector(table, slot) : null;
    return v ? Array.from({length: v.length}, (_, i) => this.follow(v.start + 4 * i)) : [];
  }
  numbers(table, slot, size, read) {
    const v = table ? this.vector(table, slot) : null;
    return v ? Array.from({length: v.length}, (_, i) => read.call(this, v.start + size * i)) : [];
  }
}

function tensorInfo(fb, tensors, index) {
  const t = fb.follow(tensors.start + 4 * index);
  const q = fb.table(t, TENSOR.quantization);
  const type = fb.scalar(t, TENSOR.type, Flatbuffer.prototype.u8);
  return {
    name: fb.string(t, TENSOR.name) || `#${index}`,
    dtype: TENSOR_TYPES[type] || `type ${type}`,
    shape: fb.numbers(t, TENSOR.shape, 4, Flatbuffer.prototype.i32),
    scale: q ? (fb.numbers(q, QUANTIZATION.scale, 4, Flatbuffer.prototype.f32)[0] ?? 0) : 0,
    zeroPoint: q ? (fb.numbers(q, QUANTIZATION.zeroPoint, 8, Flatbuffer.prototype.i64)[0] ?? 0) : 0,
  };
}

// The model's tensors and metadata: {inputs, outputs, metadata (null when it has none), files}.
export function readModel(bytes) {
  if (bytes.length < 8 || new TextDecoder().decode(bytes.subarray(4, 8)) !== "TFL3") {
    throw new ModelProblem("not a TFLite model (no TFL3 mark)");
  }
  const fb = new Flatbuffer(bytes);
  const model = fb.root();
  const [subgraph] = fb.tables(model, MODEL.subgraphs);
  if (!subgraph) throw new ModelProblem("the model has no graph");
  const tensors = fb.vector(subgraph, SUBGRAPH.tensors);
  const side = (slot) => fb.numbers(subgraph, slot, 4, Flatbuffer.prototype.i32).map((i) => tensorInfo(fb, tensors, i));
  const result = {inputs: side(SUBGRAPH.inputs), outputs: side(SUBGRAPH.outputs), metadata: null, files: {}};
  const buffers = fb.tables(model, MODEL.buffers);
  for (const entry of fb.tables(model, MODEL.metadata)) {
    if (fb.string(entry, METADATA_ENTRY.name) !== "TFLITE_METADATA") continue;
    const data = fb.vector(buffers[fb.scalar(entry, METADATA_ENTRY.buffer, Flatbuffer.prototype.u32)], BUFFER.data);
    if (!data) throw new ModelProblem("its TFLITE_METADATA buffer is empty");
    result.metadata = readMetadata(bytes.subarray(data.start, data.start + data.length));
  }
  result.files = zipFiles(bytes);
  return result;
}

function readMetadata(bytes) {
  if (new TextDecoder().decode(bytes.subarray(4, 8)) !== "M001") throw new ModelProblem("its metadata is not a TFLite metadata flatbuffer");
  const fb = new Flatbuffer(bytes);
  const root = fb.root();
  const [subgraph] = fb.tables(root, META.subgraphs);
  const tensor = (t) => {
    const content = fb.table(t, META_TENSOR.content);
    const kind = content ? fb.scalar(content, CONTENT.type, Flatbuffer.prototype.u8) : 0;
    const properties = content ? fb.table(content, CONTENT.properties) : 0;
    let mean = null, std = null;
    for (const unit of fb.tables(t, META_TENSOR.processUnits)) {
      if (fb.scalar(unit, PROCESS_UNIT.type, Flatbuffer.prototype.u8) !== 1) continue;  // NormalizationOptions
      const options = fb.table(unit, PROCESS_UNIT.options);
      mean = fb.numbers(options, NORMALIZATION.mean, 4, Flatbuffer.prototype.f32);
      std = fb.numbers(options, NORMALIZATION.std, 4, Flatbuffer.prototype.f32);
    }
    return {
      name: fb.string(t, META_TENSOR.name),
      description: fb.string(t, META_TENSOR.description),
      colorSpace: kind === 2 && properties ? COLOR_SPACES[fb.scalar(properties, IMAGE_PROPERTIES.colorSpace, Flatbuffer.prototype.u8)] : null,
      mean, std,
      files: fb.tables(t, META_TENSOR.associatedFiles).map((f) => ({
        name: fb.string(f, FILE.name), type: fb.scalar(f, FILE.type, Flatbuffer.prototype.u8), locale: fb.string(f, FILE.locale),
      })),
    };
  };
  return {
    name: fb.string(root, META.name),
    description: fb.string(root, META.description),
    version: fb.string(root, META.version),
    author: fb.string(root, META.author),
    license: fb.string(root, META.license),
    minParserVersion: fb.string(root, META.minParserVersion),
    inputs: subgraph ? fb.tables(subgraph, META_SUBGRAPH.inputs).map(tensor) : [],
    outputs: subgraph ? fb.tables(subgraph, META_SUBGRAPH.outputs).map(tensor) : [],
  };
}

// The stored (uncompressed) files of a zip appended to the model: name -> text. The end record gives
// the central directory; the zip may count its offsets from its own start or from the file's.
function zipFiles(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let end = -1;
  for (let p = bytes.length - 22; p >= Math.max(0, bytes.length - 22 - 65535); p--) {
    if (view.getUint32(p, true) === 0x06054b50) { end = p; break; }
  }
  if (end < 0) return {};
  const count = view.getUint16(end + 10, true), size = view.getUint32(end + 12, true), offset = view.getUint32(end + 16, true);
  const skew = end - size - offset;  // where the zip starts in the file, if its offsets count from itself
  const files = {};
  let p = end - size;
  for (let i = 0; i < count; i++) {
    if (view.getUint32(p, true) !== 0x02014b50) throw new ModelProblem("its appended zip of label files is damaged");
    const method = view.getUint16(p + 10, true), compressed = view.getUint32(p + 20, true);
    const nameLength = view.getUint16(p + 28, true), extra = view.getUint16(p + 30, true), comment = view.getUint16(p + 32, true);
    const local = view.getUint32(p + 42, true) + skew;
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLength));
    if (method === 0 && view.getUint32(local, true) === 0x04034b50) {
      const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
      files[name] = new TextDecoder().decode(bytes.subarray(start, start + compressed));
    }
    p += 46 + nameLength + extra + comment;
  }
  return files;
}

// What the page needs of a model, or a ModelProblem saying what is wrong with it:
// one (1, 28, 28, 1) input and one (1, 10) output (float32, int8 or uint8), metadata with 10 labels.
export function classifierInfo(bytes, {needMetadata = true} = {}) {
  const model = readModel(bytes);
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new ModelProblem(`expected 1 input and 1 output, found ${model.inputs.length} and ${model.outputs.length}`);
  }
  const [input] = model.inputs, [output] = model.outputs;
  const shape = (s) => `(${s.join(", ")})`;
  for (const [side, t, want] of [["input", input, [1, 28, 28, 1]], ["output", output, [1, 10]]]) {
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
      throw new ModelProblem(`its ${side} has shape ${shape(t.shape)}; this page takes models with a ${shape(want)} ${side}`);
    }
    if (!["float32", "int8", "uint8"].includes(t.dtype)) throw new ModelProblem(`its ${side} is ${t.dtype}; expected float32, int8 or uint8`);
    if (t.dtype !== "float32" && !(t.scale > 0)) throw new ModelProblem(`its ${side} is ${t.dtype} without a quantization scale`);
  }
  const info = {input, output, metadata: model.metadata, labels: null, displayNames: null};
  if (!model.metadata) {
    if (needMetadata) throw new ModelProblem("it has no TFLite metadata (labels, input normalization); export it with lenet-edge export");
    return info;
  }
  const files = model.metadata.outputs[0]?.files || [];
  const labels = files.find((f) => f.type === TENSOR_AXIS_LABELS && !f.locale);
  const display = files.find((f) => f.type === TENSOR_AXIS_LABELS && f.locale);
  const lines = (file) => (file && model.files[file.name] !== undefined ? model.files[file.name].split("\n").filter((l) => l.length) : null);
  info.labels = lines(labels);
  info.displayNames = lines(display);
  if (needMetadata && (!info.labels || info.labels.length !== 10)) {
    throw new ModelProblem("its metadata has no label file of 10 labels for the output");
  }
  return info;
}
