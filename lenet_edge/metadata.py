"""TFLite metadata: what a .tflite file says about itself to the apps that load it.

`export` embeds it in every model it writes, so an Android, iOS or web
developer (MediaPipe Tasks, LiteRT's code generators, this project's web
page) reads the labels and the input contract from the file instead of
copying them by hand:

- the model: name, description (architecture, training data, precision),
  version, author and licence;
- the input: a 28x28 grayscale image, white ink on black, how a photo
  becomes it (`preprocess.CONTRACT`), how a pixel becomes the model's value
  (`NormalizationOptions` mean 0, std 255: x = pixel / 255, then the input
  tensor's own quantization: q = pixel - 128 for the int8 model);
- the output: scores for the digits 0-9, with two label files packed in the
  model: `labels.txt` (0-9, the category names) and `labels_fa.txt`
  (۰-۹, display names for locale "fa").

The writer is this module, on the published metadata schema
(`metadata_schema.fbs`, the one MediaPipe and the TFLite Support library
read) encoded with the `flatbuffers` runtime TensorFlow already depends on,
so exporting needs nothing that MediaPipe's own writer would bring (its
package replaces OpenCV's; see README). Only fields of schema 1.0.0 are
written (`min_parser_version` "1.0.0"), so every metadata reader takes it.
The model itself is rewritten through LiteRT's generated schema classes, the
way MediaPipe's populator does it, except that constant buffers stay 16-byte
aligned as the schema asks (its generated Python code drops that). The
label files follow as a zip archive appended to the flatbuffer, as the
format specifies.

Metadata changes no arithmetic: the ops, tensors and weights are the same,
and `export` checks that the model gives the same raw outputs before and
after (tests do it on every test digit, and in TFLM).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from flatbuffers.table import Table

from .errors import ModelError
from .manifest import PERSIAN_DIGITS

METADATA_NAME = "TFLITE_METADATA"  # the model's metadata entry that holds the ModelMetadata flatbuffer
IDENTIFIER = b"M001"  # the metadata flatbuffer's file identifier
TFLITE_IDENTIFIER = b"TFL3"
PARSER_VERSION = "1.0.0"  # every field written here is in metadata schema 1.0.0
LABELS_FILE = "labels.txt"
DISPLAY_NAMES_FILE = "labels_fa.txt"
DISPLAY_LOCALE = "fa"
LABELS = [str(digit) for digit in range(10)]
DISPLAY_NAMES = list(PERSIAN_DIGITS)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a fixed date in the appended zip: the same model gives the same bytes

# metadata_schema.fbs, as numbers: field slots in declaration order (a union takes two: type, then value)
_MODEL = {"name": 0, "description": 1, "version": 2, "subgraph_metadata": 3, "author": 4, "license": 5,
          "associated_files": 6, "min_parser_version": 7}  # fmt: skip
_SUBGRAPH = {"name": 0, "description": 1, "input_tensor_metadata": 2, "output_tensor_metadata": 3}
_TENSOR = {"name": 0, "description": 1, "dimension_names": 2, "content": 3, "process_units": 4, "stats": 5,
           "associated_files": 6}  # fmt: skip
_CONTENT = {"content_properties_type": 0, "content_properties": 1}
_IMAGE_PROPERTIES = {"color_space": 0, "default_size": 1}
_IMAGE_SIZE = {"width": 0, "height": 1}
_PROCESS_UNIT = {"options_type": 0, "options": 1}
_NORMALIZATION = {"mean": 0, "std": 1}
_STATS = {"max": 0, "min": 1}
_FILE = {"name": 0, "description": 1, "type": 2, "locale": 3}
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2  # ContentProperties union: FeatureProperties, ImageProperties
COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}
OPTIONS_NORMALIZATION = 1  # ProcessUnitOptions union: NormalizationOptions
TENSOR_AXIS_LABELS = 2  # AssociatedFileType


@dataclass(frozen=True)
class ModelCard:
    """The words the metadata carries about a model (the tensors' parts come from the model itself)."""

    name: str
    description: str
    version: str
    author: str
    license: str


@dataclass(frozen=True)
class TensorInfo:
    """One input or output as the metadata describes it."""

    name: str
    description: str
    kind: str = "feature"  # "image" or "feature"
    color_space: str = "GRAYSCALE"
    size: tuple[int, int] = (28, 28)  # width, height of an image
    mean: float | None = None  # NormalizationOptions: x = (value - mean) / std
    std: float | None = None
    stats: tuple[float, float] | None = None  # (min, max) of the tensor's values
    labels: bool = False  # attach labels.txt and labels_fa.txt


# --- writing --------------------------------------------------------------------------------------


def metadata_buffer(card: ModelCard, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> bytes:
    """The ModelMetadata flatbuffer (identifier "M001") for one subgraph with these tensors."""
    b = flatbuffers.Builder(1024)

    def string(text: str | None) -> int | None:
        return None if text is None else b.CreateString(text)

    def table(slots: Mapping[str, int], fields: dict[str, tuple[str, Any]]) -> int:
        """A table from {field: (kind, value)}; offsets and strings must already be in the builder."""
        b.StartObject(max(slots.values()) + 1)
        for field, (kind, value) in fields.items():
            if value is None:
                continue
            slot = slots[field]
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "byte":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "uint":
                b.PrependUint32Slot(slot, value, 0)
        return b.EndObject()

    def tables(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    def floats(values: list[float]) -> int:
        return b.CreateNumpyVector(np.asarray(values, "<f4"))

    def label_files() -> int:
        files = []
        for name, description, locale in (
            (LABELS_FILE, "The digits 0-9, one per line: the category names, in output order.", None),
            (DISPLAY_NAMES_FILE, "The same digits in Persian script (۰-۹): display names.", DISPLAY_LOCALE),
        ):
            fields = {"name": string(name), "description": string(description), "locale": string(locale)}
            files.append(
                table(_FILE, {k: ("offset", v) for k, v in fields.items()} | {"type": ("byte", TENSOR_AXIS_LABELS)})
            )
        return tables(files)

    def tensor(info: TensorInfo) -> int:
        name, description = string(info.name), string(info.description)
        if info.kind == "image":
            size = table(_IMAGE_SIZE, {"width": ("uint", info.size[0]), "height": ("uint", info.size[1])})
            props = table(
                _IMAGE_PROPERTIES,
                {"color_space": ("byte", COLOR_SPACES[info.color_space]), "default_size": ("offset", size)},
            )
            content_type = CONTENT_IMAGE
        else:
            b.StartObject(0)  # FeatureProperties has no fields
            props = b.EndObject()
            content_type = CONTENT_FEATURE
        content = table(
            _CONTENT, {"content_properties_type": ("byte", content_type), "content_properties": ("offset", props)}
        )
        units = None
        if info.mean is not None:
            mean, std = floats([info.mean]), floats([info.std])
            normalization = table(_NORMALIZATION, {"mean": ("offset", mean), "std": ("offset", std)})
            units = tables(
                [
                    table(
                        _PROCESS_UNIT,
                        {"options_type": ("byte", OPTIONS_NORMALIZATION), "options": ("offset", normalization)},
                    )
                ]
            )
        stats = None
        if info.stats is not None:
            low, high = floats([info.stats[0]]), floats([info.stats[1]])
            stats = table(_STATS, {"max": ("offset", high), "min": ("offset", low)})
        files = label_files() if info.labels else None
        return table(
            _TENSOR,
            {
                "name": ("offset", name),
                "description": ("offset", description),
                "content": ("offset", content),
                "process_units": ("offset", units),
                "stats": ("offset", stats),
                "associated_files": ("offset", files),
            },
        )

    input_vector = tables([tensor(info) for info in inputs])
    output_vector = tables([tensor(info) for info in outputs])
    subgraph = table(
        _SUBGRAPH,
        {
            "name": ("offset", string(card.name)),
            "input_tensor_metadata": ("offset", input_vector),
            "output_tensor_metadata": ("offset", output_vector),
        },
    )
    fields = {key: string(getattr(card, key)) for key in ("name", "description", "version", "author", "license")}
    root = table(
        _MODEL,
        {
            **{key: ("offset", value) for key, value in fields.items()},
            "subgraph_metadata": ("offset", tables([subgraph])),
            "min_parser_version": ("offset", string(PARSER_VERSION)),
        },
    )
    b.Finish(root, file_identifier=IDENTIFIER)
    return bytes(b.Output())


def embed(model: bytes, metadata: bytes, files: Mapping[str, bytes]) -> bytes:
    """`model` with `metadata` as its TFLITE_METADATA entry (replacing one it had) and `files` zipped after it.

    The model is unpacked and packed again with LiteRT's schema classes (ops,
    tensors and weights unchanged); every constant buffer stays 16-byte aligned.

    Raises:
        ModelError: `model` is not a TFLite flatbuffer.
    """
    from .compat import tflite_schema

    schema = tflite_schema()
    _check_tflite(model)
    graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))  # an appended zip is left behind
    entry = next((m for m in graph.metadata or [] if m.name.decode() == METADATA_NAME), None)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    if entry is None:
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(graph.buffers)
        graph.buffers.append(buffer)
        graph.metadata = [*(graph.metadata or []), entry]
    else:
        graph.buffers[entry.buffer] = buffer
    packed = io.BytesIO(pack_model(schema, graph))
    packed.seek(0, io.SEEK_END)
    # Appended the way the format and MediaPipe's populator do it: a stored (uncompressed) zip after the flatbuffer.
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, ZIP_TIME), data)
    return packed.getvalue()


