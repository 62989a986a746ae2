"""Running and reading .tflite files in the LiteRT interpreter (no TensorFlow needed).

What conversion, benchmark and inference share: an interpreter for a model
given as bytes or a path, the graph's ops and tensors as plain data, its
input/output quantization, how XNNPACK partitioned it, and batched
inference on uint8 images with the quantization handled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .compat import Interpreter, OpResolverType
from .data.preprocess import MODEL_INPUT_SHAPE as INPUT_SHAPE
from .data.preprocess import NUM_CLASSES, to_model_input
from .errors import ModelError

PREDICT_BATCH = 256  # images per interpreter invoke in `predict_tflite`

ModelSource = bytes | str | os.PathLike


def load_interpreter(model: ModelSource, *, default_delegates: bool = False) -> Interpreter:
    """An allocated interpreter; without default delegates it runs the original graph's built-in kernels.

    With them (the AUTO resolver), XNNPACK rewrites the graph at `allocate_tensors`.
    """
    source = {"model_content": bytes(model)} if isinstance(model, bytes | bytearray) else {"model_path": str(model)}
    resolver = OpResolverType.AUTO if default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(**source, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{label(model)}: not a loadable TFLite model ({str(exc).strip()})") from None
    return interpreter


def label(model: ModelSource) -> str:
    return f"<{len(model)}-byte model>" if isinstance(model, bytes | bytearray) else str(model)


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def _io_entry(detail: Mapping) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "index": int(detail["index"]),
        "dtype": _dtype_name(detail["dtype"]),
        "shape": [int(d) for d in detail["shape"]],
        "shape_signature": [int(d) for d in detail["shape_signature"]],
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def inspect_tflite(model: ModelSource) -> dict[str, Any]:
    """Every op, every tensor and the input/output details of a TFLite model, as plain JSON-able data.

    Reads the graph as converted (built-in kernels, no delegate rewriting).

    Returns:
        `ops`: `[{index, op, inputs, outputs}]` (builtin op names, tensor indices);
        `tensors`: `[{index, name, dtype, shape, scales, zero_points, quantized_dimension}]`
        (one scale per output channel for per-channel weights, none for float);
        `inputs` / `outputs`: `[{name, index, dtype, shape, shape_signature, scale, zero_point}]`.
    """
    interpreter = load_interpreter(model)
    ops = [
        {
            "index": int(op["index"]),
            "op": op["op_name"],
            "inputs": [int(t) for t in op["inputs"] if t >= 0],  # -1 marks an omitted optional input
            "outputs": [int(t) for t in op["outputs"] if t >= 0],
        }
        for op in interpreter._get_ops_details()
    ]
    tensors = []
    for t in interpreter.get_tensor_details():
        q = t["quantization_parameters"]
        tensors.append(
            {
                "index": int(t["index"]),
                "name": t["name"],
                "dtype": _dtype_name(t["dtype"]),
                "shape": [int(d) for d in t["shape"]],
                "scales": [float(s) for s in q["scales"]],
                "zero_points": [int(z) for z in q["zero_points"]],
                "quantized_dimension": int(q["quantized_dimension"]),
            }
        )
    return {
        "ops": ops,
        "tensors": tensors,
        "inputs": [_io_entry(d) for d in interpreter.get_input_details()],
        "outputs": [_io_entry(d) for d in interpreter.get_output_details()],
    }


def io_quantization(info: Mapping) -> dict[str, dict[str, Any]]:
    """`{"input": {scale, zero_point, dtype}, "output": {...}}` from an `inspect_tflite` result."""
    return {
        side: {"scale": entry["scale"], "zero_point": entry["zero_point"], "dtype": entry["dtype"]}
        for side, entry in (("input", info["inputs"][0]), ("output", info["outputs"][0]))
    }


def xnnpack_delegation(model: ModelSource) -> dict[str, Any]:
    """How XNNPACK (LiteRT's default CPU delegate) partitions a model; see `delegation`."""
    return delegation(load_interpreter(model, default_delegates=True)._get_ops_details())


def xnnpack_partitions(model: ModelSource) -> int | None:
    """Number of XNNPACK partitions of a model; None when XNNPACK takes no node (or is unavailable)."""
    return xnnpack_delegation(model)["partitions"] or None


def delegation(ops: list[dict]) -> dict:
    """Which of the original ops XNNPACK took, from an allocated interpreter's node list.

    LiteRT 2.3's Python interpreter prints no "Replacing N node(s) ... yielding K
    partitions" line, so this reads the graph instead: after `allocate_tensors`
    with the AUTO resolver, every partition XNNPACK took is one extra node named
    DELEGATE appended after the original nodes, whose inputs and outputs are the
    partition's boundary tensors. Walking back from a DELEGATE node's outputs to
    its inputs through the original nodes finds the nodes it replaced.

    Returns:
        `{"delegated", "partitions", "ops_delegated", "ops_total", "ops_not_delegated": [op names]}`;
        one partition with every op delegated means XNNPACK runs the whole graph.
    """
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    producer = {int(t): i for i, op in enumerate(original) for t in op["outputs"]}
    covered: set[int] = set()
    for node in delegates:
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer or producer[tensor] in covered:
                continue
            covered.add(producer[tensor])
            stack.extend(int(t) for t in original[producer[tensor]]["inputs"])
    return {
        "delegated": bool(delegates),
        "partitions": len(delegates),
        "ops_delegated": len(covered),
        "ops_total": len(original),
        "ops_not_delegated": [op["op_name"] for i, op in enumerate(original) if i not in covered],
    }


def no_delegation(ops: list[dict]) -> dict:
    """`delegation`'s answer for an interpreter built without delegates."""
    names = [op["op_name"] for op in ops if op["op_name"] != "DELEGATE"]
    return {
        "delegated": False,
        "partitions": 0,
        "ops_delegated": 0,
        "ops_total": len(names),
        "ops_not_delegated": names,
    }


def predict_tflite(model: ModelSource, images: np.ndarray, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Run a TFLite model (float or int8 I/O) on uint8 `(N, 28, 28)` images; return float `(N, 10)` scores.

    Int8 models get the input quantized with the model's own input scale and
    zero point, and their output dequantized with the output's. Uses the
    built-in kernels (those TFLite Micro's are ported from), batched by resizing
    the input's batch dimension.
    """
    interpreter = load_interpreter(model)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x = to_model_input(images)  # (N, 28, 28, 1) float32 in [0, 1]
    if inp["dtype"] == np.int8:
        scale, zero_point = inp["quantization"]
        # q = round(x / scale) + zp. With scale = 1/255 and zp = -128 this is exactly
        # pixel - 128, far from any rounding tie, so numpy's half-to-even is safe.
        x = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
    scores, batch = [], None
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if len(chunk) != batch:
            batch = len(chunk)
            interpreter.resize_tensor_input(inp["index"], [batch, *INPUT_SHAPE])
            interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], chunk)
        interpreter.invoke()
        scores.append(interpreter.get_tensor(out["index"]).copy())
    y = np.concatenate(scores) if scores else np.zeros((0, NUM_CLASSES), out["dtype"])
    if out["dtype"] == np.int8:
        scale, zero_point = out["quantization"]
        y = (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)
