"""The one module that decides which TensorFlow, Keras and interpreter we use.

tensorflow-model-optimization 0.8 only works with Keras 2, which TensorFlow 2.16+
ships separately as `tf_keras`. TensorFlow reads `TF_USE_LEGACY_KERAS` once, at
its first import, so it is set here, before that import; every other module
imports `tf`, `keras`, `tfmot` and `Interpreter` from here and never directly.

Inference runs in the LiteRT interpreter (`ai_edge_litert`), the successor of
the deprecated `tf.lite.Interpreter`.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # must precede the first `import tensorflow`

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

tf.get_logger().setLevel("ERROR")

__all__ = ["Interpreter", "OpResolverType", "keras", "tf", "tfmot", "versions"]


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, for manifests and reports."""
    import ai_edge_litert
    import numpy

    def version_of(module) -> str:
        return getattr(module, "__version__", "unknown")

    return {
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "tensorflow_model_optimization": version_of(tfmot),
        "ai_edge_litert": version_of(ai_edge_litert),
        "numpy": numpy.__version__,
    }
