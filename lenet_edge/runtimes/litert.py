"""The LiteRT runtime: .tflite models in `ai_edge_litert`'s interpreter (no TensorFlow needed).

`LiteRTModel` is the model handle every stage uses on the host; the functions
below read a graph as plain data (ops, tensors, input/output quantization) and
find how XNNPACK partitioned it. LiteRT's node list is only reachable through
the interpreter's experimental `_get_ops_details`; `op_details` is the one
place that calls it.

The interpreter classes come from `compat` (the one place the host imports
LiteRT) unless a caller passes another TFLite interpreter module
(`interpreter=`): `bench --on` runs this same module on a device, with
whichever of `ai_edge_litert.interpreter` or `tflite_runtime.interpreter` it
has. So this file stays importable without LiteRT and on Python 3.8.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import ModelError
from .base import NUM_CLASSES, ModelHandle, TensorSpec

if TYPE_CHECKING:
    from ..compat import Interpreter

ModelSource = Union[bytes, str, os.PathLike]  # noqa: UP007 (evaluated at import: Python 3.8 on a device)


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # the ops that carry a layer's weights


def host_interpreter() -> ModuleType:
    """The host's TFLite interpreter module: `compat`, which imports LiteRT's `Interpreter` and `OpResolverType`."""
    from .. import compat

    return compat


def runtime_name(interpreter: ModuleType) -> str:
    """How results name the runtime behind an interpreter module: "litert" or "tflite_runtime"."""
    return "tflite_runtime" if interpreter.__name__.startswith("tflite_runtime") else "litert"


def label(model: ModelSource) -> str:
    """How messages name a model: its path, or its size when it is bytes in memory."""
    return f"<{len(model)}-byte model>" if isinstance(model, (bytes, bytearray)) else str(model)


def load_interpreter(
    model: ModelSource,
    *,
    threads: int = 1,
    xnnpack: bool = False,
    reference: bool = False,
    interpreter: ModuleType | None = None,
) -> Interpreter:
    """An allocated LiteRT interpreter.

    Without XNNPACK it runs the graph's built-in kernels (LiteRT's optimized
    CPU kernels, not the reference ones TensorFlow Lite Micro's are ported
    from); with it (the AUTO resolver), XNNPACK rewrites the
    graph at `allocate_tensors`. `reference` runs LiteRT's reference kernels
    instead (BUILTIN_REF: slow, the code TFLM's kernels are ported from).

    Args:
        model: a path, or the model's bytes.
        threads: interpreter threads.
        xnnpack: use the default XNNPACK delegate.
        reference: the reference kernels (without XNNPACK only).
        interpreter: the module providing `Interpreter` and `OpResolverType` (default: the host's LiteRT).

    Raises:
        ModelError: the file is missing or empty, or LiteRT cannot load it.
    """
    api = interpreter or host_interpreter()
    if isinstance(model, (bytes, bytearray)):
        source: dict[str, Any] = {"model_content": bytes(model)}
    else:
        if not os.path.isfile(model):
            raise ModelError(f"{model}: no such file")
        if os.path.getsize(model) == 0:
            raise ModelError(f"{model}: empty file")
        source = {"model_path": str(model)}
    if xnnpack and reference:
        raise ValueError("reference kernels run without XNNPACK")
    resolvers = api.OpResolverType
    resolver = resolvers.AUTO if xnnpack else resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if reference:
        resolver = resolvers.BUILTIN_REF
    try:
        loaded = api.Interpreter(**source, num_threads=threads, experimental_op_resolver_type=resolver)
        loaded.allocate_tensors()
    except (ValueError, RuntimeError) as exc:  # LiteRT's words for a file that is not a usable flatbuffer
        raise ModelError(f"{label(model)}: not a loadable TFLite model ({' '.join(str(exc).split())})") from None
    return loaded


def tensor_spec(detail: Mapping) -> TensorSpec:
    scale, zero_point = detail["quantization"]
    return TensorSpec(
        name=detail["name"],
        dtype=np.dtype(detail["dtype"]).name,
        shape=tuple(int(d) for d in detail["shape"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def op_details(interpreter: Interpreter) -> list[dict]:
    """The interpreter's node list (after delegation: the original nodes, then one DELEGATE node per partition)."""
    return interpreter._get_ops_details()


class LiteRTModel(ModelHandle):
    """A .tflite model (path or bytes) loaded in LiteRT, `threads` threads, XNNPACK on or off (or `reference` kernels).

    `interpreter` is the TFLite interpreter module (see `load_interpreter`); a
    device without LiteRT passes `tflite_runtime.interpreter`, whose API is the same.
    """

    runtime = "litert"

    def __init__(
        self,
        model: ModelSource,
        *,
        threads: int = 1,
        xnnpack: bool = True,
        reference: bool = False,
        interpreter: ModuleType | None = None,
        classes: int = NUM_CLASSES,
    ):
        self.label = label(model)
        self.classes = classes
        self.xnnpack = xnnpack
        if interpreter is not None:
            self.runtime = runtime_name(interpreter)
        self.interpreter = load_interpreter(
            model, threads=threads, xnnpack=xnnpack, reference=reference, interpreter=interpreter
        )
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        self._ready([tensor_spec(d) for d in inputs], [tensor_spec(d) for d in outputs])
        self._in, self._out = int(inputs[0]["index"]), int(outputs[0]["index"])

    def _resize(self, batch: int) -> None:
        self.interpreter.resize_tensor_input(self._in, [batch, *self.input.shape[1:]])
        self.interpreter.allocate_tensors()

    def _set_input(self, x: np.ndarray) -> None:
        self.interpreter.set_tensor(self._in, x)

    def _invoke(self) -> None:
        self.interpreter.invoke()

    def _get_output(self) -> np.ndarray:
        return self.interpreter.get_tensor(self._out)

    def describe_graph(self) -> dict:
        """Ops, XNNPACK's partitioning and the graph's bytes, read after allocate_tensors()."""
        ops = op_details(self.interpreter)
        return {
            "ops": [op["op_name"] for op in ops if op["op_name"] != "DELEGATE"],
            "precision": op_precisions(self.interpreter, ops),
            "xnnpack": delegation(ops) if self.xnnpack else no_delegation(ops),
            **graph_bytes(self.interpreter, ops),
        }


def op_precisions(interpreter: Interpreter, ops: list[dict]) -> list[str]:
    """Per original op, the type it computes in: its first input's dtype, or "float32->int8" where it converts."""
    dtype = {int(t["index"]): np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    found = []
    for op in ops:
        if op["op_name"] == "DELEGATE":
            continue
        src, dst = dtype[int(op["inputs"][0])], dtype[int(op["outputs"][0])]
        found.append(src if src == dst else f"{src}->{dst}")
    return found


def graph_bytes(interpreter: Interpreter, ops: list[dict]) -> dict:
    """Bytes of constant tensors (weights) and the plain sum of all other tensors at batch 1."""
    produced = {int(t) for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    weights = activations = 0
    for t in interpreter.get_tensor_details():
        nbytes = int(np.prod(t["shape"], dtype=np.int64)) * np.dtype(t["dtype"]).itemsize
        if t["index"] in produced or t["index"] in inputs:
            activations += nbytes
        else:
            weights += nbytes
    return {"weights_bytes": weights, "activations_sum_bytes": activations}


def _io_entry(detail: Mapping) -> dict[str, Any]:
    spec = tensor_spec(detail)
    return {
        "name": spec.name,
        "index": int(detail["index"]),
        "dtype": spec.dtype,
        "shape": list(spec.shape),
        "shape_signature": [int(d) for d in detail["shape_signature"]],
        "scale": spec.scale,
        "zero_point": spec.zero_point,
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
        for op in op_details(interpreter)
    ]
    tensors = []
    for t in interpreter.get_tensor_details():
        q = t["quantization_parameters"]
        tensors.append(
            {
                "index": int(t["index"]),
                "name": t["name"],
                "dtype": np.dtype(t["dtype"]).name,
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
    return delegation(op_details(load_interpreter(model, xnnpack=True)))


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
