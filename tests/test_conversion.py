"""Export stage: float32 / int8 TFLite from a tiny trained run, verified end to end.

`TFLiteConverter.convert()` leaks memory on every call (TF 2.20/2.21), so the
conversions here are counted: `export_run` in the `exported` fixture converts
three models (float32, int8 from QAT, int8 PTQ), `test_conversion_is_deterministic`
one and `test_verify_rejects_int8_model_with_float_io` one; five in all. Every
other test reuses their bytes.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lenet_edge import carray, conversion
from lenet_edge.compat import keras, tf
from lenet_edge.errors import ModelError
from lenet_edge.fileio import sha256_file
from lenet_edge.manifest import (
    FORMAT_VERSION,
    artifact_path,
    exported_models,
    read_manifest,
    record_artifact,
    write_manifest,
)
from lenet_edge.model import build_lenet5, load_qat, quantize_aware, to_model_input
from lenet_edge.runtimes import litert as tflite

ARCH = "lenet5"
AGREEMENT_MIN = 0.998  # the CLI's default; a well-separated toy task meets it


@dataclasses.dataclass(frozen=True)
class Split:  # the shape of `lenet_edge.data.Split`, as far as export uses it
    images: np.ndarray  # (N, 28, 28) uint8, white on black
    labels: np.ndarray  # (N,) int64


def toy_splits(seed: int = 0) -> dict[str, Split]:
    """Ten easily told-apart classes: a fixed random blob per digit plus noise, like a crude digit set."""
    rng = np.random.default_rng(seed)
    templates = (rng.random((10, 28, 28)) < 0.25) * 200.0  # (10, 28, 28)

    def split(n: int) -> Split:
        labels = rng.integers(0, 10, n)
        images = np.clip(templates[labels] + rng.normal(0, 25, (n, 28, 28)), 0, 255).astype(np.uint8)
        return Split(images, labels.astype(np.int64))

    return {"train": split(400), "val": split(200), "test": split(100)}


def write_run(run_dir: Path, float_model, qat_model=None, arch: str = ARCH) -> Path:
    """A run directory as `train` leaves it: the models and a manifest recording them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": {"arch": arch, "seed": 0},
        "data": {"source": "toy"},
        "preprocessing": {"version": 1},
        "artifacts": {},
    }
    float_path = run_dir / f"{arch}_float.keras"
    float_model.save(float_path)
    record_artifact(manifest, "float_keras", float_path)
    if qat_model is not None:
        qat_path = run_dir / f"{arch}_qat.weights.h5"
        qat_model.save_weights(qat_path)
        record_artifact(manifest, "qat_weights", qat_path)
    write_manifest(run_dir, manifest)
    return run_dir


@pytest.fixture(scope="module")
def splits() -> dict[str, Split]:
    return toy_splits()


@pytest.fixture(scope="module")
def trained(splits):
    """1-2. A float LeNet-5 fitted on the toy set, then fine-tuned with QAT for one epoch."""
    keras.utils.set_random_seed(0)
    x = to_model_input(splits["train"].images)
    y = splits["train"].labels
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    float_model = build_lenet5(ARCH)
    float_model.compile(keras.optimizers.Adam(3e-3), loss)
    float_model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    qat_model = quantize_aware(float_model)
    qat_model.compile(keras.optimizers.Adam(1e-3), loss)
    qat_model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return float_model, qat_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, trained) -> Path:
    return write_run(tmp_path_factory.mktemp("run"), *trained)


@pytest.fixture(scope="module")
def exported(run_dir, splits):
    """3-5. `export_run` end to end: convert, verify, parity, write (three conversions)."""
    messages: list[str] = []
    summary = conversion.export_run(
        run_dir, int8=True, ptq=True, c_array=True, min_agreement=AGREEMENT_MIN, splits=splits, progress=messages.append
    )
    return summary, messages


def file_bytes(run_dir: Path, key: str) -> bytes:
    return artifact_path(run_dir, read_manifest(run_dir), key).read_bytes()


