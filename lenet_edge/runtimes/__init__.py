"""Runtimes: what loads a .tflite model and runs it, behind one model handle.

`open_model(source, runtime=...)` returns a `ModelHandle` (see `base`): the
same contract check, input conversion, scoring and timed call whichever
runtime is underneath. LiteRT (`litert`) is the host's runtime; another one
registers a loader in `RUNTIMES` and every stage can use it unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from .base import (
    INPUT_SHAPE,
    IO_DTYPES,
    NUM_CLASSES,
    SCORES_BATCH,
    ModelHandle,
    TensorSpec,
    check_contract,
    contract_problems,
)

__all__ = [
    "INPUT_SHAPE",
    "IO_DTYPES",
    "NUM_CLASSES",
    "RUNTIMES",
    "ModelHandle",
    "TensorSpec",
    "check_contract",
    "contract_problems",
    "open_model",
    "predict_tflite",
]

# runtime name -> "module:class" of its handle; imported on first use (a runtime's library loads only then)
RUNTIMES: dict[str, str] = {
    "litert": "lenet_edge.runtimes.litert:LiteRTModel",
    "tflm": "lenet_edge.runtimes.micro:MicroModel",  # TensorFlow Lite Micro (the tflite-micro package)
}


def handle_class(runtime: str) -> Callable[..., ModelHandle]:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    module, _, name = RUNTIMES[runtime].partition(":")
    return getattr(importlib.import_module(module), name)


def open_model(source, runtime: str = "litert", **options) -> ModelHandle:
    """Load a model (a path, or its bytes) in `runtime`; options are the runtime's own (threads, xnnpack, ...).

    Raises:
        ModelError: a missing, empty or unloadable file, or one that breaks the contract
            (one (1, 28, 28, 1) input and one (1, 10) output, float32/int8/uint8).
    """
    return handle_class(runtime)(source, **options)


def predict_tflite(model, images: np.ndarray, batch_size: int = SCORES_BATCH, classes: int = NUM_CLASSES) -> np.ndarray:
    """Float `(N, classes)` logits of a .tflite model (path or bytes) on uint8 `(N, 28, 28)` images.

    LiteRT's built-in kernels, no XNNPACK.
    """
    return open_model(model, xnnpack=False, classes=classes).scores(images, batch_size)
