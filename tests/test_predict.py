"""Predict: image files in any polarity and size -> the same digit as the model on the dataset's arrays.

One tiny run (two float epochs, one QAT epoch on `tiny_npz`, exported to
float32 + int8) serves the whole module. Test images are written as PNGs in
both polarities, padded onto larger canvases and upscaled; the reference is
always the model run on the dataset's own preprocessed arrays.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lenet_edge.cli import main
from lenet_edge.data import load_dataset
from lenet_edge.data.folders import load_image
from lenet_edge.data.preprocess import PREPROCESSING_VERSION, preprocess
from lenet_edge.errors import DataError, ModelError
from lenet_edge.inference import image_files, predict, softmax
from lenet_edge.manifest import PERSIAN_DIGITS, read_manifest, write_manifest

N_IMAGES = 12  # test images per variant
EXACT = ("plain", "inverted", "padded", "padded_inverted")  # variants whose 28x28 input is identical
HUMAN_LINE = re.compile(r"^(\S+) +([۰-۹]) (\d) +(\d+\.\d)%(   \((\d \d+\.\d%)(, \d \d+\.\d%)*\))?$")


@pytest.fixture(scope="module")
def run_dir(tiny_npz, tmp_path_factory) -> Path:
    from lenet_edge.conversion import export_run
    from lenet_edge.training import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("predict-run")
    config = TrainConfig(
        data=str(tiny_npz), epochs=2, qat_epochs=1, batch_size=32, val_fraction=0.2, seed=3, verifier=False
    )  # predict reads with the digit model alone
    train(config, run_dir, log=lambda _: None)
    export_run(run_dir, int8=True, min_agreement=0.0)
    return run_dir


def model_file(run_dir: Path, key: str) -> Path:
    return run_dir / read_manifest(run_dir)["artifacts"][key]["path"]


def reference(model: Path, arrays: np.ndarray) -> np.ndarray:
    """(N, 10) probabilities of `model` on preprocessed (N, 28, 28) arrays."""
    from lenet_edge.runtimes import predict_tflite

    return softmax(predict_tflite(model, arrays))


def variants(raw: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One white-on-black image as a user might hand it over: either polarity, other sizes."""
    h, w = raw.shape
    big_h, big_w = h + rng.integers(5, 40), w + rng.integers(5, 40)
    top, left = rng.integers(0, big_h - h + 1), rng.integers(0, big_w - w + 1)
    padded = np.zeros((big_h, big_w), np.uint8)  # black paper: crop-to-ink removes it again
    padded[top : top + h, left : left + w] = raw
    up3 = np.asarray(Image.fromarray(raw).resize((3 * w, 3 * h), Image.Resampling.NEAREST))
    return {
        "plain": raw,
        "inverted": 255 - raw,
        "padded": padded,
        "padded_inverted": 255 - padded,
        "up3": up3,
        "up3_inverted": 255 - up3,
    }


def write_variants(raws: list[np.ndarray], folder: Path, seed: int = 0) -> dict[str, list[Path]]:
    """Each image in every variant as `folder/<variant>/<i>.png`; variant -> paths in image order."""
    rng = np.random.default_rng(seed)
    paths: dict[str, list[Path]] = {}
    for i, raw in enumerate(raws):
        for name, image in variants(raw, rng).items():
            path = folder / name / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            paths.setdefault(name, []).append(path)
    return paths


@pytest.fixture(scope="module")
def tiny_test(tiny_npz, tmp_path_factory):
    """(PNG paths per variant, the dataset's preprocessed arrays for them)."""
    with np.load(tiny_npz) as data:
        raws = list(data["x_test"][:N_IMAGES])
    arrays = load_dataset(str(tiny_npz)).split("test").images[:N_IMAGES]
    return write_variants(raws, tmp_path_factory.mktemp("pngs")), arrays


