"""The photo front end: digits on paper with lines, shadows, boxes and specks; clean inputs unchanged.

Photos are made here from the built-in synthetic digits: dark ink on light
grey paper, the digit a quarter of the page, then whatever a test needs drawn
on (a ruled line through the digit, a lighting gradient, a box, a speck).
The reference for a photo is the same digit on plain paper.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lenet_edge.cli import main
from lenet_edge.data import load_dataset
from lenet_edge.data.folders import load_image, load_image_folder
from lenet_edge.data.frontend import (
    CLEAN_BACKGROUND_MAX,
    NoDigitError,
    SeveralDigitsError,
    _background_is_black,
    clean_page,
    digit_image,
    digit_images,
    find_digit,
    run_frontend,
    shrunk_by,
)
from lenet_edge.data.preprocess import INK_THRESHOLD, preprocess, preprocess_many
from lenet_edge.data.rules import _could_span, _spanning
from lenet_edge.data.synthetic import synthetic_splits

PAGE = 240  # px, side of a generated photo
PAPER, INK = 215.0, 40.0


@pytest.fixture(scope="module")
def digits():
    """Synthetic raw digits (white on black, 64x64) and their labels."""
    images, labels = synthetic_splits(60, 0, seed=7)["train"]
    return images, labels


def photo(digit: np.ndarray, *, at=(0.5, 0.5), size: int = 60, extra=()) -> np.ndarray:
    """A grayscale photo (dark on light, uint8) of `digit` on paper; `extra` draws more on the page."""
    page = np.full((PAGE, PAGE), PAPER, np.float32)
    ys, xs = np.nonzero(digit > 64)
    if ys.size == 0:  # no digit: the page with its lines or box only
        ys, xs, digit = np.array([0]), np.array([0]), np.zeros((1, 1), np.uint8)
    crop = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255
    scale = size / max(crop.shape)
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))))
    top, left = round(at[1] * PAGE - crop.shape[0] / 2), round(at[0] * PAGE - crop.shape[1] / 2)
    for draw in extra:
        draw(page)
    region = page[top : top + crop.shape[0], left : left + crop.shape[1]]
    region[:] = region * (1 - crop) + INK * crop
    page = cv2.GaussianBlur(page, (0, 0), 0.8) + np.random.default_rng(0).normal(0, 3, page.shape)
    return np.clip(np.rint(page), 0, 255).astype(np.uint8)


def line_through(y: float, grey: float = 120.0, thickness: int = 2):
    return lambda page: cv2.line(page, (0, round(y * PAGE)), (PAGE - 1, round(y * PAGE)), grey, thickness)


def box(x0, y0, x1, y1, grey: float = 60.0):
    return lambda page: cv2.rectangle(page, (x0, y0), (x1, y1), grey, 2)


def wob(gray: np.ndarray) -> np.ndarray:
    """As `load_image` returns a dark-on-light photo: inverted."""
    return 255 - gray


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the ink (> 64) of two 28x28 images."""
    a, b = a > 64, b > 64
    return float((a & b).sum() / max((a | b).sum(), 1))


# --- clean inputs: byte-identical to the training contract ----------------------------------


def test_clean_images_give_exactly_the_old_preprocessing(digits, tmp_path):
    images, _ = digits
    for k, raw in enumerate(images[:200]):
        expected = preprocess(raw)
        assert np.array_equal(digit_image(raw, strict=False), expected)
        for polarity, pixels in (("wob", raw), ("bow", 255 - raw)):
            png, jpg = tmp_path / f"{k}_{polarity}.png", tmp_path / f"{k}_{polarity}.jpg"
            Image.fromarray(pixels).save(png)
            Image.fromarray(pixels).save(jpg, quality=90)
            assert np.array_equal(digit_image(load_image(png), strict=False), expected)
            loaded = load_image(jpg)
            assert np.array_equal(digit_image(loaded, strict=False), preprocess(loaded))
            assert clean_page(loaded).clean


