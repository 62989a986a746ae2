"""Segmentation: the digits of one handwritten number, left to right.

`segment(gray, ink, score)` takes a white-on-black grayscale image and its ink
mask (today `gray > INK_THRESHOLD` after `load_image`'s polarity step) and
returns one `Segment` per digit, ordered left to right: Persian numbers are
written most significant digit first from the left, also inside right-to-left
text. The steps:

1. connected components of the ink (`scipy.ndimage.label`, 8-connected);
2. the line's ink height H: the median component height, weighted by area, so
   neither specks nor the small ۰ move it;
3. specks dropped: components smaller than `speck_area * H^2`;
4. pieces of one digit merged: components whose horizontal extents overlap by
   at least `merge_overlap` of the narrower one (a broken stroke);
5. a small group (lower than `small_height * H`) is kept only when it sits in
   the middle of the line: that is ۰, written as a dot or a ring about a third
   of the others' height at mid-line. A small mark above or below is dropped;
6. touching digits split: a group wider than `split_width * H` gets a few
   candidate cut columns (minima of its vertical ink projection). Every column
   range between two cuts is classified (one batched `score` call for the
   whole image) and the cuts that maximise the product of the pieces'
   confidences win, by dynamic programming over the cut points. Without
   `score`, a group is cut at its deepest minima only when wider than
   `max_width * H`.

Each segment's crop keeps only its own ink (a neighbour's stroke inside its
box is blanked), ready for `preprocess`, exactly as a digit for `predict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .data.preprocess import preprocess

Score = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) uint8 preprocessed digits -> (N, 10) probabilities
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity: a diagonal step of a thin stroke stays one component


@dataclass(frozen=True)
class SegmentConfig:
    """Thresholds of the segmentation, as fractions of the line's ink height H."""

    speck_area: float = 0.01  # a component below speck_area * H^2 px is a speck (a ۰ dot is ~0.08 H^2)
    small_height: float = 0.55  # a group lower than this * H is small: kept only at mid-line (a ۰)
    mid_band: float = 0.3  # a small group's centre must lie within this * H of the line's middle
    merge_overlap: float = 0.5  # horizontal overlap, as a fraction of the narrower piece, that makes one digit
    split_width: float = 0.45  # groups wider than this * H are tried with cuts (۱ + ۱ touching is ~0.55 H)
    max_width: float = 1.5  # no single digit is wider than this * H (Hoda's widest: ~1.4 H)
    min_piece: float = 0.1  # a cut leaves pieces at least this * H wide
    max_cuts: int = 6  # candidate cut columns per group
    max_pieces: int = 4  # digits one touching group may hold
    piece_penalty: float = 0.7  # each extra piece multiplies a hypothesis' score by this: cut only when it pays