def pack_model(schema, graph) -> bytes:
    """A model object (`schema.ModelT`) as .tflite bytes, every constant buffer 16-byte aligned."""
    graph.buffers = [_aligned(schema, b) for b in graph.buffers]
    size = sum(0 if b.data is None else len(b.data) for b in graph.buffers)
    builder = flatbuffers.Builder(size + (1 << 16))
    builder.Finish(graph.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _check_tflite(model: bytes) -> None:
    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"<{len(model)}-byte model>: not a TFLite flatbuffer (no {TFLITE_IDENTIFIER.decode()} mark)")


def _aligned(schema, buffer):
    """A copy of a BufferT whose data packs 16-byte aligned (`force_align: 16` in the schema)."""

    class AlignedBuffer(schema.BufferT):
        def Pack(self, builder):
            data = None
            if self.data is not None:
                payload = np.asarray(self.data, np.uint8).tobytes()
                builder.StartVector(1, len(payload), 16)
                builder.head -= len(payload)
                builder.Bytes[builder.head : builder.head + len(payload)] = payload
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    copy = AlignedBuffer()
    copy.data, copy.offset, copy.size = buffer.data, buffer.offset, buffer.size
    return copy


# --- reading --------------------------------------------------------------------------------------


def read_metadata(model: bytes) -> dict | None:
    """The metadata of a model (its bytes) as a dict, or None when it has none.

    `{name, description, version, author, license, min_parser_version,
    inputs: [tensor], outputs: [tensor], files: {name: text}}`, each tensor
    `{name, description, content ("image" | "feature"), color_space, size,
    mean, std, stats, associated_files: [{name, description, type, locale}]}`.

    Raises:
        ModelError: the metadata entry is there but is not a metadata flatbuffer.
    """
    from .compat import tflite_schema

    schema = tflite_schema()
    _check_tflite(model)
    graph = schema.Model.GetRootAsModel(model, 0)
    for i in range(graph.MetadataLength()):
        entry = graph.Metadata(i)
        if entry.Name().decode() == METADATA_NAME:
            data = graph.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            break
    else:
        return None
    if data[4:8] != IDENTIFIER:
        raise ModelError(f"the {METADATA_NAME} entry is not a metadata flatbuffer (no {IDENTIFIER.decode()} mark)")
    root = Table(data, int.from_bytes(data[:4], "little"))
    result = {
        key: _string(root, slot) for key, slot in _MODEL.items() if key not in ("subgraph_metadata", "associated_files")
    }
    subgraphs = _tables(root, _MODEL["subgraph_metadata"])
    subgraph = subgraphs[0] if subgraphs else None
    result["inputs"] = [_tensor(t) for t in _tables(subgraph, _SUBGRAPH["input_tensor_metadata"])] if subgraph else []
    result["outputs"] = [_tensor(t) for t in _tables(subgraph, _SUBGRAPH["output_tensor_metadata"])] if subgraph else []
    result["files"] = associated_files(model)
    return result


