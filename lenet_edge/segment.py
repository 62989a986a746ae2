"""Segmentation: the digits of one handwritten number, left to right.

`segment(gray, ink, score)` takes a white-on-black grayscale image and its ink
mask (today `gray > INK_THRESHOLD` after `load_image`'s polarity step) and
returns one `Segment` per digit, ordered left to right: Persian numbers are
written most significant digit first from the left, also inside right-to-left
text. The steps:

1. connected components of the ink (8-connected);
2. the line's ink height H: the median component height, weighted by area, so
   neither specks nor the small ۰ move it (a line lower than `min_height` px is
   dust: no digits);
3. specks dropped: components smaller than `speck_area * H^2`;
4. pieces of one digit merged: components whose horizontal extents overlap by
   at least `merge_overlap` of the narrower one (a broken stroke); and a speck
   within `speck_reach * H` of one group's ink (and no other's) joins it: the
   hook of a ۲ that the scan broke off is not dropped, leaving a ۱;
5. a small group (lower than `small_height * H`) is kept only when it sits
   within `mid_band * H` of the line's middle: that is ۰, written as a dot or a
   ring about a third of the others' height at mid-line. A small mark above or
   below the line, or lower than any ۰, is dropped, unless a classifier is
   given and it lies within `attach_gap * H` of a digit (or of a mark so kept):
   then it is a fragment of that digit (a ۳'s tooth, a ۴'s hook), which step 6
   joins to its neighbour or drops, never a digit alone;
6. touching digits split: every group is first classified whole (one batched
   `score` call); a group wider than `split_width * H` that is not read surely
   (`sure_whole`) is cut at a few candidate columns (minima of its vertical
   ink projection, columns where the ink's height jumps, as where a ۰
   touches a tall neighbour, and valleys of its contour), each moved to the
   nearby column boundary the fewest strokes cross (`refine_cuts`), into
   atoms. Every run of consecutive atoms that could be one digit (within a
   group, across two groups overlapping by `join_overlap * H`, or, with a
   verifier, across two groups much closer than the number's digits are
   spaced: `join_gap`) is preprocessed and classified, all in a second
   batched call (with a piece verifier, it goes first, and a piece it rules
   out, below `ruled_out`, is not shown to the digit model); dynamic
   programming then picks the runs covering every atom whose confidences,
   each weighted by a shape check (`plausible`), have the highest product.
   Without `score`, a group is cut at its deepest minima only when wider
   than `max_width * H`;
7. the segments, ordered by the centres of their boxes.

Each segment's crop keeps only its own ink (a neighbour's stroke inside its
box is blanked), ready for `preprocess`, exactly as a digit for `predict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise

import cv2
import numpy as np

from .data.preprocess import NUM_CLASSES, preprocess
from .shapes import IMPLAUSIBLE, ZERO_MIN_HEIGHT, shape_weights

Score = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) uint8 preprocessed digits -> (N, 10) probabilities
Verify = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) uint8 preprocessed pieces -> (N,) P(exactly one digit)
_FLOOR = 1e-6  # probabilities are clipped to this before their log: an int8 model's 0 is "below its resolution"


@dataclass(frozen=True)
class SegmentConfig:
    """Thresholds of the segmentation, as fractions of the line's ink height H."""

    min_height: int = 6  # px: a line of ink lower than this is dust (Hoda's smallest ۰ is ~6 px at 200 dpi)
    speck_area: float = 0.02  # a component below this * H^2 px is a speck (99.9% of Hoda's ۰ are larger)
    # ... unless it lies within this * H of one group's ink (and no other's): a piece of that digit's broken
    # stroke (a ۲'s hook), which joins it (0: specks are always dropped); chosen on numbers of Hoda *train* digits
    speck_reach: float = 0.1
    small_height: float = 0.55  # a group lower than this * H is small: kept only at mid-line (a ۰)
    mid_band: float = 0.2  # a small group's centre must lie within this * H of the line's middle
    merge_overlap: float = 0.5  # horizontal overlap, as a fraction of the narrower piece, that makes one digit
    join_overlap: float = 0.1  # two groups overlapping horizontally by this * H may be one digit (a ۸ not closed)
    # ... and, with a piece verifier to judge them, two groups closer than `join_gap * H` may be the broken parts of
    # one digit (a ۰ drawn as two arcs, the stem of a ۴ apart from its hook), where they are also closer than
    # `join_spacing` x the number's median gap between groups: not where the digits themselves nearly touch
    join_gap: float = 0.1
    join_spacing: float = 0.3
    split_width: float = 0.45  # groups wider than this * H are tried with cuts (۱ + ۱ touching is ~0.55 H)
    max_width: float = 1.5  # no single digit is wider than this * H (Hoda's widest: ~1.4 H)
    min_piece: float = 0.15  # a cut leaves pieces at least this * H wide
    cut_spacing: float = 0.25  # candidate cuts at least this * H apart (a ۱ is about 0.25 H wide)
    max_cuts: int = 4  # candidate cut columns per group
    wide: float = 0.8  # a group wider than this * H gets more candidates, closer together:
    wide_max_cuts: int = 8
    wide_cut_spacing: float = 0.15
    extent_jump: float = 0.25  # also cut where the ink's height changes by this * H between columns (0: never)
    aspect_slack: float = 0.0  # stretches shapes.ASPECT_HIGH: wider than a class's widest is two digits touching
    sure_whole: float = 0.88  # a group read as one digit at least this surely is not tried with cuts
    # With a piece verifier (`verify`: P(exactly one digit | piece)), chosen on numbers of Hoda *train* digits
    # (benchmarks/read_numbers.py --split train --set NAME=VALUE; the figures are in benchmarks/NUMBERS.md):
    sure_one: float = 0.5  # ... a group is also only left uncut when the verifier gives it at least this
    # ... a piece the verifier gives less than this is not one digit: not shown to the digit model, and in the
    # dynamic programme as unreadable (on numbers of train digits, 0.01 reads every number as classifying all does,
    # with 14% fewer digit-model calls; 0.02 saves 31% but reads 2 of 1,200 tight numbers differently)
    ruled_out: float = 0.01
    piece_cost: float = -1.5  # log-score each piece costs in the dynamic programme (< 0: a bonus, against merges)
    verified_min_piece: float = 0.1  # min_piece with a verifier: it rejects the slivers a narrower cut can make
    contour_cuts: int = 2  # candidate cuts also at this many valleys of the upper and of the lower contour
    refine_cuts: float = 0.03  # each candidate cut moves to the boundary fewest strokes cross within this * H
    # Broken digits (a tooth of a ۳ or the hook of a ۴ apart from the rest: Hoda's 200 dpi strokes break). With a
    # classifier, a small mark away from the middle of the line within `attach_gap * H` of a digit (a *fragment*)
    # is kept, not dropped, but is never a digit alone: the dynamic programme joins it to its neighbour or drops
    # it for `fragment_cost` (log-score), so that a ۳ is not read as a ۱ without its tooth.
    attach_gap: float = 0.15
    fragment_cost: float = -1.5
    max_marks: int = 200  # more components than this (after specks) is no number: `TooManyMarks`
    # With a line model (`line_model`, used by `reading.read_array`): its own reading of the number replaces the
    # segmentation's when it finds it more likely by more than this log-likelihood (chosen on numbers of the run's
    # validation digits: `benchmarks/read_numbers.py --split val`); its reading with over 1 / (1 + e^-margin) of
    # the probability would overrule any other, so the segmentation is then not run
    line_margin: float = 4.0


