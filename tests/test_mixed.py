"""Mixed precision: the first layers float32, a QUANTIZE, the rest int8, from the QAT model (`export --mixed`).

The numerics test follows the house pattern: (1) a trained QAT model (the shared
tiny run), (2) the mixed graph from it, (3) converted, (4) run in LiteRT, (5)
compared: with the Keras QAT model, and the int8 body byte for byte with the
int8 export's. Conversions here: 1 in the module fixture, 4 candidates (+0)
in the auto test, 1 in the lenet5-classic test (4 more in its auto test, marked slow), 1 more in the CLI
test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_run

from lenet_edge import mixed
from lenet_edge.benchmark import bench_run
from lenet_edge.cli import main
from lenet_edge.config import WEIGHTED_LAYERS, BenchConfig, ExportConfig, parse_float_layers
from lenet_edge.conversion import predict_keras
from lenet_edge.data import load_run_splits
from lenet_edge.errors import ModelError
from lenet_edge.model import build_lenet5, load_qat
from lenet_edge.reading import resolve_verifier
from lenet_edge.report import format_markdown, precision_summary
from lenet_edge.runtimes import open_model
from lenet_edge.runtimes.litert import inspect_tflite, load_interpreter
from lenet_edge.verdict import recommendation
from lenet_edge.verifier import load_verifier_qat, training_pieces


@pytest.fixture(scope="module")
def qat(exported_run):
    return load_qat(exported_run / "lenet5_qat.weights.h5", "lenet5")


@pytest.fixture(scope="module")
def images(tiny_npz):
    return np.load(tiny_npz)["x_test"]


@pytest.fixture(scope="module")
def mixed_c1(qat) -> bytes:
    return mixed.convert_mixed(mixed.mixed_model(qat, build_lenet5("lenet5"), ("c1",)))


def test_the_weighted_layers_are_the_models():
    for arch in ("lenet5", "lenet5-classic"):
        assert tuple(mixed.weighted_layers(arch)) == WEIGHTED_LAYERS


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("c1", ("c1",)), (" c1, c3 ", ("c1", "c3"))])
def test_float_layers_forms(value, expected):
    assert parse_float_layers(value) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("c3", "must be the first k weighted layers"),
        ("c1,c5", "must be the first k weighted layers"),
        ("c1,c3,c5,f6,logits", "one or more left int8"),
        ("conv1", "unknown layer conv1"),
        ("", "unknown layer"),
    ],
)
def test_float_layers_that_cannot_be_built_are_refused(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_float_layers(value)
    with pytest.raises(ValueError, match=fragment):
        ExportConfig(int8=True, mixed=True, float_layers=tuple(value.split(",")))


def test_mixed_is_float_then_quantize_then_the_int8_body(mixed_c1, exported_run, qat, images):
    check = mixed.verify_mixed(mixed_c1)
    kinds = [(r["op"], r["precision"]) for r in check["precision"]]
    assert kinds[:2] == [("CONV_2D", "float32"), ("QUANTIZE", "float32->int8")]
    assert all(kind == "int8" for _, kind in kinds[2:]) and len(kinds) == 9
    # The int8 part is the int8 export's, byte for byte: the same quantized kernels and scales from QAT's ranges.
    int8_file = exported_run / "lenet5_int8.tflite"
    assert _int8_weights(mixed_c1) == _int8_weights(int8_file)[1:]  # all but c1's
    assert inspect_tflite(mixed_c1)["outputs"][0]["scale"] == inspect_tflite(int8_file)["outputs"][0]["scale"]
    # And it computes what the QAT model computes: logits within a few output steps (c1 is exact float here,
    # fake-quantized there), so the same digit wherever the QAT model's margin is wider than that.
    handle = open_model(mixed_c1)
    logits, keras_logits = handle.scores(images), predict_keras(qat, images)
    tolerance = 3 * handle.output.scale
    assert np.abs(logits - keras_logits).max() <= tolerance
    top2 = np.sort(keras_logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * tolerance
    assert clear.sum() >= 10 and (logits.argmax(1) == keras_logits.argmax(1))[clear].all()


def _int8_weights(model) -> list[bytes]:
    """The bytes of every int8 constant tensor with two or more dimensions (conv and dense kernels), in order."""
    interpreter = load_interpreter(model)
    info = inspect_tflite(model)
    produced = {t for op in info["ops"] for t in op["outputs"]} | {i["index"] for i in info["inputs"]}
    read = {t for op in info["ops"] for t in op["inputs"]}  # not the kernels' scratch tensors
    return [
        interpreter.get_tensor(t["index"]).tobytes()
        for t in info["tensors"]
        if t["dtype"] == "int8" and len(t["shape"]) >= 2 and t["index"] in read - produced
    ]


def test_verify_mixed_names_what_is_out_of_place(exported_run):
    for name, fragment in (("int8", "input is int8, not float32"), ("float32", "output is float32, not int8")):
        path = exported_run / f"lenet5_{name}.tflite"
        with pytest.raises(ModelError, match=fragment) as info:
            mixed.verify_mixed(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_auto_keeps_the_fastest_candidate_measured_here(qat, exported_run, images):
    baselines = {n: (exported_run / f"lenet5_{n}.tflite").read_bytes() for n in ("float32", "int8")}
    layers, data, record = mixed.fastest_split(qat, "lenet5", baselines, images, rounds=40, warmup=5)
    candidates = {k: v for k, v in record["p50_us"].items() if k not in baselines}
    assert list(candidates) == ["c1", "c1+c3", "c1+c3+c5", "c1+c3+c5+f6"]
    assert record["chosen"] == min(candidates, key=candidates.get) == "+".join(layers)
    assert record["machine"]["cpu"] and set(baselines) <= set(record["p50_us"])
    assert [r["precision"] for r in mixed.precision(data)].count("float32->int8") == 1
    assert record["skipped"] == {}


@pytest.fixture(scope="module")
def classic_qat():
    from lenet_edge.model import quantize_aware

    return quantize_aware(build_lenet5("lenet5-classic"))  # untrained: the graph decides this, not the weights


def test_a_prefix_the_converter_cannot_keep_float_is_refused(classic_qat):
    """lenet5-classic past c1: the average pooling after a TANH turns int8, and the layers after it with it."""
    data = mixed.convert_mixed(mixed.mixed_model(classic_qat, build_lenet5("lenet5-classic"), ("c1", "c3")))
    assert mixed.verify_mixed(data)["float_ops"] == 2  # one QUANTIZE: it looks float-then-int8 ...
    with pytest.raises(ModelError, match="c3 asked to stay float32 but the converter quantized it"):
        mixed.verify_prefix(data, ("c1", "c3"))  # ... but only CONV_2D c1 and its TANH are float


@pytest.mark.slow
def test_auto_leaves_out_a_prefix_the_converter_cannot_keep_float(classic_qat, images):
    qat = classic_qat
    layers, data, record = mixed.fastest_split(qat, "lenet5-classic", {}, images, rounds=10, warmup=2)
    assert layers == ("c1",) and list(record["p50_us"]) == ["c1"]
    assert mixed.verify_prefix(data, layers)["precision"][0] == {"index": 0, "op": "CONV_2D", "precision": "float32"}
    skipped = record["skipped"]
    assert list(skipped) == ["c1+c3", "c1+c3+c5", "c1+c3+c5+f6"]
    assert "c3 asked to stay float32 but the converter quantized it" in skipped["c1+c3"]
    assert "is not a float-then-int8 model" in skipped["c1+c3+c5"]  # a DEQUANTIZE back to float and a second QUANTIZE
    assert all("\n" not in why for why in skipped.values())


def test_export_and_bench_the_mixed_model(exported_run, tmp_path, monkeypatch):
    run = copy_run(exported_run, tmp_path / "run")
    runner = CliRunner()
    result = runner.invoke(main, ["export", "--dir", str(run), "--float-layers", "c1,c3", "--min-agreement", "0"])
    assert result.exit_code == 0, result.output
    assert "lenet5_mixed.tflite: c1, c3 in float32 (CONV_2D MAX_POOL_2D CONV_2D), QUANTIZE, int8" in result.output
    manifest = json.loads((run / "manifest.json").read_text())
    entry = manifest["export"]["models"]["mixed_tflite"]
    assert entry["float_layers"] == ["c1", "c3"] and entry["auto"] is None
    assert manifest["artifacts"]["mixed_tflite"]["size_bytes"] == (run / "lenet5_mixed.tflite").stat().st_size
    paired = f"`lenet-edge read --model {run}/lenet5_mixed.tflite` cuts with it"
    assert f"verifier_mixed.tflite: the piece verifier with c1, c3 in float32, the rest int8; {paired}" in result.output
    check_mixed_verifier(run, manifest)
    line = "line_mixed.tflite: the line model with c1, c3 in float32 in each member, the rest int8; "
    assert line + f"`lenet-edge read --model {run}/lenet5_mixed.tflite` reads with it" in result.output
    check_mixed_line_model(run, manifest, monkeypatch)

    config = BenchConfig(runs=20, warmup=2, batch_sizes=(1, 4), throughput_seconds=0.05, load_repeats=1, micro_runs=10)
    results, _ = bench_run(run, config, write=False)
    assert list(results["models"]) == ["float32", "int8", "mixed"]
    assert "mixed" not in results["tflm"]["models"]  # TFLM and microcontrollers keep the full-int8 model
    assert results["models"]["mixed"]["precision"][:4] == ["float32", "float32", "float32", "float32->int8"]
    text = format_markdown(results)
    assert "- mixed: float32 (CONV_2D, MAX_POOL_2D, CONV_2D) -> QUANTIZE float32->int8 -> int8" in text
    assert "On this CPU ship " in results["targets"][0]["verdict"]
    files = [results[key]["file"] for key in ("verifier", "verifier_mixed", "line_model", "line_mixed")]
    assert files == ["verifier_int8.tflite", "verifier_mixed.tflite", "line_int8.tflite", "line_mixed.tflite"]
    assert "Piece verifier verifier_mixed.tflite" in text and "Line model line_mixed.tflite" in text
    assert results["line_mixed"]["numbers"] == results["line_model"]["numbers"] > 0  # the same numbers


def check_mixed_verifier(run, manifest):
    """The piece verifier's mixed model: the digit model's float depth, QAT's numbers, paired with it by `read`."""
    assert manifest["export"]["models"]["verifier_mixed_tflite"]["float_layers"] == ["c1", "c3"]
    path = run / "verifier_mixed.tflite"
    kinds = [r["precision"] for r in mixed.verify_mixed(path)["precision"]]
    assert kinds == ["float32"] * 3 + ["float32->int8"] + ["int8"] * 4  # c1, s2, c3; s4, flatten, f5, logits
    assert resolve_verifier(run / "lenet5_mixed.tflite") == path
    assert resolve_verifier(run / "lenet5_int8.tflite") == run / "verifier_int8.tflite"
    splits = load_run_splits(manifest)[1]
    pieces, _ = training_pieces(splits["val"].images, splits["val"].labels, 8, seed=5)
    handle = open_model(path, classes=2)
    logits = handle.scores(pieces)
    keras_logits = predict_keras(load_verifier_qat(run / "verifier_qat.weights.h5"), pieces)
    # two float layers where QAT fake-quantizes: within a few output steps, the same call wherever the margin is wider
    tolerance = 6 * handle.output.scale
    assert len(pieces) > 50 and np.abs(logits - keras_logits).max() <= tolerance
    clear = np.abs(keras_logits[:, 1] - keras_logits[:, 0]) > 2 * tolerance
    assert clear.sum() > 50 and (logits.argmax(1) == keras_logits.argmax(1))[clear].all()