def associated_files(model: bytes) -> dict[str, str]:
    """The files packed after the flatbuffer: name -> text (UTF-8)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            return {info.filename: archive.read(info).decode("utf-8") for info in archive.infolist()}
    except zipfile.BadZipFile:
        return {}


def _field(table: Table, slot: int) -> int:
    return table.Offset(4 + 2 * slot)


def _string(table: Table, slot: int) -> str | None:
    offset = _field(table, slot)
    return table.String(table.Pos + offset).decode("utf-8") if offset else None


def _scalar(table: Table, slot: int, flags, default=0):
    offset = _field(table, slot)
    return table.Get(flags, table.Pos + offset) if offset else default


def _child(table: Table, slot: int) -> Table | None:
    offset = _field(table, slot)
    return Table(table.Bytes, table.Indirect(table.Pos + offset)) if offset else None


def _tables(table: Table | None, slot: int) -> list[Table]:
    offset = _field(table, slot) if table is not None else 0
    if not offset:
        return []
    start, count = table.Vector(offset), table.VectorLen(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(count)]


def _floats(table: Table | None, slot: int) -> list[float] | None:
    offset = _field(table, slot) if table is not None else 0
    if not offset:
        return None
    return [float(v) for v in table.GetVectorAsNumpy(flatbuffers.number_types.Float32Flags, offset)]


def _tensor(t: Table) -> dict:
    content = _child(t, _TENSOR["content"])
    kind = _scalar(content, _CONTENT["content_properties_type"], flatbuffers.number_types.Uint8Flags) if content else 0
    properties = _child(content, _CONTENT["content_properties"]) if content else None
    info: dict[str, Any] = {
        "name": _string(t, _TENSOR["name"]),
        "description": _string(t, _TENSOR["description"]),
        "content": {CONTENT_IMAGE: "image", CONTENT_FEATURE: "feature"}.get(kind),
        "color_space": None,
        "size": None,
        "mean": None,
        "std": None,
        "stats": None,
    }
    if kind == CONTENT_IMAGE and properties is not None:
        space = _scalar(properties, _IMAGE_PROPERTIES["color_space"], flatbuffers.number_types.Uint8Flags)
        info["color_space"] = {v: k for k, v in COLOR_SPACES.items()}.get(space, "UNKNOWN")
        size = _child(properties, _IMAGE_PROPERTIES["default_size"])
        if size is not None:
            uint = flatbuffers.number_types.Uint32Flags
            info["size"] = [_scalar(size, _IMAGE_SIZE["width"], uint), _scalar(size, _IMAGE_SIZE["height"], uint)]
    for unit in _tables(t, _TENSOR["process_units"]):
        if _scalar(unit, _PROCESS_UNIT["options_type"], flatbuffers.number_types.Uint8Flags) == OPTIONS_NORMALIZATION:
            options = _child(unit, _PROCESS_UNIT["options"])
            info["mean"], info["std"] = (
                _floats(options, _NORMALIZATION["mean"]),
                _floats(options, _NORMALIZATION["std"]),
            )
    stats = _child(t, _TENSOR["stats"])
    if stats is not None:
        info["stats"] = {"min": _floats(stats, _STATS["min"]), "max": _floats(stats, _STATS["max"])}
    info["associated_files"] = [
        {
            "name": _string(f, _FILE["name"]),
            "description": _string(f, _FILE["description"]),
            "type": _scalar(f, _FILE["type"], flatbuffers.number_types.Int8Flags),
            "locale": _string(f, _FILE["locale"]),
        }
        for f in _tables(t, _TENSOR["associated_files"])
    ]
    return info


# --- what export writes -----------------------------------------------------------------------------

PRECISIONS = {  # manifest key of a model -> how its description names its arithmetic
    "float32_tflite": "float32",
    "int8_tflite": "full-integer int8 (quantization-aware training)",
    "int8_ptq_tflite": "full-integer int8 (post-training quantization)",
    "int8_mediapipe_tflite": "full-integer int8 (quantization-aware training), uint8 RGB in, float probabilities out",
    "mixed_tflite": "mixed float32/int8 (the first layers float32, the rest int8 from quantization-aware training)",
}
HODA_LICENSE = (
    "Trained on the Hoda dataset (Khosravi & Kabir, 2007), which is free for research and non-commercial use "
    "only; the same terms apply to these weights."
)
SYNTHETIC_LICENSE = "Trained only on lenet-edge's procedural synthetic digits: no dataset licence applies."


def default_license(data: Mapping) -> str:
    """The licence a run's weights carry, from the training data recorded in its manifest."""
    if data.get("kind") == "cdb" or "hoda" in str(data.get("source", "")).lower():
        return HODA_LICENSE
    if str(data.get("source", "")).startswith("synthetic"):
        return SYNTHETIC_LICENSE
    return f"Trained on {_data_name(data)}: the licence of that data applies to these weights."


