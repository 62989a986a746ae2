"""Same seed, same data, same machine: the same int8 model, byte for byte.

Two runs are compared: the shared tiny run (`train` + `export_run` called
through the Python API in a new process, see conftest.exported_run) and the same recipe
through the command line in another (`lenet-edge train` then
`lenet-edge export --int8`, both in that one process). Two processes are the stronger check: nothing
can be shared through Python or TensorFlow state, and the memory the TFLite
converter leaks on each call is neither's. The `best` recipe's
extra stages (a teacher, elastic distortion, distillation) are checked by
training its tiny run twice in this process.

What is pinned, and how:

- the split, initialisation, shuffling: `TrainConfig.seed` through
  `keras.utils.set_random_seed` (Python, NumPy, TensorFlow) and the seeded,
  stratified `train_val_split`;
- augmentation: stateless random ops keyed by (seed, batch counter), the
  elastic field folded in from the same key;
- kernels: `tf.config.experimental.enable_op_determinism()` (which also makes
  tf.data's parallel map deterministic);
- conversion: the TFLite converter is byte-deterministic for the same
  weights; for a QAT model the calibration sample does not change a byte.

So `lenet5_int8.tflite`, `lenet5_float32.tflite` and `lenet5_qat.weights.h5`
are byte-identical, as are the line model's `line_int8.tflite` and
`line_qat.weights.h5`, and so are the manifests' metrics and per-epoch history.

What is not, found by diffing two runs, and why it does not matter:

- `lenet5_float.keras`: a zip whose `metadata.json` holds `date_saved`
  (to the second), and whose `model.weights.h5` member carries the zip entry's
  modification time. The other members (`config.json`, the weights) are
  byte-identical; the test unpacks the zip and checks that.
- the manifest's `created` timestamp, `wall_time_s`, `cpu_time_s`, each history row's
  `seconds` (the piece verifier's and the line model's too), and the sha256/size
  recorded for the `.keras` files (which follow from the date above). Everything else in the manifest is equal.

This holds on one machine. Across CPUs, oneDNN may pick other kernels (the
"oneDNN custom operations are on" notice says as much) and float sums may
round differently; that is out of scope here.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DISTILLED

IDENTICAL = (
    "lenet5_int8.tflite",
    "lenet5_float32.tflite",
    "lenet5_qat.weights.h5",
    "line_int8.tflite",  # the line model, trained by its own loop (a tf.function step over width-sorted batches)
    "line_qat.weights.h5",
    "line_qat_1.weights.h5",  # its second and third members, trained with dropout
    "line_qat_2.weights.h5",
)
TIMES = ("created", "wall_time_s", "cpu_time_s")  # manifest keys that record when and how long, not what


@pytest.fixture(scope="module")
def first(exported_run) -> Path:
    return exported_run


@pytest.fixture(scope="module")
def second(twin) -> Path:
    return twin


def test_int8_model_is_byte_identical(first, second):
    assert (first / "lenet5_int8.tflite").read_bytes() == (second / "lenet5_int8.tflite").read_bytes()


@pytest.mark.parametrize("name", IDENTICAL[1:])
def test_other_pinned_artifacts_are_byte_identical(first, second, name):
    assert (first / name).read_bytes() == (second / name).read_bytes()


def test_float_keras_differs_only_in_its_save_date(first, second):
    with zipfile.ZipFile(first / "lenet5_float.keras") as a, zipfile.ZipFile(second / "lenet5_float.keras") as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            if name == "metadata.json":
                meta_a, meta_b = json.loads(a.read(name)), json.loads(b.read(name))
                meta_a.pop("date_saved"), meta_b.pop("date_saved")
                assert meta_a == meta_b
            else:
                assert a.read(name) == b.read(name), name


def test_manifests_differ_only_in_times_and_the_keras_file_hash(first, second):
    def pinned(run_dir: Path) -> dict:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        for key in TIMES:
            manifest.pop(key)
        for stage in manifest["history"].values():
            for row in stage:
                row.pop("seconds")
        for model in ("verifier", "line_model"):  # the piece verifier's and the line model's own timings
            if model in manifest:
                manifest[model].pop("wall_time_s"), manifest[model]["data"].pop("seconds")
                for stage in manifest[model]["history"].values():
                    for row in stage:
                        row.pop("seconds", None)
        for entry in manifest["artifacts"].values():
            if entry["path"].endswith(".keras"):  # the digit model's, the verifier's, each line-model member's
                entry.pop("sha256"), entry.pop("size_bytes")  # the save date is inside the file
        return manifest

    a, b = pinned(first), pinned(second)
    assert a["artifacts"]["int8_tflite"]["sha256"] == b["artifacts"]["int8_tflite"]["sha256"]
    assert a == b


def test_the_best_recipes_path_is_reproducible_too(distilled_run, tiny_npz, tmp_path):
    """Teacher, elastic distortion, distillation and QAT: the same seed trains the same weights again (in-process)."""
    from lenet_edge.config import recipe_config
    from lenet_edge.model import load_float
    from lenet_edge.training import train

    again = train(recipe_config("best", **TINY_DISTILLED, data=str(tiny_npz)), tmp_path, log=lambda _: None)
    assert (tmp_path / "lenet5_qat.weights.h5").read_bytes() == (distilled_run / "lenet5_qat.weights.h5").read_bytes()
    for name in ("teacher_float.keras", "lenet5_float.keras"):
        first, second = load_float(distilled_run / name).get_weights(), load_float(tmp_path / name).get_weights()
        assert all(np.array_equal(u, v) for u, v in zip(first, second, strict=True)), name
    history = json.loads((distilled_run / "manifest.json").read_text())["history"]
    assert {k: [{**r, "seconds": 0} for r in v] for k, v in again.manifest["history"].items()} == {
        k: [{**r, "seconds": 0} for r in v] for k, v in history.items()
    }
