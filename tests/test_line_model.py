"""The line model: its strips, its CTC decoding and likelihood, its training, int8 export and use by `read`.

The shared tiny run is trained on bars, not digits, so these tests check the
numerics, the plumbing and the contract whatever the model learnt; how much it
helps is measured by benchmarks/read_numbers.py on Hoda.
"""

import math

import numpy as np
import pytest
from conftest import Line, frames

from lenet_edge.line_model import (
    BLANK,
    CLASSES,
    FLOOR,
    FRAME,
    LINE_HEIGHT,
    STRIDE,
    WIDTH_STEP,
    LineImage,
    best_path,
    build_line_model,
    combined,
    line_image,
    log_likelihood,
    log_likelihoods,
    log_softmax,
    member_keys,
    member_logp,
    member_stage,
    read_line,
    training_lines,
)
from lenet_edge.manifest import read_manifest
from lenet_edge.reading import LineReader, LineReading, read_array
from lenet_edge.segment import SegmentConfig


def test_log_likelihood_is_tensorflows_ctc_loss():
    from lenet_edge.compat import tf

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (1, 14, CLASSES)).astype(np.float32)
    for digits in ([3], [1, 1], [0, 9, 9, 2], [5, 5, 5], [7, 2, 7, 2, 7]):
        expected = -tf.nn.ctc_loss(
            np.array([digits], np.int32), logits, [len(digits)], [14], logits_time_major=False, blank_index=BLANK
        ).numpy()[0]
        assert log_likelihood(log_softmax(logits[0]), digits) == pytest.approx(float(expected), abs=1e-4)


def reference_log_likelihood(logp: np.ndarray, digits) -> float:
    """The CTC forward algorithm as textbooks write it: one state at a time, sums of logarithms."""
    states = [BLANK]
    for d in digits:
        states += [d, BLANK]
    alpha = np.full(len(states), -np.inf)
    alpha[:2] = logp[0, states[:2]]
    for t in range(1, len(logp)):
        before = alpha.copy()
        for s, c in enumerate(states):
            came = [before[s]] + ([before[s - 1]] if s else [])
            if s > 1 and c != BLANK and c != states[s - 2]:
                came.append(before[s - 2])
            alpha[s] = np.logaddexp.reduce(came) + logp[t, c]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if digits else alpha[-1])


def test_log_likelihoods_are_the_textbook_forward_algorithm_on_long_strips():
    """Rescaled probabilities give the sums of logarithms, to 1e-9, over hundreds of frames and classes up
    to `FLOOR` nats below their frame's likeliest; beyond that only a reading no path makes is -inf."""
    rng = np.random.default_rng(5)
    for spread in (1.0, 5.0, 14.0):
        logp = log_softmax(rng.normal(0, spread, (2, 300, CLASSES)))
        assert (logp.max(axis=2, keepdims=True) - logp).max() < FLOOR
        readings = [list(rng.integers(0, 10, n)) for n in (0, 1, 7, 40)] + [[4, 4, 4]]
        got = log_likelihoods(logp, readings)
        for reading, value in zip(readings, got, strict=True):
            expected = np.mean([reference_log_likelihood(member, reading) for member in logp])
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    extreme = log_softmax(np.where(np.arange(CLASSES) == BLANK, 0.0, -4 * FLOOR) * np.ones((50, 1)))
    assert -2 * FLOOR < log_likelihood(extreme, [3, 3]) < -FLOOR  # each 3 counted FLOOR below the blank: not -inf
    assert log_likelihood(extreme[:2], [3, 3]) == -np.inf  # 2 frames cannot hold "3, blank, 3"


def test_log_likelihood_needs_a_blank_between_equal_digits():
    logp = frames(1, 1)  # two frames cannot hold "1, blank, 1"
    assert log_likelihood(logp, [1, 1]) == -np.inf
    assert np.isfinite(log_likelihood(logp, [1])) and np.isfinite(log_likelihood(frames(1, BLANK, 1), [1, 1]))