def check_mixed_line_model(run, manifest, monkeypatch):
    """The line model's mixed file: each member with the digit model's float depth, read with the mixed models."""
    from lenet_edge import conversion, line_model
    from lenet_edge.line_model import FRAME
    from lenet_edge.reading import LineReader, resolve_line_model

    record = manifest["export"]["models"]["line_mixed_tflite"]
    assert record["float_layers"] == ["c1", "c3"] and record["sources"]["float_layers"] == ["c1", "c3"]
    assert record["parity"]["n"] == manifest["line_model"]["data"]["lines"]["val"]
    assert record["parity"]["agreement"] >= 0.9  # with the Keras graph it was converted from
    assert 0 <= record["parity"]["agreement_with_qat"] <= 1 and 0 <= record["parity"]["top1_tflite"] <= 1
    path = run / "line_mixed.tflite"
    kinds = [r["precision"] for r in mixed.verify_mixed(path, members=3)["precision"]]
    assert kinds.count("float32") == 9 and kinds.count("float32->int8") == 3  # c1, s2, c3 of each member
    with pytest.raises(ModelError, match="expected 1 QUANTIZE"):
        mixed.verify_mixed(path)  # three members: a QUANTIZE each
    assert resolve_line_model(run / "lenet5_mixed.tflite") == path
    assert resolve_line_model(run / "lenet5_int8.tflite") == run / "line_int8.tflite"
    strips = [np.random.default_rng(k).integers(0, 256, (FRAME, 96)).astype(np.uint8) for k in range(4)]
    both = [LineReader(run / name) for name in ("line_int8.tflite", "line_mixed.tflite")]
    for strip in strips:  # the same network: log-probabilities close, not equal (c1 and c3 not quantized)
        int8, mixed_logp = (reader(strip) for reader in both)
        assert int8.shape == mixed_logp.shape and np.abs(np.exp(int8) - np.exp(mixed_logp)).max() < 0.5
        assert np.allclose(np.exp(mixed_logp).sum(axis=-1), 1)

    def converting(*args, **kwargs):
        raise AssertionError("a line model was converted again")

    monkeypatch.setattr(line_model, "load_line_qat", converting)  # exported again: both files kept as they are
    members = conversion._line_member_weights(run, manifest)
    splits = load_run_splits(manifest)[1]
    kept = conversion._line_models(members, run, manifest, splits, ExportConfig(), lambda _: None, ("c1", "c3"))
    assert [r["file"] for r in kept.values()] == ["line_int8.tflite", "line_mixed.tflite"]
    assert kept["line_mixed_tflite"]["data"] == path.read_bytes()


