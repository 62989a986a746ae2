"""ONNX Runtime and OpenVINO behind the bench's model interface, each on its fast path.

Both are `lenet_edge.runtimes.ModelHandle`s, the handle every stage and the
bench's harness use: the handle converts the image (uint8 -> float32 v/255 by
one 256-entry table lookup), checks the model contract, batches, and times
one image end to end exactly as it does for LiteRT; the classes here supply
the four runtime primitives (resize the batch, set the input, run, get the
output). So the peers go through the same rounds, warm-up, percentiles and
throughput loop as the LiteRT models, in the same process.

Each is driven the cheapest way its Python API offers, since a slow call path
would be charged to the runtime:

- ONNX Runtime: IOBinding with the input and output bound to numpy buffers
  this object owns; the input is copied into the bound buffer and
  `run_with_iobinding` reads and writes them without a further copy (cheaper
  than `session.run`, which builds an OrtValue and an output list per call).
- OpenVINO: a compiled model and one infer request; the input is copied into
  the request's own input tensor and `infer()` is called with no argument
  (`infer({0: x})` wraps and copies the array on every call, much slower).

LiteRT's `set_tensor` copies its input in the same way, so every runtime pays
one copy of the 784 input values.

Both import their runtime on construction, so this module imports without the
`peers` extra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenet_edge.runtimes import INPUT_SHAPE, NUM_CLASSES, ModelHandle, TensorSpec

FLOAT_IO = (  # the float models' contract: one (B, 28, 28, 1) float32 image in, (B, 10) logits out
    [TensorSpec("image", "float32", INPUT_SHAPE)],
    [TensorSpec("logits", "float32", (1, NUM_CLASSES))],
)


class OrtModel(ModelHandle):
    """An .onnx file in an ONNX Runtime CPU session on one thread, run through IOBinding."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1, optimize: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not optimize:  # the graph as written: no fusions, no QDQ folding into integer kernels
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.label = str(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (self.input_name,) = [i.name for i in self.session.get_inputs()]
        (self.output_name,) = [o.name for o in self.session.get_outputs()]
        self._ready(*FLOAT_IO)
        self._resize(1)

    def _resize(self, batch: int) -> None:
        """Bind fresh input/output buffers of `batch` images (the ONNX graph's batch is dynamic)."""
        self.x = np.zeros((batch, *INPUT_SHAPE[1:]), dtype=np.float32)  # (B, 28, 28, 1)
        self.y = np.zeros((batch, NUM_CLASSES), dtype=np.float32)  # (B, 10) logits, written by the session
        self.binding = self.session.io_binding()
        self.binding.bind_cpu_input(self.input_name, self.x)
        self.binding.bind_output(self.output_name, "cpu", 0, np.float32, list(self.y.shape), self.y.ctypes.data)

    def _set_input(self, x: np.ndarray) -> None:
        self.x[...] = x

    def _invoke(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def _get_output(self) -> np.ndarray:
        return self.y


class OvModel(ModelHandle):
    """An OpenVINO model compiled for the CPU on one thread, run through one infer request."""

    runtime = "openvino"

    def __init__(self, path: Path, threads: int = 1, precision: str | None = "f32"):
        """`precision`: INFERENCE_PRECISION_HINT; None keeps the CPU plugin's default for this CPU."""
        import openvino as ov

        self.label = str(path)
        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.properties = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            self.properties["INFERENCE_PRECISION_HINT"] = precision
        self._ready(*FLOAT_IO)
        self._resize(1)

    def _resize(self, batch: int) -> None:
        """Reshape to a static batch and compile again, as LiteRT resizes and allocates."""
        self.model.reshape({0: [batch, *INPUT_SHAPE[1:]]})
        self.compiled = self.core.compile_model(self.model, "CPU", self.properties)
        self.request = self.compiled.create_infer_request()
        self.x = self.request.get_input_tensor().data  # (B, 28, 28, 1) float32, the request's own memory

    @property
    def precision(self) -> str:
        """The inference precision the plugin chose (e.g. f32, bf16)."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def _set_input(self, x: np.ndarray) -> None:
        self.x[...] = x

    def _invoke(self) -> None:
        self.request.infer()

    def _get_output(self) -> np.ndarray:
        return self.request.get_output_tensor().data
