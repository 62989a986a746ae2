"""The piece verifier: its training pieces, its training by `train`, its int8 export and its use by `read`.

The shared tiny run is trained on bars, not digits, so these tests check the
plumbing and the contract whatever the verifier learnt; how much it helps is
measured by benchmarks/read_numbers.py on Hoda.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from lenet_edge.data.preprocess import INK_THRESHOLD
from lenet_edge.data.synthetic import generate
from lenet_edge.manifest import read_manifest
from lenet_edge.segment import SegmentConfig, candidate_pieces, segment
from lenet_edge.verifier import CLASSES, compose_line, label_piece, scores, training_pieces


@pytest.fixture(scope="module")
def digits():
    """Synthetic digits, preprocessed as a training split holds them."""
    from lenet_edge.data.preprocess import preprocess_many

    raw, labels = generate(120, seed=3)
    return preprocess_many(raw), labels


def test_pieces_hold_both_labels_and_are_reproducible(digits):
    images, labels = digits
    x, y = training_pieces(images, labels, lines=12, seed=0)
    assert x.dtype == np.uint8 and x.shape[1:] == (28, 28) and len(x) == len(y)
    assert set(np.unique(y).tolist()) == {0, 1}
    assert (y == 0).sum() <= 3 * (y == 1).sum() + len(y) // 5  # at most 3 negatives per positive, plus fragments
    again = training_pieces(images, labels, lines=12, seed=0)
    assert np.array_equal(x, again[0]) and np.array_equal(y, again[1])


def test_a_spaced_line_gives_each_digit_whole_as_one_piece(digits):
    images, labels = digits
    rng = np.random.default_rng(1)
    gray, owner, ink = compose_line(images[:5], labels[:5], rng, tight=False)
    pieces = candidate_pieces(gray, gray > INK_THRESHOLD, SegmentConfig())
    ones = [label_piece(box, crop, owner, ink) for box, crop, _ in pieces]
    assert ones.count(1) >= 4  # the digits, each found whole (a ۰ beside a tall digit may join it)
    assert all(label in (0, 1, None) for label in ones)


def test_label_piece_tells_one_digit_from_two():
    owner = np.zeros((10, 20), np.int32)
    owner[2:8, 2:6], owner[2:8, 10:14] = 1, 2
    gray = np.where(owner > 0, 255, 0).astype(np.uint8)
    ink = np.bincount(owner.ravel()).tolist()
    assert label_piece((2, 2, 6, 8), gray[2:8, 2:6], owner, ink) == 1
    assert label_piece((2, 2, 14, 8), gray[2:8, 2:14], owner, ink) == 0  # two digits
    assert label_piece((2, 2, 4, 8), gray[2:8, 2:4], owner, ink) == 0  # half of one


def test_scores_are_the_two_way_softmax():
    logits = np.array([[0.0, 0.0], [-2.0, 2.0], [3.0, -1.0]])
    expected = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    assert np.allclose(scores(logits), expected)


def test_dynamic_programme_follows_the_verifier(digits):
    """With a verifier that calls every piece wider than a digit 'not one', two touching digits are cut."""
    images, labels = digits
    rng = np.random.default_rng(2)
    pick = [i for i in range(len(labels)) if labels[i] not in (0, 1)][:2]
    gray, _, _ = compose_line(images[pick], labels[pick], rng, tight=True)
    ink = gray > INK_THRESHOLD

    def sure(images):  # every digit 0.9 sure of "2"
        p = np.full((len(images), 10), 0.1 / 9)
        p[:, 2] = 0.9
        return p

    def narrow(images):  # "one digit" only for a piece no wider than its height (in the 28x28 frame)
        cols = (images > INK_THRESHOLD).any(axis=1).sum(axis=1)
        rows = (images > INK_THRESHOLD).any(axis=2).sum(axis=1)
        return np.where(cols <= rows, 0.95, 0.02)

    config = SegmentConfig(sure_whole=1.1)  # never sure: always try cuts
    assert len(segment(gray, ink, sure, config, verify=narrow)) >= 2
    assert all(s.one is not None for s in segment(gray, ink, sure, config, verify=narrow))


def test_pieces_the_verifier_rules_out_are_not_shown_to_the_digit_model(digits):
    images, labels = digits
    pick = [i for i in range(len(labels)) if labels[i] not in (0, 1)][:3]
    gray, _, _ = compose_line(images[pick], labels[pick], np.random.default_rng(3), tight=True)
    ink = gray > INK_THRESHOLD
    config = SegmentConfig(sure_whole=1.1)  # never sure: every group is cut

    def verify(images):  # a piece wider than tall (in the 28x28 frame) is surely not one digit
        cols = (images > INK_THRESHOLD).any(axis=1).sum(axis=1)
        rows = (images > INK_THRESHOLD).any(axis=2).sum(axis=1)
        return np.where(cols <= rows, 0.95, config.ruled_out / 2)

    def pieces_shown(config):  # the batches the digit model is given: the groups whole, then their pieces
        batches = []
        found = segment(gray, ink, lambda x: batches.append(x) or np.full((len(x), 10), 0.1), config, verify)
        assert len(batches) == 2 and found
        return batches[1], found

    shown, found = pieces_shown(config)
    assert (verify(shown) >= config.ruled_out).all()
    everything, _ = pieces_shown(replace(config, ruled_out=0.0))
    assert len(everything) > len(shown) and (verify(everything) < config.ruled_out).any()
    assert all(s.one >= config.ruled_out or not s.probs.any() for s in found)  # a ruled-out piece reads as no digit


def test_train_trains_and_export_exports_the_verifier(exported_run):
    from lenet_edge.conversion import verify_int8
    from lenet_edge.runtimes import open_model

    manifest = read_manifest(exported_run)
    artifacts = manifest["artifacts"]
    assert {"verifier_float_keras", "verifier_qat_weights", "verifier_int8_tflite"} <= set(artifacts)
    record = manifest["verifier"]
    assert record["data"]["pieces"]["train"]["one"] > 0 and record["data"]["pieces"]["train"]["not_one"] > 0
    assert 0 <= record["metrics"]["qat"]["accuracy"] <= 1
    assert (record["config"]["epochs"], record["config"]["qat_epochs"]) == (1, 1)  # the run's --verifier-epochs, ...
    assert [len(record["history"][stage]) for stage in ("float", "qat")] == [1, 1]
    path = exported_run / artifacts["verifier_int8_tflite"]["path"]
    check = verify_int8(path, classes=CLASSES)
    assert check["quantization"]["input"]["dtype"] == "int8"
    exported = manifest["export"]["models"]["verifier_int8_tflite"]
    assert exported["tflm"]["max_abs_diff"] <= 1 and exported["tflm"]["pieces"] > 0
    assert exported["parity"]["n"] > 0
    handle = open_model(path, classes=CLASSES)
    assert handle.scores(np.zeros((3, 28, 28), np.uint8)).shape == (3, CLASSES)
    json.dumps(record)  # the manifest record is plain JSON


def test_the_digit_model_contract_refuses_the_verifier(exported_run):
    from lenet_edge.errors import ModelError
    from lenet_edge.runtimes import open_model

    path = exported_run / read_manifest(exported_run)["artifacts"]["verifier_int8_tflite"]["path"]
    with pytest.raises(ModelError, match=r"shape \[1, 2\], expected \[1, 10\]"):
        open_model(path)


def test_no_verifier_for_the_classic_arch_is_said(tiny_npz, tmp_path):
    from lenet_edge.training import TrainConfig, train

    lines = []
    config = TrainConfig(data=str(tiny_npz), arch="lenet5-classic", epochs=1, qat_epochs=0, batch_size=64, seed=1)
    train(config, tmp_path / "run", log=lines.append)
    assert any(line.startswith("verifier: not trained for --arch lenet5-classic") for line in lines)
    assert "verifier" not in read_manifest(tmp_path / "run")


def test_bench_reports_the_verifier_and_the_line_model(exported_run):
    from lenet_edge.benchmark import bench_run
    from lenet_edge.config import BenchConfig
    from lenet_edge.report import format_markdown, format_table

    results, _ = bench_run(exported_run, BenchConfig(runs=20, warmup=5, micro=False), write=False)
    v = results["verifier"]
    assert v["pieces"] > 0 and 0 <= v["accuracy"] <= 1 and v["p50_us"] > 0 and v["runs"] == 20
    assert "Piece verifier verifier_int8.tflite" in format_table(results)
    assert "Piece verifier verifier_int8.tflite" in format_markdown(results)
    line = results["line_model"]
    assert line["numbers"] > 0 and 0 <= line["exact"] <= 1 and line["p50_us"] > 0 and line["runs"] == 20
    assert "Line model line_int8.tflite" in format_table(results) and "Line model" in format_markdown(results)
    assert f"(median strip {line['median_width_px']} px wide)" in format_table(results)


def test_bench_composes_the_line_models_numbers_as_it_was_trained(exported_run, monkeypatch):
    # a line model trained on digits at their heights as written is benched on numbers drawn so too
    from lenet_edge import line_model
    from lenet_edge.benchmark import bench_line_model
    from lenet_edge.config import BenchConfig
    from lenet_edge.data import load_run_splits

    manifest = read_manifest(exported_run)
    val = load_run_splits(manifest)[1]["val"]
    composed, compose = [], line_model.training_lines
    monkeypatch.setattr(line_model, "training_lines", lambda *a, **k: composed.append(k["scanned"]) or compose(*a, **k))
    for written in (False, True):
        manifest["line_model"]["data"]["written_heights"] = written
        got = bench_line_model(exported_run, manifest, val, BenchConfig(runs=2, warmup=1, micro=False))["line_model"]
        assert got["written_heights"] is written and 0 <= got["exact"] <= 1
    assert composed[0] is None and np.array_equal(composed[1], val.raw_shapes[:, 0])
