"""Read: image files of whole numbers -> records, through the API and the command line.

The shared tiny run's model reads bars, not digits, so these tests check what
`read` promises whatever the model: the record format, left-to-right boxes,
one line per image, error entries for images without a number (and exit 1),
and refusals before decoding. How well real numbers are read is measured by
benchmarks/read_numbers.py on Hoda.
"""

import json
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import Line
from PIL import Image

import lenet_edge as le
from lenet_edge import reading
from lenet_edge.cli import main
from lenet_edge.data.frontend import clean_page
from lenet_edge.data.preprocess import INK_THRESHOLD
from lenet_edge.data.synthetic import generate_numbers
from lenet_edge.manifest import PERSIAN_DIGITS
from lenet_edge.reading import (
    BATCH_STEP,
    MAX_BATCH,
    MAX_DIGITS,
    MAX_PIXELS,
    MIN_CONFIDENCE,
    NO_INK,
    READ_HEIGHT,
    Classifier,
    _shrunk,
    read,
    read_array,
)

HUMAN_LINE = re.compile(r"^(\S+) +([۰-۹]+)  ([0-9]+) +(\d+\.\d)%$")


def write_numbers(folder: Path, n: int = 3, seed: int = 0) -> tuple[list[Path], list[str]]:
    """Synthetic numbers as PNGs, dark ink on white paper (as scanned); returns paths and texts."""
    folder.mkdir(parents=True, exist_ok=True)
    numbers = generate_numbers(n, seed, touching=0.0)
    paths = []
    for i, image in enumerate(numbers.images):
        paths.append(folder / f"number{i}.png")
        Image.fromarray(255 - image).save(paths[-1])
    return paths, numbers.texts


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with the first few bytes of pixel data only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))))
    return path


class Uniform:
    """A stand-in classifier that is sure of nothing (every digit 10%)."""

    def __call__(self, images):
        return np.full((len(images), 10), 0.1)


def check_record(record: dict) -> None:
    assert set(record) == {"path", "text", "persian", "confidence", "digits"}
    assert len(record["text"]) == len(record["digits"]) == len(record["persian"])
    assert record["persian"] == "".join(PERSIAN_DIGITS[int(c)] for c in record["text"])
    assert [d["digit"] for d in record["digits"]] == [int(c) for c in record["text"]]
    assert record["confidence"] == min(d["confidence"] for d in record["digits"])
    lefts = [d["box"][0] + d["box"][2] for d in record["digits"]]
    assert lefts == sorted(lefts)  # left to right
    for d in record["digits"]:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 and 0 <= y0 < y1 and 0 < d["confidence"] <= 1


def test_api_reads_numbers_in_order(exported_run, tmp_path):
    paths, texts = write_numbers(tmp_path / "numbers")
    records = le.read([tmp_path / "numbers"], run_dir=exported_run, min_confidence=0)
    assert [r["path"] for r in records] == [str(p) for p in paths]
    for record in records:
        check_record(record)
    # The segmentation with a model of bars still finds about the digits (the tiny run's line model, trained for
    # one epoch, can read anything: with it, this checks only the records' order and form)
    cut = le.read([tmp_path / "numbers"], run_dir=exported_run, min_confidence=0, line_model=False)
    for record, text in zip(cut, texts, strict=True):
        check_record(record)
        assert abs(len(record["text"]) - len(text)) <= 2
    model = exported_run / "lenet5_int8.tflite"
    assert le.read(paths[:1], model=model, min_confidence=0) == records[:1]


