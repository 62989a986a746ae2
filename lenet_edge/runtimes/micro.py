"""The TensorFlow Lite Micro runtime: .tflite models in TFLM's own Python interpreter (`tflite-micro`).

TFLM is what runs the int8 model on a microcontroller: a static tensor arena
instead of malloc, portable reference kernels, a graph fixed at batch 1.
Running the same flatbuffer here proves, before any firmware is built, that
every op has a TFLM kernel, how many arena bytes allocation needs (exactly,
by bisection on the arena size), and that TFLM's kernels give LiteRT's
answers. What it does not show is MCU speed: on the host the reference
kernels are plain C++ loops.

Three things about the `tflite-micro` package shape this module:

- it does not verify the flatbuffer (a corrupt file can crash the process),
  so every model is first read by LiteRT, which does (`inspect_tflite`);
- its interpreter crashes (segfault) when the arena cannot even hold the
  allocator's own bookkeeping (below 464 bytes in version 0.dev20261023), so
  no arena below `ARENA_FLOOR` is ever tried;
- it reports why a model failed only on stderr (file descriptor 2), so that
  is captured and the reason put into the error.

`tflite_micro` is imported on first use, like TensorFlow in `compat`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator

import numpy as np

from ..errors import ModelError
from .base import NUM_CLASSES, ModelHandle, TensorSpec
from .litert import WEIGHTED_OPS, ModelSource, inspect_tflite, label

ARENA_FLOOR = 1024  # bytes; the interpreter segfaults below 464 (measured); no model tried allocated below 1,100
DEFAULT_ARENA = 1 << 20  # bytes; ample for a 28x28 classifier (LeNet-5 int8 needs ~8.5 kB, float32 ~30 kB)
ARENA_CEILING = 1 << 24  # bytes; bisection gives up above this: no model of this project comes near

# Builtin op -> the `tflite::MicroMutableOpResolver` method that registers its TFLM kernel. The ops TFLM
# has kernels for (its micro_mutable_op_resolver.h); an op missing here cannot be registered on a device.
TFLM_OPS = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}

_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")


def _runtime():
    """TFLM's Python interpreter module, imported on first use."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise ModelError("the TFLM runtime needs the tflite-micro package: pip install tflite-micro") from None
    return runtime


@contextlib.contextmanager
def _stderr_text() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 inside the block; the text is in the yielded list afterwards."""
    out: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            out.append(captured.read().decode(errors="replace"))


def _interpreter(data: bytes, arena_size: int):
    """(interpreter, "") when TFLM allocates `data` in `arena_size` bytes, else (None, what TFLM printed)."""
    if arena_size < ARENA_FLOOR:
        raise ValueError(f"arena_size must be at least {ARENA_FLOOR} bytes; got {arena_size}")
    runtime = _runtime()
    with _stderr_text() as text:
        try:
            return runtime.Interpreter.from_bytes(data, arena_size=int(arena_size)), ""
        except RuntimeError:
            pass
    return None, " ".join(text[0].split())


def read_model(model: ModelSource) -> tuple[bytes, dict]:
    """The model's bytes and graph (`inspect_tflite`), once LiteRT's flatbuffer verifier accepted them.

    TFLM's own reader does not verify: a corrupt file must stop here.

    Raises:
        ModelError: a missing, empty or corrupt file.
    """
    if isinstance(model, bytes | bytearray):
        data = bytes(model)
    else:
        if not os.path.isfile(model):
            raise ModelError(f"{model}: no such file")
        with open(model, "rb") as f:
            data = f.read()
    if not data:
        raise ModelError(f"{label(model)}: empty file")
    try:
        return data, inspect_tflite(data)
    except ModelError as exc:  # it names "<N-byte model>"; name the file instead
        raise ModelError(str(exc).replace(label(data), label(model), 1)) from None


def _load_failure(name: str, data: bytes, arena_size: int, text: str) -> ModelError:
    """Why TFLM did not allocate the model: an op without a TFLM kernel, too small an arena, or TFLM's words."""
    missing = sorted(set(_MISSING_OP.findall(text)))
    if missing:
        return ModelError(f"{name}: TensorFlow Lite Micro has no kernel for op {', '.join(missing)}")
    if arena_size < ARENA_CEILING and _interpreter(data, ARENA_CEILING)[0] is not None:
        need = min_arena_bytes(data)
        return ModelError(f"{name}: a {arena_size}-byte tensor arena is too small; TFLM needs at least {need} bytes")
    return ModelError(f"{name}: TensorFlow Lite Micro cannot load it ({text or 'no reason given'})")