def test_bad_float_layers_is_a_usage_error(exported_run):
    result = CliRunner().invoke(main, ["export", "--dir", str(exported_run), "--float-layers", "c3"])
    assert result.exit_code == 2 and "must be the first k weighted layers" in result.output


def verdict_entry(models: dict[str, tuple[float, float, float, float]]) -> dict:
    """name -> (top-1, p50 ratio, size ratio, batch-32 img/s), as `recommendation` reads a target."""
    entries = {}
    for name, (accuracy, p50, size, rate) in models.items():
        ratios = {"p50_latency": p50, "size": size}
        entries[name] = {"accuracy": accuracy, "ratios_to_reference": ratios, "throughput_ips": {"1": 1, "32": rate}}
    return {"reference": "float32", "config": {"batch_sizes": [1, 32]}, "models": entries}


def test_recommendation_is_the_fastest_that_keeps_accuracy():
    entry = verdict_entry(
        {
            "float32": (0.9950, 1.0, 1.0, 90_000),
            "int8": (0.9955, 3.3, 0.27, 30_000),
            "mixed": (0.9946, 0.9, 0.30, 95_000),  # 0.04 pp under float32: kept
            "int8_ptq": (0.9930, 0.8, 0.29, 99_000),  # 0.2 pp under: never recommended however fast
        }
    )
    text = recommendation(entry)
    assert text.startswith("On this CPU ship mixed: the fastest of the models within 0.1 pp of float32's top-1")
    assert "0.30x its size, 0.90x its p50; at batch 32, mixed (95,000 img/s, 1.06x)." in text
    entry["models"]["mixed"]["accuracy"] = 0.9930
    assert recommendation(entry).startswith("On this CPU ship float32:")


def test_precision_summary_groups_runs():
    ops = ["CONV_2D", "QUANTIZE", "MAX_POOL_2D", "FULLY_CONNECTED"]
    text = precision_summary(ops, ["float32", "float32->int8", "int8", "int8"])
    assert text == "float32 (CONV_2D) -> QUANTIZE float32->int8 -> int8 (MAX_POOL_2D, FULLY_CONNECTED)"
    assert precision_summary(ops, ["int8"] * 4) == "int8 (all 4 ops)"