class TooManyMarks(ValueError):
    """More separate marks than one handwritten number has (`SegmentConfig.max_marks`)."""

    def __init__(self, count: int):
        super().__init__(f"{count} separate marks")
        self.count = count


@dataclass(frozen=True, eq=False)
class Segment:
    """One digit found in the image."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels (x1, y1 exclusive)
    crop: np.ndarray  # the box of the grayscale image, white on black, other segments' ink blanked
    image: np.ndarray  # crop after `preprocess`: (28, 28) uint8, the model's input
    probs: np.ndarray | None = None  # `score`'s (10,) output for `image`, when a score was given
    one: float | None = None  # the verifier's P(exactly one digit) for `image`, when a verifier was given


@dataclass
class _Group:
    """Components taken as one digit (or as touching digits, before splitting)."""

    labels: list[int]
    x0: int
    y0: int
    x1: int
    y1: int

    mask: np.ndarray | None = None  # (height, width) bool: the group's own ink in its box, once known
    fragment: bool = False  # a small mark off the line's middle beside a digit: part of it, never a digit alone

    def own(self, labels: np.ndarray) -> np.ndarray:
        """The group's ink in its box (computed once)."""
        if self.mask is None:
            box = labels[self.y0 : self.y1, self.x0 : self.x1]
            self.mask = box == self.labels[0] if len(self.labels) == 1 else np.isin(box, self.labels)
        return self.mask

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
    gray: np.ndarray,
    ink: np.ndarray,
    score: Score | None = None,
    config: SegmentConfig = SegmentConfig(),
    verify: Verify | None = None,
    found: tuple | None = None,
) -> list[Segment]:
    """The digits of the number in `gray`, left to right (see the module docstring).

    Args:
        gray: 2-D uint8 image, white ink on black.
        ink: boolean mask of the ink, the same shape.
        score: classifies preprocessed digits; chooses where touching digits are cut.
        config: the thresholds.
        verify: P(exactly one digit) of preprocessed pieces (the piece verifier); with it, each piece
            the dynamic programme weighs scores log P(one) + log P(digit | one) (needs `score`).
        found: `layout(gray, ink, config, fragments=score is not None)` when the caller has it already
            (`read` shares it with the line model); None: worked out here.

    Returns:
        The segments, left to right; empty when there is no ink or only specks
        (ink lower than `min_height` px).

    Raises:
        TooManyMarks: more than `config.max_marks` components besides specks.
    """
    if verify is not None:
        config = verified(config)
    found = found or layout(gray, ink, config, fragments=score is not None)
    if found is None:
        return []
    labels, height, groups, tall = found
    whole: dict[int, tuple] = {}  # id(group) -> (crop, box, image, probs, one) of the group taken as one digit
    for group in groups:
        crop, box = _crop(gray, ink, labels, [(group, group.x0, group.x1)], height, config)
        whole[id(group)] = (crop, box, preprocess(crop), None, None)
    if score is not None and groups:
        # first pass: every group as one digit; a group read surely enough is not cut (most digits). Here the
        # shape is only checked against the range of Hoda's digits, not graded: a surely read group of merely
        # uncommon shape is more often one wide digit than two, and trying it with cuts doubles the time
        batch = np.stack([whole[id(g)][2] for g in groups])
        results = np.asarray(score(batch), np.float64)
        ones = np.asarray(verify(batch), np.float64) if verify is not None else np.full(len(groups), np.nan)
        for group, p, one in zip(groups, results, ones.tolist(), strict=True):
            whole[id(group)] = (*whole[id(group)][:3], p, one)
        boxes_whole = [whole[id(g)][1] for g in groups]
        middles_whole = _middles(tall, [(b[0] + b[2]) / 2 for b in boxes_whole])
        surely = plausible(results, np.array(boxes_whole), height, middles_whole, config, graded=False).max(axis=1)
        sure_one = ones >= config.sure_one if verify is not None else np.ones(len(groups), bool)
        sure = {
            id(g): s >= config.sure_whole and bool(o)
            for g, s, o in zip(groups, surely.tolist(), sure_one.tolist(), strict=True)
        }

    # atoms: the groups, left to right, each cut at its candidate columns into column ranges
    atoms: list[tuple[_Group, int, int]] = []
    for group in groups:
        cuts: list[int] = []
        if score is not None and group.width > config.split_width * height:
            if not sure[id(group)]:
                cuts = _candidate_cuts(labels, group, height, config)
        elif score is None and group.width > config.max_width * height:
            cuts = _deepest_cuts(labels, group, height, config)
        atoms += _atoms_of(labels, group, cuts)
    spans = [(i, i + 1) for i in range(len(atoms))]
    if score is not None:
        spans = _spans(atoms, height, config, _join_limit(groups, height, config) if verify is not None else 0.0)
    crops, images, probs, ones = {}, {}, {}, {}
    for span in spans:
        first, last = atoms[span[0]], atoms[span[1] - 1]
        if first[0] is last[0] and (first[1], last[2]) == (first[0].x0, first[0].x1):  # one whole group: done
            crop, box, image, p, one = whole[id(first[0])]
            crops[span], images[span] = (crop, box), image
            if p is not None:
                probs[span], ones[span] = p, one
        else:
            crops[span] = _crop(gray, ink, labels, atoms[span[0] : span[1]], height, config)
            images[span] = preprocess(crops[span][0])
    chosen = spans
    if score is not None and images:
        todo = [span for span in spans if span not in probs]
        if todo and verify is not None:  # second pass: the pieces of the groups that may hold touching digits
            ones.update(
                zip(todo, np.asarray(verify(np.stack([images[s] for s in todo])), np.float64).tolist(), strict=True)
            )
            probs.update((s, np.zeros(NUM_CLASSES)) for s in todo if ones[s] < config.ruled_out)  # no digit at all
            todo = [s for s in todo if s not in probs]
        if todo:  # the digit model: one batch
            probs.update(zip(todo, np.asarray(score(np.stack([images[s] for s in todo])), np.float64), strict=True))
        boxes_of = {span: box for span, (_, box) in crops.items()}
        middles = dict(zip(boxes_of, _middles(tall, [(b[0] + b[2]) / 2 for b in boxes_of.values()]), strict=True))
        dropped = [atom[0].fragment for atom in atoms]
        chosen = _best_spans(
            len(atoms), probs, boxes_of, middles, height, config, ones if verify is not None else None, dropped
        )
    segments = [
        Segment(crops[span][1], crops[span][0], images[span], probs.get(span), ones.get(span)) for span in chosen
    ]
    return sorted(segments, key=lambda s: (s.box[0] + s.box[2]) / 2)