def test_classifier_batches_of_any_size_agree_with_one_batch(exported_run):
    # pieces go through in chunks of MAX_BATCH, the last padded to a multiple of BATCH_STEP: the padding and the
    # chunk a digit shares must not change its scores, and one interpreter per padded size serves every call
    classify = Classifier((exported_run / "lenet5_int8.tflite").read_bytes())
    images = np.random.default_rng(0).integers(0, 256, (400, 28, 28), dtype=np.uint8)
    whole = classify(images)
    assert whole.shape == (400, 10) and np.allclose(whole.sum(axis=1), 1)
    sizes = [1, *(k * BATCH_STEP + 1 for k in range(1, 2 * MAX_BATCH // BATCH_STEP)), MAX_BATCH, 2]
    starts = np.cumsum([0, *sizes])
    parts = np.concatenate([classify(images[a:b]) for a, b in zip(starts[:-1], starts[1:])])  # noqa: B905
    np.testing.assert_array_equal(parts, whole[: starts[-1]])
    assert sorted(classify.handles) == list(range(BATCH_STEP, MAX_BATCH + 1, BATCH_STEP))
    assert classify(images[:0]).shape == (0, 10)
    verify = Classifier((exported_run / "verifier_int8.tflite").read_bytes(), classes=2)
    one = verify(images[:5])
    assert one.shape == (5,) and ((one >= 0) & (one <= 1)).all()


def test_bad_images_get_error_entries_and_the_others_are_read(exported_run, tmp_path):
    paths, _ = write_numbers(tmp_path, n=1)
    Image.new("L", (60, 40), 255).save(tmp_path / "white.png")
    Image.new("L", (60, 40), 0).save(tmp_path / "black.png")
    Image.new("L", (1, 1), 255).save(tmp_path / "pixel.png")
    Image.new("L", (5000, 3), 255).save(tmp_path / "strip.png")
    Image.new("L", (80, 60), 100).save(tmp_path / "grey.png")  # no paper: everything is "ink"
    png_header_only(tmp_path / "huge.png", 20000, 20000)
    png_header_only(tmp_path / "large.png", 8000, 6000)  # 48 MP: below Pillow's bomb limit, above read's
    (tmp_path / "text.txt").write_text("not an image")
    names = ["white", "black", "pixel", "strip", "grey", "huge", "large"]
    files = [*paths, *(tmp_path / f"{name}.png" for name in names), tmp_path / "text.txt"]
    records = read(files, run_dir=exported_run, min_confidence=0)
    check_record(records[0])
    errors = {Path(r["path"]).stem: r["error"] for r in records[1:]}
    for name in ("white", "black", "pixel", "strip"):
        assert errors[name] == NO_INK
    assert "ink covers 100% of the image" in errors["grey"]
    # both refused from the header: decoding these files would fail as truncated instead
    assert errors["huge"].startswith("refusing to decode a possible decompression bomb (Image size (400000000")
    assert errors["large"] == f"image too large (8000x6000 px; at most {MAX_PIXELS:,} px)"
    assert "not an image file" in errors["text"]


def test_marks_that_are_not_digits():
    gray = np.zeros((60, 200), np.uint8)
    gray[15:45, 20:25] = 255
    gray[15:45, 60:80] = 255
    result = read_array(gray, Uniform())
    assert "does not look like digits" in result["error"] and "10% confidence" in result["error"]
    assert set(read_array(gray, Uniform(), min_confidence=0)) == {"text", "persian", "confidence", "digits"}
    many = np.zeros((40, 20 * (MAX_DIGITS + 5)), np.uint8)
    for i in range(MAX_DIGITS + 5):
        many[10:30, 20 * i + 5 : 20 * i + 10] = 255  # a row of bars: more marks than a number has
    assert read_array(many, Uniform(), min_confidence=0)["error"].startswith(f"not a number: {MAX_DIGITS + 5}")
    noise = (np.random.default_rng(0).random((300, 400)) < 0.3).astype(np.uint8) * 255  # salt everywhere
    assert read_array(noise, Uniform())["error"].startswith("not a number: ")
    dust = np.zeros((300, 200), np.uint8)
    dust[5, 5] = dust[100:103, 30:32] = dust[250:252, 150:154] = 255  # a blank page with dust on it
    assert read_array(dust, Uniform(), min_confidence=0) == {"error": "no digits: only specks of ink"}


def photographed(number: np.ndarray, scale: int = 3, margin: int = 60) -> np.ndarray:
    """A white-on-black number as `load_image` gives a phone photo of it: enlarged past the
    front end's working size, on ruled paper crossing the digits, one side 45% darker."""
    ink = cv2.resize(number, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    h, w = ink.shape
    page = np.full((h + 2 * margin, w + 2 * margin), 225, np.float32)
    for y in range(10, page.shape[0], 36):
        cv2.line(page, (0, y), (page.shape[1] - 1, y), 165, 2)
    region = page[margin : margin + h, margin : margin + w]
    region[:] = region * (1 - ink) + 50 * ink
    page *= np.linspace(0.55, 1.0, page.shape[1])[None, :]
    page = cv2.GaussianBlur(page, (0, 0), 1.0) + np.random.default_rng(0).normal(0, 3, page.shape)
    return 255 - np.clip(np.rint(page), 0, 255).astype(np.uint8)


def test_numbers_photographed_on_ruled_paper_in_a_shadow_are_segmented_as_scans():
    scale, margin = 3, 60
    numbers = generate_numbers(4, 3, touching=0.0)
    for number, text in zip(numbers.images, numbers.texts, strict=True):
        photo = photographed(number, scale, margin)
        assert (photo > INK_THRESHOLD).mean() > 0.5  # a global threshold takes the shadowed paper for ink
        scan = read_array(number, Uniform(), min_confidence=0)
        got = read_array(photo, Uniform(), min_confidence=0)
        assert len(got["digits"]) == len(scan["digits"]) == len(text)
        for seen, clean in zip(got["digits"], scan["digits"], strict=True):
            x0, y0, x1, y1 = seen["box"]  # in the photo's own pixels, though the front end worked smaller
            assert 0 <= x0 < x1 <= photo.shape[1] and 0 <= y0 < y1 <= photo.shape[0]
            centre = ((x0 + x1) / 2 - margin) / scale
            assert abs(centre - (clean["box"][0] + clean["box"][2]) / 2) < 1.5


def test_with_a_line_model_large_clean_writing_is_read_at_the_reading_height(monkeypatch):
    """A clean scan enlarged 4x is read shrunk to `READ_HEIGHT` when a line model reads too (the same digits
    as the scan itself), its boxes in the enlarged image's own pixels; writing no taller than that, and any
    writing read without a line model, at full size."""
    pages = []  # what read_array's shrinking step returned: nothing when it read without a line model
    monkeypatch.setattr(reading, "_shrunk", lambda page: pages.append(_shrunk(page)) or pages[-1])
    numbers = generate_numbers(4, 3, touching=0.0)
    for number, text in zip(numbers.images, numbers.texts, strict=True):
        page = clean_page(number)
        assert _shrunk(page) is page  # the scan itself is low enough
        large = cv2.resize(number, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
        shrunk = _shrunk(clean_page(large))
        rows = np.count_nonzero(shrunk.ink, axis=1)
        assert shrunk.scale < 1 and abs(np.count_nonzero(rows >= 0.2 * rows.max()) - READ_HEIGHT) <= 0.15 * READ_HEIGHT
        scan = read_array(number, Uniform(), min_confidence=0)
        for line in (Line([]), None):
            pages.clear()
            got = read_array(large, Uniform(), min_confidence=0, line=line)
            assert [p.scale < 1 for p in pages] == ([True] if line is not None else [])
            assert len(got["digits"]) == len(scan["digits"]) == len(text)
            for seen, clean in zip(got["digits"], scan["digits"], strict=True):
                x0, y0, x1, y1 = seen["box"]
                assert 0 <= x0 < x1 <= large.shape[1] and 0 <= y0 < y1 <= large.shape[0]
                assert abs((x0 + x1) / 8 - (clean["box"][0] + clean["box"][2]) / 2) < 1.5
    noise = (np.random.default_rng(0).random((300, 400)) < 0.3).astype(np.uint8) * 255
    assert _shrunk(clean_page(noise)).scale == 1.0  # ink across every row: no line of writing to shrink
    assert read_array(noise, Uniform(), line=Line([]))["error"].startswith("not a number: ")


def test_cli_human_and_json_output(exported_run, tmp_path):
    paths, _ = write_numbers(tmp_path / "numbers", n=2)
    runner = CliRunner()
    args = ["read", str(tmp_path / "numbers"), "--dir", str(exported_run), "--min-confidence", "0"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, paths, strict=True):
        match = HUMAN_LINE.match(line)
        assert match, line
        assert match.group(1) == str(path)
        assert match.group(2) == "".join(PERSIAN_DIGITS[int(c)] for c in match.group(3))
    result = runner.invoke(main, [*args, "--json"])
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in paths]
    for record, line in zip(records, lines, strict=True):
        check_record(record)
        assert record["text"] in line


def test_cli_errors_exit_1_after_reading_the_rest(exported_run, tmp_path):
    paths, _ = write_numbers(tmp_path, n=1)
    Image.new("L", (60, 40), 255).save(tmp_path / "blank.png")
    result = CliRunner().invoke(
        main, ["read", str(paths[0]), str(tmp_path / "blank.png"), "--dir", str(exported_run), "--min-confidence", "0"]
    )
    assert result.exit_code == 1
    assert HUMAN_LINE.match(result.stdout.splitlines()[0])
    assert f"error: {tmp_path / 'blank.png'}: {NO_INK}" in result.stderr
    assert result.stderr.strip().endswith("error: 1 of 2 images gave no number")
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["read", str(tmp_path / "blank.png"), "--dir", str(exported_run), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"path": str(tmp_path / "blank.png"), "error": NO_INK}


def test_cli_without_a_run_says_what_to_run(tmp_path):
    Image.new("L", (60, 40), 255).save(tmp_path / "blank.png")
    result = CliRunner().invoke(main, ["read", str(tmp_path / "blank.png"), "--dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_cli_default_is_the_library_default():
    option = next(p for p in main.commands["read"].params if p.name == "min_confidence")
    assert option.default == MIN_CONFIDENCE


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_confidence"):
        read([], min_confidence=2)


def test_data_preview_draws_synthetic_numbers(tmp_path):
    result = CliRunner().invoke(
        main, ["data", "preview", "--numbers", "3", "--seed", "2", "-o", str(tmp_path / "n.png")]
    )
    assert result.exit_code == 0, result.output
    texts = generate_numbers(3, 2).texts
    assert result.output.strip() == f"wrote {tmp_path / 'n.png'}: " + " ".join(texts)
    with Image.open(tmp_path / "n.png") as sheet:
        assert sheet.mode == "L" and sheet.width > 100 and sheet.height > 3 * 40


def test_rgb_rgba_and_16_bit_images_read_alike(exported_run, tmp_path):
    image = 255 - generate_numbers(1, seed=5, touching=0.0).images[0]  # dark ink on white
    Image.fromarray(image).save(tmp_path / "gray.png")
    Image.fromarray(image).convert("RGB").save(tmp_path / "rgb.png")
    rgba = np.dstack([np.zeros_like(image)] * 3 + [255 - image])  # black ink, transparent paper
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(image.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    records = read(sorted(tmp_path.glob("*.png")), run_dir=exported_run, min_confidence=0)
    assert len({json.dumps(r["digits"]) for r in records}) == 1, records
