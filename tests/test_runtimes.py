"""The model handle: one contract for every stage, and room for a second runtime.

One tiny model converted three ways (float32, int8 I/O, uint8 I/O), plus a
runtime written here in numpy that plugs into the benchmark through the same
interface a TensorFlow Lite Micro or remote runner uses.
"""

from __future__ import annotations

import numpy as np
import pytest

from lenet_edge.benchmark import bench_models
from lenet_edge.config import BenchConfig
from lenet_edge.errors import ModelError
from lenet_edge.runtimes import (
    INPUT_SHAPE,
    ModelHandle,
    TensorSpec,
    contract_problems,
    open_model,
    predict_tflite,
)

SPEC_IN = TensorSpec("in", "int8", INPUT_SHAPE, 1 / 255, -128)
SPEC_OUT = TensorSpec("out", "int8", (1, 10), 0.1, 3)
FAST = BenchConfig(runs=30, warmup=3, batch_sizes=(1, 4), throughput_seconds=0.02, throughput_chunks=2, load_repeats=1)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20)


@pytest.fixture(scope="module")
def models(tmp_path_factory, images):
    """float32, int8-I/O and uint8-I/O conversions of one small Keras model."""
    from lenet_edge.compat import keras, tf

    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
         keras.layers.Dense(10)]
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("runtimes")
    paths = {"float32": folder / "float32.tflite"}
    paths["float32"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    for name, io_type in (("int8", tf.int8), ("uint8", tf.uint8)):
        converter = tf.lite.TFLiteConverter.from_keras_model(net)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None, ..., None].astype(np.float32) / 255] for x in images[0])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = io_type
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(converter.convert())
    return paths


def test_contract_accepts_the_three_io_types_and_names_each_problem():
    assert contract_problems([SPEC_IN], [SPEC_OUT]) == []
    for dtype in ("float32", "uint8"):
        spec = TensorSpec("in", dtype, INPUT_SHAPE, 1 / 255 if dtype == "uint8" else 0.0)
        assert contract_problems([spec], [SPEC_OUT]) == []
    assert contract_problems([SPEC_IN, SPEC_IN], [SPEC_OUT]) == ["expected 1 input and 1 output, found 2 and 1"]
    problems = contract_problems(
        [TensorSpec("in", "float16", (1, 32, 32, 1))], [TensorSpec("out", "int8", (1, 10), 0.0)]
    )
    assert problems == [
        "input 'in' is float16, expected one of float32, int8, uint8",
        "input 'in' has shape [1, 32, 32, 1], expected [1, 28, 28, 1]",
        "output 'out' is int8 without a quantization scale",
    ]


def test_every_stage_accepts_a_uint8_model(models, images, tmp_path):
    """Once refused by predict and accepted by bench; now one contract decides for both."""
    from lenet_edge.inference import predict

    x, labels = images
    handle = open_model(models["uint8"])
    assert handle.input.dtype == "uint8" and handle.output.dtype == "uint8"
    assert handle.to_input(x[:1]).dtype == np.uint8
    results = bench_models({"uint8": models["uint8"]}, x, labels, FAST, reference="uint8")
    assert results["ok"], results["models"]
    from PIL import Image

    Image.fromarray(np.pad(x[0], 4)).save(tmp_path / "digit.png")
    (entry,) = predict([tmp_path / "digit.png"], model_path=models["uint8"])
    assert "error" not in entry and 0 <= entry["digit"] <= 9


def test_the_quantized_handles_score_like_the_float_model(models, images):
    x, _ = images
    scores = {name: predict_tflite(path, x) for name, path in models.items()}
    for name in ("int8", "uint8"):
        assert scores[name].dtype == np.float32 and scores[name].shape == (len(x), 10)
        # int8 and uint8 differ only by the zero-point shift of 128: the same logits
        np.testing.assert_allclose(scores[name], scores["int8"], atol=1e-6)
    assert np.abs(scores["int8"] - scores["float32"]).max() < 0.1 * np.abs(scores["float32"]).max() + 0.05


def test_handle_batches_and_times_one_image(models, images):
    x, _ = images
    handle = open_model(models["int8"], threads=1, xnnpack=True)
    scores = handle.scores(x, batch_size=6)  # 20 images: batches of 6, 6, 6, 2
    assert handle.batch == 1
    np.testing.assert_array_equal(handle.predict_all(x, 7), scores.argmax(1))
    raw = handle.raw_all(x)
    assert raw.dtype == np.int8 and np.array_equal(handle.logits(raw), scores)
    total, invoke = handle.time_one(x[:1])
    assert isinstance(total, int) and 0 < invoke <= total
    description = handle.describe()
    assert description["runtime"] == "litert" and description["xnnpack"]["partitions"] >= 1
    assert description["input"] == {"dtype": "int8", "shape": [1, 28, 28, 1], "scale": handle.input.scale,
                                    "zero_point": handle.input.zero_point}  # fmt: skip


def test_open_model_names_the_file_and_the_problem(tmp_path):
    (tmp_path / "junk.tflite").write_bytes(b"junk")
    (tmp_path / "empty.tflite").write_bytes(b"")
    for name, expected in (("junk", "not a loadable TFLite model"), ("empty", "empty file"), ("none", "no such file")):
        with pytest.raises(ModelError, match=f"{name}.tflite: {expected}"):
            open_model(tmp_path / f"{name}.tflite")
    with pytest.raises(ValueError, match="runtime must be one of litert"):
        open_model(tmp_path / "junk.tflite", runtime="nope")


class LinearModel(ModelHandle):
    """A runtime written in numpy: one linear layer on the int8 input, fixed batch of one (like TFLite Micro)."""

    runtime = "numpy"
    max_batch = 1

    def __init__(self, weights: np.ndarray):
        self.label, self.weights = "<linear>", weights  # (784, 10)
        self._ready([SPEC_IN], [TensorSpec("out", "float32", (1, 10))])

    def _set_input(self, x):
        self.x = x.reshape(len(x), -1).astype(np.float32)

    def _invoke(self):
        self.y = self.x @ self.weights

    def _get_output(self):
        return self.y

    def describe_graph(self):
        return {"ops": ["FULLY_CONNECTED"]}


def test_a_second_runtime_is_benchmarked_like_litert(models, images, tmp_path):
    x, labels = images
    weights = np.random.default_rng(1).normal(size=(784, 10)).astype(np.float32)
    paths = {"a": tmp_path / "a.bin", "b": tmp_path / "b.bin"}
    for path in paths.values():
        path.write_bytes(weights.tobytes())

    def load(name: str) -> LinearModel:
        return LinearModel(np.frombuffer(paths[name].read_bytes(), np.float32).reshape(784, 10))

    results = bench_models(paths, x, labels, FAST, reference="a", load=load)  # bench itself is unchanged
    assert results["ok"], results["models"]
    a = results["models"]["a"]
    assert a["ops"] == ["FULLY_CONNECTED"] and a["runtime"] == "numpy"
    assert set(a["throughput_ips"]) == {"1"}  # batch 4 is above the runtime's max_batch: no figure, no error
    assert results["models"]["b"]["agreement_with_reference"] == 1.0
    expected = ((x.reshape(len(x), -1).astype(np.float32) - 128) @ weights).argmax(1)
    assert a["accuracy"] == float((expected == labels).mean())
    with pytest.raises(ModelError, match="batch 4 is above this runtime's 1"):
        load("a").set_batch(4)
