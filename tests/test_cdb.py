"""Tests for the Hoda `.cdb` reader and writer.

Fixtures are written by the project's own `write_cdb` (the data's licence keeps
real records out of the repository) or assembled byte by byte when a test needs
a file the writer refuses to produce. The real files are only read, through the
`hoda_dir` fixture, which skips when they are absent.
"""

from __future__ import annotations

import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lenet_edge.data.cdb import BINARY, GRAYSCALE, HEADER_SIZE, CdbHeader, read_cdb, write_cdb
from lenet_edge.errors import DataError

RECORD_HEAD = 6  # start byte, label, W, H, ByteCount(u16) in the per-record-size mode


def random_image(rng: np.random.Generator, h: int, w: int, binary: bool = True) -> np.ndarray:
    if binary:
        return (rng.random((h, w)) < 0.4).astype(np.uint8) * 255
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def reference_decode(runs: bytes, h: int, w: int) -> np.ndarray:
    """Decode run lengths one pixel at a time, straight from the format's definition."""
    image = np.zeros((h, w), np.uint8)
    row, x, ink = 0, 0, False
    for run in runs:
        image[row, x : x + run] = 255 if ink else 0
        x += run
        if x == w:
            row, x, ink = row + 1, 0, False
        else:
            ink = not ink
    assert row == h and x == 0
    return image


def raw_cdb(records, *, image_type=BINARY, fixed=(0, 0)) -> bytes:
    """Assemble a .cdb byte by byte; records are (label, w, h, data), w/h None in fixed mode."""
    letters = [0] * 128
    header = struct.pack(
        "<HBBBBI128IB256s245x", 2005, 1, 1, fixed[0], fixed[1],
        len(records), *letters, image_type, b"test",
    )  # fmt: skip
    body = b""
    for label, w, h, data in records:
        if w is None:
            body += struct.pack("<BBH", 0xFF, label, len(data)) + data
        else:
            body += struct.pack("<BBBBH", 0xFF, label, w, h, len(data)) + data
    return header + body


@pytest.fixture
def valid_file(tmp_path) -> Path:
    """Three binary records of known sizes: 16x16, 4x5 and 2x3."""
    rng = np.random.default_rng(0)
    images = [random_image(rng, 16, 16), random_image(rng, 4, 5), random_image(rng, 2, 3)]
    return write_cdb(tmp_path / "Test.cdb", images, [3, 7, 1])


# --- Round trips -------------------------------------------------------------------


@pytest.mark.parametrize("image_type", [BINARY, GRAYSCALE])
@pytest.mark.parametrize("fixed", [False, True])
def test_round_trip(tmp_path, image_type, fixed):
    rng = np.random.default_rng(image_type * 2 + fixed)
    binary = image_type == BINARY
    if fixed:
        shapes = [(21, 13)] * 40
    else:
        shapes = [(1, 1), (1, 255), (255, 1), (3, 2)] + [tuple(rng.integers(1, 64, 2)) for _ in range(40)]
    images = [random_image(rng, h, w, binary) for h, w in shapes]
    if binary:
        images[0][:] = 255  # a 1x1 all-ink image: its only row starts with ink
        images[-1][:, 0] = 255  # every row starts with ink
        images[-2][:] = 0  # no ink at all
    labels = rng.integers(0, 10, len(images))
    path = write_cdb(
        tmp_path / "x.cdb", images, labels, image_type=image_type,
        fixed_size=shapes[0] if fixed else None, comment="round trip", date=(2024, 2, 29),
    )  # fmt: skip

    data = read_cdb(path)

    assert data.path == path
    assert data.header == CdbHeader(
        year=2024, month=2, day=29, height=shapes[0][0] if fixed else 0,
        width=shapes[0][1] if fixed else 0, total_records=len(images),
        letter_count=tuple(np.bincount(labels, minlength=128)), image_type=image_type, comment="round trip",
    )  # fmt: skip
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.labels, labels)
    assert len(data.images) == len(images)
    for got, want in zip(data.images, images, strict=True):
        assert got.dtype == np.uint8 and got.ndim == 2
        np.testing.assert_array_equal(got, want)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=0, max_size=8),
    seed=st.integers(0, 2**32 - 1),
    image_type=st.sampled_from([BINARY, GRAYSCALE]),
)
def test_round_trip_property(tmp_path, shapes, seed, image_type):
    rng = np.random.default_rng(seed)
    images = [random_image(rng, h, w, image_type == BINARY) for h, w in shapes]
    labels = rng.integers(0, 10, len(images))
    data = read_cdb(write_cdb(tmp_path / "p.cdb", images, labels, image_type=image_type))
    assert [im.tolist() for im in data.images] == [im.tolist() for im in images]
    assert data.labels.tolist() == labels.tolist()