def test_export_run_writes_and_records_every_file(run_dir, exported):
    summary, messages = exported
    manifest = read_manifest(run_dir)
    expected = {
        "float32_tflite": "lenet5_float32.tflite",
        "int8_tflite": "lenet5_int8.tflite",
        "int8_ptq_tflite": "lenet5_int8_ptq.tflite",
        "c_header": "lenet5_int8.h",
        "c_source": "lenet5_int8.cc",
    }
    for key, name in expected.items():
        entry = manifest["artifacts"][key]
        assert entry["path"] == name
        assert entry["sha256"] == sha256_file(run_dir / name)
        assert entry["size_bytes"] == (run_dir / name).stat().st_size
    for key in ("int8_tflite", "int8_ptq_tflite"):
        quant = manifest["artifacts"][key]["quantization"]
        assert quant["input"]["dtype"] == quant["output"]["dtype"] == "int8"
        assert quant["input"]["scale"] == pytest.approx(1 / 255, rel=1e-3)  # inputs span [0, 1]
        assert quant["input"]["zero_point"] == -128
    assert manifest["artifacts"]["qat_weights"]["path"] == "lenet5_qat.weights.h5"  # train's entries kept
    section = manifest["export"]
    assert section["calibration"]["split"] == "train" and section["calibration"]["size"] == 400
    assert set(section["models"]) == {"float32_tflite", "int8_tflite", "int8_ptq_tflite"}
    assert not list(run_dir.glob(".lenet-edge-tmp-*"))  # nothing half-written left behind
    assert [f["file"] for f in summary["files"]] == list(expected.values())[:3]
    assert messages, "progress was never called"


def test_int8_model_is_integer_only_and_one_xnnpack_partition(run_dir, exported):
    model = file_bytes(run_dir, "int8_tflite")
    result = conversion.verify_int8(model)
    assert result["requantize_ops"] == 0
    assert set(result["ops"]) == {"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"}
    info = tflite.inspect_tflite(model)
    assert info["inputs"][0]["dtype"] == info["outputs"][0]["dtype"] == "int8"
    assert info["inputs"][0]["shape"] == [1, 28, 28, 1]
    activations = {t for op in info["ops"] for t in op["outputs"]}
    assert {t["dtype"] for t in info["tensors"] if t["index"] in activations} == {"int8"}
    assert tflite.xnnpack_delegation(run_dir / "lenet5_int8.tflite") == {
        "delegated": True,
        "partitions": 1,
        "ops_delegated": 8,
        "ops_total": 8,
        "ops_not_delegated": [],
    }


def test_int8_agrees_with_qat_model(exported):
    summary, _ = exported
    int8 = next(f for f in summary["files"] if f["key"] == "int8_tflite")
    p = int8["parity"]
    assert p["n"] == 200
    assert p["agreement"] >= AGREEMENT_MIN
    assert p["top1_keras"] > 0.9, "the toy model did not learn; the parity check would be vacuous"
    assert abs(p["top1_tflite"] - p["top1_keras"]) <= 1 - AGREEMENT_MIN
    # Dequantized logits within a few output quantization steps of the QAT model's (3 seen here):
    # the int8 kernels round where the fake-quant float graph does not.
    assert p["max_abs_diff"] <= 8 * int8["quantization"]["output"]["scale"]


def test_int8_is_under_a_third_of_float32(exported):
    summary, _ = exported
    ratios = {f["key"]: f["ratio_to_float32"] for f in summary["files"]}
    assert ratios["float32_tflite"] == 1.0
    assert ratios["int8_tflite"] < 0.35
    assert ratios["int8_ptq_tflite"] < 0.35


def test_conversion_is_deterministic(run_dir, exported, splits):
    """A fresh conversion of the reloaded QAT weights gives the exported bytes exactly (one conversion):
    the converter's output is the one recorded, and with the run's metadata it is the file, byte for byte."""
    from lenet_edge.config import ExportConfig
    from lenet_edge.fileio import sha256_bytes
    from lenet_edge.metadata import with_metadata

    qat_model = load_qat(run_dir / "lenet5_qat.weights.h5", ARCH)
    again = conversion.convert_int8(qat_model, splits["train"].images[:50])  # QAT: the sample changes nothing
    manifest = read_manifest(run_dir)
    assert sha256_bytes(again) == manifest["artifacts"]["int8_tflite"]["metadata"]["converted_sha256"]
    card = conversion._card_maker(run_dir, manifest, ExportConfig(), run_dir / "lenet5_qat.weights.h5")
    assert with_metadata(again, "int8_tflite", card("int8_tflite"))[0] == file_bytes(run_dir, "int8_tflite")


