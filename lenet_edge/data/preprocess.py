"""The one preprocessing function every source and `predict` go through.

Contract (recorded in each run's manifest as part of the model's input):
grayscale -> white ink on black -> crop to the ink's bounding box -> resize,
keeping the aspect ratio, so the longer side is 20 px (antialiased) -> paste
into a 28x28 black canvas so the ink's centre of mass sits at the centre. This
is the MNIST convention; Hoda's variable-size scans (3x3 to 62x62) and any
photo of a digit end up in the same frame as the training data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image

from ..runtimes.base import INPUT_SHAPE, NUM_CLASSES  # the model contract's one home  # noqa: F401

PREPROCESSING_VERSION = 1
MODEL_INPUT_SHAPE = INPUT_SHAPE[1:]  # one image as every lenet-edge model takes it: (B, 28, 28, 1)
CANVAS = MODEL_INPUT_SHAPE[0]  # output side, px
BOX = 20  # longer side of the resized ink box, px
INK_THRESHOLD = 64  # a pixel > this (of 255) counts as ink for the bounding box
PROGRESS_EVERY = 1000  # images between progress callbacks
BORDER_DARK_MAX = 128  # mean border brightness above this => dark ink on light paper

CONTRACT = {
    "version": PREPROCESSING_VERSION,
    "steps": [
        "grayscale (ITU-R 601-2 luma; alpha composited onto the background)",
        "white ink on black (inverted when the mean border brightness exceeds 128)",
        "crop to the bounding box of pixels > 64",
        "resize keeping aspect ratio, longer side 20 px, Lanczos (antialiased)",
        "paste into 28x28 black so the centre of mass is at (13.5, 13.5)",
    ],
    "output": {"shape": [CANVAS, CANVAS], "dtype": "uint8", "ink": "white (255) on black (0)"},
    "model_input": "float32 = uint8 / 255, shape (1, 28, 28, 1)",
}


def is_dark_on_light(gray: np.ndarray) -> bool:
    """True when the image's border is bright, i.e. dark ink on light paper.

    The border (outermost row and column on each side) is almost all paper in
    any scan or photo of a single digit, so its mean tells the paper's colour
    better than the whole-image mean, which a thick stroke can swing.
    """
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"expected a non-empty 2-D image, got shape {gray.shape}")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(border.mean()) > BORDER_DARK_MAX


def to_white_on_black(gray: np.ndarray) -> np.ndarray:
    """Invert a dark-on-light uint8 image; leave a white-on-black one as it is."""
    return 255 - gray if is_dark_on_light(gray) else gray


def preprocess(image: np.ndarray) -> np.ndarray:
    """Map one white-on-black uint8 image of any size to the 28x28 model frame.

    An image with no ink (nothing above the threshold) becomes all black.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    out = np.zeros((CANVAS, CANVAS), np.uint8)
    ink = image > INK_THRESHOLD
    rows = ink.any(axis=1).nonzero()[0]
    if rows.size == 0:
        return out
    cols = ink.any(axis=0).nonzero()[0]
    crop = np.ascontiguousarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # through raw bytes: PIL's array interface costs more than the resize of a digit-sized image
    resized = Image.frombuffer("L", (w, h), crop, "raw", "L", 0, 1).resize((new_w, new_h), Image.Resampling.LANCZOS)
    patch = np.frombuffer(resized.tobytes(), np.uint8).reshape(new_h, new_w)
    # the centre of mass in exact integers: a piece of a number is preprocessed the same way, so every
    # microsecond here is paid once per candidate piece
    row_mass = patch.sum(axis=1, dtype=np.int64)  # (new_h,)
    total = int(row_mass.sum())
    if total == 0:  # resampling can wipe a single faint pixel
        return out
    com_r = int(row_mass @ np.arange(new_h)) / total
    com_c = int(patch.sum(axis=0, dtype=np.int64) @ np.arange(new_w)) / total
    centre = (CANVAS - 1) / 2
    top = min(max(round(centre - com_r), 0), CANVAS - new_h)
    left = min(max(round(centre - com_c), 0), CANVAS - new_w)
    out[top : top + new_h, left : left + new_w] = patch
    return out


def preprocess_many(images: Iterable[np.ndarray], progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Preprocess a sequence of images into one `(N, 28, 28)` uint8 array.

    `progress(k)` is called after every `PROGRESS_EVERY` images (and at the end) with
    the number of images done since its previous call.
    """
    processed = []
    for image in images:
        processed.append(preprocess(image))
        if progress and len(processed) % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    if progress and len(processed) % PROGRESS_EVERY:
        progress(len(processed) % PROGRESS_EVERY)
    if not processed:
        return np.zeros((0, CANVAS, CANVAS), np.uint8)
    return np.stack(processed)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 `(N, 28, 28)` images -> the model's float32 `(N, 28, 28, 1)` input in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (CANVAS, CANVAS):
        raise ValueError(f"images must be uint8 of shape (N, 28, 28); got {images.dtype} {images.shape}")
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]