def test_binary_layout_is_rows_starting_with_white(tmp_path):
    image = np.array([[255, 0, 0], [0, 255, 255]], np.uint8)  # 2 rows x 3 columns
    raw = write_cdb(tmp_path / "a.cdb", [image], [4]).read_bytes()
    # W=3, H=2, ByteCount=5; row 0: white 0, ink 1, white 2; row 1: white 1, ink 2.
    assert raw[HEADER_SIZE:] == bytes([0xFF, 4, 3, 2, 5, 0, 0, 1, 2, 1, 2])


def test_grayscale_layout_is_column_major(tmp_path):
    image = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    raw = write_cdb(tmp_path / "g.cdb", [image], [0], image_type=GRAYSCALE).read_bytes()
    assert raw[HEADER_SIZE:] == bytes([0xFF, 0, 3, 2, 6, 0, 1, 4, 2, 5, 3, 6])
    np.testing.assert_array_equal(read_cdb(tmp_path / "g.cdb").images[0], image)


def test_decoder_accepts_zero_length_runs_anywhere(tmp_path):
    # Non-canonical but well-formed: zero runs mid-row and a row ending on ink.
    runs = bytes([2, 0, 1, 1, 0, 4, 4, 0, 3, 1])  # W=4: rows [2,0,1,1] [0,4] [4] [0,3,1]
    path = tmp_path / "z.cdb"
    path.write_bytes(raw_cdb([(5, 4, 4, runs)]))
    expected = reference_decode(runs, 4, 4)
    np.testing.assert_array_equal(read_cdb(path).images[0], expected)
    np.testing.assert_array_equal(expected, [[0, 0, 0, 255], [255, 255, 255, 255], [0, 0, 0, 0], [255, 255, 255, 0]])


def test_decoder_matches_reference_on_random_runs(tmp_path):
    rng = np.random.default_rng(5)
    records, expected = [], []
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        runs = []
        for _ in range(h):
            left = w
            while left:
                run = int(rng.integers(0, left + 1))  # zero runs included
                runs.append(run)
                left -= run
        records.append((int(rng.integers(0, 10)), w, h, bytes(runs)))
        expected.append(reference_decode(bytes(runs), h, w))
    path = tmp_path / "r.cdb"
    path.write_bytes(raw_cdb(records))
    for got, want in zip(read_cdb(path).images, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_empty_file_of_zero_records(tmp_path):
    data = read_cdb(write_cdb(tmp_path / "e.cdb", [], []))
    assert data.images == [] and data.labels.shape == (0,) and data.header.total_records == 0


def test_writer_rejects_what_the_format_cannot_hold(tmp_path):
    ok = np.zeros((2, 2), np.uint8)
    cases = [
        ([np.full((2, 2), 7, np.uint8)], [0], {}, "0 and 255"),
        ([ok], [10], {}, "labels"),
        ([ok, ok], [0], {}, "labels"),
        ([ok.astype(np.int32)], [0], {}, "uint8"),
        ([np.zeros((256, 2), np.uint8)], [0], {}, "1-255"),
        ([np.zeros((0, 2), np.uint8)], [0], {}, "1-255"),
        ([np.zeros((2, 3), np.uint8)], [0], {"fixed_size": (2, 2)}, "fixed_size"),
        ([ok], [0], {"image_type": 2}, "image_type"),
        ([ok], [0], {"comment": "x" * 257}, "comment"),
        ([ok], [0], {"date": (2005, 13, 1)}, "date"),
    ]
    for images, labels, kwargs, fragment in cases:
        with pytest.raises(ValueError, match=fragment):
            write_cdb(tmp_path / "w.cdb", images, labels, **kwargs)
    assert not (tmp_path / "w.cdb").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


# --- Bad input ---------------------------------------------------------------------


def patched(path: Path, offset: int, value: bytes) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(value)] = value
    path.write_bytes(bytes(raw))
    return path


def assert_data_error(path: Path, pattern: str) -> str:
    return assert_one_line_error(lambda: read_cdb(path), path, pattern, regex=True)


def test_missing_file_and_directory(tmp_path):
    assert_data_error(tmp_path / "nope.cdb", "cannot read")
    (tmp_path / "dir.cdb").mkdir()
    assert_data_error(tmp_path / "dir.cdb", "cannot read")


def test_zero_byte_file(tmp_path):
    (tmp_path / "z.cdb").write_bytes(b"")
    assert_data_error(tmp_path / "z.cdb", r"empty file \(0 bytes\)")