def test_verify_rejects_float_model(run_dir, exported):
    with pytest.raises(ModelError, match=r"not a full-integer int8 model: input '[^']+' is float32, not int8"):
        conversion.verify_int8(file_bytes(run_dir, "float32_tflite"))


def test_verify_rejects_int8_model_with_float_io(trained, splits):
    """Int8 inside, float32 at the edges: QUANTIZE in, DEQUANTIZE out (one conversion)."""
    model = conversion._convert_full_integer(trained[1], splits["train"].images[:20], io_type=tf.float32)
    with pytest.raises(ModelError) as caught:
        conversion.verify_int8(model)
    message = str(caught.value)
    assert "\n" not in message
    assert "input 'serving_default_image:0' is float32" in message
    assert "op 0 QUANTIZE (float32 -> int8)" in message


def test_conversion_rejects_the_wrong_kind_of_model(trained, splits):
    float_model, qat_model = trained
    with pytest.raises(ValueError, match="qat_model must be a quantization-aware model"):
        conversion.convert_int8(float_model, splits["train"].images[:1])
    with pytest.raises(ValueError, match="float_model must be a float model"):
        conversion.convert_ptq(qat_model, splits["train"].images[:1])


def test_c_array_round_trips(run_dir, exported):
    model = file_bytes(run_dir, "int8_tflite")
    header, source = (run_dir / "lenet5_int8.h").read_text(), (run_dir / "lenet5_int8.cc").read_text()
    assert carray.parse_c_array(source) == model
    quant = read_manifest(run_dir)["artifacts"]["int8_tflite"]["quantization"]
    assert carray.c_array(model, quant=quant) == (header, source)
    assert "LENET5_INT8_INPUT_ZERO_POINT (-128)" in header
    assert "alignas(16)" in source and "__attribute__((aligned(16)))" in source
    with pytest.raises(ValueError, match="_len says"):
        carray.parse_c_array(source.replace(f"_len = {len(model)};", "_len = 3;"))
    with pytest.raises(ValueError, match="C identifier"):
        carray.c_array(model, "lenet-5", quant=quant)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_c_array_compiles_and_is_aligned(run_dir, exported, tmp_path):
    main = tmp_path / "main.c"
    main.write_text(
        '#include <stdint.h>\n#include <string.h>\n#include "lenet5_int8.h"\n'
        "int main(void) {\n"
        "  if ((uintptr_t)lenet5_int8 % 16 != 0) return 1;\n"
        f"  if (lenet5_int8_len != {len(file_bytes(run_dir, 'int8_tflite'))}u) return 2;\n"
        '  if (memcmp(lenet5_int8 + 4, "TFL3", 4) != 0) return 3;  /* flatbuffer file identifier */\n'
        "  return LENET5_INT8_INPUT_SCALE > 0.0f ? 0 : 4;\n}\n"
    )
    flags = ["-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{run_dir}"]
    for std in ("c99", "c11"):
        exe = tmp_path / f"check_{std}"
        cmd = ["gcc", f"-std={std}", *flags, "-x", "c", str(run_dir / "lenet5_int8.cc"), str(main), "-o", str(exe)]
        subprocess.run(cmd, check=True, capture_output=True)
        assert subprocess.run([str(exe)]).returncode == 0, std
    if shutil.which("g++"):  # the .cc as TFLite Micro builds it: C++
        cmd = ["g++", "-std=c++11", *flags, "-c", str(run_dir / "lenet5_int8.cc"), "-o", str(tmp_path / "m.o")]
        subprocess.run(cmd, check=True, capture_output=True)


def test_format_summary_tells_how_to_quantize(exported):
    summary, _ = exported
    text = conversion.format_summary(summary)
    for name in ("lenet5_float32.tflite", "lenet5_int8.tflite", "lenet5_int8_ptq.tflite", "lenet5_int8.h"):
        assert name in text
    assert "int8 input:  q = round(pixel / 255 / 0.0039" in text
    assert "+ (-128)" in text
    assert "int8 output: score = " in text


def test_no_manifest_says_run_train_first(tmp_path):
    with pytest.raises(ModelError, match="no manifest; run `lenet-edge train"):
        conversion.export_run(tmp_path, splits={})


def test_run_without_qat_weights_says_so(tmp_path, trained, splits):
    run = write_run(tmp_path / "float-only", trained[0])
    with pytest.raises(ModelError, match="the run has no qat_weights; it was trained with --qat-epochs 0"):
        conversion.export_run(run, int8=True, splits=splits)


