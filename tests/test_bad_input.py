"""The bad-input matrix, at the command line: every bad input fails cleanly and changes nothing.

Each row of `ROWS` builds one bad input in a fresh directory, runs one
`lenet-edge` command on it (click's CliRunner, in process) and checks:

1. the exit code: 1 for bad data or models (`LenetEdgeError`), 2 for bad usage (click);
2. stderr is exactly one line, `error: <the file>: <the problem>` (for usage
   errors: click's usage text ending in `Error: Invalid value for '--option'`);
3. no traceback, and no exception escaped the command;
4. nothing was written or overwritten: the bytes of every watched directory
   (the input's, the run's, the dataset cache) are the same before and after.

The library-level tests (test_cdb, test_folders, test_npz, test_download)
cover each reader's errors in depth; these rows check that the same errors
reach the user as one clean line through every command that reads the input.

A few rows are not "one line and nothing written" by design and have their
own tests below the matrix: `bench` with some broken models (error entries,
results still written, exit 1); images in supported but unusual formats (16-bit
and RGBA PNG) that must load; a float model where int8 is required (no command
requires int8 from a user's file yet, so `conversion.verify_int8` is checked
directly).

The TFLite converter leaks memory on every call, so this module converts
three models in all: the test run's shared tiny run (float32 + int8, the
`exported_run` fixture of conftest.py) and one small model with the wrong input shape.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_run, snapshot
from PIL import Image

from lenet_edge.cli import main
from lenet_edge.data.cdb import HEADER_SIZE, write_cdb
from lenet_edge.errors import ModelError
from lenet_edge.fileio import TMP_PREFIX

CACHE = "cache"  # every row's dataset cache, under its tmp_path

# --- a model with the wrong input ---------------------------------------------------------------


@pytest.fixture(scope="module")
def wrong_input_model(tmp_path_factory) -> Path:
    """A float32 .tflite taking (1, 32, 32, 1) and returning 10 logits: right output, wrong input."""
    from lenet_edge.compat import keras, tf

    model = keras.Sequential([keras.Input((32, 32, 1), batch_size=1), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path_factory.mktemp("wrong-input") / "wrong_input.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


# --- building bad inputs ------------------------------------------------------------------------


def png(path: Path, array: np.ndarray) -> Path:
    """Save an array as PNG in the mode its dtype and shape give (uint16 -> 16-bit, (H, W, 4) -> RGBA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def digit(label: int) -> np.ndarray:
    """A (16, 16) dark-on-light uint8 'digit': a bar whose position depends on the label."""
    image = np.full((16, 16), 255, np.uint8)
    image[2:14, 1 + label : 4 + label] = 0
    return image


def image_folder(root: Path, splits=("train",), classes=range(10)) -> Path:
    """ROOT/<split>/<class>/<class>.png, one valid PNG per class."""
    for split in splits:
        for label in classes:
            png(root / split / str(label) / f"{label}.png", digit(label))
    return root


def folder_with(tmp: Path, name: str, write: Callable[[Path], object]) -> tuple[Path, Path]:
    """A valid folder dataset plus one extra file `train/3/<name>` written by `write`; (root, that file)."""
    root = image_folder(tmp / "in" / "digits")
    bad = root / "train" / "3" / name
    write(bad)
    return root, bad


def cdb_bytes(records: list[tuple[int, int, int, bytes]], total: int | None = None) -> bytes:
    """A per-record-size binary .cdb built byte by byte: records are (label, width, height, run lengths)."""
    header = struct.pack(
        "<HBBBBI128IB256s245x", 2005, 1, 1, 0, 0, len(records) if total is None else total, *[0] * 128, 0, b""
    )
    body = b"".join(struct.pack("<BBBBH", 0xFF, label, w, h, len(runs)) + runs for label, w, h, runs in records)
    return header + body


def valid_cdb(path: Path) -> bytes:
    """Three binary records (16x16, 4x5, 2x3) written by the project's encoder; returns the bytes."""
    rng = np.random.default_rng(0)
    images = [(rng.random(shape) > 0.5).astype(np.uint8) * 255 for shape in ((16, 16), (4, 5), (2, 3))]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_cdb(path, images, [3, 7, 1])
    return path.read_bytes()


def record_offsets(raw: bytes) -> list[int]:
    """Offsets of each record of a per-record-size .cdb."""
    offsets, off = [], HEADER_SIZE
    while off < len(raw):
        offsets.append(off)
        off += 6 + struct.unpack_from("<H", raw, off + 4)[0]
    return offsets


def cdb_case(tmp: Path, change: Callable[[bytes], bytes]) -> Path:
    path = tmp / "in" / "Test.cdb"
    path.write_bytes(change(valid_cdb(path)))
    return path


def patch(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value) :]


