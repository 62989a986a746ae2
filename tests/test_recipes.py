"""Recipes and distillation end to end: fast and best, explicit options over a recipe, the teacher in a run."""

import json
import re
from dataclasses import asdict, replace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PROJECT_ROOT, TINY_DISTILLED

from lenet_edge.cli import main
from lenet_edge.config import RECIPES, TrainConfig, recipe_config
from lenet_edge.errors import ModelError
from lenet_edge.fileio import sha256_file
from lenet_edge.manifest import exported_models, read_manifest
from lenet_edge.model import load_float, load_qat
from lenet_edge.training import train


def test_fast_is_the_default_and_best_adds_the_levers():
    assert RECIPES["fast"] == TrainConfig() and TrainConfig().recipe == "fast"
    best = RECIPES["best"]
    assert best.recipe == "best" and best.teacher and best.elastic_alpha > 0
    assert best.arch == "lenet5"  # same architecture: a recipe changes how it is trained, not what it is


def test_best_holds_what_the_validation_search_chose():
    """RECIPES["best"] = the settings benchmarks/SEARCH.md's decisions name, and `fast`'s for everything else."""
    report = (PROJECT_ROOT / "benchmarks" / "SEARCH.md").read_text(encoding="utf-8")
    match = re.search(r"The `best` recipe's settings: `(\{.*\})`", report)
    assert match, "benchmarks/SEARCH.md names no chosen settings"
    chosen = json.loads(match.group(1))
    assert chosen["teacher"] is True and chosen["elastic_alpha"] > 0
    assert asdict(RECIPES["best"]) == {**asdict(RECIPES["fast"]), **chosen, "recipe": "best"}


def test_recipe_config_overrides_and_refuses_unknown_names():
    config = recipe_config("best", epochs=3, data="hoda")
    assert (config.recipe, config.epochs, config.data, config.teacher) == ("best", 3, "hoda", True)
    with pytest.raises(ValueError, match="fast, best"):
        recipe_config("slow")
    with pytest.raises(ValueError, match="not TrainConfig fields: epoch"):
        recipe_config("fast", epoch=3)
    with pytest.raises(ValueError, match="teacher_from needs teacher"):
        TrainConfig(teacher_from="runs/x")


@pytest.fixture
def captured(monkeypatch):
    """Run `lenet-edge train ARGS` with training replaced by a recorder of the config it was given."""
    seen = []
    monkeypatch.setattr("lenet_edge.training.train", lambda config, *args, **kwargs: seen.append(config))

    def invoke(*args):
        result = CliRunner().invoke(main, ["train", *args])
        assert result.exit_code == 0, result.output
        return seen[-1]

    return invoke


def test_explicit_options_override_the_recipe(captured):
    assert captured() == RECIPES["fast"]
    assert captured("--recipe", "best") == RECIPES["best"]
    config = captured("--recipe", "best", "--epochs", "7", "--no-teacher", "--elastic", "0")
    assert (config.recipe, config.epochs, config.teacher, config.elastic_alpha) == ("best", 7, False, 0.0)
    assert config.qat_epochs == RECIPES["best"].qat_epochs  # what was not given stays the recipe's
    # an option given with the fast recipe's own default value still counts as given
    fast_arch = TrainConfig().teacher_arch
    assert RECIPES["best"].teacher_arch != fast_arch
    assert captured("--recipe", "best", "--teacher-arch", fast_arch).teacher_arch == fast_arch
    assert RECIPES["fast"].verifier and RECIPES["best"].verifier  # `read`'s piece verifier, unless asked not to
    assert (
        captured("--no-verifier").verifier is False
        and captured("--recipe", "best", "--no-verifier").epochs == RECIPES["best"].epochs
    )


def test_teacher_from_implies_a_teacher_and_conflicts_with_no_teacher(captured, tmp_path):
    assert captured("--teacher-from", str(tmp_path)).teacher is True
    result = CliRunner().invoke(main, ["train", "--teacher-from", str(tmp_path), "--no-teacher"])
    assert result.exit_code == 2 and "teacher_from needs teacher" in result.output