def test_truncated_header(valid_file):
    valid_file.write_bytes(valid_file.read_bytes()[:500])
    assert_data_error(valid_file, r"truncated header: 500 of 1024 bytes")


def test_bad_image_type_and_half_fixed_size(valid_file):
    raw = valid_file.read_bytes()
    patched(valid_file, 10 + 512, b"\x02")
    assert_data_error(valid_file, r"image type 2")
    valid_file.write_bytes(raw)
    patched(valid_file, 4, b"\x10\x00")  # H=16, W=0
    assert_data_error(valid_file, r"H=16 W=0")


def test_wrong_start_byte(valid_file):
    patched(valid_file, HEADER_SIZE, b"\xfe")
    assert_data_error(valid_file, r"record 0 at offset 0x400: start byte 0xfe, expected 0xff")


def test_label_out_of_range(valid_file):
    patched(valid_file, HEADER_SIZE + 1, b"\x0a")
    assert_data_error(valid_file, r"record 0 at offset 0x400: label 10 outside 0-9")


@pytest.mark.parametrize("size", [b"\x00\x04", b"\x05\x00"])
def test_zero_width_or_height(valid_file, size):
    patched(valid_file, HEADER_SIZE + 2, size)
    assert_data_error(valid_file, r"record 0 at offset 0x400: image size H=\d+ W=\d+ has a zero side")


def test_run_lengths_overrun_the_row(tmp_path):
    path = tmp_path / "Test.cdb"
    path.write_bytes(raw_cdb([(0, 16, 1, bytes([10, 9]))]))
    assert_data_error(path, r"record 0 at offset 0x400: run lengths overrun row 0 \(sum 19 > width 16\)")


def test_fixed_size_mode_reports_like_per_record_mode(tmp_path):
    path = tmp_path / "f.cdb"
    path.write_bytes(raw_cdb([(2, None, None, bytes([4])), (3, None, None, bytes([3, 2]))], fixed=(1, 4)))
    assert_data_error(path, r"record 1 at offset 0x405: run lengths overrun row 0 \(sum 5 > width 4\)")


def test_record_data_ends_mid_row(tmp_path):
    path = tmp_path / "t.cdb"
    path.write_bytes(raw_cdb([(0, 4, 2, bytes([4, 4])), (1, 4, 2, bytes([4, 1, 2]))]))
    assert_data_error(path, r"record 1 at offset 0x408: image data ends early, in row 1 of 2 at column 3")


def test_byte_count_larger_than_the_runs_need(tmp_path):
    path = tmp_path / "t.cdb"
    path.write_bytes(raw_cdb([(0, 4, 1, bytes([4, 0]))]))
    assert_data_error(path, r"record 0 at offset 0x400: ByteCount 2 inconsistent .* after 1 bytes")


def test_grayscale_byte_count_must_be_w_times_h(tmp_path):
    path = tmp_path / "g.cdb"
    path.write_bytes(raw_cdb([(0, 2, 2, bytes(3))], image_type=GRAYSCALE))
    assert_data_error(path, r"record 0 at offset 0x400: ByteCount 3, but a 2x2 grayscale image needs 4")


def test_file_truncated_inside_record_data(valid_file):
    raw = valid_file.read_bytes()
    valid_file.write_bytes(raw[:-2])
    assert_data_error(valid_file, r"record 2 at offset 0x[0-9a-f]+: file ends inside the image data")


def test_file_truncated_inside_record_header(valid_file):
    raw = valid_file.read_bytes()
    last = raw.rindex(b"\xff\x01\x03\x02")  # record 2: label 1, W=3, H=2
    valid_file.write_bytes(raw[: last + 3])
    assert_data_error(valid_file, rf"record 2 at offset 0x{last:x}: file ends inside the record header \(3 of 6")


def test_record_count_larger_than_the_file(valid_file):
    size = valid_file.stat().st_size
    patched(valid_file, 6, struct.pack("<I", 4))
    assert_data_error(valid_file, rf"record 3 at offset 0x{size:x}: file ends here, but the header declares 4")


def test_trailing_garbage_is_an_error(valid_file):
    size = valid_file.stat().st_size
    valid_file.write_bytes(valid_file.read_bytes() + b"\x00" * 5)
    assert_data_error(valid_file, rf"5 bytes of unexpected data at offset 0x{size:x} after the last record")


def test_error_names_the_first_bad_record(tmp_path):
    # Record 1 has a bad run, record 2 a bad start byte: record 1 is reported.
    raw = bytearray(raw_cdb([(0, 2, 1, b"\x02"), (0, 2, 1, b"\x03"), (0, 2, 1, b"\x02")]))
    raw[HEADER_SIZE + 2 * 7] = 0x00
    path = tmp_path / "o.cdb"
    path.write_bytes(bytes(raw))
    assert_data_error(path, r"record 1 at offset 0x407: run lengths overrun")