def candidate_pieces(
    gray: np.ndarray, ink: np.ndarray, config: SegmentConfig = SegmentConfig()
) -> list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]:
    """Every piece the dynamic programme could weigh, with no classifier asked: `(box, crop, image)` each.

    Every group wider than `split_width * H` is cut at all its candidate columns (as `segment` cuts a
    group it is not sure of), and every run of atoms `segment` would classify is returned: the pieces
    the verifier must learn to tell apart (`verifier.training_pieces` labels them), cut with the
    thresholds `segment` uses with a verifier (`verified`).

    Raises:
        TooManyMarks: as `segment`.
    """
    config = verified(config)
    found = layout(gray, ink, config, fragments=True)
    if found is None:
        return []
    labels, height, groups, _ = found
    atoms: list[tuple[_Group, int, int]] = []
    for group in groups:
        wide = group.width > config.split_width * height
        atoms += _atoms_of(labels, group, _candidate_cuts(labels, group, height, config) if wide else [])
    pieces = []
    for start, stop in _spans(atoms, height, config, _join_limit(groups, height, config)):
        crop, box = _crop(gray, ink, labels, atoms[start:stop], height, config)
        pieces.append((box, crop, preprocess(crop)))
    return pieces


def verified(config: SegmentConfig) -> SegmentConfig:
    """The thresholds segmentation uses with a piece verifier (the verifier's own settings in place)."""
    return replace(config, min_piece=config.verified_min_piece)


