"""Find the digit in a photo of paper, before the model's `preprocess`.

`preprocess` crops to the bounding box of every pixel brighter than 64, which
is right for a clean scan and wrong for a phone photo: a shadow, a ruled line
or a form box becomes part of "the digit". This front end sits in between,
as three steps a later stage can also call on its own (`read` segments a
whole line with the first one):

1. `clean_page(image)` (white ink on black, as `folders.load_image` returns
   it): flatten the lighting (the paper's brightness, estimated by a median
   at a scale larger than a stroke, divided out), binarize (Otsu on the
   flattened image, never below a minimum contrast, so blank paper stays
   blank), and remove long thin straight runs (ruled lines, grids, comb
   fields, table borders; slightly rotated too) and closed box frames of any
   size, keeping the pixels where a pen stroke crosses them, so the stroke
   is not cut.
2. `find_digit(ink)`: the ink components that make the digit (the large
   component nearest the centre, with nearby pieces of a broken stroke
   merged; specks dropped), or a verdict: no digit, or several side by side.
3. `digit_image(image)`: the 28x28 model input: the kept ink through
   `preprocess` (crop, 20 px box, centre of mass).

Clean inputs keep the training contract byte for byte: an image whose
background is already black (a scan after `load_image`, a Hoda record, a
synthetic digit, a 28x28 dataset JPEG) and that holds no line goes to
`preprocess` untouched. Only a photo's pixels are rebuilt, from its kept ink.

OpenCV does the image work (median, morphology, Otsu, connected components);
the rules and frames are found in `rules`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import DataError
from .preprocess import CANVAS, INK_THRESHOLD, PROGRESS_EVERY, preprocess
from .rules import box_frames, drop_residues, find_rules, frames_a_digit, remove_rules

FRONTEND_VERSION = 2  # part of a folder dataset's cache key: a change re-reads photos, never clean images
WORK_PIXELS = 250_000  # larger photos are shrunk to this many pixels first: a digit in a photo stays > 80 px
CLEAN_BACKGROUND_MAX = 8.0  # mean of the non-ink pixels at most this => the background is already black
MIN_CONTRAST = 48  # flattened ink level (0-255) below which nothing counts as ink, whatever Otsu says
BACKGROUND_FRACTION = 3  # median window = longer side / this: wider than any blob of ink, so it sees the paper
SPECK_FRACTION = 0.04  # a component smaller than this fraction of the largest is a speck
MAIN_FRACTION = 0.25  # components at least this fraction of the largest may be "the digit"
MERGE_GAP = 0.3  # pieces within this fraction of the digit's size of it are the same digit
NEIGHBOUR_FRACTION = 0.3  # a second component this large (of the digit's area) beside it is another digit
NEIGHBOUR_HEIGHT = 0.5  # ... and at least this fraction of the digit's height ...
SIDE_GAP = 0.08  # ... and this far to its side, as a fraction of the height (a ۸ in two strokes is not two digits)
MIN_DIGIT_FRACTION = 0.04  # on a photo, a digit's longer side is at least this fraction of the page's shorter side


MIN_INK_EXTENT = 4  # px: ink that fits in a 3 x 3 box is a speck or a stray pixel, not a digit (Hoda's ۰: ~6 px)


class NoDigitError(DataError):
    """An image with no ink that could be a digit (blank paper, only lines or an empty box)."""


class SeveralDigitsError(DataError):
    """An image with more than one digit side by side, where one was expected."""


@dataclass(frozen=True)
class Page:
    """A cleaned page: what `clean_page` hands to the digit finder or a segmenter.

    All arrays share one shape, the working resolution (`scale` times the input's).
    """

    flattened: np.ndarray  # uint8, ink bright on black, lighting divided out
    ink: np.ndarray  # bool, binarized ink with the rules removed
    removed: np.ndarray  # bool, pixels removed as rules (ruled lines, frames)
    scale: float  # working size / input size (below 1 for a photo over WORK_PIXELS, or tall writing `read` shrinks)
    clean: bool  # the input was already a clean digit image (black background, no rule)
    threshold: int  # the binarization threshold used on `flattened`


@dataclass(frozen=True)
class Digit:
    """What `find_digit` decided about a page's ink."""

    kept: np.ndarray  # bool, the components making the digit (all False when there is none)
    count: int  # digits seen: 0 (none), 1, or 2 and more side by side
    dropped: int = 0  # components dropped as specks or stray marks
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # (x, y, w, h) of each digit seen


def clean_page(image: np.ndarray) -> Page:
    """Flatten, binarize and remove rules from one white-on-black image (any size).

    Args:
        image: 2-D uint8, ink bright on a dark background (`load_image`'s output).

    Returns:
        The `Page`; for an already clean image, `flattened` is the image itself
        and `ink` its pixels above `INK_THRESHOLD`.
    """
    image = _check(image)
    ink = image > INK_THRESHOLD
    if _background_is_black(image) and not box_frames(ink)[0].any():
        if not frames_a_digit(ink):
            return Page(image, ink, np.zeros_like(ink), 1.0, True, INK_THRESHOLD)
    scale = min(1.0, math.sqrt(WORK_PIXELS / image.size))
    if scale < 1.0:
        image = shrunk_by(image, scale)
    if np.median(image) > 127:  # mostly bright: dark ink on paper that the border test took for a scan
        image = 255 - image
    flattened = flatten(image)
    otsu, _ = cv2.threshold(flattened, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = max(int(otsu), MIN_CONTRAST)
    ink = flattened > threshold
    weak = flattened > threshold // 2
    horizontal, vertical, thickness = find_rules(ink, weak)
    frames, frame_thickness = box_frames(weak)
    if frames.any():  # a frame's sides, each by its direction (the corners in both)
        side = np.ones((1, 2 * math.ceil(frame_thickness) + 9), np.uint8)
        horizontal |= cv2.morphologyEx(frames.astype(np.uint8), cv2.MORPH_OPEN, side).astype(bool) & weak
        vertical |= cv2.morphologyEx(frames.astype(np.uint8), cv2.MORPH_OPEN, side.T).astype(bool) & weak
        thickness = max(thickness, frame_thickness)
    lines = horizontal | vertical
    if lines.any():
        ink = drop_residues(remove_rules(ink, horizontal, vertical, thickness), lines)
    return Page(flattened, ink, lines & ~ink, scale, False, threshold)


def shrunk_by(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` made `scale` (< 1) times its size by area averaging, each side at least 1 px.

    Halved first (OpenCV's 2 x 2 area average, a fast path; an odd last row or column left out) while the
    scale left is at most 1/2, then area-averaged once to the exact size: an area resize by any other
    factor costs several times as much per pixel, so this is 3-10x faster on a phone photo or a 1,000 dpi
    scan, and each output pixel averages nearly the same area (within a pixel of the input).
    """
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    while scale <= 0.5 and image.shape[1] // 2 >= size[0] and image.shape[0] // 2 >= size[1]:
        half = (image.shape[1] // 2, image.shape[0] // 2)  # an odd last row or column is left out: exactly 2x
        image = cv2.resize(image[: 2 * half[1], : 2 * half[0]], half, interpolation=cv2.INTER_AREA)
        scale *= 2
    return image if image.shape[1::-1] == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def flatten(image: np.ndarray) -> np.ndarray:
    """Divide out the paper's brightness: 0 where the paper is, up to 255 for black ink.

    Works on the paper's own luminance (255 - image): illumination multiplies
    it, so a shadow darkens ink and paper alike and division undoes both. The
    paper is the median over a window several strokes wide, computed on a
    4x smaller copy (a median is slow at full size and the light varies slowly).
    """
    luminance = 255 - image
    small = cv2.resize(luminance, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    window = max(3, max(small.shape) // BACKGROUND_FRACTION) | 1
    window = min(window, 255)  # OpenCV's uint8 median takes any odd window; keep it bounded
    paper = cv2.medianBlur(small, window) if min(small.shape) >= 3 else small
    paper = cv2.resize(paper, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    paper = np.maximum(paper.astype(np.float32), 1.0)
    flat = 255.0 * (1.0 - luminance.astype(np.float32) / paper)
    return np.clip(np.rint(flat), 0, 255).astype(np.uint8)


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected a non-empty 2-D grayscale image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    return image


def _background_is_black(image: np.ndarray) -> bool:
    """A scan or dataset image: what is not ink (at most `INK_THRESHOLD`) is (nearly) pure black, unlike any
    photo of paper. The mean from the image's histogram (no copy of the background): OpenCV counts in
    float32, exact up to 2^24 pixels; a larger image is averaged directly."""
    if image.size >= 1 << 24:
        background = image[image <= INK_THRESHOLD]
        return background.size == 0 or float(background.mean()) <= CLEAN_BACKGROUND_MAX
    counts = cv2.calcHist([image], [0], None, [256], [0, 256]).ravel()[: INK_THRESHOLD + 1].astype(np.float64)
    pixels = counts.sum()
    return pixels == 0 or float(counts @ np.arange(INK_THRESHOLD + 1)) / pixels <= CLEAN_BACKGROUND_MAX


def find_digit(ink: np.ndarray, min_size: int = 1) -> Digit:
    """Choose the components of a binarized page that make the one digit.

    The digit is the component nearest the centre among the large ones (at
    least `MAIN_FRACTION` of the largest), plus every non-speck component
    within `MERGE_GAP` of its size (a broken stroke, a detached dot) that is
    not itself a digit beside it: a component at least `NEIGHBOUR_FRACTION`
    of its ink and `NEIGHBOUR_HEIGHT` of its height, on the same rows and
    clear of it by `SIDE_GAP` of its height, is a second digit.

    Args:
        ink: 2-D bool mask (e.g. `clean_page(...).ink`).
        min_size: px; a digit whose longer side is shorter than this is a
            speck on an otherwise empty page (`count` 0).
    """
    ink = np.asarray(ink, bool)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    boxes = stats[1:, :4].astype(np.float64)  # x, y, w, h
    solid = areas >= SPECK_FRACTION * areas.max() if n > 1 else np.zeros(0, bool)
    solid &= ~_frames(boxes, areas, solid)
    if not solid.any():
        return Digit(np.zeros_like(ink), 0, n - 1)
    centre = np.array([(ink.shape[1] - 1) / 2, (ink.shape[0] - 1) / 2])
    candidates = np.flatnonzero(solid & (areas >= MAIN_FRACTION * areas[solid].max()))
    main = int(candidates[np.argmin(np.linalg.norm(centroids[1:][candidates] - centre, axis=1))])
    group = _grow({main}, boxes, areas, solid)
    box = _union(boxes[sorted(group)])
    if max(box[2], box[3]) < min_size:
        return Digit(np.zeros_like(ink), 0, n - 1)
    digits = [box]
    rest = [int(i) for i in np.flatnonzero(solid) if i not in group]
    while rest:  # the other glyphs, largest first, each grown with its own pieces
        other = _grow({max(rest, key=lambda i: areas[i])}, boxes, areas, solid, exclude=group)
        rest = [i for i in rest if i not in other]
        if _another_digit(box, areas[sorted(group)].sum(), _union(boxes[sorted(other)]), areas[sorted(other)].sum()):
            digits.append(_union(boxes[sorted(other)]))
    kept = np.isin(labels, [i + 1 for i in group])
    return Digit(kept, len(digits), n - 1 - len(group), [tuple(int(v) for v in b) for b in digits])


def _frames(boxes: np.ndarray, areas: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """Components that enclose another solid one: a box frame the rule finder missed, not a digit."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    inside = (x0[:, None] < x0) & (y0[:, None] < y0) & (x1[:, None] > x1) & (y1[:, None] > y1)  # [i, j]: j in i
    inside &= solid[None, :] & (areas[None, :] >= 0.2 * areas[:, None])
    return inside.any(axis=1)


def _grow(
    group: set[int], boxes: np.ndarray, areas: np.ndarray, solid: np.ndarray, exclude: set[int] = frozenset()
) -> set[int]:
    """Add every solid component near the group's box (and not a digit beside it) until none is left."""
    while True:
        box = _union(boxes[sorted(group)])
        x, y, w, h = box
        gap = MERGE_GAP * max(w, h)
        near = (
            solid
            & (boxes[:, 0] <= x + w + gap)
            & (boxes[:, 0] + boxes[:, 2] >= x - gap)
            & (boxes[:, 1] <= y + h + gap)
            & (boxes[:, 1] + boxes[:, 3] >= y - gap)
        )
        total = areas[sorted(group)].sum()
        added = {
            i
            for i in map(int, np.flatnonzero(near))
            if i not in group and i not in exclude and not _another_digit(box, total, boxes[i], areas[i])
        }
        if not added:
            return group
        group |= added


def _another_digit(box: np.ndarray, area: float, other: np.ndarray, other_area: float) -> bool:
    """`other` is a digit of its own beside the digit in `box`: large, as tall, on the same rows, clear of it."""
    if other_area < NEIGHBOUR_FRACTION * area or other[3] < NEIGHBOUR_HEIGHT * box[3]:
        return False
    rows = min(box[1] + box[3], other[1] + other[3]) - max(box[1], other[1])
    gap = max(other[0] - (box[0] + box[2]), box[0] - (other[0] + other[2]))
    return rows >= 0.5 * min(box[3], other[3]) and gap >= SIDE_GAP * max(box[3], other[3])


def _union(boxes: np.ndarray) -> np.ndarray:
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    return np.array([x0, y0, x1 - x0, y1 - y0])


@dataclass(frozen=True)
class Stages:
    """Every stage of one image through the front end (what `predict --explain` draws)."""

    page: Page
    digit: Digit
    final: np.ndarray  # (28, 28) uint8, the model's input


def run_frontend(image: np.ndarray) -> Stages:
    """All stages for one white-on-black image; never raises for a missing or doubled digit."""
    page = clean_page(image)
    digit = find_digit(page.ink, 1 if page.clean else round(MIN_DIGIT_FRACTION * min(page.ink.shape)))
    if page.clean:
        final = preprocess(page.flattened)  # the training contract, untouched
    elif digit.count:
        final = preprocess(ink_image(page, digit.kept))
    else:
        final = np.zeros((CANVAS, CANVAS), np.uint8)
    return Stages(page, digit, final)


def ink_image(page: Page, kept: np.ndarray) -> np.ndarray:
    """The kept digit as a clean scan would show it: its ink on pure black, strokes at full brightness.

    Hysteresis keeps the faint edges and thin tails of the kept strokes (flattened
    above half the threshold and connected to them), not the rules or specks.
    """
    near_rules = cv2.dilate(page.removed.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    near_kept = cv2.dilate(kept.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    mask = kept | (near_kept & ~near_rules & (page.flattened > page.threshold // 2))
    level = max(float(np.percentile(page.flattened[kept], 90)), 1.0)  # the ink's own full strength
    ink = np.clip(page.flattened.astype(np.float32) * (255.0 / level), 0, 255)
    return np.where(mask, np.rint(ink), 0).astype(np.uint8)


def digit_image(image: np.ndarray, *, strict: bool = True) -> np.ndarray:
    """The 28x28 model input for one white-on-black image of a single digit.

    Args:
        image: 2-D uint8, ink bright on black.
        strict: raise for an image without a digit or with several; else return
            the best guess (all black when there is no ink), as a dataset needs.

    Raises:
        NoDigitError: no digit found (blank paper, only lines, an empty box).
        SeveralDigitsError: two or more digits side by side.
    """
    stages = run_frontend(image)
    if strict:
        check_single(stages.digit, stages.page.scale)
    return stages.final


def check_single(digit: Digit, scale: float = 1.0) -> None:
    """Raise unless exactly one digit was found, large enough to be one (messages for `predict`'s per-file errors).

    Args:
        digit: what `find_digit` decided.
        scale: the page's working size / input size (`Page.scale`): the ink's extent is judged in input pixels.
    """
    if digit.count == 0:
        raise NoDigitError("no digit found (blank, or only lines or an empty box)")
    if digit.count > 1:
        raise SeveralDigitsError(
            f"{digit.count} digits side by side, expected one; `lenet-edge read` reads a row of digits"
        )
    rows, cols = np.flatnonzero(digit.kept.any(axis=1)), np.flatnonzero(digit.kept.any(axis=0))
    if rows.size:
        height, width = (round((v[-1] - v[0] + 1) / scale) for v in (rows, cols))
        if max(height, width) < MIN_INK_EXTENT:
            raise NoDigitError(
                f"too small to be a digit: its ink spans {width} x {height} px "
                f"(a digit needs at least {MIN_INK_EXTENT} px of height or width)"
            )


def digit_images(images, progress=None) -> np.ndarray:
    """`digit_image(strict=False)` over a sequence: `(N, 28, 28)` uint8 (a dataset's images)."""
    out = []
    for image in images:
        out.append(digit_image(image, strict=False))
        if progress and len(out) % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    if progress and len(out) % PROGRESS_EVERY:
        progress(len(out) % PROGRESS_EVERY)
    return np.stack(out) if out else np.zeros((0, CANVAS, CANVAS), np.uint8)
