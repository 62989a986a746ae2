"""Segmentation: drawn lines of strokes and blobs in, digit boxes out, left to right.

Images are drawn here (bars, discs, rings) so every case knows where its digits
are; the scoring callback stands in for the classifier where a cut must be
chosen, so each test says exactly which rule it checks.
"""

import numpy as np
import pytest

from lenet_edge.data.preprocess import CANVAS, INK_THRESHOLD, preprocess, to_white_on_black
from lenet_edge.data.synthetic import generate_numbers
from lenet_edge.segment import Segment, SegmentConfig, candidate_pieces, ink_height, plausible, segment

H = 30  # height of an ordinary digit in these drawings, px


def canvas(width: int = 200, height: int = 60) -> np.ndarray:
    return np.zeros((height, width), np.uint8)


def bar(image: np.ndarray, x: int, width: int = 5, top: int = 15, height: int = H) -> None:
    """A ۱: a vertical bar."""
    image[top : top + height, x : x + width] = 255


def vee(image: np.ndarray, x: int, width: int = 22, top: int = 15, pen: int = 3) -> None:
    """A ۷-like V: two strokes meeting at the bottom."""
    for row in range(H):
        half = round((width / 2) * (1 - row / H))
        for cx in (x + width // 2 - half, x + width // 2 + half):
            image[top + row, max(cx - pen // 2, 0) : cx + pen // 2 + 1] = 255


def disc(image: np.ndarray, cx: int, cy: int, r: float, ring: float = 0.0) -> None:
    """A ۰: a filled dot, or a ring when `ring` > 0 (its inner radius)."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    d = np.hypot(yy - cy, xx - cx)
    image[(d <= r) & (d >= ring)] = 255


def run(image: np.ndarray, score=None, **config) -> list[Segment]:
    return segment(image, image > INK_THRESHOLD, score, SegmentConfig(**config))


def xs(segments: list[Segment]) -> list[int]:
    return [s.box[0] for s in segments]


def test_separate_digits_left_to_right_with_boxes_and_model_input():
    image = canvas()
    bar(image, 150)
    vee(image, 20)
    bar(image, 90)
    segments = run(image)
    assert xs(segments) == [19, 90, 150]  # the V's pen reaches one column left of x
    assert segments[1].box == (90, 15, 95, 45)
    for s in segments:
        assert s.image.shape == (CANVAS, CANVAS) and s.image.dtype == np.uint8 and s.image.max() > 0
        assert s.probs is None  # no score given


def test_zero_dot_and_ring_at_mid_line_are_kept():
    image = canvas()
    bar(image, 20)
    disc(image, 50, 30, 5)  # a dot a third of the line's height, at mid-line
    disc(image, 80, 30, 6, ring=3.5)  # a small ring
    bar(image, 110)
    segments = run(image)
    assert len(segments) == 4
    assert segments[1].box == (45, 25, 56, 36)
    assert segments[2].box[0] == 74


def test_speck_dropped_and_small_mark_off_the_line_dropped():
    image = canvas()
    bar(image, 20)
    image[30:32, 50:52] = 255  # a 4-px speck at mid-line: area far below a ۰'s
    disc(image, 80, 6, 5)  # a ۰-sized dot, but above the line: not a digit
    bar(image, 110)
    segments = run(image)
    assert xs(segments) == [20, 110]


def test_a_speck_by_one_digit_joins_it_and_others_are_dropped():
    # A scan breaks thin strokes: the hook of a ۲ can come off smaller than a speck (0.02 H^2 = 18 px
    # here). Within `speck_reach * H` (3 px) of one digit's ink it is part of that digit, not a speck
    # to drop, leaving a ۱. A speck near no digit, or between two, is still dropped.
    image = canvas()
    bar(image, 30)
    image[15:18, 37:41] = 255  # a 12-px hook, 2 px right of the stem's top
    bar(image, 90)
    image[29:31, 60:62] = 255  # a speck far from any digit
    bar(image, 140)
    bar(image, 151)
    image[29:31, 147:149] = 255  # a speck 2 px from both of two digits
    segments = run(image)
    assert [s.box for s in segments] == [(30, 15, 41, 45), (90, 15, 95, 45), (140, 15, 145, 45), (151, 15, 156, 45)]
    assert segments[0].crop[0:3, 7:11].min() == 255  # the hook's ink is the digit's
    assert [s.box for s in segments[2:]] == [s.box for s in run(image, speck_reach=0.0)[2:]]
    assert run(image, speck_reach=0.0)[0].box == (30, 15, 35, 45)  # without: the stem alone


def test_broken_digit_is_merged():
    image = canvas()
    bar(image, 30, width=6, top=15, height=13)
    bar(image, 31, width=6, top=31, height=14)  # the same stroke with a 3-px break
    bar(image, 90)
    segments = run(image)
    assert len(segments) == 2
    assert segments[0].box == (30, 15, 37, 45)


def three(image: np.ndarray, x: int, broken: bool) -> None:
    """A ۳-like digit: a stem with two teeth on its upper right; `broken`: the second tooth apart (a fragment)."""
    bar(image, x)
    image[15:19, x + 5 : x + 9] = 255  # the stem's first tooth: joined to it
    if not broken:
        image[15:19, x + 9 : x + 11] = 255
    image[13:21, x + 11 : x + 15] = 255  # the second tooth, 2 px right of the first when broken


def tooth_score(images: np.ndarray) -> np.ndarray:
    """A stand-in classifier that reads a ۳ when a piece has ink on its right (the teeth), else a ۱."""
    probs = np.full((len(images), 10), 0.01)
    right = images[:, :, CANVAS // 2 + 3 :].mean(axis=(1, 2)) > 8
    probs[np.arange(len(images)), np.where(right, 3, 1)] = 0.9
    return probs


def test_a_broken_off_part_off_the_line_joins_its_digit():
    # Hoda's strokes break: a ۳ whose second tooth stands apart, above the middle of the line and too small
    # to be a digit. Without a classifier that fragment is dropped (the stem would be a ۱); with one, the
    # dynamic programme may join it to its neighbour, and does when the whole reads better.
    image = canvas()
    three(image, 30, broken=True)
    bar(image, 120)
    assert [s.box for s in run(image)] == [(30, 15, 39, 45), (120, 15, 125, 45)]
    segments = run(image, tooth_score)
    assert [s.box for s in segments] == [(30, 13, 45, 45), (120, 15, 125, 45)]
    assert [int(s.probs.argmax()) for s in segments] == [3, 1]
    whole = canvas()
    three(whole, 30, broken=False)
    bar(whole, 120)
    assert [s.box for s in run(whole, tooth_score)] == [s.box for s in segments]


def test_fragments_reach_their_digit_through_each_other():
    # both teeth of a ۳ broken off: the second stands 10 px from the stem, beyond attach_gap * H (4.5 px),
    # but 2 px from the first, which is the stem's fragment: it is one too, and the ۳ is read whole
    image = canvas()
    bar(image, 30)
    image[13:17, 37:43] = 255  # the first tooth, 2 px right of the stem
    image[13:17, 45:51] = 255  # the second, 2 px right of the first
    bar(image, 120)
    segments = run(image, tooth_score)
    assert [s.box for s in segments] == [(30, 13, 51, 45), (120, 15, 125, 45)]
    assert [int(s.probs.argmax()) for s in segments] == [3, 1]
    assert [s.box for s in run(image)] == [(30, 15, 35, 45), (120, 15, 125, 45)]  # no classifier: dropped


def test_close_groups_may_be_one_broken_digit_where_the_digits_are_spaced():
    # a digit whose stroke broke (two marks 2 px apart) in a number whose digits stand ~50 px apart: a piece
    # may join the two marks. Where every digit stands as close as that, the digits nearly touch: no join
    spaced = canvas(300)
    for x in (20, 80, 140, 147, 200):
        bar(spaced, x)
    boxes = [box for box, _, _ in candidate_pieces(spaced, spaced > INK_THRESHOLD)]
    assert (140, 15, 152, 45) in boxes and len(boxes) == 6
    tight = canvas(300)
    for x in (20, 27, 34, 41):
        bar(tight, x)
    boxes = [box for box, _, _ in candidate_pieces(tight, tight > INK_THRESHOLD)]
    assert [box[2] - box[0] for box in boxes] == [5, 5, 5, 5]  # each mark alone

    def ones(images):  # every piece a ۱
        return np.tile(np.eye(10)[1] * 0.9 + 0.01, (len(images), 1))

    def verify(images):  # one digit: a piece as wide as the two marks together (in the 28x28 frame)
        return np.where((images > INK_THRESHOLD).any(axis=1).sum(axis=1) > 5, 0.9, 0.1)

    ink = spaced > INK_THRESHOLD
    assert len(segment(spaced, ink, ones)) == 5  # without a verifier to judge a join, none is tried
    joined = segment(spaced, ink, ones, verify=verify)
    assert [s.box for s in joined][2:4] == [(140, 15, 152, 45), (200, 15, 205, 45)] and len(joined) == 4
    assert len(segment(spaced, ink, ones, SegmentConfig(join_gap=0), verify=verify)) == 5


def test_a_fragment_is_never_a_digit_alone():
    image = canvas()
    bar(image, 30)
    image[13:21, 37:41] = 255  # a mark off the middle, 2 px right of the ۱: joined or dropped, never a digit
    image[8:14, 160:166] = 255  # the same, far from any digit: dropped as before
    bar(image, 120)
    segments = run(image, lambda images: np.tile(np.eye(10)[1] * 0.9 + 0.01, (len(images), 1)))
    assert len(segments) == 2  # the classifier reads every piece alike: joining gains nothing, dropping costs
    assert segments[1].box == (120, 15, 125, 45)


def loop(image: np.ndarray, x: int, width: int = 20, top: int = 15, pen: int = 4) -> None:
    """A ۵-like closed loop, `width` wide and H tall."""
    image[top : top + H, x : x + width] = 255
    image[top + pen : top + H - pen, x + pen : x + width - pen] = 0


def test_touching_pair_is_split_where_the_classifier_is_most_confident():
    image = canvas()
    loop(image, 30)
    loop(image, 53)
    image[28:31, 50:53] = 255  # a stroke joins them: one component
    reference = canvas()
    loop(reference, 30)
    alone = preprocess(reference).astype(float)  # what the stand-in classifier knows: one loop
    seen = []

    def score(images: np.ndarray) -> np.ndarray:
        # sure of "5" for a piece that looks like the loop, unsure otherwise
        seen.append(len(images))
        distance = np.abs(images - alone).mean(axis=(1, 2))
        probs = np.full((len(images), 10), 0.01)
        probs[:, 5] = np.where(distance < 20, 0.9, 0.3)
        return probs / probs.sum(axis=1, keepdims=True)

    segments = run(image, score)
    assert len(seen) == 2 and seen[0] == 1 and seen[1] > 2  # the group whole, unsure; then all its pieces at once
    left, right = (s.box for s in segments)
    assert left[:2] == (30, 15) and right[2:] == (73, 45)
    assert 50 <= left[2] <= right[0] <= 53  # cut in the 3-px bridge
    assert all(s.probs is not None and s.probs.argmax() == 5 for s in segments)
    narrow = canvas()
    loop(narrow, 30, width=14)
    loop(narrow, 45, width=14)
    narrow[28:31, 43:46] = 255  # 29 px wide: as wide as an ordinary ۵
    sure = []
    segments = run(narrow, lambda images: sure.append(len(images)) or np.tile(np.eye(10)[5], (len(images), 1)))
    assert [s.box for s in segments] == [(30, 15, 59, 45)] and sure == [1]  # read surely as one digit: not cut


def test_touching_pair_read_as_one_too_wide_digit_is_cut():
    # a classifier as sure of the pair as of each loop (as the real one is of a ۱ glued to a ۵), but not
    # sure enough to skip the cuts: the pair is 43 px wide on a 30 px line, wider than 99% of Hoda's ۵,
    # so its shape weight makes the cut into two ordinary ۵ win (a plain product would keep one digit)
    image = canvas()
    loop(image, 30)
    loop(image, 53)
    image[28:31, 50:53] = 255
    segments = run(image, lambda images: np.tile(np.eye(10)[5] * 0.76 + 0.01, (len(images), 1)))
    assert len(segments) == 2
    left, right = (s.box for s in segments)
    assert left[:2] == (30, 15) and right[2:] == (73, 45) and 50 <= left[2] <= right[0] <= 53


def test_too_wide_group_is_cut_without_a_classifier():
    image = canvas(width=260)
    for x in (20, 40, 60):
        vee(image, x, width=22)  # three touching Vs: 2.3 H wide
    segments = run(image)
    assert len(segments) >= 2
    assert xs(segments) == sorted(xs(segments))


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_both_polarities_give_the_same_segments(dark_on_light):
    image = canvas()
    bar(image, 20)
    disc(image, 50, 30, 5)
    vee(image, 80)
    given = 255 - image if dark_on_light else image
    gray = to_white_on_black(given)  # the polarity step `read` applies, as `load_image` does
    assert [s.box for s in run(gray)] == [s.box for s in run(image)]
    assert len(run(gray)) == 3


def test_no_ink_and_only_specks_give_no_segments():
    assert run(canvas()) == []
    image = canvas()
    image[10, 10] = image[40:42, 60:63] = 255
    assert run(image) == []  # dust, lower than any digit
    bar(image, 100)
    assert xs(run(image)) == [100]


def test_neighbour_ink_is_blanked_in_a_crop():
    image = canvas()
    vee(image, 30, width=24)
    bar(image, 52, width=4)  # touches the V's right arm
    segments = run(image, score=lambda images: np.tile(np.eye(10)[1], (len(images), 1)))
    for s in segments:
        assert s.crop.shape == (s.box[3] - s.box[1], s.box[2] - s.box[0])


def test_line_height_ignores_specks_and_zeros():
    heights, areas = np.array([30, 10, 2, 31, 29]), np.array([150, 80, 4, 160, 140])
    assert ink_height(heights, areas) == 30


def test_shape_priors():
    probs = np.full(10, 0.1)
    zero_like = plausible(probs, (0, 0, 5, 30), height=30)  # a thin bar: not a ۰
    assert zero_like[0] < zero_like[1]
    small = plausible(probs, (0, 0, 10, 10), height=30)  # a third of the line: only a ۰
    assert small.argmax() == 0
    ordinary, wide = plausible(probs, (0, 0, 27, 30), height=30), plausible(probs, (0, 0, 43, 30), height=30)
    assert ordinary[5] == probs[5] and wide[5] < 0.5 * probs[5]  # a ۵ 1.43 times as wide as tall: rarer than 1 in 100
    stub = plausible(probs, (0, 0, 5, 18), height=30)  # a bar 0.6 of the line: shorter than 99% of Hoda's ۱
    assert stub[1] < 0.5 * probs[1] and plausible(probs, (0, 0, 5, 30), height=30)[1] == probs[1]


def test_tail_weight_grades_by_rarity():
    from lenet_edge.shapes import ASPECT_HIGH, IMPLAUSIBLE, tail_weight

    five = ASPECT_HIGH[5:6]  # 95th, 97.5th, 99th, 99.5th percentiles of a ۵'s width / height
    weights = [
        float(tail_weight(v, five)[0, 0]) for v in (0.9, five[0, 1], five[0, 1:3].mean(), five[0, 2], five[0, 3], 2.0)
    ]
    assert weights[:2] == [1.0, 1.0]  # the central 95% of ۵ keep their probability
    assert weights[1] > weights[2] > weights[3] > weights[4]  # rarer, weaker
    assert weights[4] == weights[5] == IMPLAUSIBLE  # at the 99.5th percentile and beyond: ruled out
    assert tail_weight(np.array([1.0, 2.0]), ASPECT_HIGH).shape == (2, 10)


def test_synthetic_numbers_segment_into_their_digits():
    numbers = generate_numbers(12, seed=3, touching=0.0)
    found = 0
    for image, text, boxes in zip(*numbers, strict=True):
        assert len(text) == len(boxes) and 4 <= len(text) <= 11
        segments = run(image)
        found += len(segments) == len(text)
    assert found >= 10  # without a classifier, only broken strokes far apart can fool it


def test_generate_numbers_is_deterministic_and_keeps_generate_unchanged():
    from lenet_edge.data.synthetic import generate

    a, b = generate_numbers(5, seed=7), generate_numbers(5, seed=7)
    assert a.texts == b.texts and all((x == y).all() for x, y in zip(a.images, b.images, strict=True))
    assert generate_numbers(5, seed=8).texts != a.texts
    for image, boxes in zip(a.images, a.boxes, strict=True):
        assert image.dtype == np.uint8 and set(np.unique(image)) <= {0, 255}
        for x0, y0, x1, y1 in boxes:
            assert image[y0:y1, x0:x1].any()
        assert [box[0] for box in boxes] == sorted(box[0] for box in boxes)
    images, labels = generate(20, 0)
    again, labels2 = generate(20, 0)
    assert (images == again).all() and (labels == labels2).all()
    with pytest.raises(ValueError, match="lengths"):
        generate_numbers(1, 0, lengths=(5, 4))


def test_refined_cuts_find_where_touching_digits_meet():
    """On touching pairs of generated digits, a refined candidate cut lies where the best vertical cut does."""
    from scipy import ndimage

    from lenet_edge.data.preprocess import preprocess_many
    from lenet_edge.data.synthetic import generate
    from lenet_edge.segment import _candidate_cuts, layout, verified
    from lenet_edge.verifier import compose_line

    raw, labels = generate(200, seed=5)
    images, rng = preprocess_many(raw), np.random.default_rng(0)
    found = {0.0: 0, 0.03: 0}
    pairs = 0
    for _ in range(40):
        pick = rng.integers(0, len(labels), size=5)
        gray, owner, _ = compose_line(images[pick], labels[pick], rng, tight=True)
        ink = gray > INK_THRESHOLD
        parts, _ = ndimage.label(ink, structure=np.ones((3, 3), bool))
        for k in range(1, 5):
            a, b = (owner == k) & ink, (owner == k + 1) & ink
            if not a.any() or not b.any() or not set(parts[a].tolist()) & set(parts[b].tolist()):
                continue  # not touching
            pairs += 1
            left, right = a.sum(axis=0), b.sum(axis=0)  # cut at c: columns < c go left
            wrong = np.array([left[c:].sum() + right[:c].sum() for c in range(gray.shape[1] + 1)])
            good = set(np.flatnonzero(wrong <= wrong.min() + 0.03 * min(left.sum(), right.sum())).tolist())
            for reach in found:
                config = verified(SegmentConfig(refine_cuts=reach))  # the cuts `read` weighs with a verifier
                labelled, height, groups, _ = layout(gray, ink, config)
                cuts = [c for g in groups for c in _candidate_cuts(labelled, g, height, config)]
                found[reach] += bool(good & set(cuts))
    assert pairs >= 20
    assert found[0.03] > found[0.0] and found[0.03] >= 0.75 * pairs  # 38 of 44 here, 26 unrefined
