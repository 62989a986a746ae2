"""Tests for loading `.npz` archives in the Keras `mnist.npz` convention."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st

from lenet_edge.data.npz import load_npz
from lenet_edge.data.preprocess import to_white_on_black
from lenet_edge.errors import DataError


def bars(n: int, dark_on_light: bool, h: int = 12, w: int = 10) -> np.ndarray:
    """(n, h, w) uint8 images: a vertical bar, ink bright or dark."""
    images = np.zeros((n, h, w), np.uint8)
    images[:, 2:-2, 4:6] = 255
    return 255 - images if dark_on_light else images


def write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def assert_white_on_black(images: np.ndarray) -> None:
    assert images.dtype == np.uint8 and images.ndim == 3
    np.testing.assert_array_equal(images, bars(len(images), False, *images.shape[1:]))


def test_mnist_layout_both_polarities(tmp_path):
    path = write(
        tmp_path / "d.npz",
        x_train=bars(6, dark_on_light=False),
        y_train=np.arange(6, dtype=np.uint8),
        x_test=bars(4, dark_on_light=True)[..., None],  # (N, H, W, 1)
        y_test=np.array([9, 0, 1, 2], np.int32),
        extra=np.zeros(3),
    )
    data = load_npz(path)
    assert list(data) == ["train", "test"]
    for split, n in [("train", 6), ("test", 4)]:
        images, labels = data[split]
        assert images.shape == (n, 12, 10)
        assert_white_on_black(images)
        assert labels.dtype == np.int64
    assert data["test"][1].tolist() == [9, 0, 1, 2]


def test_polarity_is_decided_per_image_like_to_white_on_black(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 9, 7), dtype=np.uint8)
    x[::3] = bars(67, True, 9, 7)
    x[1::3] = bars(67, False, 9, 7)
    data = load_npz(write(tmp_path / "d.npz", x_test=x, y_test=np.zeros(200, np.int64)))
    expected = np.stack([to_white_on_black(image) for image in x])
    np.testing.assert_array_equal(data["test"][0], expected)


def test_only_one_split(tmp_path):
    data = load_npz(write(tmp_path / "d.npz", x_test=bars(2, False), y_test=[1, 2]))
    assert list(data) == ["test"]


@pytest.mark.parametrize(
    "x",
    [
        bars(3, False).astype(np.int64),
        bars(3, False).astype(np.float32),
        np.where(bars(3, False) > 0, 254.7, 0.3),  # rounds to 255 and 0
        bars(3, False) > 0,  # bool: True is ink
        bars(3, True).astype(np.uint16),
    ],
    ids=["int64", "float32", "float-near-integers", "bool", "uint16-dark-on-light"],
)
def test_other_numeric_dtypes_are_converted(tmp_path, x):
    images, _ = load_npz(write(tmp_path / "d.npz", x_train=x, y_train=[0, 1, 2]))["train"]
    assert_white_on_black(images)


def assert_data_error(path: Path, fragment: str) -> str:
    return assert_one_line_error(lambda: load_npz(path), path, fragment)


def test_file_level_errors(tmp_path):
    assert_data_error(tmp_path / "missing.npz", "cannot read")
    (tmp_path / "empty.npz").write_bytes(b"")
    assert_data_error(tmp_path / "empty.npz", "empty file")
    (tmp_path / "text.npz").write_text("x_train,y_train\n")
    assert_data_error(tmp_path / "text.npz", "not an .npz (zip) archive")
    np.save(tmp_path / "one.npy", bars(2, False))
    assert_data_error(tmp_path / "one.npy", "single-array .npy")
    raw = write(tmp_path / "ok.npz", x_train=bars(50, False), y_train=np.zeros(50, int)).read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    assert_data_error(tmp_path / "cut.npz", "corrupt .npz archive")


X, Y = bars(3, False), np.array([0, 1, 2])


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"images": X, "labels": Y}, "no x_train/y_train or x_test/y_test arrays (found images, labels)"),
        ({}, "found nothing"),
        ({"x_train": X}, "has x_train but no y_train"),
        ({"x_train": X, "y_train": Y, "y_test": Y}, "has y_test but no x_test"),
        ({"x_train": X, "y_train": Y[:2]}, "x_train has 3 images but y_train has 2 labels"),
        ({"x_train": X[0], "y_train": Y}, "x_train has shape (12, 10); expected (N, H, W)"),
        ({"x_train": np.stack([X] * 3, -1), "y_train": Y}, "x_train has shape (3, 12, 10, 3)"),
        ({"x_train": X[:0], "y_train": Y[:0]}, "holds no pixels"),
        ({"x_train": X, "y_train": [0, 1, 10]}, "y_train has labels 0..10; expected 0-9"),
        ({"x_train": X, "y_train": [-1, 1, 2]}, "y_train has labels -1..2"),
        ({"x_train": X, "y_train": Y.astype(np.float32)}, "y_train has dtype float32; expected integer"),
        ({"x_train": X, "y_train": np.eye(10)[Y].astype(int)}, "one-hot"),
        ({"x_train": X.astype(np.int16) + 100, "y_train": Y}, "pixel values 100..355"),
        ({"x_train": X.astype(np.int16) - 1, "y_train": Y}, "pixel values -1..254"),
        ({"x_train": X / 255.0, "y_train": Y}, "looks scaled to 0-1"),
        ({"x_train": np.where(X > 0, np.nan, 0.0), "y_train": Y}, "NaN"),
        ({"x_train": X.astype(np.complex64), "y_train": Y}, "dtype complex64"),
        ({"x_train": X.astype(str), "y_train": Y}, "expected integers or floats"),
    ],
)
def test_content_errors(tmp_path, arrays, fragment):
    assert_data_error(write(tmp_path / "d.npz", **arrays), fragment)


def test_object_arrays_are_refused(tmp_path):
    ragged = np.empty(3, object)
    ragged[:] = [X[0], X[1][:5], X[2]]
    assert_data_error(write(tmp_path / "d.npz", x_train=ragged, y_train=Y), "object array")


def test_header_claiming_more_data_than_stored(tmp_path):
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000, 28, 28), }"
    header += b" " * (118 - len(header)) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 64
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", npy)
        buffer = io.BytesIO()
        np.save(buffer, Y)
        archive.writestr("y_train.npy", buffer.getvalue())
    assert_data_error(path, "more data than the archive holds")


SEED = io.BytesIO()
np.savez_compressed(SEED, x_train=bars(4, True), y_train=np.arange(4), x_test=bars(2, False), y_test=[3, 4])
SEED_PLAIN = io.BytesIO()
np.savez(SEED_PLAIN, x_train=bars(2, True), y_train=np.arange(2))


@st.composite
def damaged_npz(draw) -> bytes:
    base = bytearray(draw(st.sampled_from([SEED.getvalue(), SEED_PLAIN.getvalue()])))
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 6))):
            base[draw(st.integers(0, len(base) - 1))] = draw(st.integers(0, 255))
        return bytes(base)
    return bytes(base[: draw(st.integers(1, len(base) - 1))])


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_npz") / "fuzz.npz"


@settings(max_examples=300, deadline=None)
@given(raw=damaged_npz())
def test_fuzz_only_data_error_escapes(fuzz_path, raw):
    fuzz_path.write_bytes(raw)
    try:
        data = load_npz(fuzz_path)
    except DataError as exc:
        assert str(fuzz_path) in str(exc)
        return
    for images, labels in data.values():
        assert images.dtype == np.uint8 and images.ndim == 3 and len(images) == len(labels)