@dataclass(frozen=True, eq=False)
class Segment:
    """One digit found in the image."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels (x1, y1 exclusive)
    crop: np.ndarray  # the box of the grayscale image, white on black, other segments' ink blanked
    image: np.ndarray  # crop after `preprocess`: (28, 28) uint8, the model's input
    probs: np.ndarray | None = None  # `score`'s (10,) output for `image`, when a score was given


@dataclass
class _Group:
    """Components taken as one digit (or as touching digits, before splitting)."""

    labels: list[int]
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def ink_height(heights: np.ndarray, areas: np.ndarray) -> float:
    """Area-weighted median of component heights: the height of the line's ordinary digits."""
    order = np.argsort(heights, kind="stable")
    cumulative = np.cumsum(areas[order])
    return float(heights[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def segment(
    gray: np.ndarray, ink: np.ndarray, score: Score | None = None, config: SegmentConfig = SegmentConfig()
) -> list[Segment]:
    """The digits of the number in `gray`, left to right (see the module docstring).

    Args:
        gray: 2-D uint8 image, white ink on black.
        ink: boolean mask of the ink, the same shape.
        score: classifies preprocessed digits; chooses where touching digits are cut.
        config: the thresholds.

    Returns:
        One `Segment` per digit, left to right; empty when there is no ink or only specks.
    """
    if gray.shape != ink.shape or gray.ndim != 2:
        raise ValueError(f"gray {gray.shape} and ink {ink.shape} must be 2-D and of the same shape")
    labels, n = ndimage.label(ink, structure=_EIGHT)
    if n == 0:
        return []
    slices = ndimage.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices])  # (n, 4) x0 y0 x1 y1
    height = ink_height(boxes[:, 3] - boxes[:, 1], areas)
    kept = np.flatnonzero(areas >= config.speck_area * height * height)
    groups = _keep_small_at_mid_line(_merge(boxes, kept, config), height, config)

    pieces: list[tuple[_Group, list[int]]] = []  # group, its cut columns (start, cuts..., end)
    for group in groups:
        cuts = _candidate_cuts(labels, group, height, config) if group.width > config.split_width * height else []
        if score is None:
            cuts = _deepest_cuts(labels, group, height, config) if group.width > config.max_width * height else []
        pieces.append((group, [group.x0, *cuts, group.x1]))

    # every column range between two cut points, of every group: one batch for `score`
    ranges = [(g, a, b) for g, points in pieces for i, a in enumerate(points) for b in points[i + 1 :]]
    crops = {(id(g), a, b): _crop(gray, ink, labels, g, a, b, height, config) for g, a, b in ranges}
    images = {key: preprocess(crop) for key, (crop, _) in crops.items()}
    probs = {}
    if score is not None and images:
        keys = list(images)
        scored = np.asarray(score(np.stack([images[k] for k in keys])), np.float64)
        probs = dict(zip(keys, scored, strict=True))

    segments = []
    for group, points in pieces:
        chosen = _best_cuts(group, points, probs, height, config) if score is not None else points
        for a, b in zip(chosen, chosen[1:]):  # noqa: B905 (pairs of consecutive points)
            crop, box = crops[(id(group), a, b)]
            segments.append(Segment(box, crop, images[(id(group), a, b)], probs.get((id(group), a, b))))
    return sorted(segments, key=lambda s: (s.box[0] + s.box[2]) / 2)


def _merge(boxes: np.ndarray, kept: np.ndarray, config: SegmentConfig) -> list[_Group]:
    """Components whose column ranges overlap enough become one group; groups sorted by x0."""
    groups: list[_Group] = []
    for i in sorted(kept, key=lambda i: boxes[i, 0]):
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        for group in groups:
            overlap = min(group.x1, x1) - max(group.x0, x0)
            if overlap > 0 and overlap >= config.merge_overlap * min(group.width, x1 - x0):
                group.labels.append(int(i) + 1)
                group.x0, group.y0 = min(group.x0, x0), min(group.y0, y0)
                group.x1, group.y1 = max(group.x1, x1), max(group.y1, y1)
                break
        else:
            groups.append(_Group([int(i) + 1], x0, y0, x1, y1))
    return groups


def _keep_small_at_mid_line(groups: list[_Group], height: float, config: SegmentConfig) -> list[_Group]:
    """Drop small groups away from the line's middle; a small one at mid-line is a ۰."""
    tall = [g for g in groups if g.height >= config.small_height * height]
    if not tall:  # a number of zeros only: every group is of the line's own height
        return groups
    kept = []
    for group in groups:
        if group.height < config.small_height * height:
            # the line's middle near this group: from the nearest tall groups, so a wavy baseline is followed
            near = sorted(tall, key=lambda g: abs((g.x0 + g.x1) - (group.x0 + group.x1)))[:2]
            middle = float(np.mean([(g.y0 + g.y1) / 2 for g in near]))
            if abs((group.y0 + group.y1) / 2 - middle) > config.mid_band * height:
                continue
        kept.append(group)
    return kept


def _projection(labels: np.ndarray, group: _Group) -> np.ndarray:
    """Ink pixels of the group per column of its box."""
    window = labels[group.y0 : group.y1, group.x0 : group.x1]
    return np.isin(window, group.labels).sum(axis=0)