def test_members_are_read_together_by_their_mean_log_probabilities():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 3, (2, 6, CLASSES))
    assert np.allclose(combined(a), log_softmax(a))  # one member: its own log-probabilities
    assert np.allclose(combined(np.stack([a, a])), log_softmax(a))  # twins change nothing
    together = combined(np.stack([a, b]))
    geometric = np.sqrt(np.exp(log_softmax(a)) * np.exp(log_softmax(b)))
    assert np.allclose(np.exp(together), geometric / geometric.sum(axis=1, keepdims=True))
    # a digit one member is sure of and the other doubts loses to one both find likely
    sure, doubted = np.log([0.9, 0.1] + [1e-9] * 9), np.log([1e-4, 0.5] + [0.5 / 9] * 9)
    assert combined(np.stack([sure, doubted])[:, None]).argmax() == 1


def test_the_likelihood_of_several_members_is_the_mean_of_theirs():
    rng = np.random.default_rng(2)
    logp = log_softmax(rng.normal(0, 3, (3, 12, CLASSES)))
    for digits in ([], [4], [1, 1], [3, 0, 7]):
        alone = [log_likelihood(one, digits) for one in logp]
        assert math.isclose(log_likelihood(logp, digits), float(np.mean(alone)), rel_tol=1e-12)
    assert np.allclose(member_logp(np.concatenate(list(logp), axis=-1)), logp)  # side by side -> each its own
    assert log_likelihood(logp[:, :2], [1, 2, 3]) == -math.inf  # 2 frames cannot hold 3 digits


def test_members_whose_spikes_fall_on_other_frames_are_read_by_the_likeliest_reading():
    """The frame-wise mean of two members that put a digit's spike two frames apart is a blank there: the
    digit is lost; read_line weighs whole readings instead and keeps it."""

    def spikes(**at):  # 7 frames, blanks 8 nats sure, a digit where `at` says (frame name "f<t>": digit)
        logits = np.zeros((7, CLASSES))
        logits[:, BLANK] = 8.0
        for frame, digit in at.items():
            logits[int(frame[1:]), [BLANK, digit]] = 0.0, 4.0
        return log_softmax(logits)

    first, second = spikes(f1=5, f5=2), spikes(f3=5, f5=2)
    both = np.stack([first, second])
    assert [d for d, *_ in best_path(log_softmax(both.mean(axis=0)))] == [2]  # the frame-wise mean loses the 5
    assert log_likelihood(both, [5, 2]) > log_likelihood(both, [2]) + 3
    assert read_line(both) == best_path(first)  # the likelier reading, with its member's frames
    assert read_line(first) == best_path(first)  # one member: its best path
    doubt = spikes(f1=5, f5=3)  # members disagreeing on a digit: the likelier reading
    three = np.stack([first, first, doubt])
    assert log_likelihood(three, [5, 2]) > log_likelihood(three, [5, 3])
    assert [d for d, *_ in read_line(three)] == [5, 2]
    twins = np.stack([first, first])  # all read the same digits: the frame-wise mean's path, as one member gives it
    assert read_line(twins) == best_path(log_softmax(twins.mean(axis=0)))


def test_dropout_is_only_in_training():
    from lenet_edge.compat import tf

    plain, dropped = build_line_model(), build_line_model(0.25)
    assert plain.count_params() == dropped.count_params()  # the same graph once exported
    assert {layer.name for layer in dropped.layers} - {layer.name for layer in plain.layers} == {"d7", "d9"}
    x = tf.random.uniform((1, FRAME, 64, 1), seed=1)
    assert np.array_equal(dropped(x, training=False), dropped(x, training=False))
    assert not np.array_equal(dropped(x, training=True), dropped(x, training=False))


def test_best_path_merges_repeats_and_drops_blanks():
    read = best_path(frames(BLANK, 4, 4, BLANK, 4, 0, 0, BLANK))
    assert [(d, first, last) for d, first, last, _ in read] == [(4, 1, 2), (4, 4, 4), (0, 5, 6)]
    assert all(0.99 < p <= 1 for *_, p in read)
    assert best_path(frames(BLANK, BLANK)) == []