def test_error_index_and_offset_beyond_the_first_chunk(tmp_path):
    n, bad = 9000, 8500  # the reader decodes 8192 records per pass
    images = [np.zeros((1, 2), np.uint8)] * n
    path = write_cdb(tmp_path / "big.cdb", images, [0] * n)
    offset = HEADER_SIZE + bad * (RECORD_HEAD + 1)  # each record: head + one run of 2
    patched(path, offset + RECORD_HEAD, b"\x05")
    assert_data_error(path, rf"record {bad} at offset 0x{offset:x}: run lengths overrun row 0 \(sum 5 > width 2\)")


# --- Fuzzing: whatever the bytes, only DataError escapes ---------------------------


def _fuzz_seed_files() -> list[bytes]:
    rng = np.random.default_rng(1)
    shapes = [(1, 1), (5, 3), (12, 9), (2, 17)]
    binary = [random_image(rng, h, w) for h, w in shapes]
    gray = [random_image(rng, 4, 3, binary=False) for _ in range(3)]
    files = []
    for images, kwargs in [
        (binary, {}),
        (gray, {"image_type": GRAYSCALE}),
        (gray[:2], {"image_type": GRAYSCALE, "fixed_size": (4, 3)}),
        ([binary[1]] * 3, {"fixed_size": (5, 3)}),
    ]:
        with tempfile.TemporaryDirectory() as d:
            files.append(write_cdb(Path(d) / "s.cdb", images, [0, 9, 4, 2][: len(images)], **kwargs).read_bytes())
    return files


SEEDS = _fuzz_seed_files()


@st.composite
def damaged_cdb(draw) -> bytes:
    base = bytearray(draw(st.sampled_from(SEEDS)))
    kind = draw(st.sampled_from(["mutate", "truncate", "noise_body", "header_fields", "noise"]))
    if kind == "mutate":  # a few bytes anywhere, biased to the records
        for _ in range(draw(st.integers(1, 6))):
            lo = draw(st.sampled_from([0, HEADER_SIZE]))
            pos = draw(st.integers(lo, len(base) - 1))
            base[pos] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del base[draw(st.integers(0, len(base) - 1)) :]
    elif kind == "noise_body":  # a valid header, then anything
        base[HEADER_SIZE:] = draw(st.binary(max_size=400))
    elif kind == "header_fields":  # plausible-but-wrong sizes, counts and types
        struct.pack_into(
            "<BBI", base, 4,
            draw(st.sampled_from([0, 1, 3, 5, 255])), draw(st.sampled_from([0, 1, 3, 5, 255])),
            draw(st.sampled_from([0, 1, 3, 4, 5, 2**32 - 1])),
        )  # fmt: skip
        base[10 + 512] = draw(st.sampled_from([0, 1, 2]))
        if draw(st.booleans()):
            base += draw(st.binary(max_size=40))
    else:
        return draw(st.binary(max_size=HEADER_SIZE + 200))
    return bytes(base)


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.cdb"


def check_only_data_error(path: Path, raw: bytes) -> None:
    path.write_bytes(raw)
    try:
        data = read_cdb(path)
    except DataError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    # Accepted: then it must be a self-consistent decoding.
    assert len(data.images) == len(data.labels) == data.header.total_records
    assert data.labels.dtype == np.int64 and ((data.labels >= 0) & (data.labels <= 9)).all()
    for image in data.images:
        assert image.dtype == np.uint8 and image.ndim == 2 and image.size > 0
        if data.header.image_type == BINARY:
            assert np.isin(image, (0, 255)).all()


@settings(max_examples=1500, deadline=None)
@given(raw=damaged_cdb())
def test_fuzz_only_data_error_escapes(fuzz_path, raw):
    check_only_data_error(fuzz_path, raw)


@pytest.mark.slow
@settings(max_examples=20000, deadline=None)
@given(raw=damaged_cdb())
def test_fuzz_only_data_error_escapes_heavy(fuzz_path, raw):
    check_only_data_error(fuzz_path, raw)


# --- The real data -----------------------------------------------------------------


