"""Load digit images from image files and from folders of class folders.

`load_image` turns any image file Pillow reads into a 2-D uint8 array with
white ink on black, the convention every source follows (`predict` uses it for
a user's photo too). `load_image_folder` reads the layout the Kaggle
"persian-handwritten-digits" set uses, `ROOT/Train/class_0/*.jpg ...
ROOT/Test/class_9/*.jpg`, and its variants:

- split folders named train/training or test/testing, in any case;
- class folders named `class_0`...`class_9` or `0`...`9` (any case);
- or ROOT holding the class folders itself: one split, named "test" when ROOT
  is called test/testing (any case), else "train".

The layout is checked strictly, since a silently skipped folder or file is a
hole in the data: every split needs all ten classes, every class folder at
least one image, and anything else in the tree (a file outside the class
folders, an unknown folder, a file that is not an image) is a `DataError`
naming it. Only hidden entries (dotfiles) and the debris of other systems
(`Thumbs.db`, `desktop.ini`, `__MACOSX`) are skipped.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from .preprocess import NUM_CLASSES, to_white_on_black

SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "testing": "test"}
IGNORED_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}  # compared in lower case
_CLASS_NAME = re.compile(r"(?:class_)?([0-9])", re.IGNORECASE)
_NUMBERED_NAME = re.compile(r"(?:class_)?[0-9]+", re.IGNORECASE)  # a class folder, but not 0-9
_WORKERS = min(4, os.cpu_count() or 1)  # Pillow decodes without the GIL, but its Python side holds it
_BATCH = 256  # files in flight at once: bounds the work done after the first bad file
_WHITE = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # Pillow opens 16-bit PGM/PPM as "I"
# What Pillow's format plugins raise on malformed input (OSError for "image file is truncated").
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    struct.error,
    ZeroDivisionError,
    OverflowError,
)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Load one image file as white ink on black.

    Any mode Pillow reads is accepted: alpha (RGBA, LA, palette transparency) is
    composited onto white paper first; 16-bit images (and 32-bit integer ones,
    Pillow's mode for 16-bit PGM) are scaled by the 16-bit range (65535 -> 255),
    not clipped; float images by their own min-max range; colour by ITU-R 601-2
    luma; an animated image gives its first frame. The EXIF orientation of photos is applied. A
    dark-on-light image is then inverted, judged by its border
    (`preprocess.to_white_on_black`).

    Args:
        path: The image file.
        max_pixels: refuse a larger image (width x height, read from the
            header) before decoding its pixels; None: Pillow's limit only.

    Returns:
        A 2-D uint8 array, ink bright (up to 255) on a dark background.

    Raises:
        DataError: The file is missing, empty, not an image, corrupt or
            truncated, larger than `max_pixels`, or larger than Pillow's
            decompression-bomb limit (the limit's warning counts as an error too).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _load_image(Path(path), max_pixels)


def _load_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """`load_image` without installing the warning filter (the caller has)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{path}: a directory, not an image file")
    if info.st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes), not an image")
    try:
        with Image.open(path) as image:
            _check_pixel_count(image, path, max_pixels)
            ImageOps.exif_transpose(image, in_place=True)  # photos taken sideways
            gray = _to_gray(image, path)
    except DataError:
        raise
    except _BOMB_ERRORS as exc:
        raise DataError(f"{path}: refusing to decode a possible decompression bomb ({_one_line(exc)})") from exc
    except Image.UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image file (Pillow cannot identify its format)") from exc
    except OSError as exc:
        if exc.errno is not None:  # the file system failed, not the decoder
            raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
        raise DataError(f"{path}: corrupt or truncated image ({_one_line(exc)})") from exc
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: corrupt or truncated image ({_one_line(exc)})") from exc
    if gray.size == 0:
        raise DataError(f"{path}: image has no pixels ({gray.shape[1]}x{gray.shape[0]})")
    return to_white_on_black(gray)


def _check_pixel_count(image: Image.Image, path: Path, max_pixels: int | None = None) -> None:
    if max_pixels and image.width * image.height > max_pixels:
        raise DataError(f"{path}: image too large ({image.width}x{image.height} px; at most {max_pixels:,} px)")
    # Pillow only warns between 1x and 2x its limit, and a warning filter is
    # process-wide state another thread can change: check explicitly as well.
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        raise DataError(
            f"{path}: refusing to decode a possible decompression bomb "
            f"({image.width}x{image.height} px exceeds Pillow's limit of {limit} px)"
        )