def test_bad_arguments_are_value_errors(run_dir):
    with pytest.raises(ValueError, match="c_array=True needs int8=True"):
        conversion.export_run(run_dir, c_array=True)
    with pytest.raises(ValueError, match="calibration_size"):
        conversion.export_run(run_dir, calibration_size=0)


def test_failed_parity_leaves_the_run_untouched(tmp_path, trained, splits, run_dir, exported, monkeypatch):
    """No conversion: the converters return the bytes exported above; parity is made to fail."""
    run = write_run(tmp_path / "run", *trained)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    float_bytes, int8_bytes = file_bytes(run_dir, "float32_tflite"), file_bytes(run_dir, "int8_tflite")
    monkeypatch.setattr(conversion, "convert_float", lambda model: float_bytes)
    monkeypatch.setattr(conversion, "convert_int8", lambda model, representative: int8_bytes)
    real_parity = conversion.parity

    def bad_parity(model, *args):  # the int8 model, its metadata added, is the one with an int8 input
        result = real_parity(model, *args)
        int8 = tflite.inspect_tflite(model)["inputs"][0]["dtype"] == "int8"
        return {**result, "agreement": 0.9, "disagreements": 20} if int8 else result

    monkeypatch.setattr(conversion, "parity", bad_parity)
    with pytest.raises(ModelError, match=r"lenet5_int8.tflite: agrees with the Keras model on 0.9000 of 200"):
        conversion.export_run(run, int8=True, splits=splits)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.slow
def test_classic_arch_exports(tmp_path, splits):
    """lenet5-classic (tanh, average pooling): int8 has requantize ops and several XNNPACK partitions."""
    keras.utils.set_random_seed(0)
    x, y = to_model_input(splits["train"].images), splits["train"].labels
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    float_model = build_lenet5("lenet5-classic")
    float_model.compile(keras.optimizers.Adam(3e-3), loss)
    float_model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    qat_model = quantize_aware(float_model)
    qat_model.compile(keras.optimizers.Adam(1e-3), loss)
    qat_model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    run = write_run(tmp_path / "classic", float_model, qat_model, arch="lenet5-classic")
    summary = conversion.export_run(run, int8=True, ptq=True, min_agreement=0.99, splits=splits)
    int8 = next(f for f in summary["files"] if f["key"] == "int8_tflite")
    assert int8["parity"]["agreement"] >= 0.99
    assert int8["xnnpack_partitions"] > 1  # XNNPACK has no int8 AVERAGE_POOL_2D
    assert conversion.verify_int8(run / "lenet5_int8.tflite")["requantize_ops"] == 2


def test_re_export_removes_what_it_no_longer_writes(tmp_path, trained, splits, run_dir, exported, monkeypatch):
    """`export --int8 --ptq --c-array` then `export --int8`: the PTQ model and the C files leave the run.

    No conversion: the converters return the bytes exported above.
    """
    run = write_run(tmp_path / "run", *trained)
    converted = {key: file_bytes(run_dir, key) for key in ("float32_tflite", "int8_tflite", "int8_ptq_tflite")}
    monkeypatch.setattr(conversion, "convert_float", lambda model: converted["float32_tflite"])
    monkeypatch.setattr(conversion, "convert_int8", lambda model, representative: converted["int8_tflite"])
    monkeypatch.setattr(conversion, "convert_ptq", lambda model, representative: converted["int8_ptq_tflite"])
    owned = {"int8_ptq_tflite": "lenet5_int8_ptq.tflite", "c_header": "lenet5_int8.h", "c_source": "lenet5_int8.cc"}

    conversion.export_run(run, int8=True, ptq=True, c_array=True, splits=splits)
    assert set(owned) <= set(read_manifest(run)["artifacts"])
    assert all((run / name).is_file() for name in owned.values())

    conversion.export_run(run, int8=True, splits=splits)
    manifest = read_manifest(run)
    assert not set(owned) & set(manifest["artifacts"]), "stale entries kept in the manifest"
    assert not any((run / name).exists() for name in owned.values()), "stale files kept in the run directory"
    assert set(exported_models(run)) == {"float32", "int8"}  # what bench will benchmark
    assert manifest["export"]["config"]["ptq"] is False and set(manifest["export"]["models"]) == {
        "float32_tflite",
        "int8_tflite",
    }
    assert not list(run.glob(".lenet-edge-tmp-*"))
