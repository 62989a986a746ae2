"""LeNet-5 structure, parameter counts, QAT wrapping and safe reloading."""

import numpy as np
import pytest

from lenet_edge.compat import keras
from lenet_edge.model import build_lenet5, load_float, load_qat, quantize_aware

# conv1 6*(5*5*1+1) + conv2 16*(5*5*6+1) + 400*120+120 + 120*84+84 + 84*10+10
LENET5_PARAMS = 156 + 2416 + 48120 + 10164 + 850


@pytest.mark.parametrize("arch", ["lenet5", "lenet5-classic"])
def test_structure_follows_the_diagram(arch):
    model = build_lenet5(arch)
    assert model.count_params() == LENET5_PARAMS == 61706
    shapes = [tuple(layer.output_shape[1:]) for layer in model.layers]
    assert shapes == [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (400,), (120,), (84,), (10,)]
    pool = keras.layers.MaxPooling2D if arch == "lenet5" else keras.layers.AveragePooling2D
    assert sum(isinstance(layer, pool) for layer in model.layers) == 2
    activation = "relu" if arch == "lenet5" else "tanh"
    hidden = [layer for layer in model.layers if hasattr(layer, "activation")][:-1]
    assert all(layer.activation.__name__ == activation for layer in hidden)
    assert model.layers[-1].activation.__name__ == "linear"  # logits


def test_unknown_arch_is_named():
    with pytest.raises(ValueError, match="lenet5, lenet5-classic"):
        build_lenet5("resnet")


def test_saved_models_reload_identically(tmp_path):
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    model = build_lenet5()
    model.save(tmp_path / "float.keras")
    np.testing.assert_array_equal(load_float(tmp_path / "float.keras")(x), model(x))

    qat = quantize_aware(build_lenet5("lenet5-classic"))
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, np.arange(4), epochs=1, verbose=0)  # moves the fake-quant ranges off their initial values
    qat.save_weights(tmp_path / "qat.weights.h5")
    np.testing.assert_array_equal(load_qat(tmp_path / "qat.weights.h5", "lenet5-classic")(x), qat(x))
