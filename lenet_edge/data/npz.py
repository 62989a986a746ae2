"""Load digit images from an `.npz` archive in the Keras `mnist.npz` convention.

The archive holds `x_train, y_train` and/or `x_test, y_test`: images `(N, H, W)`
or `(N, H, W, 1)`, labels `(N,)` integers 0-9. Images may be uint8, bool, or
integer or float arrays whose values lie within 0-255 (floats are rounded; a
float array scaled to 0-1 is refused rather than read as black). Each
image comes back white ink on black, by the same border rule as every other
source (`preprocess.is_dark_on_light`), applied to all images at once. Other
arrays in the archive are ignored.

Nothing is unpickled (`allow_pickle=False`), and each array's `.npy` header is
checked against the size of its zip member before the array is read, so a
corrupt header cannot make the loader allocate more memory than the file holds.
"""

from __future__ import annotations

import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .preprocess import BORDER_DARK_MAX, NUM_CLASSES

SPLITS = ("train", "test")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members; an empty zip
_NPY_MAGIC = b"\x93NUMPY"
# What a damaged zip member or .npy header raises inside zipfile and numpy.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    struct.error,
    NotImplementedError,  # an unsupported zip compression method
    RuntimeError,  # an encrypted member
    SyntaxError,  # a garbled .npy header (numpy parses it as a Python literal)
    tokenize.TokenError,
    TypeError,
)


def load_npz(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load the train and/or test split of an `.npz` archive.

    Args:
        path: The `.npz` file.

    Returns:
        Split name ("train" and/or "test") -> (images, labels): images
        `(N, H, W)` uint8, white ink on black; labels `(N,)` int64.

    Raises:
        DataError: The file is not an `.npz` archive, lacks a complete
            `x_*`/`y_*` pair, or holds arrays of the wrong shape, type or range.
    """
    path = Path(path)
    _check_magic(path)
    result = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for split in _complete_pairs(archive, path):
                x = _read_array(archive, f"x_{split}", path)
                y = _read_array(archive, f"y_{split}", path)
                result[split] = _validate_pair(x, y, split, path)
    except DataError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise DataError(f"{path}: corrupt .npz archive ({_one_line(exc)})") from exc
    return result


def _check_magic(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if not magic:
        raise DataError(f"{path}: empty file (0 bytes), not an .npz archive")
    if magic.startswith(_NPY_MAGIC):
        raise DataError(f"{path}: a single-array .npy file; expected an .npz with x_train, y_train, x_test, y_test")
    if not magic.startswith(_ZIP_MAGIC):
        raise DataError(f"{path}: not an .npz (zip) archive")


def _complete_pairs(archive: np.lib.npyio.NpzFile, path: Path) -> list[str]:
    keys = set(archive.files)
    pairs = []
    for split in SPLITS:
        x, y = f"x_{split}", f"y_{split}"
        if (x in keys) != (y in keys):
            have, lack = (x, y) if x in keys else (y, x)
            raise DataError(f"{path}: has {have} but no {lack}")
        if x in keys:
            pairs.append(split)
    if not pairs:
        found = ", ".join(sorted(keys)) or "nothing"
        raise DataError(f"{path}: no x_train/y_train or x_test/y_test arrays (found {found})")
    return pairs


def _read_array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """Read one array after checking its header: numeric dtype, size within the member."""
    member = key + ".npy" if key + ".npy" in archive.zip.namelist() else key
    info = archive.zip.getinfo(member)
    with archive.zip.open(info) as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    if dtype.hasobject:
        raise DataError(f"{path}: {key} is an object array, which cannot be loaded without pickle")
    if dtype.kind not in "biuf" or dtype.fields:
        raise DataError(f"{path}: {key} has dtype {dtype}; expected integers or floats")
    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > info.file_size:
        raise DataError(f"{path}: {key}: header claims shape {shape} of {dtype}, more data than the archive holds")
    return archive[key]


def _validate_pair(x: np.ndarray, y: np.ndarray, split: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _as_images(x, f"x_{split}", path)
    labels = _as_labels(y, f"y_{split}", path)
    if len(images) != len(labels):
        raise DataError(f"{path}: x_{split} has {len(images)} images but y_{split} has {len(labels)} labels")
    return _white_on_black(images), labels


def _as_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise DataError(f"{path}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, 1)")
    if 0 in x.shape:
        raise DataError(f"{path}: {key} has shape {x.shape}, which holds no pixels")
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * np.uint8(255)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{path}: {key} has NaN or infinite pixel values")
    lo, hi = x.min(), x.max()
    if lo < 0 or hi > 255:
        raise DataError(f"{path}: {key} ({x.dtype}) has pixel values {lo}..{hi}; expected values within 0-255")
    if x.dtype.kind == "f":
        # A 0-255 image whose brightest pixel is 1 is blank; such an array is 0-1 scaled.
        if 0 < hi <= 1:
            raise DataError(f"{path}: {key} looks scaled to 0-1 (max {hi}); expected 0-255, e.g. uint8")
        return np.rint(x).astype(np.uint8)
    return x.astype(np.uint8)


def _as_labels(y: np.ndarray, key: str, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot? store class indices)" if y.ndim == 2 and y.shape[1] == NUM_CLASSES else ""
        raise DataError(f"{path}: {key} has shape {y.shape}; expected (N,){hint}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} has dtype {y.dtype}; expected integer labels 0-9")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{path}: {key} has labels {y.min()}..{y.max()}; expected 0-9")
    return y.astype(np.int64)


def _white_on_black(images: np.ndarray) -> np.ndarray:
    """`preprocess.to_white_on_black` for a (N, H, W) stack, with one border test for all."""
    # (N, 2W + 2H): the same border, corners counted twice, as is_dark_on_light uses.
    border = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, :, 0], images[:, :, -1]], axis=1)
    dark_on_light = border.mean(axis=1) > BORDER_DARK_MAX
    if dark_on_light.any():
        images = images.copy()
        images[dark_on_light] = 255 - images[dark_on_light]
    return images


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
