"""The benchmark harness on tiny untrained models: schema, what it measures, failures, writer.

Four TFLite conversions in all (the converter leaks memory per call in TF 2.21),
made once per test run; the harness itself runs with small counts.
"""

import json
import platform
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lenet_edge.benchmark import BenchConfig, bench_models, format_markdown, format_table, write_results
from lenet_edge.compat import keras, tf
from lenet_edge.fileio import sha256_file
from lenet_edge.harness import STAT_KEYS, data_sha256
from lenet_edge.model import build_lenet5
from lenet_edge.runtimes.base import TensorSpec, input_levels
from lenet_edge.runtimes.litert import delegation

N_IMAGES = 70  # not a multiple of accuracy_batch below, so the last batch is a partial one
FAST = BenchConfig(
    runs=60,
    warmup=10,
    batch_sizes=(1, 8),
    accuracy_batch=16,
    throughput_seconds=0.05,
    throughput_chunks=3,
    load_repeats=2,
)


def _convert(model, int8_images=None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8_images is not None:  # full-integer: int8 weights, activations, input and output
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None, ..., None]] for x in int8_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _wide_net() -> keras.Model:
    """Same input and output as LeNet-5, ~70x the multiply-adds: a model that must time slower."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(64, 3, padding="same", activation="relu"),  # (B, 28, 28, 64)
            layers.Conv2D(64, 3, padding="same", activation="relu"),  # (B, 28, 28, 64)
            layers.GlobalAveragePooling2D(),  # (B, 64)
            layers.Dense(10),
        ]
    )


def _wrong_input_net() -> keras.Model:
    return keras.Sequential([keras.Input(shape=(32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])


@pytest.fixture(scope="session")
def data():
    """Random (N, 28, 28) uint8 images, labelled with the untrained Keras LeNet-5's own predictions.

    So the float32 TFLite model should score ~100% (it computes the same function,
    up to float rounding): an end-to-end check that images reach the model as
    float32 uint8/255 of shape (B, 28, 28, 1) and that argmax is read back right.
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_IMAGES, 28, 28), dtype=np.uint8)
    x = images[..., None].astype(np.float32) / 255.0  # (N, 28, 28, 1)
    model = build_lenet5("lenet5")
    # An untrained net gives every noise image the same class; centring the logits on
    # this data spreads the predictions over the classes, so accuracy and flips mean something.
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel, bias - model.predict(x, verbose=0).mean(axis=0)])
    labels = model.predict(x, verbose=0).argmax(axis=1)
    assert len(np.unique(labels)) >= 5
    return model, images, labels


@pytest.fixture(scope="session")
def model_files(tmp_path_factory, data):
    model, images, _ = data
    folder = tmp_path_factory.mktemp("models")
    files = {
        "float32": _convert(model),
        "int8": _convert(model, int8_images=images[:16].astype(np.float32) / 255.0),
        "wide": _convert(_wide_net()),
        "wrong_input": _convert(_wrong_input_net()),
        "corrupt": b"this is not a flatbuffer" * 10,
        "empty": b"",
    }
    for name, content in files.items():
        (folder / f"{name}.tflite").write_bytes(content)
    return {name: folder / f"{name}.tflite" for name in files}


@pytest.fixture(scope="session")
def run(model_files, data):
    """One benchmark of seven entries: (results, progress messages)."""
    _, images, labels = data
    models = {
        "float32": model_files["float32"],
        "int8": model_files["int8"],
        "float32_again": model_files["float32"],  # compared with itself: agreement 1, no flips
        "wide": model_files["wide"],
        "wrong_input": model_files["wrong_input"],
        "corrupt": model_files["corrupt"],
        "empty": model_files["empty"],
    }
    messages = []
    out = bench_models(
        models, images, labels, FAST, data_info={"source": "random", "split": "test"}, progress=messages.append
    )
    return out, messages


@pytest.fixture(scope="session")
def results(run):
    return run[0]


def _ok_models(results):
    return {n: m for n, m in results["models"].items() if "error" not in m}


def test_top_level_schema(run, data):
    results, messages = run
    assert results["schema_version"] == 1
    assert results["reference"] == "float32"
    _, images, labels = data
    assert results["data"] == {
        "source": "random",
        "split": "test",
        "n": N_IMAGES,
        "sha256": data_sha256(images, labels),
    }
    machine = results["machine"]
    for key in ("cpu", "cpu_arch", "cpu_isa", "cores", "python", "platform", "versions", "timer", "peak_rss_kb"):
        assert key in machine
    assert machine["cpu_arch"] == platform.machine()
    assert set(machine["cpu_isa"]) <= set(machine["cpu_isa_checked"])
    assert "ai_edge_litert" in machine["versions"]
    assert results["config"]["batch_sizes"] == [1, 8] and results["config"]["runs"] == 60
    assert set(results["models"]) == {"float32", "int8", "float32_again", "wide", "wrong_input", "corrupt", "empty"}
    assert messages and all(isinstance(m, str) for m in messages), "progress was never called"


