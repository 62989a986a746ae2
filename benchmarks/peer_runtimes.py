"""ONNX Runtime and OpenVINO behind the bench's model interface, each on its fast path.

`lenet_edge.benchmark` times any object with `time_one(image) -> (end_to_end_ns,
run_ns)`, `predict(images) -> classes` and `set_batch(n)`; the two classes here
are that for an .onnx file in ONNX Runtime and an OpenVINO model, so the peers
go through the same rounds, warm-up, percentiles and throughput loop as the
LiteRT models, in the same process. End to end is what LiteRT's is: uint8 image
-> float32 v/255 by one 256-entry table lookup -> the runtime's input -> run ->
argmax of the logits.

Each is driven the cheapest way its Python API offers, since a slow call path
would be charged to the runtime:

- ONNX Runtime: IOBinding with the input and output bound to numpy buffers
  this object owns; the image is written into the input buffer in place and
  `run_with_iobinding` reads and writes them without a copy (cheaper than
  `session.run`, which builds an OrtValue and an output list per call).
- OpenVINO: a compiled model and one infer request; the image is written into
  the request's own input tensor and `infer()` is called with no argument
  (`infer({0: x})` wraps and copies the array on every call, much slower).

Both import their runtime on construction, so this module imports without the
`peers` extra.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

INPUT_SHAPE = (28, 28, 1)  # one image, NHWC: the Keras model's input, kept by tf2onnx
LEVELS = np.arange(256, dtype=np.float32) / np.float32(255.0)  # pixel value -> model input, as LiteRT's float table


class OrtModel:
    """An ONNX Runtime CPU session on one thread, run through IOBinding."""

    def __init__(self, path: Path, threads: int = 1, optimize: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not optimize:  # the graph as written: no fusions, no QDQ folding into integer kernels
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (self.input_name,) = [i.name for i in self.session.get_inputs()]
        (self.output_name,) = [o.name for o in self.session.get_outputs()]
        self.batch = 0
        self.set_batch(1)

    def set_batch(self, batch: int) -> None:
        """Bind fresh input/output buffers of `batch` images (the ONNX graph's batch is dynamic)."""
        if batch == self.batch:
            return
        self.x = np.zeros((batch, *INPUT_SHAPE), dtype=np.float32)  # (B, 28, 28, 1)
        self.y = np.zeros((batch, 10), dtype=np.float32)  # (B, 10) logits, written by the session
        self.binding = self.session.io_binding()
        self.binding.bind_cpu_input(self.input_name, self.x)
        self.binding.bind_output(self.output_name, "cpu", 0, np.float32, list(self.y.shape), self.y.ctypes.data)
        self.batch = batch

    def _write(self, images: np.ndarray) -> None:
        # mode="clip" skips numpy's bounds-check buffering; uint8 indices are always in range
        np.take(LEVELS, images, out=self.x.reshape(images.shape), mode="clip")

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Classes of (B, 28, 28) uint8 images, B == the current batch."""
        self._write(images)
        self.session.run_with_iobinding(self.binding)
        return self.y.argmax(axis=-1)

    def time_one(self, image: np.ndarray) -> tuple[int, int]:
        """(end-to-end ns, run ns) for one (1, 28, 28) uint8 image."""
        clock = time.perf_counter_ns
        t0 = clock()
        self._write(image)
        t1 = clock()
        self.session.run_with_iobinding(self.binding)
        t2 = clock()
        self.y.argmax(axis=-1)
        t3 = clock()
        return t3 - t0, t2 - t1

    def logits(self, images: np.ndarray, batch: int = 500) -> np.ndarray:
        """(N, 10) float32 logits of (N, 28, 28) uint8 images, for verification (plain `run`)."""
        out = [
            self.session.run([self.output_name], {self.input_name: LEVELS[images[i : i + batch]][..., None]})[0]
            for i in range(0, len(images), batch)
        ]
        return np.concatenate(out)


class OvModel:
    """An OpenVINO model compiled for the CPU on one thread, run through one infer request."""

    def __init__(self, path: Path, threads: int = 1, precision: str | None = "f32"):
        """`precision`: INFERENCE_PRECISION_HINT; None keeps the CPU plugin's default for this CPU."""
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.properties = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            self.properties["INFERENCE_PRECISION_HINT"] = precision
        self.batch = 0
        self.set_batch(1)

    def set_batch(self, batch: int) -> None:
        """Reshape to a static batch and compile again, as LiteRT resizes and allocates."""
        if batch == self.batch:
            return
        self.model.reshape({0: [batch, *INPUT_SHAPE]})
        self.compiled = self.core.compile_model(self.model, "CPU", self.properties)
        self.request = self.compiled.create_infer_request()
        self.x = self.request.get_input_tensor().data  # (B, 28, 28, 1) float32, the request's own memory
        self.batch = batch

    @property
    def precision(self) -> str:
        """The inference precision the plugin chose (e.g. f32, bf16)."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def _write(self, images: np.ndarray) -> None:
        np.take(LEVELS, images, out=self.x.reshape(images.shape), mode="clip")

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Classes of (B, 28, 28) uint8 images, B == the current batch."""
        self._write(images)
        self.request.infer()
        return self.request.get_output_tensor().data.argmax(axis=-1)

    def time_one(self, image: np.ndarray) -> tuple[int, int]:
        """(end-to-end ns, infer ns) for one (1, 28, 28) uint8 image."""
        clock = time.perf_counter_ns
        t0 = clock()
        self._write(image)
        t1 = clock()
        self.request.infer()
        t2 = clock()
        self.request.get_output_tensor().data.argmax(axis=-1)
        t3 = clock()
        return t3 - t0, t2 - t1

    def logits(self, images: np.ndarray, batch: int = 500) -> np.ndarray:
        """(N, 10) float32 logits of (N, 28, 28) uint8 images, for verification; leaves batch 1 set."""
        out = []
        for i in range(0, len(images), batch):
            chunk = images[i : i + batch]
            self.set_batch(len(chunk))
            self._write(chunk)
            self.request.infer()
            out.append(self.request.get_output_tensor().data.copy())
        self.set_batch(1)
        return np.concatenate(out)