def min_arena_bytes(model: ModelSource) -> int:
    """The least tensor arena (bytes) TFLM allocates the model in: allocation fails one byte below it.

    Bisection between `ARENA_FLOOR` and the first power of two that allocates,
    assuming allocation succeeds at every size above one that does (checked
    around the minimum by the tests). A model that allocates at `ARENA_FLOOR`
    returns `ARENA_FLOOR`, an upper bound only (smaller arenas crash the interpreter).

    Raises:
        ModelError: TFLM cannot load the model at any arena size (an op it has no kernel for, ...).
    """
    data, _ = read_model(model)
    high = ARENA_FLOOR
    while True:
        interpreter, text = _interpreter(data, high)
        if interpreter is not None:
            break
        if high >= ARENA_CEILING or _MISSING_OP.search(text):
            raise _load_failure(label(model), data, ARENA_CEILING, text)
        high *= 2
    low = high // 2  # fails (or is below the floor); high allocates
    while high - low > 1:
        mid = (low + high) // 2
        if mid >= ARENA_FLOOR and _interpreter(data, mid)[0] is not None:
            high = mid
        else:
            low = mid
    return high


def macs(info: dict) -> list[dict]:
    """Multiply-accumulates per op of an `inspect_tflite` graph: what firmware multiplies by cycles per MAC.

    CONV_2D: output H x W x C_out x kernel h x w x C_in; DEPTHWISE_CONV_2D: output
    H x W x C_out x kernel h x w; FULLY_CONNECTED: outputs x input depth. Every
    other op (pooling, activations, reshapes) counts 0: a few adds or compares
    per output, noise next to the convolutions.

    Returns:
        `[{index, op, output, output_shape, macs}]`, one per op in graph order.
    """
    tensors = {t["index"]: t for t in info["tensors"]}
    layers = []
    for op in info["ops"]:
        out = tensors[op["outputs"][0]]
        out_elems = int(np.prod(out["shape"], dtype=np.int64))
        count = 0
        if op["op"] in WEIGHTED_OPS:
            weights = tensors[op["inputs"][1]]["shape"]
            if op["op"] == "CONV_2D":  # filter (C_out, kh, kw, C_in)
                count = out_elems * weights[1] * weights[2] * weights[3]
            elif op["op"] == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, C_out)
                count = out_elems * weights[1] * weights[2]
            else:  # weights (units, depth)
                count = out_elems * weights[1]
        layers.append(
            {"index": op["index"], "op": op["op"], "output": out["name"], "output_shape": out["shape"], "macs": count}
        )
    return layers


def _spec(detail: dict, name: str) -> TensorSpec:
    q = detail["quantization_parameters"]
    scales, zero_points = list(q["scales"]), list(q["zero_points"])
    return TensorSpec(
        name=name,
        dtype=np.dtype(detail["dtype"]).name,
        shape=tuple(int(d) for d in detail["shape"]),
        scale=float(scales[0]) if scales else 0.0,
        zero_point=int(zero_points[0]) if zero_points else 0,
    )


class MicroModel(ModelHandle):
    """A .tflite model (path or bytes) in TFLM's interpreter with an `arena_size`-byte tensor arena.

    Raises:
        ModelError: a missing, empty or corrupt file; an op TFLM has no kernel
            for (named); an arena too small (with the size it needs); a model
            that breaks the contract.
        ValueError: `arena_size` below `ARENA_FLOOR`.
    """

    runtime = "tflm"
    max_batch = 1  # TFLM's graph is fixed at the converted batch of 1

    def __init__(self, model: ModelSource, *, arena_size: int = DEFAULT_ARENA, classes: int = NUM_CLASSES):
        self.label = label(model)
        self.classes = classes
        if not isinstance(arena_size, int) or arena_size < ARENA_FLOOR:
            raise ValueError(f"arena_size must be an integer >= {ARENA_FLOOR} bytes; got {arena_size!r}")
        self.data, self.info = read_model(model)
        self.arena_size = arena_size
        self.interpreter, text = _interpreter(self.data, arena_size)
        if self.interpreter is None:
            raise _load_failure(self.label, self.data, arena_size, text)
        inputs = [_spec(self.interpreter.get_input_details(i), e["name"]) for i, e in enumerate(self.info["inputs"])]
        outputs = [_spec(self.interpreter.get_output_details(i), e["name"]) for i, e in enumerate(self.info["outputs"])]
        self._ready(inputs, outputs)

    def _set_input(self, x: np.ndarray) -> None:
        self.interpreter.set_input(x, 0)

    def _invoke(self) -> None:
        self.interpreter.invoke()

    def _get_output(self) -> np.ndarray:
        return self.interpreter.get_output(0)

    def describe_graph(self) -> dict:
        """The graph's ops, the arena it was loaded with and the flatbuffer's bytes (flash)."""
        return {
            "ops": [op["op"] for op in self.info["ops"]],
            "arena_bytes": self.arena_size,
            "flash_bytes": len(self.data),
        }
