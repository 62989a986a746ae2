"""Training: a tiny float + QAT run, its manifest, determinism, and never losing a previous run."""

import numpy as np
import pytest

from lenet_edge.errors import ModelError
from lenet_edge.fileio import TMP_PREFIX, sha256_file
from lenet_edge.manifest import read_manifest
from lenet_edge.model import load_float, load_qat
from lenet_edge.training import TrainConfig, train


def tiny_config(data, **overrides):
    """The digit model alone (the verifier's and the line model's training are tested with the shared tiny run)."""
    settings = dict(
        data=str(data), epochs=2, qat_epochs=2, batch_size=32, lr=3e-3, val_fraction=0.2, seed=7, verifier=False
    )
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(tiny_npz, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return train(tiny_config(tiny_npz), run_dir, log=lambda _: None)


def test_two_epoch_qat_run_learns_and_writes_a_complete_manifest(trained, tiny_npz):
    manifest = read_manifest(trained.run_dir)
    assert manifest["config"]["arch"] == "lenet5" and manifest["config"]["seed"] == 7
    assert manifest["data"]["split_sizes"] == {"train": 240, "val": 60, "test": 100}
    assert manifest["data"]["files"] == {"tiny.npz": sha256_file(tiny_npz)}
    assert manifest["preprocessing"]["output"]["shape"] == [28, 28]
    assert manifest["labels"]["persian"] == list("۰۱۲۳۴۵۶۷۸۹")
    assert set(manifest["versions"]) >= {"tensorflow", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert"}
    assert [len(manifest["history"][stage]) for stage in ("float", "qat")] == [2, 2]
    assert "line_model" not in manifest and "line_qat_weights" not in manifest["artifacts"]  # only when asked for
    for stage in ("float", "qat"):
        metrics = manifest["metrics"][stage]
        assert 0 <= metrics["val_accuracy"] <= 1 and 1 <= metrics["best_epoch"] <= 2
        assert "test_accuracy" in metrics  # reported after training, never used to select
    # the bars are easy: two epochs already beat chance (10%) by far
    assert manifest["metrics"]["qat"]["val_accuracy"] > 0.5
    for key in ("float_keras", "qat_weights"):
        entry = manifest["artifacts"][key]
        assert sha256_file(trained.run_dir / entry["path"]) == entry["sha256"]
    assert not list(trained.run_dir.glob(TMP_PREFIX + "*"))


def test_saved_models_reload_and_reproduce_the_recorded_accuracy(trained):
    manifest = trained.manifest
    float_model = load_float(trained.run_dir / manifest["artifacts"]["float_keras"]["path"])
    qat_model = load_qat(trained.run_dir / manifest["artifacts"]["qat_weights"]["path"], "lenet5")
    from lenet_edge.data import load_splits

    _, splits = load_splits(manifest["data"]["source"], 0.2, 7)
    x = splits["val"].images[..., None].astype(np.float32) / 255
    for model, stage in ((float_model, "float"), (qat_model, "qat")):
        accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), 1) == splits["val"].labels))
        assert accuracy == pytest.approx(manifest["metrics"][stage]["val_accuracy"])


def test_same_seed_gives_identical_weights(trained, tiny_npz, tmp_path):
    again = train(tiny_config(tiny_npz), tmp_path, log=lambda _: None)
    for key in ("float_keras", "qat_weights"):
        a = load_float if key == "float_keras" else (lambda p: load_qat(p, "lenet5"))
        first = a(trained.run_dir / trained.manifest["artifacts"][key]["path"]).get_weights()
        second = a(tmp_path / again.manifest["artifacts"][key]["path"]).get_weights()
        assert all(np.array_equal(u, v) for u, v in zip(first, second, strict=True))

    def without_times(history):
        return {
            stage: [{k: v for k, v in row.items() if k != "seconds"} for row in rows] for stage, rows in history.items()
        }

    assert without_times(again.manifest["history"]) == without_times(trained.manifest["history"])


def test_refuses_to_overwrite_without_force(trained, tiny_npz):
    before = {p.name: p.read_bytes() for p in trained.run_dir.iterdir()}
    with pytest.raises(ModelError, match="--force"):
        train(tiny_config(tiny_npz), trained.run_dir, log=lambda _: None)
    assert {p.name: p.read_bytes() for p in trained.run_dir.iterdir()} == before


def test_interrupted_run_leaves_the_previous_one_intact(trained, tiny_npz, monkeypatch):
    before = {p.name: p.read_bytes() for p in trained.run_dir.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # Ctrl-C while the new QAT weights are being saved: the last moment before anything is renamed.
    monkeypatch.setattr("tf_keras.Model.save_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_npz, seed=8), trained.run_dir, force=True, log=lambda _: None)
    assert {p.name: p.read_bytes() for p in trained.run_dir.iterdir()} == before


def test_zero_qat_epochs_means_no_qat_model(tiny_npz, tmp_path):
    result = train(tiny_config(tiny_npz, epochs=1, qat_epochs=0), tmp_path, log=lambda _: None)
    assert set(result.manifest["metrics"]) == {"float"} and result.manifest["history"]["qat"] == []
    assert "qat_weights" not in result.manifest["artifacts"] and not (tmp_path / "lenet5_qat.weights.h5").exists()
    from lenet_edge.conversion import export_run

    with pytest.raises(ModelError, match="--qat-epochs 0.*--ptq"):
        export_run(tmp_path, int8=True, splits={})


def test_force_replaces_a_run_whose_manifest_is_unreadable(tiny_npz, tmp_path):
    (tmp_path / "manifest.json").write_text("{ not json")
    result = train(tiny_config(tiny_npz, epochs=1, qat_epochs=1), tmp_path, force=True, log=lambda _: None)
    assert read_manifest(tmp_path)["artifacts"] == result.manifest["artifacts"]


def test_qat_batches_are_the_training_images_as_they_are_when_not_augmented():
    from lenet_edge.data.sources import Split
    from lenet_edge.training import _train_pipeline

    rng = np.random.default_rng(3)
    images = (rng.random((40, 28, 28)) * 255).astype(np.uint8)
    split = Split(images, np.arange(40) % 10, np.full((40, 2), 28))
    config = TrainConfig(batch_size=16, elastic_alpha=20.0)
    plain = [x.numpy()[..., 0] for x, _ in _train_pipeline(split, config, augmented=False).take(5)]
    bent = [x.numpy()[..., 0] for x, _ in _train_pipeline(split, config).take(5)]
    originals = {im.tobytes(): im for im in images.astype(np.float32) / 255}
    assert all(im.tobytes() in originals for batch in plain for im in batch)  # every image exactly as it was
    assert sum(im.tobytes() in originals for batch in bent for im in batch) < 8  # augmented: nearly all changed