def npz_case(tmp: Path, **arrays) -> Path:
    path = tmp / "in" / "digits.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def x(n: int) -> np.ndarray:
    return np.zeros((n, 8, 8), np.uint8)


def y(n: int, high: int = 9) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % (high + 1)


def bomb_png(path: Path, width: int, height: int) -> None:
    """A 1x1 PNG whose IHDR claims `width` x `height`: a few bytes that open as a huge image."""
    png(path, np.zeros((1, 1), np.uint8))
    raw = bytearray(path.read_bytes())
    raw[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature (8) + length + type
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))  # CRC over chunk type + 13 data bytes
    path.write_bytes(bytes(raw))


def corrupt_jpeg(path: Path) -> None:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path, format="JPEG", quality=90)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # cut in the middle of the entropy-coded scan


# --- the matrix -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    """What a row's builder gets: its own tmp directory and, lazily, the shared fixtures."""

    tmp: Path
    request: pytest.FixtureRequest

    def run(self) -> Path:
        """A private copy of the shared exported run, at tmp/run."""
        return copy_run(self.request.getfixturevalue("exported_run"), self.tmp / "run")


@dataclass(frozen=True)
class Row:
    id: str
    build: Callable[[Env], tuple[list[str], str]]  # -> (argv, the path the error must name; "" for usage)
    expect: str  # regex the error line must match after the path (usage rows: the option name)
    code: int = 1
    watch: tuple[str, ...] = ("in", "run", CACHE)  # directories under tmp whose bytes must not change


def info(path: Path) -> tuple[list[str], str]:
    return ["data", "info", "--data", str(path)], str(path)


def train_on(env: Env, path: Path, run: Path | None = None) -> tuple[list[str], str]:
    """`train` on bad data over an existing run (replaced only once a new one is complete)."""
    run = run or env.run()
    return ["train", "--data", str(path), "--dir", str(run), "--force", "--epochs", "1", "--qat-epochs", "0"], str(path)