def test_every_ok_model_has_sane_measurements(results):
    ok = _ok_models(results)
    assert set(ok) == {"float32", "int8", "float32_again", "wide"}
    for name, m in ok.items():
        assert m["size_bytes"] == Path(m["path"]).stat().st_size > 0
        assert m["sha256"] == sha256_file(m["path"])
        for key in ("latency_us", "invoke_us"):
            s = m[key]
            assert set(s) == set(STAT_KEYS)
            assert 0 < s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"], (name, key, s)
            assert s["std"] >= 0 and all(isinstance(v, float) for v in s.values())
        # invoke is a part of the end-to-end call, so its median cannot exceed the whole's
        assert m["invoke_us"]["p50"] <= m["latency_us"]["p50"]
        assert len(m["latency_samples_ns"]) == FAST.runs
        assert set(m["throughput_ips"]) == {"1", "8"} and all(v > 0 for v in m["throughput_ips"].values())
        assert 0 <= m["accuracy"] <= 1
        assert len(m["per_class_accuracy"]) == 10
        assert all(a is None or 0 <= a <= 1 for a in m["per_class_accuracy"])
        confusion = np.asarray(m["confusion"])
        assert confusion.shape == (10, 10) and confusion.sum() == N_IMAGES
        assert np.trace(confusion) / N_IMAGES == pytest.approx(m["accuracy"])
        assert 0 <= m["agreement_with_reference"] <= 1
        assert m["flips"] == round((1 - m["agreement_with_reference"]) * N_IMAGES)
        assert m["load_ms"] > 0 and m["load_ms_first"] > 0
        assert m["rss_growth_kb"] is None or isinstance(m["rss_growth_kb"], float)
        assert m["weights_bytes"] > 0 and m["activations_sum_bytes"] > 0
        assert m["xnnpack"]["delegated"] and m["xnnpack"]["partitions"] == 1  # these graphs are XNNPACK-only
        assert m["xnnpack"]["ops_delegated"] == m["xnnpack"]["ops_total"] == len(m["ops"])
        ratios = m["ratios_to_reference"]
        assert set(ratios) == {"p50_latency", "p50_invoke", "p50_latency_of_p50s", "size", "accuracy_delta_pp"}
        assert all(v > 0 for k, v in ratios.items() if k != "accuracy_delta_pp")


def test_tensor_specs_and_ops(results):
    f32, i8 = results["models"]["float32"], results["models"]["int8"]
    assert f32["input"] == {"dtype": "float32", "shape": [1, 28, 28, 1], "scale": None, "zero_point": None}
    assert i8["input"]["dtype"] == "int8" and i8["output"]["dtype"] == "int8"
    assert i8["input"]["scale"] > 0 and -128 <= i8["input"]["zero_point"] <= 127
    assert f32["ops"].count("CONV_2D") == 2 and f32["ops"].count("FULLY_CONNECTED") == 3
    assert i8["size_bytes"] < f32["size_bytes"] / 2  # int8 weights


def test_accuracy_is_measured_on_the_model_output(results):
    # labels are the Keras model's own predictions (see `data`): float TFLite reproduces them,
    # up to a flip or two where two logits differ by ~1e-5 (float rounding order)
    assert results["models"]["float32"]["accuracy"] >= 0.97
    # the untrained net's logit margins are ~0.01, so int8 rounding flips many; it still beats chance
    assert results["models"]["int8"]["accuracy"] > 0.2


def test_model_compared_with_itself(results):
    for name in ("float32", "float32_again"):
        m = results["models"][name]
        assert m["agreement_with_reference"] == 1.0 and m["flips"] == 0
        assert m["ratios_to_reference"]["size"] == 1.0 and m["ratios_to_reference"]["accuracy_delta_pp"] == 0.0
    assert results["models"]["float32"]["ratios_to_reference"]["p50_latency"] == 1.0


def test_int8_agreement_and_flips(results):
    f32, i8 = results["models"]["float32"], results["models"]["int8"]
    assert i8["flips"] == round(N_IMAGES * (1 - i8["agreement_with_reference"]))
    # a prediction that matches the label but not the reference's is a flip, so the accuracy gap is bounded by them
    assert abs(i8["accuracy"] - f32["accuracy"]) * N_IMAGES <= i8["flips"] + 1e-9
    delta_pp = 100 * (i8["accuracy"] - f32["accuracy"])
    assert i8["ratios_to_reference"]["accuracy_delta_pp"] == pytest.approx(delta_pp, abs=1e-3)


def test_slower_model_measures_slower(results):
    fast, wide = results["models"]["float32"], results["models"]["wide"]
    assert wide["latency_us"]["p50"] > fast["latency_us"]["p50"]
    assert wide["invoke_us"]["p50"] > fast["invoke_us"]["p50"]
    assert wide["ratios_to_reference"]["p50_latency"] > 1
    assert wide["throughput_ips"]["8"] < fast["throughput_ips"]["8"]


