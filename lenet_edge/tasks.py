"""MediaPipe Tasks: the int8 model inside the API mobile apps call, `ImageClassifier`.

MediaPipe's ImageClassifier cannot take `lenet5_int8.tflite` as it is. Its
C++ checks (mediapipe/tasks/cc/vision/utils/image_tensor_specs.cc and
components/processors/classification_postprocessing_graph.cc) accept an input
of shape (1, H, W, 3 or 4) in uint8 or float32, RGB only, and outputs in
float32, uint8 or bool; our model has one channel and int8 on both sides,
and MediaPipe refuses it: "Type mismatch for input tensor
serving_default_image:0. Requested one of these types: uint8/float32, got INT8."

So `export --mediapipe` writes `lenet5_int8_mediapipe.tflite`, the same int8
body with the edges MediaPipe takes:

1. input (1, 28, 28, 3) uint8 RGB: the preprocessed digit (see
   `preprocess`), as MediaPipe hands an `mp.Image` to the model. A gray
   image has R = G = B; the graph reads R;
2. QUANTIZE uint8 -> int8 (q - 128, exact: both scales are 1/255) and the
   channel slice;
3. every op of `lenet5_int8.tflite`'s graph, with the same weights, biases
   and scales (`check_body` compares them tensor by tensor);
4. DEQUANTIZE, then SOFTMAX in float: the scores are the probabilities
   `predict` reports, softmax of the int8 model's dequantized logits, so the
   ranking is the int8 model's own (no second rounding to 1/256 steps, as an
   int8 softmax would add).

`classify` runs a model through MediaPipe's Python ImageClassifier (the
`mediapipe` package, optional: `MEDIAPIPE_HINT` says why it installs with
`--no-deps`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ModelError
from .runtimes.base import NUM_CLASSES

MEDIAPIPE_FILE = "lenet5_int8_mediapipe.tflite"
INPUT_SHAPE = (1, 28, 28, 3)
MEDIAPIPE_HINT = (
    'pip install --no-deps "mediapipe>=1.2.3,<2" (--no-deps: its opencv-contrib-python requirement would '
    "overwrite opencv-python-headless's cv2; the Tasks API needs nothing else lenet-edge lacks)"
)


class MediaPipeMissing(ModelError):
    """The optional `mediapipe` package is not installed."""


# --- the variant ----------------------------------------------------------------------------------


def convert_mediapipe(qat_model) -> bytes:
    """The QAT model as MediaPipe's ImageClassifier takes it: uint8 RGB in, float probabilities out.

    The converter builds the input side (uint8 -> int8, the R channel) and the
    int8 body from the same fake-quant ranges as `conversion.convert_int8`; a
    float SOFTMAX is then appended to its dequantized logits (`append_softmax`).
    """
    from .compat import keras, tf
    from .conversion import _convert

    image = keras.Input(INPUT_SHAPE[1:], dtype="float32", name="image")
    red = keras.layers.Lambda(lambda x: x[..., :1], name="red")(image)  # (B, 28, 28, 1)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(image, qat_model(red)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.uint8  # the output stays float32: DEQUANTIZE after the int8 logits
    return append_softmax(_convert(converter))


def append_softmax(model: bytes) -> bytes:
    """`model` with a float32 SOFTMAX after its one float32 output, which becomes the new output."""
    from .compat import tflite_schema
    from .metadata import pack_model

    schema = tflite_schema()
    graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    sub = graph.subgraphs[0]
    (logits,) = sub.outputs
    if sub.tensors[logits].type != schema.TensorType.FLOAT32:
        raise ModelError("append_softmax needs a float32 output (the converter's DEQUANTIZE)")
    code = next((i for i, c in enumerate(graph.operatorCodes) if c.builtinCode == schema.BuiltinOperator.SOFTMAX), None)
    if code is None:
        opcode = schema.OperatorCodeT()
        opcode.builtinCode = opcode.deprecatedBuiltinCode = schema.BuiltinOperator.SOFTMAX
        opcode.version = 1  # float32 SOFTMAX
        graph.operatorCodes.append(opcode)
        code = len(graph.operatorCodes) - 1
    graph.buffers.append(schema.BufferT())  # an activation's buffer is empty
    probability = schema.TensorT()
    source = sub.tensors[logits]
    probability.shape = [int(d) for d in source.shape]
    probability.shapeSignature = None if source.shapeSignature is None else [int(d) for d in source.shapeSignature]
    probability.type = schema.TensorType.FLOAT32
    probability.buffer = len(graph.buffers) - 1
    probability.name = b"probability"
    sub.tensors.append(probability)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code, [logits], [len(sub.tensors) - 1]
    op.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
    op.builtinOptions = schema.SoftmaxOptionsT()
    op.builtinOptions.beta = 1.0
    sub.operators.append(op)
    sub.outputs = [len(sub.tensors) - 1]
    for signature in graph.signatureDefs or []:
        for output in signature.outputs:
            output.tensorIndex, output.name = len(sub.tensors) - 1, b"probability"
    return pack_model(schema, graph)


def check_body(variant: bytes, int8: bytes) -> dict:
    """Check the variant runs the int8 model's graph unchanged; what was compared.

    The int8 model's ops (from its input to its output) must appear in the
    variant in the same order with the same options, and every tensor they
    read or write must have the same type, shape and quantization, and the
    constants the same bytes.

    Raises:
        ModelError: the first difference found.
    """
    from .compat import tflite_schema

    schema = tflite_schema()
    graphs = [schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(m, 0)) for m in (variant, int8)]
    (v_sub, i_sub) = (g.subgraphs[0] for g in graphs)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def op_name(graph, op) -> str:
        return names.get(graph.operatorCodes[op.opcodeIndex].builtinCode, "?")

    body = [op_name(graphs[1], op) for op in i_sub.operators]
    variant_ops = [op_name(graphs[0], op) for op in v_sub.operators]
    start = next((i for i in range(len(variant_ops)) if variant_ops[i : i + len(body)] == body), None)
    if start is None:
        raise ModelError(f"{MEDIAPIPE_FILE}: the int8 graph ({', '.join(body)}) is not in the variant")
    compared = 0
    for k, (a, b) in enumerate(zip(v_sub.operators[start : start + len(body)], i_sub.operators, strict=True)):
        if _options(a) != _options(b):
            raise ModelError(f"{MEDIAPIPE_FILE}: op {k} {body[k]} has other options than in the int8 model")
        for side in ("inputs", "outputs"):
            for ta, tb in zip(getattr(a, side), getattr(b, side), strict=True):
                difference = _tensor_difference(graphs[0], v_sub.tensors[ta], graphs[1], i_sub.tensors[tb])
                if difference:
                    raise ModelError(f"{MEDIAPIPE_FILE}: op {k} {body[k]}: {difference} differs from the int8 model")
                compared += 1
    return {"ops": body, "first_op": start, "tensors_compared": compared}


def _options(op) -> tuple:
    options = op.builtinOptions
    return (op.builtinOptionsType, None if options is None else sorted(vars(options).items()))


def _tensor_difference(graph_a, a, graph_b, b) -> str | None:
    if a.type != b.type or list(a.shape) != list(b.shape):
        return f"tensor {b.name.decode()!r} type or shape"
    qa, qb = a.quantization, b.quantization
    for field in ("scale", "zeroPoint", "quantizedDimension"):
        va, vb = (None if q is None else getattr(q, field) for q in (qa, qb))
        if not np.array_equal(np.asarray(va if va is not None else []), np.asarray(vb if vb is not None else [])):
            return f"tensor {b.name.decode()!r} quantization ({field})"
    da, db = graph_a.buffers[a.buffer].data, graph_b.buffers[b.buffer].data
    if not np.array_equal(np.asarray(da if da is not None else []), np.asarray(db if db is not None else [])):
        return f"tensor {b.name.decode()!r} data"
    return None


def to_rgb(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 28, 28, 3): the gray value in every channel, as an RGB image of it has."""
    return np.repeat(np.asarray(images, np.uint8)[..., None], 3, axis=-1)


