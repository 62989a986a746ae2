"""The one module that decides which TensorFlow, Keras and interpreter we use.

tensorflow-model-optimization 0.8 only works with Keras 2, which TensorFlow 2.16+
ships separately as `tf_keras`. TensorFlow reads `TF_USE_LEGACY_KERAS` once, at
its first import, so it is set here, before that import; every other module
imports `tf`, `keras`, `tfmot` and `Interpreter` from here and never directly.

Inference runs in the LiteRT interpreter (`ai_edge_litert`), the successor of
the deprecated `tf.lite.Interpreter`. It does not need TensorFlow, so `tf`,
`keras` and `tfmot` are imported on first use: `bench` and `predict`, which
only run .tflite files, start without paying for TensorFlow's import.
"""

import os
from importlib import import_module, metadata

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # must precede the first `import tensorflow`

from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

__all__ = ["Interpreter", "OpResolverType", "keras", "tf", "tflite_schema", "tfmot", "versions"]  # noqa: F822 (lazy, see __getattr__)

_TENSORFLOW = {"tf": "tensorflow", "keras": "tf_keras", "tfmot": "tensorflow_model_optimization"}


def __getattr__(name: str):
    """`from .compat import tf` (or keras, tfmot) imports it on first use."""
    if name not in _TENSORFLOW:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(_TENSORFLOW[name])
    if name == "tf":
        module.get_logger().setLevel("ERROR")
    globals()[name] = module
    return module


def tflite_schema():
    """LiteRT's generated classes for the .tflite flatbuffer schema (reading and rewriting a model file)."""
    return import_module("ai_edge_litert.schema_py_generated")


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, for manifests and reports (no import needed)."""
    packages = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy")
    found = {}
    for package in packages:
        try:
            found[package.replace("-", "_")] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package.replace("-", "_")] = "not installed"
    return found