def test_a_folder_of_28px_jpegs_loads_as_before(digits, tmp_path):
    """The Kaggle layout (Train/class_k/*.jpg, 28x28): the dataset arrays are the old ones, byte for byte."""
    images, labels = digits
    for k in range(10):
        folder = tmp_path / "Train" / f"class_{k}"
        folder.mkdir(parents=True)
        for j, raw in enumerate(images[labels == k][:3]):
            small = cv2.resize(raw, (28, 28), interpolation=cv2.INTER_AREA)
            Image.fromarray(255 - small if j % 2 else small).save(folder / f"{j}.jpg", quality=85)
    loaded, _ = load_image_folder(tmp_path)["train"]
    dataset = load_dataset(str(tmp_path), cache_dir=None)
    assert np.array_equal(dataset.splits["train"].images, preprocess_many(loaded))


def test_hoda_records_give_exactly_the_old_preprocessing(hoda_dir):
    from lenet_edge.data.cdb import read_cdb

    records = read_cdb(hoda_dir / "Test 20000.cdb").images[::10]  # 2,000 records, every digit and size
    assert np.array_equal(digit_images(records), preprocess_many(records))


@pytest.mark.slow
def test_every_hoda_record_gives_exactly_the_old_preprocessing(hoda_dir):
    from lenet_edge.data.cdb import read_cdb

    for name in ("Test 20000.cdb", "Train 60000.cdb"):
        records = read_cdb(hoda_dir / name).images
        assert np.array_equal(digit_images(records), preprocess_many(records)), name


# --- photos ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, extra, same, old_fails",
    [
        ("ruled line crossing the digit", [line_through(0.5)], 0.6, True),
        ("ruled lines above and below", [line_through(0.3), line_through(0.7)], 0.6, True),
        ("box frame", [box(70, 70, 170, 170)], 0.6, True),
        # Strokes running into the frame lose their tips with it; the old crop is about the digit's.
        ("box frame touching the digit", [box(88, 88, 152, 152)], 0.5, False),
    ],
)
def test_structure_is_removed_and_the_digit_kept(digits, name, extra, same, old_fails):
    images, _ = digits
    old = []
    for raw in images[:10]:
        reference = digit_image(wob(photo(raw)))
        stages = run_frontend(wob(photo(raw, extra=extra)))
        assert stages.digit.count == 1, name
        assert stages.page.removed.any(), name
        assert overlap(stages.final, reference) > same, name
        old.append(overlap(preprocess(wob(photo(raw, extra=extra))), reference))
    if old_fails:
        assert np.mean(old) < 0.5, name


def test_a_lighting_gradient_is_flattened(digits):
    images, _ = digits
    shade = np.linspace(1.0, 0.45, PAGE, dtype=np.float32)[None, :]  # right side 55% darker
    old = []
    for raw in images[:10]:
        dark = np.clip(photo(raw).astype(np.float32) * shade, 0, 255).astype(np.uint8)
        page = clean_page(wob(dark))
        paper = page.flattened[~cv2.dilate(page.ink.astype(np.uint8), np.ones((9, 9))).astype(bool)]
        assert np.percentile(paper, 99) < 40  # the shadow is gone: paper is black everywhere
        assert overlap(digit_image(wob(dark)), digit_image(wob(photo(raw)))) > 0.7
        old.append(overlap(preprocess(wob(dark)), digit_image(wob(photo(raw)))))
    assert np.mean(old) < 0.5  # the old front end crops the shadow (a bold blob of a digit may still overlap it)


def test_a_speck_is_dropped(digits):
    images, _ = digits
    speck = lambda page: cv2.circle(page, (30, 200), 3, INK, -1)  # noqa: E731
    for raw in images[:10]:
        stages = run_frontend(wob(photo(raw, extra=[speck])))
        assert stages.digit.dropped >= 1 and not stages.digit.kept[195:206, 25:36].any()
        assert overlap(stages.final, digit_image(wob(photo(raw)))) > 0.8