def run_cli(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


# --- the library ---------------------------------------------------------------------------


def test_either_polarity_and_padding_give_the_dataset_array_and_the_same_prediction(run_dir, tiny_test):
    paths, arrays = tiny_test
    expected = reference(model_file(run_dir, "int8_tflite"), arrays)
    for variant in EXACT:
        for path, array in zip(paths[variant], arrays, strict=True):
            np.testing.assert_array_equal(preprocess(load_image(path)), array, err_msg=str(path))
        results = predict(paths[variant], run_dir=run_dir)  # the run's int8 model by default
        assert [r["digit"] for r in results] == expected.argmax(1).tolist(), variant
        assert [r["confidence"] for r in results] == pytest.approx(expected.max(1).tolist(), abs=1e-6)


def test_upscaled_images_come_close_to_the_dataset_array(run_dir, tiny_test):
    """Resampling a 3x larger crop down to 20 px is not bit-identical, but near; predict reads what it made.

    (Whether the digit survives the small difference depends on the model: this
    tiny one is barely trained, so only the preprocessing is held to the dataset.)
    """
    paths, arrays = tiny_test
    for variant in ("up3", "up3_inverted"):
        got = np.stack([preprocess(load_image(p)) for p in paths[variant]])
        assert np.abs(got.astype(int) - arrays).mean() < 3  # of 255
        expected = reference(model_file(run_dir, "int8_tflite"), got).argmax(1)
        digits = np.array([r["digit"] for r in predict(paths[variant], run_dir=run_dir)])
        assert np.array_equal(digits, expected), variant


def test_results_rank_top_k_digits_with_softmax_confidences(run_dir, tiny_test):
    paths, _ = tiny_test
    for top_k in (1, 3, 10):
        for r in predict(paths["plain"][:4], run_dir=run_dir, top_k=top_k):
            assert list(r) == ["path", "digit", "persian", "confidence", "top_k"]
            assert r["persian"] == PERSIAN_DIGITS[r["digit"]]
            assert len(r["top_k"]) == top_k and r["top_k"][0] == [r["digit"], r["confidence"]]
            probs = [p for _, p in r["top_k"]]
            assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
            if top_k == 10:
                assert sorted(d for d, _ in r["top_k"]) == list(range(10)) and sum(probs) == pytest.approx(1, abs=1e-5)


def test_batches_and_progress(run_dir, tiny_test):
    paths, _ = tiny_test
    files = paths["plain"] + paths["inverted"]
    calls = []
    small = predict(files, run_dir=run_dir, batch_size=5, progress=lambda done, total: calls.append((done, total)))
    assert small == predict(files, run_dir=run_dir)
    assert calls == [(i, len(files)) for i in range(1, len(files) + 1)]


def test_directories_are_searched_recursively_for_images(tmp_path):
    for name in ("b/2.png", "b/c/3.JPG", "a.bmp", ".hidden/4.png", "b/.5.png", "notes.txt", "Thumbs.db"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    named = tmp_path / "notes.txt"
    assert image_files([tmp_path, named]) == [tmp_path / "a.bmp", tmp_path / "b/2.png", tmp_path / "b/c/3.JPG", named]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no image files"):
        image_files([tmp_path / "empty"])


def test_unreadable_files_become_error_entries(run_dir, tiny_test, tmp_path):
    good = tiny_test[0]["plain"][0]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    results = predict([tmp_path / "bad.png", good, tmp_path / "missing.png"], run_dir=run_dir)
    assert results[0] == {
        "path": str(tmp_path / "bad.png"),
        "error": "not an image file (Pillow cannot identify its format)",
    }
    assert results[1]["path"] == str(good) and "digit" in results[1]
    assert results[2]["path"] == str(tmp_path / "missing.png") and "No such file" in results[2]["error"]


def test_ink_too_small_to_be_a_digit_is_a_per_file_error(run_dir, tiny_test, tmp_path):
    """A 1x1 grey pixel (once read as ۰ at 82%) or a 3x3 dot holds no digit; a 4 px stroke may, and is read."""
    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(tmp_path / "pixel.png")
    dot = np.zeros((20, 20), np.uint8)
    dot[8:11, 8:11] = 255
    Image.fromarray(dot).save(tmp_path / "dot.png")
    bar = np.zeros((20, 20), np.uint8)
    bar[8:12, 9] = 255  # 4 px tall, 1 px wide: at the limit, still read
    Image.fromarray(bar).save(tmp_path / "bar.png")
    good = tiny_test[0]["plain"][0]
    results = predict([tmp_path / "pixel.png", tmp_path / "dot.png", tmp_path / "bar.png", good], run_dir=run_dir)
    assert (
        results[0]["error"]
        == "too small to be a digit: its ink spans 1 x 1 px (a digit needs at least 4 px of height or width)"
    )
    assert "3 x 3 px" in results[1]["error"] and "digit" not in results[1]
    assert "digit" in results[2] and "digit" in results[3]


def copy_run(run_dir: Path, target: Path, drop=(), **manifest_changes) -> Path:
    shutil.copytree(run_dir, target)
    manifest = read_manifest(target)
    for key in drop:
        manifest["artifacts"].pop(key)
    write_manifest(target, {**manifest, **manifest_changes})
    return target


def test_float_model_by_path_and_as_the_fallback(run_dir, tiny_test, tmp_path):
    paths, arrays = tiny_test
    float32 = model_file(run_dir, "float32_tflite")
    expected = reference(float32, arrays).argmax(1).tolist()
    assert [r["digit"] for r in predict(paths["inverted"], model_path=float32)] == expected
    said = []
    run = copy_run(run_dir, tmp_path / "run", drop=["int8_tflite"])
    assert [r["digit"] for r in predict(paths["inverted"], run_dir=run, log=said.append)] == expected
    assert said == [f"{run}: no int8 export, using float32 (`lenet-edge export --dir {run} --int8` adds int8)"]


def test_refuses_a_model_trained_with_other_preprocessing(run_dir, tiny_test, tmp_path):
    manifest = read_manifest(run_dir)
    old = {**manifest["preprocessing"], "version": PREPROCESSING_VERSION + 1}
    run = copy_run(run_dir, tmp_path / "run", preprocessing=old)
    for kwargs in ({"run_dir": run}, {"model_path": run / "lenet5_float32.tflite"}):
        with pytest.raises(ModelError, match=f"preprocessing version {PREPROCESSING_VERSION + 1}, but this"):
            predict(tiny_test[0]["plain"][:1], **kwargs)


def test_refuses_a_model_of_another_shape(tmp_path, tiny_test):
    from lenet_edge.compat import keras
    from lenet_edge.conversion import convert_float

    model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path / "other.tflite"  # no manifest beside it: the current preprocessing is assumed
    path.write_bytes(convert_float(model))
    wrong_shape = r"other.tflite: input .* has shape \[1, 32, 32, 1\], expected \[1, 28, 28, 1\]"
    with pytest.raises(ModelError, match=wrong_shape):
        predict(tiny_test[0]["plain"][:1], model_path=path)
    (tmp_path / "junk.tflite").write_bytes(b"junk")
    with pytest.raises(ModelError, match="junk.tflite: not a loadable TFLite model"):
        predict(tiny_test[0]["plain"][:1], model_path=tmp_path / "junk.tflite")


def test_bad_arguments_are_value_errors(run_dir):
    for kwargs in ({"top_k": 0}, {"top_k": 11}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            predict([], run_dir=run_dir, **kwargs)


def test_hoda_pngs_preprocess_to_the_dataset_arrays(hoda_dir, run_dir, tmp_path):
    """~50 real scans (5 per digit) as PNGs: the same 28x28 input as the dataset, so the same prediction.

    No Hoda-trained model runs in the tests; the tiny model stands in, since
    equal inputs must give equal outputs whatever the weights.
    """
    from lenet_edge.data.cdb import read_cdb

    data = read_cdb(hoda_dir / "Test 20000.cdb")
    index = np.concatenate([np.flatnonzero(data.labels == d)[:5] for d in range(10)])
    raws = [data.images[i] for i in index]
    arrays = np.stack([preprocess(raw) for raw in raws])  # as the dataset loader preprocesses them
    paths = write_variants(raws, tmp_path)
    expected = reference(model_file(run_dir, "int8_tflite"), arrays).argmax(1).tolist()
    for variant in EXACT:
        got = np.stack([preprocess(load_image(p)) for p in paths[variant]])
        np.testing.assert_array_equal(got, arrays, err_msg=variant)
        assert [r["digit"] for r in predict(paths[variant], run_dir=run_dir)] == expected, variant


# --- the command line -------------------------------------------------------------------------


def test_cli_prints_one_line_per_image(run_dir, tiny_test):
    paths, arrays = tiny_test
    expected = reference(model_file(run_dir, "int8_tflite"), arrays).argmax(1)
    folder = paths["inverted"][0].parent
    result = run_cli(folder, "--dir", run_dir)  # a directory argument
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == N_IMAGES
    for line, path, digit in zip(lines, paths["inverted"], expected, strict=True):
        match = HUMAN_LINE.match(line)
        assert match, line
        assert (match[1], match[2], int(match[3])) == (str(path), PERSIAN_DIGITS[digit], digit)
        assert len(match[5].split(",")) == 2  # two runners-up by default
    one = run_cli(paths["plain"][0], "--dir", run_dir, "--top-k", "1")
    assert "(" not in one.stdout and HUMAN_LINE.match(one.stdout.strip())


def test_cli_json_lines(run_dir, tiny_test):
    paths, _ = tiny_test
    result = run_cli(*paths["padded"][:3], "--dir", run_dir, "--json", "--top-k", "4")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == predict(paths["padded"][:3], run_dir=run_dir, top_k=4)
    assert '"persian": "' + rows[0]["persian"] + '"' in result.stdout  # the digit itself, not \u06f0


def test_cli_reports_unreadable_files_and_exits_1_after_the_rest(run_dir, tiny_test, tmp_path):
    good = tiny_test[0]["plain"][:2]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    human = run_cli(good[0], tmp_path / "bad.png", good[1], "--dir", run_dir)
    assert human.exit_code == 1
    assert [line.split()[0] for line in human.stdout.splitlines()] == [str(good[0]), str(good[1])]
    assert human.stderr.splitlines()[0].startswith(f"error: {tmp_path / 'bad.png'}: ")
    assert human.stderr.splitlines()[-1] == "error: 1 of 3 images could not be read"
    as_json = run_cli(good[0], tmp_path / "bad.png", good[1], "--dir", run_dir, "--json")
    assert as_json.exit_code == 1
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [sorted(r) for r in rows][1] == ["error", "path"] and "digit" in rows[0] and "digit" in rows[2]


def test_cli_without_a_model_says_what_to_run(run_dir, tiny_test, tmp_path):
    image = tiny_test[0]["plain"][0]
    nothing = tmp_path / "nothing"
    result = run_cli(image, "--dir", nothing)
    assert result.exit_code == 1
    expected = f"error: {nothing}/manifest.json: no manifest; run `lenet-edge train --dir {nothing}` first\n"
    assert result.output == expected
    run = copy_run(run_dir, tmp_path / "trained", drop=["float32_tflite", "int8_tflite"])
    result = run_cli(image, "--dir", run)
    assert result.exit_code == 1
    assert result.output == f"error: {run}: no exported models; run `lenet-edge export --dir {run} --int8` first\n"


def test_cli_with_a_float_model(run_dir, tiny_test):
    paths, arrays = tiny_test
    float32 = model_file(run_dir, "float32_tflite")
    expected = reference(float32, arrays[:3]).argmax(1).tolist()
    result = run_cli(*paths["padded_inverted"][:3], "--model", float32, "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["digit"] for line in result.stdout.splitlines()] == expected