def _data_name(data: Mapping) -> str:
    source = str(data.get("source", "unknown data"))
    return source if source.startswith("synthetic") else f"{data.get('kind', 'a')} dataset {Path(source).name!r}"


def model_card(manifest: Mapping, key: str, *, author: str, license: str | None, weights_sha256: str) -> ModelCard:
    """The model-level words of a run's model: what it is, from what data, which version, whose, under what terms."""
    from . import __version__

    arch = manifest.get("config", {}).get("arch", "lenet5")
    data = manifest.get("data", {})
    sizes = data.get("split_sizes", {})
    return ModelCard(
        name=f"LeNet-5 Persian digits ({PRECISIONS.get(key, key).split(' (')[0]})",
        description=(
            f"LeNet-5 ({arch}) reading one handwritten Persian digit (۰-۹), {PRECISIONS.get(key, key)}; "
            f"trained with lenet-edge on {_data_name(data)} ({sizes.get('train', '?')} training images)."
        ),
        version=f"{__version__}+{weights_sha256[:12]}",
        author=author,
        license=license or default_license(data),
    )


def tensor_infos(model: bytes, key: str) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The input and output descriptions of one of export's models, from its own tensors."""
    from .data.preprocess import CONTRACT
    from .runtimes.litert import inspect_tflite

    info = inspect_tflite(model)
    (inp,), (out,) = info["inputs"], info["outputs"]
    steps = "; ".join(CONTRACT["steps"])
    if inp["shape"][-1] == 3:  # the MediaPipe variant
        frame = (
            "One handwritten digit, 28x28 RGB uint8, the preprocessed digit in all three channels (the model "
            f"reads R), white ink (255) on black (0). lenet-edge preprocesses an image so: {steps}."
        )
    else:
        frame = (
            "One handwritten digit, 28x28 grayscale, white ink (255) on black (0), as lenet-edge preprocesses "
            f"an image: {steps}."
        )
    value = "Value: x = pixel / 255 (normalization mean 0, std 255)"
    if inp["dtype"] == "int8":
        value += f", then quantized: q = clamp(round(x / {inp['scale']:.9g}) + ({inp['zero_point']}), -128, 127)" + (
            " = pixel - 128." if abs(inp["scale"] * 255 - 1) < 1e-6 and inp["zero_point"] == -128 else "."
        )
        stats = (-128.0, 127.0)
    elif inp["dtype"] == "uint8":
        value = "Value: the pixel itself, 0-255 (the model's input scale is 1/255: x = pixel / 255)."
        stats = (0.0, 255.0)
    else:
        value += "."
        stats = (0.0, 1.0)
    image = TensorInfo(
        "image",
        f"{frame} {value}",
        kind="image",
        color_space="RGB" if inp["shape"][-1] == 3 else "GRAYSCALE",
        mean=0.0,
        std=255.0,
        stats=stats,
    )
    labels = f"the digits 0-9 in this order ({LABELS_FILE}; Persian ۰-۹ in {DISPLAY_NAMES_FILE}, locale fa)"
    if key == "int8_mediapipe_tflite":
        scores = f"Probabilities of {labels}: softmax of the int8 model's dequantized logits."
        name = "probability"
    elif out["dtype"] == "float32":
        scores = f"Logits for {labels}: softmax gives the probabilities, the argmax is the digit."
        name = "logits"
    else:
        scores = (
            f"Logits for {labels}, {out['dtype']}: logit = {out['scale']:.9g} * (q - ({out['zero_point']})); "
            "softmax of the logits gives the probabilities; the argmax of q is the digit."
        )
        name = "logits"
    return [image], [TensorInfo(name, scores, labels=True)]


def label_files() -> dict[str, bytes]:
    """The associated files: the category names and their Persian display names, one per line."""
    return {
        LABELS_FILE: ("\n".join(LABELS) + "\n").encode(),
        DISPLAY_NAMES_FILE: ("\n".join(DISPLAY_NAMES) + "\n").encode(),
    }


def with_metadata(model: bytes, key: str, card: ModelCard) -> tuple[bytes, dict]:
    """`model` with its metadata, and what the manifest records of it."""
    inputs, outputs = tensor_infos(model, key)
    buffer = metadata_buffer(card, inputs, outputs)
    written = embed(model, buffer, label_files())
    from .fileio import sha256_bytes

    record = {
        "converted_sha256": sha256_bytes(model),  # the converter's bytes this file wraps: conversion is deterministic
        "name": card.name,
        "version": card.version,
        "author": card.author,
        "license": card.license,
        "min_parser_version": PARSER_VERSION,
        "associated_files": [LABELS_FILE, DISPLAY_NAMES_FILE],
        "metadata_bytes": len(buffer),
        "bytes_added": len(written) - len(model),
    }
    return written, record