def variant_outputs(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """The variant's (N, 10) float outputs in LiteRT (built-in kernels) on (N, 28, 28) uint8 images."""
    from .runtimes.litert import load_interpreter

    interpreter = load_interpreter(model)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    results = []
    for start in range(0, len(images), batch):
        chunk = to_rgb(images[start : start + batch])
        interpreter.resize_tensor_input(inp["index"], chunk.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], chunk)
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results) if results else np.zeros((0, NUM_CLASSES), np.float32)


# --- MediaPipe's ImageClassifier ------------------------------------------------------------------


def mediapipe_version() -> str | None:
    """The installed `mediapipe` version, or None."""
    from importlib import metadata

    try:
        return metadata.version("mediapipe")
    except metadata.PackageNotFoundError:
        return None


def classify(model: str | os.PathLike, images: np.ndarray, locale: str = "fa") -> dict:
    """Every image through MediaPipe's ImageClassifier (IMAGE mode, all 10 results).

    Args:
        model: a .tflite file MediaPipe takes (`lenet5_int8_mediapipe.tflite`).
        images: (N, 28, 28) uint8, preprocessed; each is given as an SRGB `mp.Image`.
        locale: the display names' locale (the metadata has "fa": ۰-۹).

    Returns:
        `{"scores": (N, 10) float32 by category index, "top1": (N,) int, "names": the category names
        (index order), "display_names": the same in `locale`}`.

    Raises:
        MediaPipeMissing: `mediapipe` is not installed (says how to install it).
        ModelError: MediaPipe refuses the model (its message).
    """
    if mediapipe_version() is None:
        raise MediaPipeMissing(f"mediapipe is not installed: {MEDIAPIPE_HINT}")
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(Path(model))),
        max_results=NUM_CLASSES,
        display_names_locale=locale,
    )
    try:
        classifier = vision.ImageClassifier.create_from_options(options)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{model}: MediaPipe's ImageClassifier refuses it: {' '.join(str(exc).split())}") from None
    scores = np.zeros((len(images), NUM_CLASSES), np.float32)
    names, display = [""] * NUM_CLASSES, [""] * NUM_CLASSES
    top1 = np.zeros(len(images), np.int64)
    with classifier:
        for i, rgb in enumerate(to_rgb(images)):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
            categories = result.classifications[0].categories  # sorted by score, best first
            top1[i] = categories[0].index
            for category in categories:
                scores[i, category.index] = category.score
                names[category.index] = category.category_name
                display[category.index] = category.display_name
    return {"scores": scores, "top1": top1, "names": names, "display_names": display}