def test_a_distilled_run_records_its_teacher(distilled_run):
    manifest = read_manifest(distilled_run)
    assert manifest["config"] == {**manifest["config"], **TINY_DISTILLED, "recipe": "best", "teacher": True}
    assert manifest["config"]["elastic_alpha"] == RECIPES["best"].elastic_alpha
    teacher = manifest["teacher"]
    assert teacher["arch"] == RECIPES["best"].teacher_arch and teacher["from"] is None
    assert teacher["parameters"] == load_float(distilled_run / "teacher_float.keras").count_params() > 300_000
    assert set(manifest["history"]) == set(manifest["metrics"]) == {"teacher", "float", "qat"}
    assert len(manifest["history"]["teacher"]) == TINY_DISTILLED["teacher_epochs"]
    for metrics in manifest["metrics"].values():
        assert 0 <= metrics["val_accuracy"] <= 1 and metrics["val_loss"] > 0
    entry = manifest["artifacts"]["teacher_keras"]
    assert sha256_file(distilled_run / entry["path"]) == entry["sha256"]
    assert set(manifest["wall_time_s"]) >= {"teacher", "float", "qat", "total"}
    assert set(manifest["cpu_time_s"]) == {"teacher", "float", "qat"} and min(manifest["cpu_time_s"].values()) > 0


def test_teacher_from_reuses_the_teacher_unchanged(distilled_run, tiny_npz, tmp_path):
    config = recipe_config("best", **TINY_DISTILLED, data=str(tiny_npz), teacher_from=str(distilled_run))
    result = train(config, tmp_path, log=lambda _: None)
    record = result.manifest["teacher"]
    assert record["from"] == str(distilled_run)
    assert record["from_sha256"] == sha256_file(distilled_run / "teacher_float.keras")
    assert result.manifest["history"]["teacher"] == []
    again, source = load_float(tmp_path / "teacher_float.keras"), load_float(distilled_run / "teacher_float.keras")
    assert all(np.array_equal(a, b) for a, b in zip(again.get_weights(), source.get_weights(), strict=True))
    source_metrics = read_manifest(distilled_run)["metrics"]["teacher"]
    assert result.metrics["teacher"]["val_accuracy"] == source_metrics["val_accuracy"]


def test_teacher_from_another_split_or_a_run_without_one_is_refused(distilled_run, exported_run, tiny_npz, tmp_path):
    other_split = {**TINY_DISTILLED, "seed": 6, "data": str(tiny_npz)}
    with pytest.raises(ModelError, match="another split.*may have seen this run's validation images"):
        train(recipe_config("best", **other_split, teacher_from=str(distilled_run)), tmp_path, log=lambda _: None)
    with pytest.raises(ModelError, match="the run has no teacher_keras; train it with --teacher"):
        train(recipe_config("best", **other_split, teacher_from=str(exported_run)), tmp_path, log=lambda _: None)
    assert not list(tmp_path.iterdir())  # refused before anything was trained or written


def test_float_from_trains_only_qat_on_the_runs_float_model_and_teacher(distilled_run, tiny_npz, tmp_path):
    config = recipe_config(
        "best", **TINY_DISTILLED, data=str(tiny_npz), float_from=str(distilled_run), teacher_from=str(distilled_run)
    )
    result = train(replace(config, qat_augment=False), tmp_path, log=lambda _: None)
    manifest, source = result.manifest, read_manifest(distilled_run)
    assert manifest["model"]["from"] == str(distilled_run)
    assert manifest["model"]["from_sha256"] == sha256_file(distilled_run / "lenet5_float.keras")
    assert manifest["history"]["float"] == [] and len(manifest["history"]["qat"]) == TINY_DISTILLED["qat_epochs"]
    assert manifest["config"]["qat_augment"] is False
    again, before = load_float(tmp_path / "lenet5_float.keras"), load_float(distilled_run / "lenet5_float.keras")
    assert all(np.array_equal(a, b) for a, b in zip(again.get_weights(), before.get_weights(), strict=True))
    assert result.metrics["float"]["val_accuracy"] == source["metrics"]["float"]["val_accuracy"]
    qat = load_qat(tmp_path / manifest["artifacts"]["qat_weights"]["path"], "lenet5")
    assert qat.count_params() > again.count_params()  # the quantizers' ranges on top of the same layers


