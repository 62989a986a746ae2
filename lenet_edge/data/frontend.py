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

OpenCV does the image work (median, morphology, Otsu, connected components).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import DataError
from .preprocess import CANVAS, INK_THRESHOLD, PROGRESS_EVERY, preprocess

FRONTEND_VERSION = 1  # part of a folder dataset's cache key: a change re-reads photos, never clean images
WORK_PIXELS = 250_000  # larger photos are shrunk to this many pixels first: a digit in a photo stays > 80 px
CLEAN_BACKGROUND_MAX = 8.0  # mean of the non-ink pixels at most this => the background is already black
MIN_CONTRAST = 48  # flattened ink level (0-255) below which nothing counts as ink, whatever Otsu says
BACKGROUND_FRACTION = 3  # median window = longer side / this: wider than any blob of ink, so it sees the paper
LINE_FRACTION = 0.35  # a rule is a straight run at least this fraction of the image's width (or height) ...
MIN_LINE_PX = 30  # ... and at least this long, px
LINE_ASPECT = 12.0  # ... and at least this many times longer than thick (a pen stroke is far stubbier)
LINE_ANGLES = tuple(range(-8, 9, 2))  # degrees off horizontal/vertical tried: rotated photos and perspective
HOLLOW = 0.9  # a box frame, with the digit inside it, covers less than this fraction of its area
SPAN = 0.9  # on a clean image, a rule crosses at least this fraction of it, ...
EDGE_CLEARANCE = 3  # px of background between that ink and the image's edges (a tight crop has none)
REST_FRACTION = 0.2  # on a clean image, rules need at least this share of the ink left beside them ...
RULE_OVER_DIGIT = 1.5  # ... and to be this many times longer than that ink's extent
RESIDUE_FRACTION = 0.08  # ink left touching a removed rule and smaller than this fraction of the largest: its stub
SPECK_FRACTION = 0.04  # a component smaller than this fraction of the largest is a speck
MAIN_FRACTION = 0.25  # components at least this fraction of the largest may be "the digit"
MERGE_GAP = 0.3  # pieces within this fraction of the digit's size of it are the same digit
NEIGHBOUR_FRACTION = 0.3  # a second component this large (of the digit's area) beside it is another digit
NEIGHBOUR_HEIGHT = 0.5  # ... and at least this fraction of the digit's height ...
SIDE_GAP = 0.08  # ... and this far to its side, as a fraction of the height (a ۸ in two strokes is not two digits)
MIN_DIGIT_FRACTION = 0.04  # on a photo, a digit's longer side is at least this fraction of the page's shorter side


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
    scale: float  # working size / input size (1.0 unless the input was larger than WORK_PIXELS)
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
    if _background_is_black(image, ink) and not _box_frames(ink)[0].any():
        if not _spans_image(ink) or not _frames_a_digit(ink, np.logical_or(*_rules(ink)[:2])):
            return Page(image, ink, np.zeros_like(ink), 1.0, True, INK_THRESHOLD)
    scale = min(1.0, math.sqrt(WORK_PIXELS / image.size))
    if scale < 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if np.median(image) > 127:  # mostly bright: dark ink on paper that the border test took for a scan
        image = 255 - image
    flattened = flatten(image)
    otsu, _ = cv2.threshold(flattened, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = max(int(otsu), MIN_CONTRAST)
    ink = flattened > threshold
    weak = flattened > threshold // 2
    horizontal, vertical, thickness = _rules(ink, weak)
    frames, frame_thickness = _box_frames(weak)
    if frames.any():  # a frame's sides, each by its direction (the corners in both)
        side = np.ones((1, 2 * math.ceil(frame_thickness) + 9), np.uint8)
        horizontal |= cv2.morphologyEx(frames.astype(np.uint8), cv2.MORPH_OPEN, side).astype(bool) & weak
        vertical |= cv2.morphologyEx(frames.astype(np.uint8), cv2.MORPH_OPEN, side.T).astype(bool) & weak
        thickness = max(thickness, frame_thickness)
    lines = horizontal | vertical
    if lines.any():
        ink = _drop_residues(_remove_rules(ink, horizontal, vertical, thickness), lines)
    return Page(flattened, ink, lines & ~ink, scale, False, threshold)


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


def _background_is_black(image: np.ndarray, ink: np.ndarray) -> bool:
    """A scan or dataset image: what is not ink is (nearly) pure black, unlike any photo of paper."""
    background = image[~ink]
    return background.size == 0 or float(background.mean()) <= CLEAN_BACKGROUND_MAX


def _box_frames(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Closed quadrilateral frames (a form's box around the digit, whatever its size) and their thickness, px.

    A frame is a component whose outer contour is a convex quadrilateral
    (within 2% of its perimeter), filling its minimum-area rectangle, and
    hollow: ink covers under `HOLLOW` of it, even with a digit touching it inside.
    """
    found = np.zeros(mask.shape, np.uint8)
    widths = []
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        perimeter = cv2.arcLength(contour, True)
        if perimeter < 4 * MIN_LINE_PX // 2:
            continue
        quad = cv2.approxPolyDP(contour, max(2.0, 0.02 * perimeter), True)
        if len(quad) != 4 or not cv2.isContourConvex(quad):
            continue
        (_, _), (w, h), _ = cv2.minAreaRect(contour)
        area = cv2.contourArea(quad)
        if area < 0.9 * w * h:
            continue
        inside = np.zeros_like(found)
        cv2.drawContours(inside, [quad], -1, 1, cv2.FILLED)
        covered = float((mask & inside.astype(bool)).sum())
        if covered >= HOLLOW * area:
            continue
        # The frame's thickness: twice the largest distance to paper along its outline (a digit inside adds none).
        outline = np.zeros_like(found)
        reach = max(3, round(0.1 * min(w, h)))
        cv2.drawContours(outline, [quad], -1, 1, reach)
        depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)[outline.astype(bool) & mask]
        thickness = min(2.0 * float(np.percentile(depth, 90)) if depth.size else 1.0, reach)
        cv2.drawContours(found, [quad], -1, 1, 2 * math.ceil(thickness) + 3)
        widths.append(thickness)
    return found.astype(bool), max(widths, default=0.0)


def _spans_image(ink: np.ndarray) -> bool:
    """Does some ink component cross `SPAN` of the image? If none does, no rule can (a rule is in one).

    The cheap test first: the rule search's openings cost ~100x more on a wide line of digits.
    """
    _, _, stats = _components(ink)
    return bool(
        (
            (stats[:, cv2.CC_STAT_WIDTH] >= SPAN * ink.shape[1]) | (stats[:, cv2.CC_STAT_HEIGHT] >= SPAN * ink.shape[0])
        ).any()
    )


def _frames_a_digit(ink: np.ndarray, lines: np.ndarray) -> bool:
    """On a clean image, are the straight runs rules around a digit, or the digit's own strokes?

    A scanned ۱ is one long straight run, and a tight crop of a ۲ has a stem
    from edge to edge: runs count as rules only when they cross the whole
    image, and what remains without them is substantial ink clear of the
    image's edges and clearly shorter than they are (a digit in a box or
    between lines on a scanned form).
    """
    if not lines.any():
        return False
    _, _, stats = _components(lines)
    spans = (stats[:, cv2.CC_STAT_WIDTH] >= SPAN * ink.shape[1]) | (stats[:, cv2.CC_STAT_HEIGHT] >= SPAN * ink.shape[0])
    if not spans.any():
        return False
    rest = ink & ~cv2.dilate(lines.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    # Ruled paper may hold far more rule than digit; one lone run must leave a real digit beside it.
    if not rest.any() or (spans.sum() < 2 and rest.sum() < REST_FRACTION * ink.sum()):
        return False
    rows, cols = np.flatnonzero(rest.any(axis=1)), np.flatnonzero(rest.any(axis=0))
    h, w = ink.shape
    if min(rows[0], cols[0], h - 1 - rows[-1], w - 1 - cols[-1]) < EDGE_CLEARANCE:
        return False
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    longest = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]).max()
    return float(longest) >= RULE_OVER_DIGIT * extent


def _line_kernel(length: int, degrees: float, vertical: bool) -> np.ndarray:
    """A one-pixel digital line of `length` px at `degrees` off the axis, as a morphology kernel."""
    half = length // 2
    dx, dy = half * math.cos(math.radians(degrees)), half * math.sin(math.radians(degrees))
    if vertical:
        dx, dy = dy, dx
    w, h = 2 * math.ceil(abs(dx)) + 1, 2 * math.ceil(abs(dy)) + 1
    kernel = np.zeros((h, w), np.uint8)
    cx, cy = w // 2, h // 2
    cv2.line(kernel, (round(cx - dx), round(cy - dy)), (round(cx + dx), round(cy + dy)), 1)
    return kernel


def _rules(ink: np.ndarray, weak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Long, thin, straight runs (ruled lines, frames, borders): horizontal and vertical pixels, typical thickness.

    Runs are sought in `weak` (a lower threshold, where a faint 1-px line is not
    yet broken into dashes); a shorter run joined to a rule and as thin (a box's
    short side, a comb field's tick) is a rule too.
    """
    mask = (ink if weak is None else weak).astype(np.uint8)
    found = [np.zeros_like(mask), np.zeros_like(mask)]  # horizontal, vertical
    widths = []
    for vertical in (False, True):
        side = ink.shape[0] if vertical else ink.shape[1]
        length = max(MIN_LINE_PX, round(LINE_FRACTION * side))
        if length > side:
            continue
        lines, width = _thin(_runs(mask, length, vertical, weak is not None), vertical, mask)
        found[vertical] |= lines
        widths += width
    if not widths:
        return found[0].astype(bool), found[1].astype(bool), 0.0
    thickness = float(np.median(widths))
    both = found[0] | found[1]
    for vertical in (False, True):
        short = max(MIN_LINE_PX // 2, round(LINE_FRACTION * (ink.shape[0] if vertical else ink.shape[1]) / 3))
        runs = _runs(mask, short, vertical, weak is not None)
        found[vertical] |= _attached(runs & ~both, both, thickness, mask)
    return found[0].astype(bool), found[1].astype(bool), thickness


def _runs(mask: np.ndarray, length: int, vertical: bool, bridge: bool = True) -> np.ndarray:
    """Pixels on a straight run of `length` px at any of `LINE_ANGLES` (a union of openings).

    A faint 1-px rule off the axis breaks into a staircase of dashes once
    binarized: the mask is first thickened across the run and its small gaps
    along it closed, so the opening still finds it whole.
    """
    bridged = mask
    if bridge:
        across, along = ((1, 3), (5, 1)) if vertical else ((3, 1), (1, 5))  # kernel shapes: (rows, columns)
        bridged = cv2.dilate(mask, np.ones(across, np.uint8))
        bridged = cv2.morphologyEx(bridged, cv2.MORPH_CLOSE, np.ones(along, np.uint8))
    runs = np.zeros_like(mask)
    for degrees in LINE_ANGLES:
        runs |= cv2.morphologyEx(bridged, cv2.MORPH_OPEN, _line_kernel(length, degrees, vertical))
    return runs


def _components(mask: np.ndarray):
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return n, labels, stats[1:]


def _thin(runs: np.ndarray, vertical: bool, mask: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The straight runs much longer than thick (a thick stroke of a large digit is not a rule), and their widths.

    A run's width is its ink in `mask` over its length (the runs themselves were thickened to be found).
    """
    n, labels, stats = _components(runs)
    if n <= 1:
        return runs, []
    lengths = stats[:, cv2.CC_STAT_HEIGHT if vertical else cv2.CC_STAT_WIDTH].astype(np.float64)
    widths = np.bincount(labels[mask.astype(bool)], minlength=n)[1:] / lengths
    thin = lengths >= LINE_ASPECT * widths
    return np.concatenate([[False], thin])[labels].astype(np.uint8), list(widths[thin])


def _attached(runs: np.ndarray, rules: np.ndarray, thickness: float, mask: np.ndarray) -> np.ndarray:
    """Shorter runs that touch a rule and are no thicker (in `mask`) than the rules."""
    n, labels, stats = _components(runs)
    if n <= 1:
        return np.zeros_like(runs)
    touching = np.unique(labels[cv2.dilate(rules, np.ones((3, 3), np.uint8)).astype(bool)])
    lengths = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]).astype(np.float64)
    thin = np.bincount(labels[mask.astype(bool)], minlength=n)[1:] / lengths <= thickness + 1
    keep = np.concatenate([[False], thin]) & np.isin(np.arange(n), touching)
    keep[0] = False
    return keep[labels].astype(np.uint8)


def _remove_rules(ink: np.ndarray, horizontal: np.ndarray, vertical: np.ndarray, thickness: float) -> np.ndarray:
    """Ink without the rules, except where a stroke crosses one.

    A stroke crossing a horizontal rule reaches further up and down than the
    rule is thick (a vertical opening longer than the thickness keeps it), and
    one crossing a vertical rule further left and right: such pixels stay.
    """
    grow = np.ones((3, 3), np.uint8)
    across = math.ceil(thickness) + 4
    mask = ink.astype(np.uint8)
    tall = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((across, 1), np.uint8)).astype(bool)
    wide = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((1, across), np.uint8)).astype(bool)
    off = cv2.dilate(horizontal.astype(np.uint8), grow).astype(bool) & ~tall
    off |= cv2.dilate(vertical.astype(np.uint8), grow).astype(bool) & ~wide
    return ink & ~off


def _drop_residues(ink: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Drop the small leftovers of removed rules (a frame's corner, a tick's stub): small and touching a rule."""
    n, labels, stats = _components(ink)
    if n <= 1:
        return ink
    areas = stats[:, cv2.CC_STAT_AREA]
    touching = np.zeros(n, bool)
    touching[np.unique(labels[cv2.dilate(lines.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)])] = True
    residue = touching & np.concatenate([[False], areas < RESIDUE_FRACTION * areas.max()])
    return ink & ~residue[labels]


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
        check_single(stages.digit)
    return stages.final


def check_single(digit: Digit) -> None:
    """Raise unless exactly one digit was found (messages for `predict`'s per-file errors)."""
    if digit.count == 0:
        raise NoDigitError("no digit found (blank, or only lines or an empty box)")
    if digit.count > 1:
        raise SeveralDigitsError(
            f"{digit.count} digits side by side, expected one; `lenet-edge read` reads a row of digits"
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


def save_explain(stages: Stages, target) -> None:
    """One PNG with the stages side by side: flattened, binarized (rules removed in red), kept, final 28x28.

    Dropped ink (specks, other marks) shows grey in the "kept" panel.
    """
    from PIL import Image, ImageDraw

    from ..fileio import atomic_path

    side = 224  # px per panel
    page, kept = stages.page, stages.digit.kept
    binarized = np.stack([page.ink * 255] * 3, axis=-1).astype(np.uint8)
    binarized[page.removed] = (220, 40, 40)
    chosen = np.where(kept, 255, np.where(page.ink, 90, 0)).astype(np.uint8)
    panels = [("flattened", page.flattened), ("binarized", binarized), ("kept", chosen), ("final 28x28", stages.final)]
    sheet = Image.new("RGB", (side * len(panels), side + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (title, pixels) in enumerate(panels):
        panel = Image.fromarray(pixels).convert("RGB")
        panel.thumbnail((side, side), Image.Resampling.NEAREST if pixels.shape[0] <= side else Image.Resampling.BOX)
        if max(panel.size) < side:  # small images (the 28x28) are enlarged, pixels kept square
            factor = side / max(panel.size)
            size = (max(1, round(panel.width * factor)), max(1, round(panel.height * factor)))
            panel = panel.resize(size, Image.Resampling.NEAREST)
        sheet.paste(panel, (k * side + (side - panel.width) // 2, 20 + (side - panel.height) // 2))
        draw.text((k * side + 4, 4), title, fill="black")
    with atomic_path(target, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
