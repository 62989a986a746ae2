"""LeNet-5 for 28x28 handwritten digits, in two variants.

`lenet5` (the default) is built for int8 edge inference: ReLU and max pooling,
which the int8 kernels of XNNPACK run on their fast path, and a logits output
(softmax is left to the caller, where it costs nothing and keeps the int8
output's resolution on the scores that matter). `lenet5-classic` is the 1998
form the project started from: tanh and average pooling; XNNPACK has no int8
average pooling, so in int8 it splits into several partitions and runs slower
than in float. `bench` shows both.

The first convolution uses `same` padding: on a 28x28 input that is exactly
LeNet-5's 32x32 input with a 2-pixel zero border (C1 is 28x28x6 either way),
while keeping the model's input at the 28x28 our preprocessing produces and
adding no PAD op to the converted graph.
"""

from __future__ import annotations

from .compat import keras
from .config import ARCHITECTURES, TEACHER_ARCHITECTURES
from .data.preprocess import MODEL_INPUT_SHAPE as INPUT_SHAPE
from .data.preprocess import NUM_CLASSES, to_model_input  # noqa: F401  (the model's input contract)


def build_lenet5(arch: str = "lenet5") -> keras.Model:
    """Build an untrained LeNet-5.

    Args:
        arch: "lenet5" (ReLU, max pooling) or "lenet5-classic" (tanh, average pooling).

    Returns:
        A `keras.Sequential` taking float32 `(B, 28, 28, 1)` images in [0, 1] and
        returning `(B, 10)` logits.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {arch!r}")
    act = "relu" if arch == "lenet5" else "tanh"
    Pool = keras.layers.MaxPooling2D if arch == "lenet5" else keras.layers.AveragePooling2D
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, name="image"),  # (B, 28, 28, 1)
            layers.Conv2D(6, 5, padding="same", activation=act, name="c1"),  # (B, 28, 28, 6)
            Pool(2, name="s2"),  # (B, 14, 14, 6)
            layers.Conv2D(16, 5, activation=act, name="c3"),  # (B, 10, 10, 16)
            Pool(2, name="s4"),  # (B, 5, 5, 16)
            layers.Flatten(name="flatten"),  # (B, 400)
            layers.Dense(120, activation=act, name="c5"),  # (B, 120)
            layers.Dense(84, activation=act, name="f6"),  # (B, 84)
            layers.Dense(NUM_CLASSES, name="logits"),  # (B, 10)
        ],
        name=arch.replace("-", "_"),
    )


def build_teacher(arch: str = "wide") -> keras.Model:
    """Build an untrained distillation teacher: a larger CNN with the LeNet-5's input and output contract.

    Args:
        arch: "wide" (LeNet-5's two 5x5 convolutions and a dense layer, 5x wider, with batch
            normalisation; 878,762 parameters) or "deep" (five convolutions, VGG-like; 429,482
            parameters, about 1.4x the wide one's training time on a CPU).

    Returns:
        A `keras.Sequential` taking float32 `(B, 28, 28, 1)` images in [0, 1] and returning `(B, 10)`
        logits. It is float only: it teaches in training and is a reference row in `bench`.
    """
    if arch not in TEACHER_ARCHITECTURES:
        raise ValueError(f"teacher arch must be one of {', '.join(TEACHER_ARCHITECTURES)}; got {arch!r}")
    layers = keras.layers

    def conv(filters, size, name, padding="same"):  # conv -> batch norm -> ReLU (the norm carries the bias)
        return [
            layers.Conv2D(filters, size, padding=padding, use_bias=False, name=name),
            layers.BatchNormalization(name=f"{name}_bn"),
            layers.ReLU(name=f"{name}_relu"),
        ]

    if arch == "wide":
        body = [
            *conv(32, 5, "c1"),  # (B, 28, 28, 32)
            layers.MaxPooling2D(2, name="s2"),  # (B, 14, 14, 32)
            *conv(64, 5, "c3", padding="valid"),  # (B, 10, 10, 64)
            layers.MaxPooling2D(2, name="s4"),  # (B, 5, 5, 64)
            layers.Flatten(name="flatten"),  # (B, 1600)
            layers.Dense(512, use_bias=False, name="f5"),  # (B, 512)
        ]
    else:
        body = [
            *conv(32, 5, "c1"),  # (B, 28, 28, 32)
            layers.MaxPooling2D(2, name="s2"),  # (B, 14, 14, 32)
            *conv(64, 3, "c3a"),  # (B, 14, 14, 64)
            *conv(64, 3, "c3b"),  # (B, 14, 14, 64)
            layers.MaxPooling2D(2, name="s4"),  # (B, 7, 7, 64)
            *conv(128, 3, "c5"),  # (B, 7, 7, 128)
            layers.MaxPooling2D(2, name="s6"),  # (B, 3, 3, 128)
            layers.Flatten(name="flatten"),  # (B, 1152)
            layers.Dense(256, use_bias=False, name="f5"),  # (B, 256)
        ]
    head = [
        layers.BatchNormalization(name="f5_bn"),
        layers.ReLU(name="f5_relu"),
        layers.Dropout(0.3, name="dropout"),
        layers.Dense(NUM_CLASSES, name="logits"),  # (B, 10)
    ]
    return keras.Sequential([keras.Input(shape=INPUT_SHAPE, name="image"), *body, *head], name=f"teacher_{arch}")


def quantize_aware(model: keras.Model) -> keras.Model:
    """Wrap a float model for quantization-aware training (fake-quant on weights and activations)."""
    from .compat import tfmot

    return tfmot.quantization.keras.quantize_model(model)


def load_float(path) -> keras.Model:
    """Load a float `.keras` model saved by `train`, in safe mode (no code from the file runs)."""
    return keras.models.load_model(path, compile=False, safe_mode=True)


def load_qat(weights_path, arch: str) -> keras.Model:
    """Rebuild the QAT model of `arch` and load its weights from an `.weights.h5` file.

    A QAT model saved whole as `.keras` does not reload in tfmot 0.8 (its
    QuantizeLayer is built twice on load and the variable count no longer
    matches), so `train` stores the QAT weights and the architecture name, and
    this rebuilds the graph from our own code. Nothing from the file is executed.
    """
    return rebuilt_qat(build_lenet5(arch), weights_path)


def rebuilt_qat(model: keras.Model, weights_path) -> keras.Model:
    """`model` (float, freshly built by our own code) wrapped for QAT, with the QAT weights of `weights_path`."""
    model = quantize_aware(model)
    model.load_weights(weights_path)
    return model