def test_float_from_is_refused_for_another_split_or_arch_and_needs_its_teacher(distilled_run, tiny_npz, tmp_path):
    run = str(distilled_run)
    with pytest.raises(ValueError, match="float_from with a teacher needs teacher_from"):
        recipe_config("best", float_from=run)
    with pytest.raises(ValueError, match="float_from needs qat_epochs >= 1"):
        recipe_config("fast", float_from=run, qat_epochs=0)
    other_split = recipe_config("fast", **{**TINY_DISTILLED, "seed": 6}, data=str(tiny_npz), float_from=run)
    with pytest.raises(ModelError, match="its float model was trained on another split"):
        train(other_split, tmp_path, log=lambda _: None)
    classic = recipe_config("fast", **TINY_DISTILLED, data=str(tiny_npz), float_from=run, arch="lenet5-classic")
    with pytest.raises(ModelError, match="its float model is lenet5, this run trains lenet5-classic"):
        train(classic, tmp_path, log=lambda _: None)
    assert not list(tmp_path.iterdir())  # refused before anything was trained or written


def test_float_from_on_the_command_line_brings_its_teacher_along(captured, tmp_path):
    config = captured("--recipe", "best", "--float-from", str(tmp_path), "--no-qat-augment")
    assert (config.float_from, config.teacher_from, config.qat_augment) == (str(tmp_path), str(tmp_path), False)
    assert captured("--float-from", str(tmp_path)).teacher_from is None  # fast: no teacher to bring
    other = tmp_path / "other"
    other.mkdir()
    assert captured("--recipe", "best", "--float-from", str(tmp_path), "--teacher-from", str(other)).teacher_from == (
        str(other)
    )


def test_export_and_bench_carry_the_teacher_as_a_reference_row(distilled_run, tmp_path):
    import shutil

    from lenet_edge.benchmark import bench_run
    from lenet_edge.config import BenchConfig
    from lenet_edge.conversion import TEACHER_FILE, export_run

    run = shutil.copytree(distilled_run, tmp_path / "run")
    summary = export_run(run, int8=True, min_agreement=0.0)
    files = {f["key"]: f for f in summary["files"]}
    assert files["teacher_tflite"]["file"] == TEACHER_FILE
    assert files["teacher_tflite"]["parity"]["agreement"] == 1.0  # float32 TFLite = its Keras model
    assert set(exported_models(run)) == {"float32", "int8", "teacher"}
    config = BenchConfig(runs=20, warmup=2, batch_sizes=(1,), throughput_seconds=0.05, load_repeats=1, micro_runs=10)
    results, _ = bench_run(run, config, write=False)
    assert results["ok"] and set(results["models"]) == {"float32", "int8", "teacher"}
    assert set(results["tflm"]["models"]) == {"float32", "int8"}  # no microcontroller runs the teacher
    teacher_test = read_manifest(run)["metrics"]["teacher"]["test_accuracy"]
    assert results["models"]["teacher"]["accuracy"] == pytest.approx(teacher_test)  # the Keras teacher's figure
    export_run(run, int8=True, teacher=False, min_agreement=0.0)  # --no-teacher: the file goes with its entry
    assert not (run / TEACHER_FILE).exists() and "teacher_tflite" not in read_manifest(run)["artifacts"]
    assert json.loads((run / "manifest.json").read_text())["export"]["config"]["teacher"] is False
