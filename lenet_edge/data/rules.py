"""What is not handwriting on a page: ruled lines, grids, comb fields, table borders and box frames.

The front end's second step (`frontend.clean_page`): long thin straight runs
(morphological openings with line kernels at a few angles off each axis) and
closed quadrilateral frames (by their contour) are found and removed, keeping
the pixels where a pen stroke crosses them; on an image that is already clean,
they decide whether a rule or a box surrounds the digit at all.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

LINE_FRACTION = 0.35  # a rule is a straight run at least this fraction of the image's width (or height) ...
MIN_LINE_PX = 30  # ... and at least this long, px
LINE_ASPECT = 12.0  # ... and at least this many times longer than thick (a pen stroke is far stubbier)
LINE_ANGLES = tuple(range(-8, 9, 2))  # degrees off horizontal/vertical tried: rotated photos and perspective
HOLLOW = 0.9  # a box frame, with the digit inside it, covers less than this fraction of its area
SPAN = 0.9  # on a clean image, a rule crosses at least this fraction of it, ...
EDGE_CLEARANCE = 3  # px of background between that ink and the image's edges (a tight crop has none)
REST_FRACTION = 0.2  # on a clean image, rules need at least this share of the ink left beside them ...
RULE_OVER_DIGIT = 1.5  # ... and to be this many times longer than that ink's extent
LONE_RULE_FRACTION = 0.5  # a straight run alone in its direction is a rule only when at least this long
RESIDUE_FRACTION = 0.08  # ink left touching a removed rule and smaller than this fraction of the largest: its stub


def box_frames(mask: np.ndarray) -> tuple[np.ndarray, float]:
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


def _spanning(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The components of `mask` (stats) and which of them cross `SPAN` of the image's width or height."""
    _, _, stats = _components(mask)
    h, w = mask.shape
    return stats, (stats[:, cv2.CC_STAT_WIDTH] >= SPAN * w) | (stats[:, cv2.CC_STAT_HEIGHT] >= SPAN * h)


def _could_span(mask: np.ndarray) -> bool:
    """Could a component of `mask` cross `SPAN` of it (`_spanning`)? Without labelling it: a connected
    component covers an unbroken run of columns and one of rows, so one that crosses needs a run of inked
    columns (or rows) that long. On a line of spaced digits neither exists, and the labelling is not needed."""
    h, w = mask.shape
    return _longest_run(mask.any(axis=0)) >= SPAN * w or _longest_run(mask.any(axis=1)) >= SPAN * h


def _longest_run(flags: np.ndarray) -> int:
    """The length of the longest run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], flags, [False]]).astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def frames_a_digit(ink: np.ndarray) -> bool:
    """On a clean image, are there straight runs that are rules around a digit, not the digit's own strokes?

    A scanned ۱ is one long straight run, and a tight crop of a ۲ has a stem
    from edge to edge: runs count as rules only when they cross the whole
    image, and what remains without them is substantial ink clear of the
    image's edges and clearly shorter than they are (a digit in a box or
    between lines on a scanned form). When no ink component crosses the image,
    no rule can (a rule lies inside one), and the rule search, ~100x dearer on
    a wide line of digits, is skipped.
    """
    if not _could_span(ink) or not _spanning(ink)[1].any():
        return False
    lines = np.logical_or(*find_rules(ink)[:2])
    if not lines.any():
        return False
    stats, spans = _spanning(lines)
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


def find_rules(ink: np.ndarray, weak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
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
        lines, width = _without_a_lone_stroke(lines, width, vertical, side)
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


def _without_a_lone_stroke(
    lines: np.ndarray, widths: list[float], vertical: bool, side: int
) -> tuple[np.ndarray, list[float]]:
    """Drop a run that is alone in its direction and shorter than `LONE_RULE_FRACTION` of the side.

    Rules come in families (ruled paper, grids, a comb field's base line and
    ticks) or cross most of the page (a table border); the one straight run
    that does neither is a pen stroke: the long stem of a ۱ or a ۹.
    """
    n, _, stats = _components(lines)
    if n != 2:
        return lines, widths
    length = stats[0, cv2.CC_STAT_HEIGHT if vertical else cv2.CC_STAT_WIDTH]
    if length >= LONE_RULE_FRACTION * side:
        return lines, widths
    return np.zeros_like(lines), []


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


def remove_rules(ink: np.ndarray, horizontal: np.ndarray, vertical: np.ndarray, thickness: float) -> np.ndarray:
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


def drop_residues(ink: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Drop the small leftovers of removed rules (a frame's corner, a tick's stub): small and touching a rule."""
    n, labels, stats = _components(ink)
    if n <= 1:
        return ink
    areas = stats[:, cv2.CC_STAT_AREA]
    touching = np.zeros(n, bool)
    touching[np.unique(labels[cv2.dilate(lines.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)])] = True
    residue = touching & np.concatenate([[False], areas < RESIDUE_FRACTION * areas.max()])
    return ink & ~residue[labels]