def test_real_test_file(hoda_dir):
    path = hoda_dir / "Test 20000.cdb"
    data = read_cdb(path)
    assert data.header.total_records == len(data.images) == len(data.labels) == 20_000
    assert data.header.image_type == BINARY and data.header.fixed_size is None
    counts = np.bincount(data.labels, minlength=10)
    assert counts.tolist() == [2_000] * 10
    assert list(data.header.letter_count) == counts.tolist() + [0] * 118
    shapes = np.array([image.shape for image in data.images])
    assert shapes.min() >= 1 and shapes.max() <= 255
    assert np.isin(np.concatenate([image.ravel() for image in data.images]), (0, 255)).all()


def test_real_test_file_reencodes_byte_for_byte(hoda_dir, tmp_path):
    path = hoda_dir / "Test 20000.cdb"
    data = read_cdb(path)
    h = data.header
    copy = write_cdb(tmp_path / "copy.cdb", data.images, data.labels, comment=h.comment, date=(h.year, h.month, h.day))
    # Reader and writer agree run for run with the encoder that made the file.
    assert copy.read_bytes() == path.read_bytes()


def test_real_digits_are_upright_and_not_mirrored(hoda_dir):
    """Orientation invariants of Persian digit shapes, measured on the real file.

    A transposed decoder would make ۱ (one) wide instead of tall; a vertical
    flip would swap ۵/۸ (narrow tops) with ۹ (wide top); a horizontal mirror
    would put ۹'s loop to the right of its tail.
    """
    data = read_cdb(hoda_dir / "Test 20000.cdb")

    def share(label, test):
        return np.mean([test(data.images[i] > 0) for i in np.flatnonzero(data.labels == label)])

    def ink_width(rows):
        cols = np.flatnonzero(rows.any(axis=0))
        return cols[-1] - cols[0] + 1 if len(cols) else 0

    def quarter(image, top):
        q = max(1, image.shape[0] // 4)
        return image[:q] if top else image[-q:]

    def ink_centre(rows):
        mass = rows.sum(axis=0)
        return mass @ np.arange(rows.shape[1]) / max(mass.sum(), 1)

    assert share(1, lambda im: im.shape[0] > im.shape[1]) > 0.95
    top_wider = lambda im: ink_width(quarter(im, True)) > ink_width(quarter(im, False))  # noqa: E731
    assert share(9, top_wider) > 0.9
    assert share(5, top_wider) < 0.1
    assert share(8, top_wider) < 0.2
    assert share(9, lambda im: ink_centre(quarter(im, True)) < ink_centre(quarter(im, False))) > 0.9


def test_real_train_file_decodes_quickly(hoda_dir):
    path = hoda_dir / "Train 60000.cdb"
    if not path.is_file():
        pytest.skip("Train 60000.cdb not present")
    start = time.perf_counter()
    data = read_cdb(path)
    seconds = time.perf_counter() - start
    assert len(data.images) == 60_000
    assert np.bincount(data.labels).tolist() == [6_000] * 10
    assert seconds < 5.0, f"decoding took {seconds:.2f} s"


# --- which split a lone .cdb file holds ----------------------------------------------------------


@pytest.mark.parametrize(
    "name, split",
    [
        ("Test 20000.cdb", "test"),
        ("Train 60000.cdb", "train"),
        ("RemainingSamples.cdb", "remaining"),
        ("train_60000.CDB", "train"),
        ("test.cdb", "test"),
    ],
)
def test_hoda_file_names_say_their_split(tmp_path, name, split):
    from lenet_edge.data import load_dataset

    path = write_cdb(tmp_path / name, [np.full((4, 4), 255, np.uint8)], [5])
    assert set(load_dataset(str(path)).splits) == {split}


@pytest.mark.parametrize("name", ["latest.cdb", "contest.cdb", "digits.cdb", "my_testing_set.cdb"])
def test_a_name_that_says_no_split_is_an_error_not_a_guess(tmp_path, name):
    from lenet_edge.data import load_dataset

    path = write_cdb(tmp_path / name, [np.full((4, 4), 255, np.uint8)], [5])
    message = assert_one_line_error(lambda: load_dataset(str(path)), path, "does not say which split")
    assert f"--data '{path}:test'" in message


def test_an_explicit_split_names_it(tmp_path):
    from lenet_edge.data import load_dataset

    path = write_cdb(tmp_path / "contest.cdb", [np.full((4, 4), 255, np.uint8)] * 2, [5, 6])
    data = load_dataset(f"{path}:test")
    assert set(data.splits) == {"test"} and data.splits["test"].labels.tolist() == [5, 6]
    assert data.source == f"{path}:test"  # recorded so that export and bench reload the same split
    assert set(load_dataset(f"{path}:remaining").splits) == {"remaining"}
    assert_one_line_error(lambda: load_dataset(f"{tmp_path / 'none.cdb'}:test"), tmp_path / "none.cdb", "no such file")