def layout(gray: np.ndarray, ink: np.ndarray, config: SegmentConfig, fragments: bool = False):
    """Steps 1-5: `(labels, H, groups sorted by centre, the tall groups)`, or None without writing.

    `fragments`: small marks off the line's middle beside a digit are kept as fragment groups (see
    `SegmentConfig.attach_gap`) instead of dropped.
    """
    if gray.shape != ink.shape or gray.ndim != 2:
        raise ValueError(f"gray {gray.shape} and ink {ink.shape} must be 2-D and of the same shape")
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(ink, np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    if count == 1:  # the background alone
        return None
    x, y, w, h, areas = stats[1:].T.astype(np.int64)
    boxes = np.stack([x, y, x + w, y + h], axis=1)  # (n, 4) x0 y0 x1 y1 of components 1..n
    height = ink_height(boxes[:, 3] - boxes[:, 1], areas)
    if height < config.min_height:  # dust on a blank page, not writing
        return None
    kept = np.flatnonzero(areas >= config.speck_area * height * height)
    if len(kept) > config.max_marks:  # a page of text or a noisy photo: do not spend seconds on it
        raise TooManyMarks(len(kept))
    groups = _merge(boxes, kept, config)
    _attach_specks(labels, boxes, areas, groups, height, config)
    groups = _keep_small_at_mid_line(groups, height, config, fragments)
    groups.sort(key=lambda g: (g.x0 + g.x1) / 2)
    tall = [g for g in groups if g.height >= config.small_height * height]
    return labels, height, groups, tall


def _atoms_of(labels: np.ndarray, group: _Group, cuts: list[int]) -> list[tuple[_Group, int, int]]:
    """The group's column ranges between its cuts; a range without ink (between two merged components) is none."""
    points = [group.x0, *cuts, group.x1]
    own = group.own(labels)
    return [(group, a, b) for a, b in zip(points, points[1:]) if own[:, a - group.x0 : b - group.x0].any()]  # noqa: B905


def _join_limit(groups: list[_Group], height: float, config: SegmentConfig) -> float:
    """Two groups less than this many px apart may be the broken parts of one digit (see `join_gap`).

    Under one pixel it joins nothing: the number's digits nearly touch there, and every two neighbours
    whose boxes overlap (a gap of 0) would be joined.
    """
    gaps = [_gap(a, b) for a, b in pairwise(groups) if not (a.fragment or b.fragment)]
    limit = min(config.join_gap * height, config.join_spacing * float(np.median(gaps))) if gaps else 0.0
    return limit if limit >= 1 else 0.0


def _spans(
    atoms: list[tuple[_Group, int, int]], height: float, config: SegmentConfig, join_limit: float = 0.0
) -> list[tuple[int, int]]:
    """Runs of consecutive atoms that could be one digit.

    Atoms join within their group, across two groups whose boxes overlap horizontally by
    `join_overlap * H` (the two strokes of a ۸ that do not meet, say), and across two groups less
    than `join_limit` px apart (`_join_limit`); the run must not be wider than a digit, unless it is
    one atom. Each run is a candidate piece, classified in `segment`'s batch.
    """
    joined = [_joined(atoms[i][0], atoms[i + 1][0], height, config, join_limit) for i in range(len(atoms) - 1)]
    spans = []
    for start in range(len(atoms)):
        for stop in range(start + 1, len(atoms) + 1):
            if stop - start > 1 and not joined[stop - 2]:
                break
            x0 = min(a for _, a, _ in atoms[start:stop])
            x1 = max(b for _, _, b in atoms[start:stop])
            if stop - start > 1 and x1 - x0 > config.max_width * height:
                break
            if stop - start > 1 or not atoms[start][0].fragment:  # a fragment is never a digit alone
                spans.append((start, stop))
    return spans


def _joined(a: _Group, b: _Group, height: float, config: SegmentConfig, join_limit: float = 0.0) -> bool:
    """May atoms of groups a and b (neighbours, a left of b) be one digit?

    Within one group; across groups overlapping by `join_overlap * H` (the two strokes of a ۸ that do
    not meet) or less than `join_limit` px apart (a digit's stroke broken); and a fragment within
    `attach_gap * H` of its neighbour (a broken-off tooth or hook). A small mark at mid-line is not
    attached: it may be a ۰ beside its neighbour.
    """
    if a is b or a.x1 - b.x0 >= config.join_overlap * height:
        return True
    if not (a.fragment or b.fragment) and _gap(a, b) < join_limit:
        return True
    return (a.fragment or b.fragment) and _gap(a, b) <= config.attach_gap * height


def _best_spans(
    n: int,
    probs: dict,
    boxes: dict,
    middles: dict,
    height: float,
    config: SegmentConfig,
    ones: dict | None = None,
    droppable: list[bool] | None = None,
) -> list[tuple[int, int]]:
    """The runs of atoms, covering all n, whose sum of log plausible confidences is highest.

    Dynamic programming: best[j] = max over candidate runs (i, j) of best[i] + log conf(i, j). Each
    confidence is below 1 (about 0.92 at best for a model trained with label smoothing), so
    every extra digit costs a little: a cut must make both pieces look like digits. With the
    verifier's `ones` (span -> P(exactly one digit)), a piece's score is
    log P(one) + log P(digit | one) - `piece_cost`: the digit model only says which digit a piece
    would be, the verifier whether it is one digit at all (two touching, half of one, a fragment).
    An atom marked `droppable` (a fragment) may also be left out of every piece, for `fragment_cost`.
    """
    best = [0.0] + [-np.inf] * n
    back = [0] * (n + 1)
    spans = sorted(probs, key=lambda span: span[1])
    confidence = plausible(  # every span's weighted confidence, in one vectorised call
        np.stack([probs[s] for s in spans]),
        np.array([boxes[s] for s in spans]),
        height,
        [middles[s] for s in spans],
        config,
    ).max(axis=1)
    value = np.log(np.maximum(confidence, _FLOOR))
    if ones is not None:
        value += np.log(np.maximum([ones[s] for s in spans], _FLOOR)) - config.piece_cost
    ending: dict[int, list[tuple[int, float]]] = {}
    for (i, j), v in zip(spans, value.tolist(), strict=True):
        ending.setdefault(j, []).append((i, v))
    skipped = [False] * (n + 1)  # skipped[j]: the best way to j drops atom j - 1
    for j in range(1, n + 1):
        for i, v in ending.get(j, []):
            if best[i] + v > best[j]:
                best[j], back[j] = best[i] + v, i
        if droppable and droppable[j - 1] and best[j - 1] + config.fragment_cost > best[j]:
            best[j], back[j], skipped[j] = best[j - 1] + config.fragment_cost, j - 1, True
    chosen, j = [], n
    while j > 0:
        if not skipped[j]:
            chosen.append((back[j], j))
        j = back[j]
    return chosen[::-1]


def _merge(boxes: np.ndarray, kept: np.ndarray, config: SegmentConfig) -> list[_Group]:
    """Components whose column ranges overlap enough become one group; groups sorted by x0."""
    groups: list[_Group] = []
    for i in kept[np.lexsort(boxes[kept].T[::-1])]:  # by x0, then y0, x1, y1: whatever order they were labelled in
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


def _attach_specks(
    labels: np.ndarray, boxes: np.ndarray, areas: np.ndarray, groups: list[_Group], height: float, config: SegmentConfig
) -> None:
    """Give each group the specks within `speck_reach * H` of its ink and of no other group's ink.

    A scan at 200 dpi breaks thin strokes: the hook of a ۲ or the link to a ۳'s tooth can come apart
    below `speck_area`. Dropped as a speck, it leaves a ۱ or a ۲ that the digit model and the line
    model read as such. A speck near no group, or near two (between touching digits), stays a speck.
    """
    small = np.flatnonzero(areas < config.speck_area * height * height)
    if config.speck_reach <= 0 or not len(small) or not groups:
        return
    reach = max(1, round(config.speck_reach * height))
    hulls = np.array([(g.x0 - reach, g.y0 - reach, g.x1 + reach, g.y1 + reach) for g in groups])  # (G, 4)
    inside = (boxes[small, None, 0] < hulls[:, 2]) & (boxes[small, None, 2] > hulls[:, 0])
    inside &= (boxes[small, None, 1] < hulls[:, 3]) & (boxes[small, None, 3] > hulls[:, 1])  # (S, G)
    owner = np.full(len(areas) + 1, -1, np.int64)  # component label -> its group, -1 for none
    for k, group in enumerate(groups):
        owner[group.labels] = k
    for i in small[inside.any(axis=1)].tolist():  # a speck in no group's reach is not looked at
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        near = owner[labels[max(0, y0 - reach) : y1 + reach, max(0, x0 - reach) : x1 + reach]]
        near = np.unique(near[near >= 0])
        if len(near) == 1:
            group = groups[int(near[0])]
            group.labels.append(i + 1)
            group.x0, group.y0 = min(group.x0, x0), min(group.y0, y0)
            group.x1, group.y1 = max(group.x1, x1), max(group.y1, y1)


def _middle(tall: list[_Group], x: float) -> float | None:
    """The line's middle near column x: from the two nearest tall groups, so a wavy baseline is followed."""
    return _middles(tall, [x])[0]


def _middles(tall: list[_Group], xs) -> list[float | None]:
    """`_middle` at each of the columns `xs`, at once."""
    if not tall:
        return [None] * len(xs)
    centres = np.array([[(g.x0 + g.x1) / 2, (g.y0 + g.y1) / 2] for g in tall])  # (T, 2) x, y
    distance = np.abs(centres[None, :, 0] - np.asarray(xs, np.float64)[:, None])  # (N, T)
    near = np.argsort(distance, axis=1, kind="stable")[:, :2]  # the two nearest (the first on a tie)
    return centres[near, 1].mean(axis=1).tolist()


def _keep_small_at_mid_line(
    groups: list[_Group], height: float, config: SegmentConfig, fragments: bool = False
) -> list[_Group]:
    """Drop small groups away from the line's middle; a small one at mid-line is a ۰.

    With `fragments`, a small group off the middle within `attach_gap * H` of a tall one, or of a
    fragment so kept (the second tooth of a ۳ beside the first), is kept, marked a fragment (a
    broken-off part of that digit), instead of dropped.
    """
    tall = [g for g in groups if g.height >= config.small_height * height]
    if not tall:  # a number of zeros only: every group is of the line's own height
        return groups
    off = []
    for group in groups:
        fleck = group.height < ZERO_MIN_HEIGHT * height  # lower than any ۰
        if not fleck and group.height < config.small_height * height:
            middle = _middle(tall, (group.x0 + group.x1) / 2)
            fleck = abs((group.y0 + group.y1) / 2 - middle) > config.mid_band * height
        off.append(fleck)
    anchors, loose = list(tall), [g for g, o in zip(groups, off, strict=True) if o] if fragments else []
    while loose:  # fragments reach their digit in steps of at most attach_gap * H
        near = [g for g in loose if any(_gap(g, a) <= config.attach_gap * height for a in anchors)]
        if not near:
            break
        for group in near:
            group.fragment = True
        anchors += near
        loose = [g for g in loose if not g.fragment]
    return [g for g, o in zip(groups, off, strict=True) if not o or g.fragment]


def _gap(a: _Group, b: _Group) -> int:
    """Columns of paper between two groups' boxes (0 when they overlap horizontally)."""
    return max(0, max(a.x0, b.x0) - min(a.x1, b.x1))


def _projection(labels: np.ndarray, group: _Group) -> np.ndarray:
    """Ink pixels of the group per column of its box."""
    return group.own(labels).sum(axis=0)


def plausible(
    probs: np.ndarray,
    box: tuple[int, int, int, int] | np.ndarray,
    height: float,
    middle: float | None | list[float | None] = None,
    config: SegmentConfig = SegmentConfig(),
    graded: bool = True,
) -> np.ndarray:
    """Class probabilities of a piece, down-weighted where its shape cannot be that digit.

    The model sees every piece scaled into the same 20 px box, so a sliver cut off a stroke can
    look like a confident ۰ (a blob) or ۱ (a bar), and two touching digits like one wide ۳. The
    piece's own aspect ratio and its height relative to the line's H (۰ is small, every other
    digit at least half the line's height), graded by how rare that shape is among Hoda's digits
    of each class (`shapes.shape_weights`), and, for ۰, its place (at mid-line, when the line's
    `middle` there is known) rule those out. Also for N pieces at once: `probs` (N, 10), `box`
    (N, 4) and `middle` a list of N. `graded` False: shapes are only ruled in or out (see
    `shapes.shape_weights`).
    """
    single = np.ndim(probs) == 1
    boxes = np.atleast_2d(np.asarray(box, np.float64))
    middles = np.array([np.nan if m is None else m for m in ([middle] if single else middle)], np.float64)
    heights = boxes[:, 3] - boxes[:, 1]
    prior = shape_weights(boxes[:, 2] - boxes[:, 0], heights, height, config.aspect_slack, graded)
    # a small blob above or below the middle: the end of a stroke, not a ۰
    off = (heights < config.small_height * height) & (
        np.abs((boxes[:, 1] + boxes[:, 3]) / 2 - middles) > config.mid_band * height
    )
    prior[off, 0] = IMPLAUSIBLE  # (a NaN middle compares False: unknown, so kept)
    weighted = np.atleast_2d(probs) * prior
    return weighted[0] if single else weighted


def _candidate_cuts(labels: np.ndarray, group: _Group, height: float, config: SegmentConfig) -> list[int]:
    """Up to `max_cuts` columns at local minima of the ink projection, lowest first, spaced apart."""
    own = group.own(labels)
    profile = own.sum(axis=0).astype(np.float64)  # the ink projection
    has = profile > 0
    top = np.where(has, own.argmax(axis=0), own.shape[0])  # (width,) first ink row of each column
    bottom = np.where(has, own.shape[0] - own[::-1].argmax(axis=0), 0)  # and one past its last
    smooth = np.convolve(np.pad(profile, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    margin = max(1, round(config.min_piece * height))
    wide = group.width > config.wide * height  # likely two or more digits: look closer
    spacing = max(1, round((config.wide_cut_spacing if wide else config.cut_spacing) * height))
    max_cuts = config.wide_max_cuts if wide else config.max_cuts
    inner = np.arange(margin, group.width - margin + 1)
    if inner.size == 0:
        return []
    before, after = np.clip(inner - 1, 0, None), np.clip(inner, 0, group.width - 1)  # the columns each cut is between
    # a cut at column c separates columns < c from >= c: rate it by the lower of the two columns it falls between
    depth = np.minimum(smooth[before], smooth[after])
    is_min = np.r_[True, depth[1:] <= depth[:-1]] & np.r_[depth[:-1] <= depth[1:], True]
    cuts: list[int] = []
    for c in inner[is_min][np.argsort(depth[is_min], kind="stable")]:
        if all(abs(c - d) >= spacing for d in cuts):
            cuts.append(int(c))
        if len(cuts) == max_cuts:
            break
    if config.extent_jump:
        # where the ink's vertical extent changes abruptly: a small ۰ at mid-line against a tall neighbour
        extent = np.maximum(bottom - top, 0).astype(np.float64)
        jump = np.abs(np.diff(extent))  # jump[c - 1]: between columns c - 1 and c
        steep = jump[np.minimum(inner, group.width - 1) - 1] >= config.extent_jump * height
        jumps = inner[(inner < group.width) & steep]
        for c in jumps[np.argsort(-jump[jumps - 1], kind="stable")][:2].tolist():
            if all(abs(c - d) >= margin for d in cuts):
                cuts.append(int(c))
    if config.contour_cuts:
        # valleys of the outer contour: where the upper edge of the ink dips down, or the lower edge rises,
        # between two higher shoulders (two touching digits meet there even where the projection is not low)
        columns = inner[inner < group.width]
        for edge in (top.astype(np.float64), (own.shape[0] - bottom).astype(np.float64)):  # each edge from its side
            left = np.minimum.accumulate(edge)  # left[c]: the highest edge in columns 0..c
            right = np.minimum.accumulate(edge[::-1])[::-1]
            # how far each column's edge lies below the lower of the highest edges on its two sides
            shoulders = np.maximum(left[columns - 1], right[np.minimum(columns + 1, len(edge) - 1)])
            valley = np.maximum(0.0, edge[columns] - shoulders)
            added = 0
            for k in np.argsort(-valley, kind="stable"):
                if valley[k] < config.extent_jump * height or added == config.contour_cuts:
                    break
                c = int(columns[k])
                if all(abs(c - d) >= margin for d in cuts):
                    cuts.append(c)
                    added += 1
    if config.refine_cuts:
        # each cut moved to the column boundary within `refine_cuts * H` that the fewest strokes cross (rows with ink
        # on both sides), the thinner then the nearer on a tie: the smoothed minima, the contour valleys and the
        # height jumps fall near where two touching digits meet, often a pixel or two beside it
        reach = max(1, round(config.refine_cuts * height))
        crossing = np.r_[0, (own[:, :-1] & own[:, 1:]).sum(axis=0), 0][inner]  # strokes across each boundary
        thin = np.minimum(profile[before], profile[after])
        moved: list[int] = []
        for c in cuts:
            near = np.flatnonzero(np.abs(inner - c) <= reach)
            best = int(inner[near[np.lexsort((np.abs(inner[near] - c), thin[near], crossing[near]))[0]]])
            if best not in moved:
                moved.append(best)
        cuts = moved
    return sorted(group.x0 + c for c in cuts)


def _deepest_cuts(labels: np.ndarray, group: _Group, height: float, config: SegmentConfig) -> list[int]:
    """Without a classifier: cut a too-wide group into round(width / H) pieces at its lowest minima."""
    count = max(2, round(group.width / height)) - 1
    candidates = _candidate_cuts(labels, group, height, config)
    lowest = sorted(candidates, key=lambda c: _projection(labels, group)[c - group.x0])[:count]
    return sorted(lowest)


def _crop(
    gray: np.ndarray,
    ink: np.ndarray,
    labels: np.ndarray,
    atoms: list[tuple[_Group, int, int]],
    height: float,
    config: SegmentConfig,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The atoms' ink, cropped to its own box, with every other ink pixel blanked.

    A vertical cut can leave a sliver of the neighbour's stroke in a piece; slivers smaller than a
    speck are dropped so they do not stretch the piece's box.
    """
    groups = {id(g): g for g, _, _ in atoms}
    if len(groups) == 1:  # one group, whole or a run of its column ranges: a view of its own ink
        group = atoms[0][0]
        x0, x1, y0, y1 = atoms[0][1], atoms[-1][2], group.y0, group.y1  # its atoms run left to right
        own = group.own(labels)[:, x0 - group.x0 : x1 - group.x0]
        cut = (x0, x1) != (group.x0, group.x1)
    else:
        x0, x1 = min(a for _, a, _ in atoms), max(b for _, _, b in atoms)
        y0, y1 = min(g.y0 for g in groups.values()), max(g.y1 for g in groups.values())
        own = np.zeros((y1 - y0, x1 - x0), bool)
        cut = False
        for group, a, b in atoms:
            own[group.y0 - y0 : group.y1 - y0, a - x0 : b - x0] |= group.own(labels)[:, a - group.x0 : b - group.x0]
            cut |= (a, b) != (group.x0, group.x1)
    if cut:
        n, parts, stats, _ = cv2.connectedComponentsWithStats(
            np.ascontiguousarray(own).view(np.uint8), connectivity=8, ltype=cv2.CV_32S
        )
        if n > 2:  # the background and more than one part
            sizes = stats[:, cv2.CC_STAT_AREA].copy()
            sizes[0] = 0
            keep = min(max(config.speck_area * height * height, 0.2 * sizes.max()), sizes.max())  # the largest stays
            own = (sizes >= keep)[parts]
    rows, cols = own.any(axis=1).nonzero()[0], own.any(axis=0).nonzero()[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box = (int(x0 + c0), int(y0 + r0), int(x0 + c1), int(y0 + r1))
    crop = gray[box[1] : box[3], box[0] : box[2]].copy()
    crop[ink[box[1] : box[3], box[0] : box[2]] & ~own[r0:r1, c0:c1]] = 0
    return crop, box
