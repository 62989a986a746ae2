"""The model handle: one loaded model, whatever runtime runs it.

Every stage that touches a .tflite model (export's checks, bench, predict)
does it through a `ModelHandle`, so the rules live in one place:

- the contract (`check_contract`): one input of shape (1, 28, 28, 1) and one
  output of shape (1, 10), each float32, int8 or uint8, a quantized tensor
  with a scale > 0;
- uint8 image -> model input: x = pixel / 255, quantized as
  q = round(x / scale) + zero_point for an integer input, done by a
  256-entry table (one indexing op; the formula is exact on uint8 pixels);
- raw output -> logits (dequantized) or straight to the argmax;
- batched scores over any number of images, and the timed single-image call
  the benchmark measures.

A runtime subclasses `ModelHandle` and supplies five primitives (`_resize`,
`_set_input`, `_invoke`, `_get_output`, plus the tensor specs it reads at
load time) and what it can say about the graph (`describe_graph`). This
module needs only numpy, so it can also run on a remote device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError

# The model contract, the one home of these numbers (data.preprocess produces this frame):
INPUT_SHAPE = (1, 28, 28, 1)  # one white-on-black 28x28 image; runtimes that can resize the batch do
NUM_CLASSES = 10  # the digits 0-9 (۰-۹): one logit each
IO_DTYPES = ("float32", "int8", "uint8")  # accepted everywhere: input and output alike
SCORES_BATCH = 256  # images per call when scoring a whole array


@dataclass(frozen=True)
class TensorSpec:
    """An input or output tensor as the contract sees it."""

    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int, ...]
    scale: float = 0.0  # quantization: real = scale * (q - zero_point); 0 for float tensors
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return np.dtype(self.dtype).kind in "iu"

    def to_dict(self) -> dict:
        """JSON form for reports: `{dtype, shape, scale, zero_point}`, the last two None for a float tensor."""
        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "scale": self.scale if self.quantized else None,
            "zero_point": self.zero_point if self.quantized else None,
        }


def contract_problems(inputs: list[TensorSpec], outputs: list[TensorSpec], classes: int = NUM_CLASSES) -> list[str]:
    """What keeps a model from being a lenet-edge classifier of `classes` outputs; empty when it is one.

    `classes` is 10 for the digit model; the piece verifier (`verifier`) has 2 (not one digit, one digit).
    """
    if len(inputs) != 1 or len(outputs) != 1:
        return [f"expected 1 input and 1 output, found {len(inputs)} and {len(outputs)}"]
    problems = []
    for side, spec, shape in (("input", inputs[0], INPUT_SHAPE), ("output", outputs[0], (1, classes))):
        if spec.dtype not in IO_DTYPES:
            problems.append(f"{side} {spec.name!r} is {spec.dtype}, expected one of {', '.join(IO_DTYPES)}")
        elif spec.quantized and not spec.scale > 0:
            problems.append(f"{side} {spec.name!r} is {spec.dtype} without a quantization scale")
        if tuple(spec.shape) != shape:
            problems.append(f"{side} {spec.name!r} has shape {list(spec.shape)}, expected {list(shape)}")
    return problems


def check_contract(label: str, inputs: list[TensorSpec], outputs: list[TensorSpec], classes: int = NUM_CLASSES) -> None:
    """Raise ModelError, naming `label`, unless the model takes one 28x28 image and returns `classes` scores."""
    problems = contract_problems(inputs, outputs, classes)
    if problems:
        raise ModelError(f"{label}: " + "; ".join(problems))


def input_levels(spec: TensorSpec) -> np.ndarray:
    """The model input for each of the 256 pixel values: float32 v/255, quantized for integer inputs."""
    x = np.arange(256, dtype=np.float32) / np.float32(255.0)
    dtype = np.dtype(spec.dtype)
    if not spec.quantized:
        return x.astype(dtype)
    # q = round(x / scale) + zero_point, saturated. With QAT's scale 1/255 and zero point -128 this is
    # exactly pixel - 128, far from any rounding tie.
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / np.float32(spec.scale)) + spec.zero_point, info.min, info.max).astype(dtype)


def dequantized(raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A tensor's raw values -> float32: real = scale * (q - zero_point) for an integer tensor."""
    if spec.quantized:
        return (raw.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
    return raw.astype(np.float32)


class ModelHandle:
    """A loaded classifier: uint8 `(B, 28, 28)` images in, scores or digits out.

    Subclasses set `runtime` and `label`, call `_ready(inputs, outputs)` once
    loaded, and implement the primitives below. `max_batch` is None for a
    runtime that can resize its input batch, else the largest batch it runs
    (TFLite Micro's graph is fixed at 1).
    """

    runtime = "?"
    max_batch: int | None = None
    classes = NUM_CLASSES  # outputs the contract expects; a handle opened with `classes=2` is a piece verifier

    def _ready(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        """Check the contract, keep the input/output specs and build the input table."""
        check_contract(self.label, inputs, outputs, self.classes)
        self.input, self.output = inputs[0], outputs[0]
        self.levels = input_levels(self.input)
        self.batch = 1

    # --- primitives a runtime supplies ------------------------------------------------------------

    def _resize(self, batch: int) -> None:
        raise ModelError(f"{self.label}: the {self.runtime} runtime runs one image at a time")

    def _set_input(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _invoke(self) -> None:
        raise NotImplementedError

    def _get_output(self) -> np.ndarray:
        raise NotImplementedError

    def describe_graph(self) -> dict:
        """What the runtime can tell of the graph (ops, delegation, bytes); JSON-able."""
        return {}

    # --- what every stage uses ----------------------------------------------------------------------

    def set_batch(self, batch: int) -> None:
        if batch != self.batch:
            if self.max_batch is not None and batch > self.max_batch:
                raise ModelError(f"{self.label}: batch {batch} is above this runtime's {self.max_batch}")
            self._resize(batch)
            self.batch = batch

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """(B, 28, 28) uint8 -> (B, 28, 28, 1) in the model's input dtype."""
        return self.levels[images][..., None]

    def logits(self, raw: np.ndarray) -> np.ndarray:
        """Raw output -> float32 logits (dequantized for an integer output)."""
        return dequantized(raw, self.output)

    def run(self, images: np.ndarray) -> np.ndarray:
        """The raw output for `(B, 28, 28)` uint8 images, B == the current batch."""
        self._set_input(self.to_input(images))
        self._invoke()
        return self._get_output()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Digits for `(B, 28, 28)` uint8 images, B == the current batch.

        The argmax of the raw output: dequantizing with a positive scale cannot change it.
        """
        return self.run(images).argmax(axis=-1)

    def scores(self, images: np.ndarray, batch_size: int = SCORES_BATCH) -> np.ndarray:
        """Float `(N, 10)` logits for any number of `(N, 28, 28)` uint8 images."""
        return self._batched(images, batch_size, lambda chunk: self.logits(self.run(chunk)), np.float32)

    def predict_all(self, images: np.ndarray, batch_size: int = SCORES_BATCH) -> np.ndarray:
        """`(N,)` digits for any number of images."""
        return self._batched(images, batch_size, self.predict, np.int64).reshape(-1)

    def raw_all(self, images: np.ndarray, batch_size: int = SCORES_BATCH) -> np.ndarray:
        """`(N, 10)` raw outputs (the model's output dtype) for any number of images."""
        return self._batched(images, batch_size, self.run, np.dtype(self.output.dtype))

    def _batched(self, images: np.ndarray, batch_size: int, call, dtype) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != INPUT_SHAPE[1:3]:
            raise ValueError(f"images must be uint8 of shape (N, 28, 28); got {images.dtype} {images.shape}")
        step = min(batch_size, self.max_batch or batch_size)
        out = []
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            self.set_batch(len(chunk))
            out.append(np.asarray(call(chunk)).copy())
        self.set_batch(1)
        return np.concatenate(out) if out else np.zeros((0, self.classes), dtype)

    def time_one(self, image: np.ndarray) -> tuple[int, int]:
        """(end-to-end ns, invoke ns) for one `(1, 28, 28)` uint8 image, as the benchmark times it."""
        clock = time.perf_counter_ns
        t0 = clock()
        self._set_input(self.levels[image][..., None])
        t1 = clock()
        self._invoke()
        t2 = clock()
        self._get_output().argmax(axis=-1)  # a deployed classifier skips dequantizing, like this
        t3 = clock()
        return t3 - t0, t2 - t1

    def describe(self) -> dict:
        """The runtime, the input/output specs and the graph as the runtime sees it."""
        return {
            "runtime": self.runtime,
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            **self.describe_graph(),
        }