def _candidate_cuts(labels: np.ndarray, group: _Group, height: float, config: SegmentConfig) -> list[int]:
    """Up to `max_cuts` columns at local minima of the ink projection, lowest first, spaced apart."""
    profile = _projection(labels, group).astype(np.float64)
    smooth = np.convolve(np.pad(profile, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    margin = max(1, round(config.min_piece * height))
    inner = np.arange(margin, group.width - margin + 1)
    if inner.size == 0:
        return []
    left = smooth[np.clip(inner - 1, 0, None)]
    right = smooth[np.clip(inner, 0, group.width - 1)]
    # a cut at column c separates columns < c from >= c: rate it by the lower of the two columns it falls between
    depth = np.minimum(left, right)
    is_min = np.r_[True, depth[1:] <= depth[:-1]] & np.r_[depth[:-1] <= depth[1:], True]
    cuts: list[int] = []
    for c in inner[is_min][np.argsort(depth[is_min], kind="stable")]:
        if all(abs(c - d) >= margin for d in cuts):
            cuts.append(int(c))
        if len(cuts) == config.max_cuts:
            break
    return sorted(group.x0 + c for c in cuts)


def _deepest_cuts(labels: np.ndarray, group: _Group, height: float, config: SegmentConfig) -> list[int]:
    """Without a classifier: cut a too-wide group into round(width / H) pieces at its lowest minima."""
    count = min(config.max_pieces, max(2, round(group.width / height))) - 1
    candidates = _candidate_cuts(labels, group, height, config)
    lowest = sorted(candidates, key=lambda c: _projection(labels, group)[c - group.x0])[:count]
    return sorted(lowest)


def _best_cuts(
    group: _Group, points: list[int], probs: dict, height: float, config: SegmentConfig
) -> list[int]:
    """The cut points (ends included) whose pieces' product of confidences, with a penalty per piece, is highest.

    Dynamic programming over the points: best[j] = max over i < j of best[i] * conf(i, j) * penalty.
    A piece wider than `max_width * H` is allowed only when it is the whole group (nothing better exists).
    """
    n = len(points)
    best = [0.0] + [-1.0] * (n - 1)
    back = [0] * n
    pieces = [0] * n
    for j in range(1, n):
        for i in range(j):
            if best[i] < 0 or pieces[i] >= config.max_pieces:
                continue
            width = points[j] - points[i]
            if width > config.max_width * height and not (i == 0 and j == n - 1):
                continue
            conf = float(probs[(id(group), points[i], points[j])].max())
            value = (1.0 if i == 0 else best[i] * config.piece_penalty) * conf
            if value > best[j]:
                best[j], back[j], pieces[j] = value, i, pieces[i] + 1
    chosen, j = [points[-1]], n - 1
    while j > 0:
        j = back[j]
        chosen.append(points[j])
    return chosen[::-1]


def _crop(
    gray: np.ndarray,
    ink: np.ndarray,
    labels: np.ndarray,
    group: _Group,
    a: int,
    b: int,
    height: float,
    config: SegmentConfig,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The group's ink in columns [a, b), cropped to its own box, with every other ink pixel blanked.

    A vertical cut can leave a sliver of the neighbour's stroke in a piece; slivers smaller than a
    speck are dropped so they do not stretch the piece's box.
    """
    window = labels[group.y0 : group.y1, a:b]
    own = np.isin(window, group.labels)
    if (a, b) != (group.x0, group.x1):
        parts, n = ndimage.label(own, structure=_EIGHT)
        if n > 1:
            sizes = np.bincount(parts.ravel())
            sizes[0] = 0
            big = sizes >= max(config.speck_area * height * height, 0.2 * sizes.max())
            own = big[parts]
    rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
    if rows.size == 0:  # cannot happen for a cut at a projection minimum inside the group, but stay total
        rows, cols = np.arange(own.shape[0]), np.arange(own.shape[1])
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    y0, x0 = group.y0 + r0, a + c0
    crop = gray[y0 : group.y0 + r1, x0 : a + c1].copy()
    crop[ink[y0 : group.y0 + r1, x0 : a + c1] & ~own[r0:r1, c0:c1]] = 0
    return crop, (int(x0), int(y0), int(a + c1), int(group.y0 + r1))