def test_a_long_stroke_alone_is_not_a_rule():
    """A ۱ (one straight stem) taller than a third of the photo: still the digit, not a ruled line."""
    stem = np.zeros((64, 64), np.uint8)
    cv2.line(stem, (30, 4), (34, 60), 255, 2)  # a slightly slanted ۱, a thin pen
    for size in (90, 110):  # 0.38 and 0.46 of the page's side: longer than a rule's minimum
        stages = run_frontend(wob(photo(stem, size=size)))
        assert not stages.page.removed.any(), size
        assert stages.digit.count == 1 and stages.page.ink.sum() > 0
        kept_rows = np.flatnonzero(stages.digit.kept.any(axis=1))
        assert kept_rows[-1] - kept_rows[0] >= 0.9 * size * stages.page.scale, size  # the whole stem kept
    ruled = run_frontend(wob(photo(stem, size=90, extra=[line_through(0.3), line_through(0.7)])))
    assert ruled.page.removed.any() and ruled.digit.count == 1  # the rules across it still go


def test_the_background_test_is_the_mean_of_the_non_ink_pixels():
    """`_background_is_black` from the histogram decides as the plain mean of the pixels up to
    `INK_THRESHOLD` does, on small images of every kind and on one past float32's exact counts."""
    rng = np.random.default_rng(4)
    images = []
    for _ in range(500):
        h, w = rng.integers(1, 30, 2)
        image = np.clip(rng.normal(rng.uniform(0, 12), rng.uniform(0, 10), (h, w)), 0, 255).astype(np.uint8)
        image[rng.random((h, w)) < rng.uniform(0, 1)] = rng.integers(0, 256)
        images.append(image)
    large = np.zeros((4097, 4097), np.uint8)
    large[::7], large[::3] = 9, 200
    for image in [*images, large, np.full((5, 5), 255, np.uint8)]:
        background = image[image <= INK_THRESHOLD]
        expected = background.size == 0 or float(background.mean()) <= CLEAN_BACKGROUND_MAX
        assert _background_is_black(image) == expected
    assert sum(_background_is_black(image) for image in images) not in (0, len(images))


def test_shrinking_is_an_area_average_of_the_exact_size(digits):
    """`shrunk_by` halves first where it can: the size of one area resize, its pixels within a grey level of it
    on average, the same ink but for a few edge pixels; and the exact size of awkward ones (odd sides, one px)."""
    page = 255 - photo(digits[0][0], size=120)
    for enlarged, scale in ((5, 0.3), (4, 0.37), (8, 0.13), (3, 0.5), (1, 0.7)):
        image = cv2.resize(page, None, fx=enlarged, fy=enlarged, interpolation=cv2.INTER_LINEAR)
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        direct = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        got = shrunk_by(image, scale)
        assert got.shape == direct.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - direct).mean() < 1.0
        assert np.mean((got > INK_THRESHOLD) != (direct > INK_THRESHOLD)) < 0.005
    noise = np.random.default_rng(0).integers(0, 256, (9, 50), np.uint8)
    for scale, shape in ((0.5, (4, 25)), (0.2, (2, 10)), (0.05, (1, 2)), (0.01, (1, 1))):
        assert shrunk_by(noise, scale).shape == shape


def test_the_quick_span_test_never_misses_a_spanning_component():
    """`_could_span` (runs of inked columns and rows) lets the labelling be skipped only where no component
    crosses: on random strokes and on lines of spaced and of touching digits it is never False where
    `_spanning` finds one, and on spaced digits it does skip the labelling."""
    rng = np.random.default_rng(3)
    masks = []
    for _ in range(300):
        h, w = rng.integers(8, 60, size=2)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 6)):
            cv2.line(
                mask,
                tuple(int(v) for v in rng.integers(-5, w + 5, 2)),
                (int(rng.integers(-5, w + 5)), int(rng.integers(-5, h + 5))),
                1,
                int(rng.integers(1, 3)),
            )
        masks.append(mask.astype(bool))
    spaced = np.zeros((40, 200), bool)
    for x in range(10, 190, 30):
        spaced[8:32, x : x + 20] = True
    touching = spaced.copy()
    touching[20, 10:190] = True
    masks += [spaced, touching]
    for mask in masks:
        if _spanning(mask)[1].any():
            assert _could_span(mask)
    assert not _could_span(spaced) and _could_span(touching) and _spanning(touching)[1].any()