def test_line_image_scales_the_line_and_maps_frames_back():
    gray = np.zeros((120, 400), np.uint8)
    for x in (40, 120, 200):  # three 60 px tall "digits", 30 px wide
        gray[30:90, x : x + 30] = 255
    gray[5, 390] = 255  # a speck far off the line: dropped
    strip = line_image(gray, gray > 64)
    assert strip.pixels.shape[0] == FRAME and strip.pixels.shape[1] % WIDTH_STEP == 0
    rows = np.flatnonzero((strip.pixels > 64).any(axis=1))
    assert abs(len(rows) - LINE_HEIGHT) <= 1  # the line's ink height H becomes LINE_HEIGHT
    cols = np.flatnonzero((strip.pixels > 64).any(axis=0))
    assert cols[0] == 8 and abs((cols[-1] + 1 - cols[0]) - 190 * LINE_HEIGHT / 60) <= 1  # 40..230 px, scaled
    top, left = strip.origin
    assert left == 40 and strip.ink.shape[1] == 190 and strip.ink[40 - top, 50 - left]  # the speck is outside
    first, last = (cols[0] // STRIDE), (cols[-1] // STRIDE)  # the frames the ink spans map back onto it
    x0, x1 = strip.columns(first, last)
    frame = STRIDE * 60 / LINE_HEIGHT  # image columns per frame
    assert abs(x0 - 40) <= frame and abs(x1 - 230) <= frame
    assert line_image(np.zeros((50, 50), np.uint8), np.zeros((50, 50), bool)) is None


def test_training_lines_are_reproducible(tiny_npz):
    from lenet_edge.data import load_splits

    split = load_splits(str(tiny_npz), 0.2, 0)[1]["train"]
    strips, digits = training_lines(split.images, split.labels, 12, seed=3)
    assert len(strips) == len(digits) == 12
    assert all(s.dtype == np.uint8 and s.shape[0] == FRAME and s.shape[1] % WIDTH_STEP == 0 for s in strips)
    assert all(1 <= len(d) <= 12 for d in digits) and len({len(d) for d in digits}) > 1
    again = training_lines(split.images, split.labels, 12, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(strips, again[0], strict=True))


def test_training_lines_draw_digits_at_their_heights_as_written(tiny_npz):
    from lenet_edge.data import load_splits
    from lenet_edge.verifier import compose_line

    split = load_splits(str(tiny_npz), 0.2, 0)[1]["train"]
    images, labels = split.images[:4], split.labels[:4]
    scanned = np.array([12, 30, 45, 30])  # px as written: a small digit, two ordinary ones, a large one
    gray, owner, ink = compose_line(images, labels, np.random.default_rng(0), False, scanned=scanned)
    rows = [np.flatnonzero((owner == k + 1).any(axis=1)) for k in range(4)]
    heights = np.array([r[-1] - r[0] + 1 for r in rows], float)
    assert np.allclose(heights / heights[1], scanned / 30, atol=0.12)  # one scale for the whole line
    middles = [(r[0] + r[-1]) / 2 for r in rows]
    assert max(middles) - min(middles) < 0.1 * heights[1] + 2  # on a common middle line
    assert gray.shape[0] > heights.max()  # the canvas holds the tallest
    strips, digits = training_lines(split.images, split.labels, 6, seed=3, scanned=split.raw_shapes[:, 0])
    assert all(s.shape[0] == FRAME and s.shape[1] % WIDTH_STEP == 0 for s in strips) and len(digits) == 6
    again = training_lines(split.images, split.labels, 6, seed=3, scanned=split.raw_shapes[:, 0])[0]
    assert all(np.array_equal(a, b) for a, b in zip(strips, again, strict=True))


def test_only_datasets_of_scans_say_their_sizes_are_as_written(tiny_npz, tmp_path):
    from lenet_edge.data import load_dataset
    from lenet_edge.data.cdb import write_cdb

    assert not load_dataset(str(tiny_npz)).written_sizes
    assert not load_dataset("synthetic:20:10").written_sizes
    rng = np.random.default_rng(0)
    digits = [(rng.random((int(rng.integers(10, 40)), 20)) > 0.5).astype(np.uint8) * 255 for _ in range(10)]
    write_cdb(tmp_path / "digits.cdb", digits, list(range(10)))
    dataset = load_dataset(f"{tmp_path / 'digits.cdb'}:train")
    assert dataset.written_sizes
    assert dataset.split("train").raw_shapes[:, 0].tolist() == [d.shape[0] for d in digits]


def test_export_composes_the_validation_numbers_as_train_did(tiny_npz, tmp_path, monkeypatch):
    from lenet_edge import conversion, line_model
    from lenet_edge.config import ExportConfig
    from lenet_edge.data import load_splits

    splits = load_splits(str(tiny_npz), 0.2, 0)[1]
    seen = []

    def composing(images, labels, count, seed, scanned=None):
        seen.append((count, seed, scanned))
        raise RuntimeError("composed")

    monkeypatch.setattr(line_model, "training_lines", composing)
    for written in (True, False):
        manifest = {"config": {"seed": 5}, "line_model": {"data": {"lines": {"val": 9}, "written_heights": written}}}
        with pytest.raises(RuntimeError, match="composed"):
            conversion._line_models([], tmp_path, manifest, splits, ExportConfig(), lambda _: None)
    assert [(count, seed) for count, seed, _ in seen] == [(9, 6), (9, 6)]
    assert np.array_equal(seen[0][2], splits["val"].raw_shapes[:, 0]) and seen[1][2] is None


def test_train_trains_and_export_exports_the_line_model(exported_run):
    from lenet_edge.runtimes.litert import inspect_tflite

    manifest = read_manifest(exported_run)
    artifacts = manifest["artifacts"]
    record = manifest["line_model"]
    assert record["config"]["dropout"] == [0.0, 0.25, 0.1]  # three members, trained alone on the same numbers
    members = range(len(record["config"]["dropout"]))
    assert {*(key for k in members for key in member_keys(k)), "line_int8_tflite"} <= set(artifacts)
    assert (record["config"]["epochs"], record["config"]["qat_epochs"]) == (1, 1)  # the run's --line-epochs, ...
    stages = [member_stage(stage, k) for k in members for stage in ("float", "qat")]
    assert [len(record["history"][stage]) for stage in stages] == [1] * 6
    assert record["data"]["lines"]["train"] > 0
    assert set(record["metrics"]) == {*stages, "together"}
    assert record["metrics"]["together"]["stage"] == "qat" and 0 <= record["metrics"]["together"]["val_exact"] <= 1
    assert record["data"]["written_heights"] is False  # synthetic digits: no size as written
    assert 0 <= record["metrics"]["qat"]["val_exact"] <= 1
    path = exported_run / artifacts["line_int8_tflite"]["path"]
    info = inspect_tflite(path)
    assert {op["op"] for op in info["ops"]} <= {"CONV_2D", "MAX_POOL_2D"}  # integer-only, nothing else
    assert info["inputs"][0]["dtype"] == "int8"
    assert [(o["dtype"], o["shape"][-1]) for o in info["outputs"]] == [("int8", CLASSES)] * 3  # one per member
    parity = manifest["export"]["models"]["line_int8_tflite"]["parity"]
    assert parity["n"] == record["data"]["lines"]["val"] and parity["agreement"] >= 0.9
    reader = LineReader(path.read_bytes())
    for width in (64, 320, 64):  # any multiple of WIDTH_STEP; a width seen before reuses its interpreter
        logp = reader(np.zeros((FRAME, width), np.uint8))  # each member's own
        assert logp.shape == (3, width // STRIDE, CLASSES) and np.allclose(np.exp(logp).sum(axis=-1), 1)
    assert len(reader.handles) == 3  # the first-opened width, 64 and 320


def test_the_members_file_reads_as_each_member_alone_combined(exported_run):
    """Each member converted alone (a run from before members is one) gives the outputs the members' file has."""
    from lenet_edge import conversion
    from lenet_edge.config import ExportConfig
    from lenet_edge.data import load_run_splits
    from lenet_edge.runtimes.litert import inspect_tflite

    manifest = read_manifest(exported_run)
    splits = load_run_splits(manifest)[1]
    alone = [
        conversion._line_models(
            [member], exported_run, manifest, splits, ExportConfig(min_agreement=0.0), lambda _: None
        )["line_int8_tflite"]
        for member in conversion._line_member_weights(exported_run, manifest)
    ]
    assert [len(inspect_tflite(a["data"])["outputs"]) for a in alone] == [1, 1, 1]
    together = LineReader((exported_run / manifest["artifacts"]["line_int8_tflite"]["path"]).read_bytes())
    each = [LineReader(a["data"]) for a in alone]
    strip = np.random.default_rng(4).integers(0, 256, (FRAME, 96)).astype(np.uint8)
    assert np.allclose(together(strip), np.concatenate([member(strip) for member in each]))


def test_exporting_again_keeps_the_models_converted_from_the_same_weights(exported_run, tmp_path, monkeypatch):
    """The line model and the piece verifier, converted and checked by an earlier export, are kept as they are."""
    from conftest import copy_run

    from lenet_edge import conversion, line_model, verifier
    from lenet_edge.config import ExportConfig
    from lenet_edge.conversion import export_run
    from lenet_edge.data import load_run_splits
    from lenet_edge.errors import ModelError

    run = copy_run(exported_run, tmp_path / "run")
    before, kept = read_manifest(run), "verifier_int8_tflite"
    files = {key: (run / before["artifacts"][key]["path"]).read_bytes() for key in ("line_int8_tflite", kept)}

    def converting(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(line_model, "load_line_qat", converting)
    monkeypatch.setattr(verifier, "load_verifier_qat", converting)
    export_run(run, int8=True, micro=True, min_agreement=0.0)  # e.g. again for the micro/ folder
    after = read_manifest(run)
    for key, data in files.items():
        assert (run / after["artifacts"][key]["path"]).read_bytes() == data
        assert after["artifacts"][key] == before["artifacts"][key]
        assert after["export"]["models"][key] == before["export"]["models"][key]
    assert len(after["export"]["models"]["line_int8_tflite"]["sources"]["weights_sha256"]) == 3  # three members
    assert after["export"]["models"][kept]["tflm"]["pieces"] > 0  # its TFLM check, kept with it
    assert "micro" in after["export"]  # the rest of the export did run
    splits = load_run_splits(after)[1]
    for key in files:  # converted by another TensorFlow: converted again
        after["export"]["models"][key]["sources"]["tensorflow"] = "2.0.0"
    members = conversion._line_member_weights(run, after)
    with pytest.raises(AssertionError, match="converted again"):
        conversion._line_models(members, run, after, splits, ExportConfig(), lambda _: None)
    weights = run / after["artifacts"]["verifier_qat_weights"]["path"]
    with pytest.raises(AssertionError, match="converted again"):
        conversion._verifier(weights, run, after, splits, ExportConfig(), lambda _: None)
    # a model kept must still pass the agreement asked for now
    after["export"]["models"][kept] = {**before["export"]["models"][kept], "parity": {"agreement": 0.5, "n": 80}}
    with pytest.raises(ModelError, match=r"verifier_int8.tflite: agrees with the Keras verifier on 0.5000 of 80"):
        conversion._verifier(weights, run, after, splits, ExportConfig(min_agreement=0.9), lambda _: None)


def test_a_file_that_is_no_line_model_is_refused(exported_run):
    from lenet_edge.errors import ModelError

    with pytest.raises(ModelError, match="not a line model"):
        LineReader((exported_run / "lenet5_int8.tflite").read_bytes())


class Sure:
    """A stand-in digit model sure that every piece is a ۳."""

    def __call__(self, images):
        probs = np.full((len(images), 10), 0.01)
        probs[:, 3] = 0.91
        return probs


def test_the_line_model_overrules_the_segmentation_only_when_much_surer():
    gray = np.zeros((100, 300), np.uint8)
    for x in (40, 130):  # two marks: the segmentation reads two digits, ۳۳
        gray[20:80, x : x + 40] = 255
    assert read_array(gray, Sure(), min_confidence=0)["text"] == "33"
    overruled = read_array(gray, Sure(), min_confidence=0, line=Line([4, 5, 6]))
    assert overruled["text"] == "456" and overruled["persian"] == "۴۵۶"
    boxes = [d["box"] for d in overruled["digits"]]
    assert all(0 <= b[0] < b[2] <= 300 and 20 <= b[1] < b[3] <= 80 for b in boxes)
    assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)
    assert all(0.99 < d["confidence"] <= 1 for d in overruled["digits"])
    # the line model finds "33" as likely as its own reading: the segmentation's stands
    unsure = read_array(gray, Sure(), min_confidence=0, line=Line([4, 5, 6], sure=0.5))
    assert unsure["text"] == "33"
    agreed = Line([3, 3])
    assert read_array(gray, Sure(), min_confidence=0, line=agreed)["text"] == "33" and agreed.calls == 1
    # as many digits as the cuts found, read otherwise: the line model's reading when it is much surer only
    assert read_array(gray, Sure(), min_confidence=0, line=Line([4, 5], sure=20.0))["text"] == "45"
    assert read_array(gray, Sure(), min_confidence=0, line=Line([4, 5], sure=0.5))["text"] == "33"
    margin = SegmentConfig(line_margin=1e9)  # a margin nothing overcomes: the segmentation always stands
    assert read_array(gray, Sure(), min_confidence=0, config=margin, line=Line([4, 5, 6]))["text"] == "33"


class Counted(Sure):
    """`Sure`, counting the pieces it is asked about."""

    pieces = 0

    def __call__(self, images):
        self.pieces += len(images)
        return super().__call__(images)


def test_a_line_model_sure_beyond_overruling_makes_the_segmentation_needless():
    gray = np.zeros((100, 300), np.uint8)
    for x in (40, 130):
        gray[20:80, x : x + 40] = 255
    for line, skipped in ((Line([4, 5, 6], sure=20.0), True), (Line([4, 5, 6], sure=8.0), False)):
        digits = Counted()
        record = read_array(gray, digits, min_confidence=0, line=line)
        assert record["text"] == "456" and line.calls == 1
        assert (digits.pieces == 0) is skipped  # the digit model (and so the segmentation) not asked at all
        assert len(record["digits"]) == 3 and all(0.99 < d["confidence"] <= 1 for d in record["digits"])


def test_beyond_overruling_means_no_other_reading_comes_within_the_margin():
    """The bound behind skipping the segmentation: readings' probabilities sum to 1 over a strip."""
    rng = np.random.default_rng(0)
    margin, checked = SegmentConfig().line_margin, 0
    for _ in range(300):
        t = int(rng.integers(6, 30))
        logits = rng.normal(0, 1, (t, CLASSES))
        logits[np.arange(t), rng.integers(0, CLASSES, t)] += rng.uniform(5, 14)  # a peaked, varied strip
        logp = log_softmax(logits)
        whole = LineReading(None, logp, margin)
        own = whole.digits
        if not own or not whole.beyond_overruling:
            continue
        others = [own[:k] + own[k + 1 :] for k in range(len(own))]  # a digit dropped, changed, or added
        others += [own[:k] + [(own[k] + j) % 10] + own[k + 1 :] for k in range(len(own)) for j in (1, 5)]
        others += [own[:k] + [int(rng.integers(0, 10))] + own[k:] for k in range(len(own) + 1)]
        for other in others:
            if other != own:
                assert log_likelihood(logp, other) < whole.likelihood - margin
                checked += 1
    assert checked > 500


def test_a_line_readings_boxes_are_the_kept_ink_in_each_digits_columns():
    """Each box of `LineReading.reading` is the extent of the kept ink in the columns its frames span (from
    halfway to the previous digit's to halfway to the next one's), or, in a gap without ink, those columns
    (at least one) over the rows of the line's ink."""
    rng = np.random.default_rng(5)
    gaps = 0
    for _ in range(200):
        h, w = int(rng.integers(5, 40)), int(rng.integers(20, 200))
        ink = rng.random((h, w)) < rng.uniform(0.0, 0.2)
        ink[:, rng.integers(0, w, size=int(rng.integers(0, w)))] = False  # empty columns, some whole gaps
        ink[int(rng.integers(0, h)), int(rng.integers(0, w))] = True  # the line has some ink
        t = int(rng.integers(4, 60))
        logits = rng.normal(0, 1, (t, CLASSES))
        logits[np.arange(t), rng.integers(0, CLASSES, t)] += 8
        origin = (int(rng.integers(0, 50)), int(rng.integers(0, 50)))
        strip = LineImage(
            np.zeros((FRAME, 2 * t), np.uint8), origin[1] + rng.uniform(0, 9), rng.uniform(0.3, 3), ink, origin
        )
        whole = LineReading(strip, log_softmax(logits), 4.0)
        digits, _, boxes = whole.reading()
        centres = [(a + b) / 2 for _, a, b, _ in whole.own]
        bounds = [0.0, *((a + b) / 2 for a, b in zip(centres[:-1], centres[1:], strict=True)), t - 1.0]
        assert len(boxes) == len(digits)
        for (x0, y0, x1, y1), start, end in zip(boxes, bounds[:-1], bounds[1:], strict=True):
            a, b = strip.columns(math.floor(start), math.ceil(end))
            window = ink[:, a - origin[1] : b - origin[1]]
            if window.any():
                rows, cols = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
            else:
                rows, cols, gaps = np.flatnonzero(ink.any(axis=1)), np.arange(max(1, b - a)), gaps + 1
            assert (x0, y0, x1, y1) == (a + cols[0], origin[0] + rows[0], a + cols[-1] + 1, origin[0] + rows[-1] + 1)
    assert gaps > 10


def test_read_uses_the_runs_line_model_unless_told_not_to(exported_run, tmp_path, monkeypatch):
    from conftest import copy_run
    from PIL import Image

    import lenet_edge as le
    from lenet_edge import reading
    from lenet_edge.manifest import write_manifest

    image = np.zeros((60, 160), np.uint8)
    for x in (20, 60, 100):
        image[15:45, x : x + 6] = 255
    path = tmp_path / "bars.png"
    Image.fromarray(image).save(path)
    given = []
    monkeypatch.setattr(reading, "read_array", lambda gray, classify, **kw: given.append(kw["line"]) or {"text": ""})
    le.read([path], run_dir=exported_run)
    le.read([path], run_dir=exported_run, line_model=False)
    assert isinstance(given[0], LineReader) and given[1] is None
    old = copy_run(exported_run, tmp_path / "old-run")  # a run exported before the line model existed
    manifest = read_manifest(old)
    del manifest["artifacts"]["line_int8_tflite"]
    write_manifest(old, manifest)
    messages = []
    le.read([path], run_dir=old, log=messages.append)
    assert given[2] is None and any("no line model" in m for m in messages)


def test_export_summary_says_what_the_line_models_figures_are():
    from lenet_edge.conversion import format_summary

    parity = {"top1_tflite": 0.95536, "n": 6250, "agreement": 0.99904}
    entry = {"key": "line_int8_tflite", "file": "line_int8.tflite", "bytes": 90072, "ratio_to_float32": 0.36}
    text = format_summary(
        {"run_dir": "r", "files": [{**entry, "val_accuracy": 0.95536, "xnnpack_partitions": 1, "parity": parity}]}
    )
    assert "line_int8.tflite: the line model" in text and "95.54% of 6,250 validation numbers exactly" in text
    assert "on 99.90%" in text