def manifest_edit(env: Env, edit: Callable[[dict], None]) -> Path:
    run = env.run()
    manifest = json.loads((run / "manifest.json").read_text())
    edit(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def newer_format(manifest: dict) -> None:
    manifest["format_version"] += 1


def flip_last_byte(path: Path) -> Path:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def no_exports(env: Env) -> Path:
    def drop(manifest):
        for key in ("float32_tflite", "int8_tflite"):
            manifest["artifacts"].pop(key)

    run = manifest_edit(env, drop)
    for name in ("lenet5_float32.tflite", "lenet5_int8.tflite"):
        (run / name).unlink()
    return run


def usage(*argv: str, option: str) -> Row:
    return Row(f"usage: {' '.join(argv)}", lambda env: (list(argv), ""), re.escape(f"'{option}'"), code=2)


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def raw_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def unlink(path: Path) -> Path:
    path.unlink()
    return path


def info_naming(root_and_culprit: tuple[Path, Path]) -> tuple[list[str], str]:
    """`data info` on a folder dataset whose error must name the file or folder inside it at fault."""
    root, culprit = root_and_culprit
    return info(root)[0], str(culprit)


def with_file(name: str, write: Callable[[Path], object]) -> Callable[[Env], tuple[list[str], str]]:
    """A row builder: `data info` on a valid folder dataset plus one bad file, which the error must name."""
    return lambda e: info_naming(folder_with(e.tmp, name, write))


def missing_class(root: Path) -> tuple[Path, Path]:
    """Train complete, test without class 9."""
    image_folder(root, ("train", "test"))
    shutil.rmtree(root / "test" / "9")
    return root, root / "test"


def empty_class(root: Path) -> tuple[Path, Path]:
    folder = root / "train" / "5"
    shutil.rmtree(folder)
    folder.mkdir()
    return root, folder


ROWS: list[Row] = [
    # Data sources, through `data info`.
    Row("missing path", lambda e: info(e.tmp / "in" / "nope"), r"no such file or directory"),
    Row("empty directory", lambda e: info(mkdir(e.tmp / "in" / "empty")), r"no class folders"),
    Row(
        "cdb: truncated in the header",
        lambda e: info(cdb_case(e.tmp, lambda r: r[:500])),
        r"truncated header: 500 of 1024 bytes",
    ),
    Row(
        "cdb: truncated mid-record (record header)",
        lambda e: info(cdb_case(e.tmp, lambda r: r[: record_offsets(r)[1] + 3])),
        r"record 1 at offset 0x[0-9a-f]+: file ends inside the record header \(3 of 6 bytes\)",
    ),
    Row(
        "cdb: truncated mid-row (image data)",
        lambda e: info(cdb_case(e.tmp, lambda r: r[: record_offsets(r)[0] + 9])),
        r"record 0 at offset 0x400: file ends inside the image data",
    ),
    Row(
        "cdb: record's runs end mid-row",
        lambda e: info(
            raw_file(e.tmp / "in" / "Test.cdb", cdb_bytes([(0, 4, 2, bytes([4, 4])), (1, 4, 2, bytes([4, 1, 2]))]))
        ),
        r"record 1 at offset 0x408: image data ends early, in row 1 of 2 at column 3",
    ),
    Row(
        "cdb: wrong start byte",
        lambda e: info(cdb_case(e.tmp, lambda r: patch(r, HEADER_SIZE, b"\xfe"))),
        r"record 0 at offset 0x400: start byte 0xfe, expected 0xff",
    ),
    Row(
        "cdb: run length overruns the row",
        lambda e: info(raw_file(e.tmp / "in" / "Test.cdb", cdb_bytes([(0, 16, 1, bytes([10, 9]))]))),
        r"record 0 at offset 0x400: run lengths overrun row 0 \(sum 19 > width 16\)",
    ),
    Row(
        "cdb: record count larger than the file",
        lambda e: info(cdb_case(e.tmp, lambda r: patch(r, 6, struct.pack("<I", 10)))),
        r"record 3 at offset 0x[0-9a-f]+: file ends here, but the header declares 10 records",
    ),
    Row(
        "cdb: label outside 0-9",
        lambda e: info(cdb_case(e.tmp, lambda r: patch(r, HEADER_SIZE + 1, b"\x0a"))),
        r"record 0 at offset 0x400: label 10 outside 0-9",
    ),
    Row(
        "npz: label outside 0-9",
        lambda e: info(npz_case(e.tmp, x_train=x(20), y_train=y(20, high=12))),
        r"y_train has labels 0\.\.12; expected 0-9",
    ),
    Row(
        "npz: missing keys (x without y)", lambda e: info(npz_case(e.tmp, x_train=x(20))), r"has x_train but no y_train"
    ),
    Row(
        "npz: no dataset keys at all",
        lambda e: info(npz_case(e.tmp, images=x(20), labels=y(20))),
        r"no x_train/y_train or x_test/y_test arrays \(found images, labels\)",
    ),
    Row(
        "npz: mismatched lengths",
        lambda e: info(npz_case(e.tmp, x_train=x(20), y_train=y(19))),
        r"x_train has 20 images but y_train has 19 labels",
    ),
    Row("folder: a non-image file", with_file("notes.txt", lambda p: p.write_text("hi")), r"not an image file"),
    Row(
        "folder: a zero-byte image",
        with_file("empty.png", lambda p: p.write_bytes(b"")),
        r"empty file \(0 bytes\), not an image",
    ),
    Row("folder: a corrupt JPEG", with_file("cut.jpg", corrupt_jpeg), r"corrupt or truncated image"),
    Row(
        "folder: decompression bomb (> 2x Pillow's limit)",
        with_file("bomb.png", lambda p: bomb_png(p, 30_000, 30_000)),
        r"refusing to decode a possible decompression bomb",
    ),
    Row(
        "folder: decompression bomb (between 1x and 2x the limit)",
        with_file("bomb.png", lambda p: bomb_png(p, 10_000, 10_000)),
        r"refusing to decode a possible decompression bomb",
    ),
    Row(
        "folder: a class folder with no images",
        lambda e: info_naming(empty_class(image_folder(e.tmp / "in" / "digits"))),
        r"class folder has no images",
    ),
    Row(
        "folder: a split with a missing class",
        lambda e: info_naming(missing_class(e.tmp / "in" / "digits")),
        r"no folder for class 9 \(expected all of 0-9\)",
    ),
    # The same readers through `train`, over an existing run that must survive.
    Row("train: missing data path", lambda e: train_on(e, e.tmp / "in" / "nope.npz"), r"no such file or directory"),
    Row(
        "train: npz with mismatched lengths",
        lambda e: train_on(e, npz_case(e.tmp, x_train=x(20), y_train=y(19))),
        r"x_train has 20 images but y_train",
    ),
    Row(
        "train: cdb with a wrong start byte",
        lambda e: train_on(e, cdb_case(e.tmp, lambda r: patch(r, HEADER_SIZE, b"\xfe"))),
        r"start byte 0xfe",
    ),
    Row(
        "train: a test-only dataset",
        lambda e: train_on(e, cdb_case(e.tmp, lambda r: r)),
        r"has no training split to train on",
        watch=("in", "run"),
    ),  # valid data: the cache may be written
    Row(
        "train: bad data into a new --dir (not even the directory is created)",
        lambda e: train_on(e, npz_case(e.tmp, x_train=x(20)), run=e.tmp / "run"),
        r"has x_train but no y_train",
    ),
    # Runs and models.
    Row(
        "export: directory with no manifest",
        lambda e: (["export", "--dir", str(mkdir(e.tmp / "run"))], str(e.tmp / "run" / "manifest.json")),
        r"no manifest; run `lenet-edge train",
    ),
    Row(
        "export: --dir that does not exist",
        lambda e: (["export", "--dir", str(e.tmp / "run")], str(e.tmp / "run" / "manifest.json")),
        r"no manifest; run `lenet-edge train",
    ),
    Row(
        "bench: directory with no manifest",
        lambda e: (["bench", "--dir", str(mkdir(e.tmp / "run"))], str(e.tmp / "run" / "manifest.json")),
        r"no manifest; run `lenet-edge train",
    ),
    Row(
        "export: manifest with a newer format_version",
        lambda e: (["export", "--dir", str(manifest_edit(e, newer_format))], str(e.tmp / "run" / "manifest.json")),
        r"format version 2 is newer than this lenet-edge understands \(1\); upgrade lenet-edge",
    ),
    Row(
        "bench: manifest with a newer format_version",
        lambda e: (["bench", "--dir", str(manifest_edit(e, newer_format))], str(e.tmp / "run" / "manifest.json")),
        r"format version 2 is newer",
    ),
    Row(
        "export: manifest that is not JSON",
        lambda e: (
            ["export", "--dir", str(raw_file(e.run() / "manifest.json", b'{"format_version": 1,').parent)],
            str(e.tmp / "run" / "manifest.json"),
        ),
        r"not a readable manifest",
    ),
    Row(
        "export: float model changed after training (sha256)",
        lambda e: (
            ["export", "--int8", "--dir", str(e.run())],
            str(flip_last_byte(e.tmp / "run" / "lenet5_float.keras")),
        ),
        r"sha256 does not match the manifest",
        watch=("run",),
    ),  # export reads (and caches) the run's data first
    Row(
        "export: QAT weights deleted after training",
        lambda e: (["export", "--int8", "--dir", str(e.run())], str(unlink(e.tmp / "run" / "lenet5_qat.weights.h5"))),
        r"missing, but recorded in the manifest as qat_weights",
        watch=("run",),
    ),
    Row(
        "bench: int8 model changed after export (sha256)",
        lambda e: (["bench", "--dir", str(e.run())], str(flip_last_byte(e.tmp / "run" / "lenet5_int8.tflite"))),
        r"sha256 does not match the manifest",
    ),
    Row(
        "bench: a run that was never exported",
        lambda e: (["bench", "--dir", str(no_exports(e))], str(e.tmp / "run")),
        r"no exported models; run `lenet-edge export",
    ),
    # Usage: click refuses these before any command runs.
    usage("train", "--arch", "vgg", option="--arch"),
    usage("train", "--epochs", "-1", option="--epochs"),
    usage("train", "--epochs", "0", option="--epochs"),
    usage("train", "--val-fraction", "0", option="--val-fraction"),
    usage("train", "--val-fraction", "1", option="--val-fraction"),
    usage("train", "--val-fraction", "1.5", option="--val-fraction"),
    usage("train", "--val-fraction", "-0.1", option="--val-fraction"),
    usage("bench", "--batch-sizes", "a,b", option="--batch-sizes"),
    usage("bench", "--batch-sizes", "0", option="--batch-sizes"),
    usage("bench", "--batch-sizes", "1,,2", option="--batch-sizes"),
    usage("bench", "--batch-sizes", "-1", option="--batch-sizes"),
    usage("bench", "--batch-sizes", "", option="--batch-sizes"),
    usage("bench", "--threads", "0", option="--threads"),
    usage("bench", "--runs", "5", option="--runs"),
    usage("export", "--min-agreement", "1.5", option="--min-agreement"),
]


# --- running a row ------------------------------------------------------------------------------


def invoke(argv: list[str], tmp: Path):
    """Run the CLI in process, from `tmp`, with the dataset cache under it; stdout and stderr apart."""
    return CliRunner().invoke(main, argv, env={"LENET_EDGE_CACHE": str(tmp / CACHE)}, catch_exceptions=True)


def assert_no_crash(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert "Traceback" not in result.output


@pytest.mark.shared_run  # many rows work on a copy of `exported_run` (`Env.run`)
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_fails_cleanly_and_changes_nothing(row: Row, tmp_path, request, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `--dir` defaults to ./export: keep it in tmp_path
    argv, named = row.build(Env(tmp_path, request))
    before = snapshot(tmp_path, row.watch)

    result = invoke(argv, tmp_path)

    assert_no_crash(result)
    assert result.exit_code == row.code, result.output
    stderr = result.stderr.strip().splitlines()
    if row.code == 2:  # click: "Usage: ...", "Try ... for help.", "", "Error: Invalid value for '--x': ..."
        assert stderr[0].startswith("Usage: lenet-edge") or stderr[0].startswith("Usage: main"), result.stderr
        assert stderr[-1].startswith("Error: Invalid value for "), result.stderr
        assert re.search(row.expect, stderr[-1]), stderr[-1]
    else:
        assert len(stderr) == 1, result.stderr
        line = stderr[0]
        assert line.startswith(f"error: {named}: "), line
        assert re.search(row.expect, line[len(f"error: {named}: ") :]), line
    assert "error" not in result.stdout.lower(), result.stdout  # the error goes to stderr, once
    assert snapshot(tmp_path, row.watch) == before
    assert not list(tmp_path.rglob(TMP_PREFIX + "*"))


# --- rows with their own shape --------------------------------------------------------------------


@pytest.mark.parametrize(
    "write, modes",
    [
        (lambda p: png(p, (255 - digit(3)).astype(np.uint16) * 257), ("I;16", "I")),
        (lambda p: png(p, rgba_digit(3)), ("RGBA",)),
    ],
    ids=["16-bit grayscale PNG", "RGBA PNG, ink on transparent paper"],
)
def test_supported_unusual_formats_load(write, modes, tmp_path, monkeypatch):
    """Not bad inputs: a 16-bit and an RGBA PNG are supported and must load like any other."""
    monkeypatch.chdir(tmp_path)
    root, unusual = folder_with(tmp_path, "unusual.png", write)
    with Image.open(unusual) as image:
        assert image.mode in modes

    result = invoke(["data", "info", "--data", str(root)], tmp_path)

    assert_no_crash(result)
    assert result.exit_code == 0, result.output
    counts = next(line.split() for line in result.stdout.splitlines() if line.startswith("train "))
    assert counts[1] == "11" and counts[2 + 3] == "2"  # 11 images; class 3 has two


def rgba_digit(label: int) -> np.ndarray:
    rgba = np.zeros((16, 16, 4), np.uint8)  # transparent
    rgba[..., 3] = np.where(digit(label) == 0, 255, 0)  # opaque black ink where the digit is
    return rgba


def bench_argv(tmp: Path, tiny_npz: Path, models: dict[str, Path]) -> list[str]:
    """The cheapest `bench` that still runs every phase."""
    return [
        "bench", "--dir", str(tmp / "out"), "--data", str(tiny_npz), "--runs", "10", "--warmup", "0",
        "--batch-sizes", "1", *[arg for name, path in models.items() for arg in ("--model", f"{name}={path}")],
    ]  # fmt: skip


def test_bench_turns_broken_models_into_error_entries(exported_run, tiny_npz, tmp_path, monkeypatch):
    """Corrupt, zero-byte and missing .tflite files: error entries, the good model still measured, exit 1."""
    monkeypatch.chdir(tmp_path)
    corrupt = raw_file(tmp_path / "in" / "corrupt.tflite", b"TFL3" + bytes(range(256)) * 4)
    empty = raw_file(tmp_path / "in" / "empty.tflite", b"")
    missing = tmp_path / "in" / "missing.tflite"
    good = exported_run / "lenet5_float32.tflite"
    before = snapshot(tmp_path, ("in",))

    result = invoke(
        bench_argv(tmp_path, tiny_npz, {"float32": good, "corrupt": corrupt, "empty": empty, "missing": missing}),
        tmp_path,
    )

    assert_no_crash(result)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == ["error: some models failed; see their error entries above"]
    results = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert results["ok"] is False
    assert "error" not in results["models"]["float32"] and results["models"]["float32"]["accuracy"] >= 0
    errors = {name: results["models"][name]["error"] for name in ("corrupt", "empty", "missing")}
    for name, path, problem in (
        ("corrupt", corrupt, "not a loadable TFLite model"),
        ("empty", empty, "empty file"),
        ("missing", missing, "no such file"),
    ):
        assert "\n" not in errors[name] and str(path) in errors[name] and problem in errors[name], errors[name]
        assert f"ERROR: {errors[name]}" in result.stdout  # the table names the file and the problem too
    assert snapshot(tmp_path, ("in",)) == before
    assert not list(tmp_path.rglob(TMP_PREFIX + "*"))


def test_bench_refuses_a_model_with_the_wrong_input_shape(wrong_input_model, tiny_npz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(bench_argv(tmp_path, tiny_npz, {"wrong": wrong_input_model}), tmp_path)

    assert_no_crash(result)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == ["error: some models failed; see their error entries above"]
    error = json.loads((tmp_path / "out" / "bench.json").read_text())["models"]["wrong"]["error"]
    assert str(wrong_input_model) in error and "has shape [1, 32, 32, 1], expected [1, 28, 28, 1]" in error


def test_float_model_where_int8_is_required(exported_run):
    """No command takes a user's int8 model yet; `verify_int8` is the gate every int8 path goes through."""
    from lenet_edge.conversion import verify_int8

    path = exported_run / "lenet5_float32.tflite"
    with pytest.raises(ModelError) as excinfo:
        verify_int8(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is not a full-integer int8 model: input ") and "is float32, not int8" in message


# --- a download that fails, through the CLI -----------------------------------------------------


class _Truncating(BaseHTTPRequestHandler):
    """Announces more bytes than it sends: a download cut off half-way."""

    def do_GET(self):
        data = self.server.payload
        self.send_response(200)
        self.send_header("Content-Length", str(len(data) + 100))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_download_truncated_is_one_line_and_leaves_the_cache_alone(tmp_path, monkeypatch):
    """`data download hoda` against a local server that truncates (download_hoda's base_url redirected)."""
    import lenet_edge.data.download as download

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Truncating)
    httpd.payload = valid_cdb(tmp_path / "fixture" / "x.cdb")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        base_url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        files = {"Test 20000.cdb": (3, None)}
        monkeypatch.setattr(
            download,
            "download_hoda",
            functools.partial(download.download_hoda, base_url=base_url, files=files, timeout=5),
        )
        monkeypatch.chdir(tmp_path)
        hoda = mkdir(tmp_path / CACHE / "hoda")
        (hoda / "README").write_text("previous contents")
        before = snapshot(tmp_path, (CACHE,))

        result = invoke(["data", "download", "hoda"], tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()

    assert_no_crash(result)
    assert result.exit_code == 1, result.output
    # stderr is not a terminal here, so no progress bar: just the one error line
    assert result.stderr.splitlines() == [
        f"error: Test 20000.cdb: truncated: got {len(httpd.payload)} of {len(httpd.payload) + 100} "
        f"bytes ({base_url}Test%2020000.cdb)"
    ], result.stderr
    assert snapshot(tmp_path, (CACHE,)) == before
    assert not list(tmp_path.rglob(TMP_PREFIX + "*"))


def test_the_matrix_is_what_the_report_counts():
    """Keep the count honest: 36 bad data/run/model rows and 15 usage rows above; the tests with their own
    shape add 6 more bad inputs (corrupt, zero-byte and missing .tflite, wrong input shape, float model as
    int8, truncated download) and 2 supported formats that must load."""
    assert len({row.id for row in ROWS}) == len(ROWS)
    usage_rows = [row for row in ROWS if row.code == 2]
    assert len(usage_rows) == 15 and len(ROWS) - len(usage_rows) == 36


# --- safe by construction -------------------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def test_no_loader_can_run_code_from_a_file():
    """A crafted dataset or model cannot execute code: no pickle anywhere, numpy and Keras in safe mode.

    Every `np.load` passes `allow_pickle=False` and every Keras `load_model`
    `safe_mode=True` explicitly (not relying on a default a version may change),
    and no module imports a pickle-based serializer.
    """
    import ast

    import lenet_edge

    package = Path(lenet_edge.__file__).parent
    problems = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        where = path.relative_to(package.parent)
        for text in ("allow_pickle=True", "safe_mode=False"):
            if text in source.replace(" ", ""):
                problems.append(f"{where}: {text}")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                names += [node.module] if isinstance(node, ast.ImportFrom) else []
                if any(name and name.split(".")[0] in UNSAFE_MODULES for name in names):
                    problems.append(f"{where}:{node.lineno}: imports {', '.join(n for n in names if n)}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                keywords = {k.arg: k.value for k in node.keywords}
                required = {"load": ("allow_pickle", False), "load_model": ("safe_mode", True)}.get(node.func.attr)
                owner = ast.unparse(node.func.value)
                if node.func.attr == "load" and owner not in ("np", "numpy"):
                    continue  # json.load and the like
                if required:
                    name, value = required
                    if not (isinstance(keywords.get(name), ast.Constant) and keywords[name].value is value):
                        problems.append(f"{where}:{node.lineno}: {owner}.{node.func.attr}(...) without {name}={value}")
    assert problems == []