def test_a_broken_stroke_stays_one_digit(digits):
    images, _ = digits
    raw = images[0].copy()
    ys, xs = np.nonzero(raw)
    middle = (ys.min() + ys.max()) // 2
    raw[middle - 2 : middle + 2] = 0  # cut the digit across: two pieces, one above the other
    assert find_digit(clean_page(wob(photo(raw))).ink).count == 1


@pytest.mark.parametrize(
    "name, page",
    [
        ("blank paper", np.full((PAGE, PAGE), 215, np.uint8)),
        ("ruled lines only", None),
        ("an empty box", None),
        ("blank white", np.full((50, 50), 255, np.uint8)),
        ("blank black", np.zeros((50, 50), np.uint8)),
        ("1x1", np.full((1, 1), 255, np.uint8)),
        ("a 5000x3 strip", np.full((3, 5000), 255, np.uint8)),
    ],
)
def test_no_digit_found(name, page):
    if name == "ruled lines only":
        page = photo(np.zeros((64, 64), np.uint8), extra=[line_through(y) for y in (0.2, 0.45, 0.7, 0.95)])
    if name == "an empty box":
        page = photo(np.zeros((64, 64), np.uint8), extra=[box(60, 60, 180, 180)])
    noisy = page.astype(np.float32) + np.random.default_rng(1).normal(0, 3, page.shape)
    page = np.clip(noisy, 0, 255).astype(np.uint8) if page.size > 1 else page
    with pytest.raises(NoDigitError, match="no digit found"):
        digit_image(255 - page if page.mean() > 127 else page)


def test_two_digits_side_by_side_are_refused(digits):
    images, _ = digits
    page = 255 - photo(images[0], at=(0.32, 0.5), size=50)
    right = 255 - photo(images[1], at=(0.68, 0.5), size=50)
    both = np.maximum(page, right)
    with pytest.raises(SeveralDigitsError, match="lenet-edge read"):
        digit_image(both)


# --- predict: per-file errors and --explain -------------------------------------------------


def test_predict_reports_pictures_without_one_digit_and_explains(exported_run, digits, tmp_path):
    images, _ = digits
    files = {
        "digit.png": photo(images[0], extra=[line_through(0.5)]),
        "blank.png": np.full((40, 40), 255, np.uint8),
        "tiny.png": np.full((1, 1), 0, np.uint8),
        "strip.png": np.full((3, 5000), 255, np.uint8),
        "lines.jpg": photo(np.zeros((64, 64), np.uint8), extra=[line_through(y) for y in (0.25, 0.5, 0.75)]),
        "two.png": np.minimum(photo(images[0], at=(0.32, 0.5), size=50), photo(images[1], at=(0.68, 0.5), size=50)),
    }
    for name, pixels in files.items():
        Image.fromarray(pixels).save(tmp_path / name)
    paths = [tmp_path / name for name in files]
    result = CliRunner().invoke(
        main, ["predict", *map(str, paths), "--dir", str(exported_run), "--json", "--explain", str(tmp_path / "why")]
    )
    assert result.exit_code == 1
    rows = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert "digit" in rows["digit.png"]
    for name in ("blank.png", "tiny.png", "strip.png", "lines.jpg"):
        assert rows[name]["error"].startswith("no digit found"), name
    assert "2 digits side by side" in rows["two.png"]["error"] and "lenet-edge read" in rows["two.png"]["error"]
    assert result.stderr.splitlines()[-1] == "error: 5 of 6 images could not be read"
    explained = sorted(p.name for p in (tmp_path / "why").iterdir())
    assert explained == sorted(Path(name).stem + ".png" for name in files)
    with Image.open(tmp_path / "why" / "digit.png") as sheet:
        assert sheet.mode == "RGB" and sheet.width == 4 * (sheet.height - 20)  # four square panels