def test_failures_become_error_entries(results):
    assert results["ok"] is False
    wrong_shape = "has shape [1, 32, 32, 1], expected [1, 28, 28, 1]"
    for name, fragment in (("corrupt", "Flatbuffer"), ("empty", "empty"), ("wrong_input", wrong_shape)):
        entry = results["models"][name]
        assert set(entry) == {"error"} and fragment in entry["error"], entry
        assert "\n" not in entry["error"]


def test_all_good_run_is_ok_and_xnnpack_can_be_off(model_files, data):
    _, images, labels = data
    config = BenchConfig(
        runs=20, warmup=2, batch_sizes=(4,), throughput_seconds=0.02, throughput_chunks=1, load_repeats=1, xnnpack=False
    )
    out = bench_models({"float32": model_files["float32"], "int8": model_files["int8"]}, images, labels, config)
    assert out["ok"] is True and out["config"]["xnnpack"] is False
    for m in out["models"].values():
        assert m["xnnpack"]["delegated"] is False and m["xnnpack"]["partitions"] == 0
        assert set(m["throughput_ips"]) == {"4"}
    assert out["data"] == {"source": None, "split": None, "n": N_IMAGES, "sha256": data_sha256(images, labels)}


def test_write_results(results, tmp_path):
    written = write_results(results, tmp_path / "bench")
    assert set(written) == {
        "bench.json",
        "bench.md",
        "latency.png",
        "confusion_float32.png",
        "confusion_int8.png",
        "confusion_float32_again.png",
        "confusion_wide.png",
    }
    assert json.loads(written["bench.json"].read_text(encoding="utf-8")) == results
    markdown = written["bench.md"].read_text(encoding="utf-8")
    assert markdown == format_markdown(results) and "| int8 |" in markdown and "ERROR" in markdown
    for name, path in written.items():
        if name.endswith(".png"):
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                assert image.format == "PNG" and image.size == (900, 600)
    assert not [p for p in (tmp_path / "bench").iterdir() if p.name.startswith(".lenet-edge-tmp-")]


def test_format_table(results):
    table = format_table(results)
    print(table)  # shown with `pytest -s`: a sample for the README
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["model", "size"] and set(lines[1]) <= {"-", " "}
    for name in results["models"]:
        assert any(line.startswith(name + " ") for line in lines), name
    assert "ERROR: ModelError" in table and "1 part, 8/8 ops" in table
    header_width = len(lines[0])
    assert all(len(line) == header_width for line in lines[2:6])  # ok rows are aligned to the header


def test_input_levels_match_the_quantization_formula():
    x = np.arange(256, dtype=np.float32) / 255
    assert np.array_equal(input_levels(TensorSpec("x", "float32", (1, 28, 28, 1))), x)
    scale, zero_point = 1 / 255, -128  # what the converter picks for a [0, 1] input
    levels = input_levels(TensorSpec("x", "int8", (1, 28, 28, 1), scale, zero_point))
    assert levels.dtype == np.int8 and np.array_equal(levels.astype(int), np.arange(256) - 128)
    # x / scale reaches 510: clipped at 127
    saturated = input_levels(TensorSpec("x", "int8", (1, 28, 28, 1), 1 / 510, 0))
    assert saturated.max() == 127 and saturated.min() == 0


def test_delegation_walk_finds_the_ops_left_on_cpu():
    # a chain conv -> pool -> conv: the pool stays on CPU, so XNNPACK takes two partitions
    ops = [
        {"op_name": "CONV_2D", "inputs": [0, 10], "outputs": [1]},
        {"op_name": "AVERAGE_POOL_2D", "inputs": [1], "outputs": [2]},
        {"op_name": "CONV_2D", "inputs": [2, 11], "outputs": [3]},
        {"op_name": "DELEGATE", "inputs": [0, 10], "outputs": [1]},
        {"op_name": "DELEGATE", "inputs": [2, 11], "outputs": [3]},
    ]
    info = delegation(ops)
    assert info == {
        "delegated": True,
        "partitions": 2,
        "ops_delegated": 2,
        "ops_total": 3,
        "ops_not_delegated": ["AVERAGE_POOL_2D"],
    }
    assert delegation(ops[:3])["delegated"] is False


def test_bad_arguments_raise_value_error(model_files, data):
    _, images, labels = data
    with pytest.raises(ValueError, match="reference"):
        bench_models({"int8": model_files["int8"]}, images, labels, FAST)
    with pytest.raises(ValueError, match="images"):
        bench_models({"float32": model_files["float32"]}, images[..., None], labels, FAST)
    with pytest.raises(ValueError, match="runs"):
        BenchConfig(runs=0)
    with pytest.raises(ValueError, match="batch_sizes"):
        BenchConfig(batch_sizes=())