def _to_gray(image: Image.Image, path: Path) -> np.ndarray:
    """Grayscale pixels of any Pillow image as a 2-D uint8 array."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise DataError(f"{path}: {image.mode} pixel values outside the 16-bit range 0-65535")
        return np.rint(values / 257).astype(np.uint8)  # 65535 / 257 = 255: full scale to full scale
    if image.mode == "F":
        return _stretch(np.asarray(image, np.float64), path)
    if image.mode == "P":
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    if image.has_transparency_data:
        # Transparent means paper: composite onto white, as any viewer shows it.
        image = Image.alpha_composite(Image.new("RGBA", image.size, _WHITE), image.convert("RGBA"))
    if image.mode not in ("1", "L", "RGB"):
        try:
            image = image.convert("RGB")
        except ValueError as exc:
            raise DataError(f"{path}: unsupported image mode {image.mode}") from exc
    return np.array(image.convert("L"))  # a writable copy (asarray would be read-only)


def _stretch(values: np.ndarray, path: Path) -> np.ndarray:
    """Map a float image's own [min, max] onto 0-255 (a float image has no fixed scale)."""
    if not np.isfinite(values).all():
        raise DataError(f"{path}: float image with NaN or infinite pixels")
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if hi == lo:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - lo) * (255 / (hi - lo))).astype(np.uint8)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_image_folder(root: str | os.PathLike) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Load a folder of class folders, optionally under train/test split folders.

    Args:
        root: The dataset folder (see the module docstring for the layouts).

    Returns:
        Split name ("train" and/or "test") -> (images, labels): the images as
        `load_image` returns them, ordered by class, then by file name; labels
        an int64 array.

    Raises:
        DataError: The layout is not one of those described, a class is missing
            or empty, or a file is not a readable image; the message names the
            folder or file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    listing = {
        split: [(path, label) for label, folder in sorted(classes.items()) for path in _class_files(folder)]
        for split, classes in _find_splits(root).items()
    }
    images = _load_all([path for files in listing.values() for path, _ in files])
    result, start = {}, 0
    for split, files in listing.items():
        labels = np.array([label for _, label in files], np.int64)
        result[split] = (images[start : start + len(files)], labels)
        start += len(files)
    return result


def _find_splits(root: Path) -> dict[str, dict[int, Path]]:
    """Split name -> class label -> class folder, for either layout."""
    folders = _subfolders(root)
    classes = [f for f in folders if _class_label(f) is not None]
    splits = [f for f in folders if f.name.lower() in SPLIT_NAMES]
    if classes and splits:
        raise DataError(f"{root}: mixes class folders ({classes[0].name}) and split folders ({splits[0].name})")
    if classes:
        split = "test" if SPLIT_NAMES.get(root.name.lower()) == "test" else "train"
        return {split: _class_folders(root, folders)}
    if not splits:
        if folders:
            raise _unknown_folder(folders[0], "split folders train/ and test/")
        raise DataError(
            f"{root}: no class folders (expected 0-9 or class_0-class_9, directly or under train/ and test/)"
        )
    found: dict[str, dict[int, Path]] = {}
    for folder in folders:
        split = SPLIT_NAMES.get(folder.name.lower())
        if split is None:
            raise DataError(f"{folder}: unknown folder beside the split folders (expected train/ and test/)")
        if split in found:
            raise DataError(f"{folder}: a second folder for the '{split}' split")
        found[split] = _class_folders(folder, _subfolders(folder))
    return {split: found[split] for split in ("train", "test") if split in found}


def _class_folders(parent: Path, folders: list[Path]) -> dict[int, Path]:
    """Label -> folder for folders that must all be class folders, all ten present."""
    classes: dict[int, Path] = {}
    for folder in folders:
        label = _class_label(folder)
        if label is None:
            raise _unknown_folder(folder)
        if label in classes:
            raise DataError(f"{folder}: a second folder for class {label} (besides {classes[label].name})")
        classes[label] = folder
    if not classes:
        raise DataError(f"{parent}: no class folders (expected 0-9 or class_0-class_9)")
    missing = sorted(set(range(NUM_CLASSES)) - set(classes))
    if missing:
        raise DataError(f"{parent}: no folder for class {', '.join(map(str, missing))} (expected all of 0-9)")
    return classes


def _unknown_folder(folder: Path, or_else: str = "") -> DataError:
    what = "class number outside 0-9" if _NUMBERED_NAME.fullmatch(folder.name) else "unknown folder name"
    expected = "class folders 0-9 or class_0-class_9" + (f", or {or_else}" if or_else else "")
    return DataError(f"{folder}: {what} (expected {expected})")


def _class_label(folder: Path) -> int | None:
    match = _CLASS_NAME.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def _subfolders(folder: Path) -> list[Path]:
    """The visible sub-folders; a stray file at this level is an error."""
    files, folders = _visible(folder)
    if files:
        raise DataError(f"{files[0]}: unexpected file outside the class folders")
    return folders


def _class_files(folder: Path) -> list[Path]:
    files, folders = _visible(folder)
    if folders:
        raise DataError(f"{folders[0]}: unexpected folder inside a class folder")
    if not files:
        raise DataError(f"{folder}: class folder has no images")
    return files


def _visible(folder: Path) -> tuple[list[Path], list[Path]]:
    """Files and sub-folders of `folder`, sorted by name, without hidden entries and OS debris."""
    try:
        with os.scandir(folder) as scan:  # the entry types come with the listing: no stat per file
            entries = sorted(
                (entry.name, entry.is_dir())
                for entry in scan
                if not entry.name.startswith(".") and entry.name.lower() not in IGNORED_NAMES
            )
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from exc
    files = [folder / name for name, is_dir in entries if not is_dir]
    folders = [folder / name for name, is_dir in entries if is_dir]
    return files, folders


def _load_all(paths: list[Path]) -> list[np.ndarray]:
    """`load_image` over many files in a small thread pool, in order.

    Batches keep the order and make the first bad file (in that order) the one
    reported, without decoding the rest of a large folder after it.
    """
    images: list[np.ndarray] = []
    # The filter is process-wide, so it covers the workers too; they must not
    # install their own (catch_warnings is not thread-safe).
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            for lo in range(0, len(paths), _BATCH):
                images += pool.map(_load_image, paths[lo : lo + _BATCH])
    return images
