"""Synthetic handwritten Persian digits (۰-۹): the default dataset, no download.

Each digit is a few pen strokes: Catmull-Rom curves through control points on
a unit canvas that follow how Persian writers form the digit, in its common
variants (۰ as a ring or a blob, ۲ as a U or a Y, ۴ as a zigzag, a K or the
Arabic ٤, ۵ with or without its dent, ۶ in its Persian and Arabic forms, ۹
with a large or small loop, ...). Every sample gets its own control-point
jitter, smooth elastic warp, slant, rotation, aspect, size, pen width and
pressure, stroke-end tremor and, now and then, a broken stroke.

Rendering mimics Hoda's binary 200 dpi scans (digits about 6-42 px tall,
strokes 2-9 px wide): each path is scattered as a one-pixel skeleton straight
into a boolean array (1 or 2 px thick where the pen presses harder), then
dilated by octagonal rounds to the pen's width, so strokes that pass close
to each other touch as they do in real scans. Output is raw images, white ink
(255) on black (0), on a fixed `CANVAS` x `CANVAS` frame; the data layer puts
them through `preprocess_many` like any other source.

Determinism: the same `(n, seed)` gives bit-identical images on any machine.
Only uniform draws from `np.random.default_rng` (exact), IEEE-exact
elementwise arithmetic in a fixed order (+, -, *, /, sqrt; no BLAS, no libm
sin/cos/exp) and integer rounding are used.

Speed: work is batched per (digit, variant), so all geometry and drawing is
numpy over the whole batch with no per-image Python loop: a few tens of
microseconds per image (`benchmarks/synthetic_speed.py`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .preprocess import NUM_CLASSES

SYNTHETIC_VERSION = 1
CANVAS = 64  # side of each raw output image, px (the largest digit is ~48 px)
SAMPLES_PER_SEGMENT = 5  # curve points between two control points


class Stroke(NamedTuple):
    """One pen stroke: control points on the unit canvas (x right, y down)."""

    points: tuple[tuple[float, float], ...]  # a repeated point makes a sharp corner
    closed: bool = False


class Variant(NamedTuple):
    """One way of writing a digit."""

    name: str
    weight: float  # relative frequency among the digit's variants
    strokes: tuple[Stroke, ...]
    height_px: tuple[float, float] = (20.0, 42.0)  # range of the digit's height in the scan
    pen: tuple[float, float] = (0.11, 0.17)  # range of the stroke width, as a fraction of the height
    jitter: float = 0.06  # half-range of the uniform control-point jitter, unit canvas


def _ring(cx: float, cy: float, rx: float, ry: float) -> tuple[tuple[float, float], ...]:
    """Eight points on an ellipse, clockwise from the top."""
    diag = 0.7071  # cos 45 degrees, written out so no libm call is involved
    unit = (
        (0.0, -1.0),
        (diag, -diag),
        (1.0, 0.0),
        (diag, diag),
        (0.0, 1.0),
        (-diag, diag),
        (-1.0, 0.0),
        (-diag, -diag),
    )
    return tuple((cx + rx * ux, cy + ry * uy) for ux, uy in unit)


# ۲'s stem: from the top, where the tooth row starts, down to the baseline, drifting right
_STEM = Stroke(((0.22, 0.02), (0.3, 0.5), (0.42, 1.0)))

# GLYPHS[d] lists the variants of digit d. Coordinates are fractions of the
# digit's height; widths follow from the x-range of the points.
GLYPHS: tuple[tuple[Variant, ...], ...] = (
    (  # ۰: a small ring or a filled dot, written much smaller than other digits
        Variant("ring", 0.6, (Stroke(_ring(0.5, 0.5, 0.5, 0.45), closed=True),), (7.0, 17.0), (0.25, 0.45), 0.11),
        Variant("blob", 0.4, (Stroke(_ring(0.5, 0.5, 0.5, 0.45), closed=True),), (6.0, 13.0), (0.6, 0.9), 0.14),
    ),
    (  # ۱: a near-vertical stroke, rarely with a small lead-in at the top
        Variant("bar", 0.9, (Stroke(((0.5, 0.0), (0.5, 0.5), (0.5, 1.0))),), pen=(0.12, 0.19)),
        Variant("flick", 0.1, (Stroke(((0.38, 0.06), (0.47, 0.0), (0.5, 0.3), (0.5, 1.0))),)),
    ),
    (  # ۲: stem plus one tall tooth: the top reads as a U or a Y with the stem as its left arm
        Variant(
            "y",
            0.4,
            (Stroke(((0.15, 0.0), (0.38, 0.45), (0.62, 1.0))), Stroke(((0.33, 0.34), (0.55, 0.24), (0.72, 0.0)))),
        ),
        Variant("u", 0.6, (_STEM, Stroke(((0.22, 0.02), (0.3, 0.3), (0.55, 0.3), (0.74, 0.0))))),
    ),
    (  # ۳: a near-vertical stem plus a wide row of two teeth as tall as the stem's top
        Variant(
            "even",
            0.6,
            (
                Stroke(((0.2, 0.0), (0.25, 0.5), (0.32, 1.0))),
                Stroke(((0.2, 0.0), (0.3, 0.28), (0.48, 0.04), (0.63, 0.27), (0.93, 0.02))),
            ),
            jitter=0.08,
        ),
        Variant(
            "small-middle",
            0.4,
            (
                Stroke(((0.2, 0.0), (0.25, 0.5), (0.32, 1.0))),
                Stroke(((0.2, 0.0), (0.3, 0.3), (0.45, 0.15), (0.58, 0.28), (0.9, 0.0))),
            ),
            jitter=0.08,
        ),
    ),
    (  # ۴: Persian forms (two arms right of the stem, as a zigzag or a K) and Arabic ٤ (like ε)
        Variant(
            "k",
            0.4,
            (
                Stroke(((0.28, 0.0), (0.33, 0.5), (0.45, 1.0))),
                Stroke(((0.7, 0.0), (0.31, 0.28), (0.31, 0.28), (0.55, 0.42), (0.8, 0.4))),
            ),
            pen=(0.1, 0.15),
        ),
        Variant(
            "zigzag",
            0.5,
            (Stroke(((0.66, 0.02), (0.3, 0.24), (0.3, 0.24), (0.74, 0.38), (0.38, 0.44), (0.38, 0.44), (0.52, 1.0))),),
            pen=(0.1, 0.15),
        ),
        Variant(
            "arabic",
            0.1,
            (Stroke(((0.72, 0.05), (0.3, 0.18), (0.55, 0.42), (0.55, 0.42), (0.25, 0.6), (0.4, 0.9), (0.92, 0.95))),),
            pen=(0.1, 0.15),
        ),
    ),
    (  # ۵: a loop pointed at the top, with or without a dent at the bottom, sometimes crossing
        # itself at the top where the pen ends past its starting point
        Variant(
            "crossed",
            0.25,
            (
                Stroke(
                    (
                        (0.5, 0.0),
                        (0.2, 0.5),
                        (0.12, 0.92),
                        (0.5, 1.0),
                        (0.88, 0.92),
                        (0.8, 0.5),
                        (0.45, 0.12),
                        (0.3, 0.0),
                    )
                ),
            ),
            (16.0, 36.0),
            (0.13, 0.26),
        ),
        Variant(
            "dent",
            0.45,
            (
                Stroke(
                    ((0.5, 0.0), (0.1, 0.6), (0.0, 0.95), (0.3, 1.0), (0.5, 0.8), (0.7, 1.0), (1.0, 0.95), (0.9, 0.6)),
                    closed=True,
                ),
            ),
            (16.0, 36.0),
            (0.13, 0.26),
        ),
        Variant(
            "round",
            0.25,
            (Stroke(((0.5, 0.0), (0.15, 0.55), (0.15, 0.95), (0.5, 1.0), (0.85, 0.95), (0.85, 0.55)), closed=True),),
            (16.0, 36.0),
            (0.13, 0.26),
        ),
        Variant("oval", 0.1, (Stroke(_ring(0.5, 0.5, 0.42, 0.5), closed=True),), (16.0, 36.0), (0.12, 0.19)),
    ),
    (  # ۶: Persian form (hook, sharp turn, long diagonal) and Arabic ٦ (bar then down)
        Variant(
            "persian",
            0.85,
            (Stroke(((0.3, 0.02), (0.22, 0.3), (0.45, 0.46), (0.78, 0.25), (0.78, 0.25), (0.55, 0.65), (0.3, 1.0))),),
        ),
        Variant(
            "arabic",
            0.15,
            (Stroke(((0.28, 0.1), (0.48, 0.03), (0.66, 0.08), (0.66, 0.08), (0.68, 0.55), (0.76, 1.0))),),
        ),
    ),
    (  # ۷: a V, the left arm sometimes curved like a tick; short, wide and thick in Hoda
        Variant(
            "v",
            0.7,
            (Stroke(((0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.5, 1.0), (0.75, 0.5), (1.0, 0.0))),),
            (16.0, 36.0),
            (0.15, 0.23),
        ),
        Variant(
            "tick",
            0.3,
            (Stroke(((0.05, 0.3), (0.3, 0.75), (0.5, 1.0), (0.5, 1.0), (0.75, 0.5), (0.95, 0.0))),),
            (16.0, 36.0),
            (0.15, 0.23),
        ),
    ),
    (  # ۸: an inverted V
        Variant(
            "lambda",
            1.0,
            (Stroke(((0.0, 1.0), (0.25, 0.5), (0.5, 0.0), (0.5, 0.0), (0.75, 0.5), (1.0, 1.0))),),
            (16.0, 36.0),
            (0.15, 0.23),
        ),
    ),
    (  # ۹: a loop at the top left closing on a stem down the right side; the loop is often small
        Variant(
            "nine",
            0.6,
            (
                Stroke(
                    (
                        (0.68, 0.42),
                        (0.7, 0.15),
                        (0.48, 0.02),
                        (0.2, 0.12),
                        (0.18, 0.36),
                        (0.45, 0.5),
                        (0.7, 0.4),
                        (0.74, 0.7),
                        (0.78, 1.0),
                    )
                ),
            ),
        ),
        Variant(
            "small-loop",
            0.4,
            (
                Stroke(
                    (
                        (0.66, 0.3),
                        (0.66, 0.1),
                        (0.5, 0.02),
                        (0.34, 0.1),
                        (0.34, 0.28),
                        (0.5, 0.36),
                        (0.66, 0.3),
                        (0.7, 0.65),
                        (0.74, 1.0),
                    )
                ),
            ),
        ),
    ),
)


def _catmull_rom_weights(t: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom basis at parameters `t`: `(T, 4)` weights of p0..p3."""
    t2, t3 = t * t, t * t * t
    return 0.5 * np.stack([-t + 2 * t2 - t3, 2 - 5 * t2 + 3 * t3, t + 4 * t2 - 3 * t3, -t2 + t3], axis=1)


def _segment_indices(k: int, closed: bool) -> np.ndarray:
    """`(S, 4)` indices of the control points each curve segment depends on.

    Open strokes are padded with one reflected point at each end (see
    `_curve`), so the curve starts and ends on the end points.
    """
    if closed:
        return np.array([[(s - 1) % k, s, (s + 1) % k, (s + 2) % k] for s in range(k)])
    # indices into the extended array [p_-1, p_0, ..., p_k-1, p_k]
    return np.array([[s, s + 1, s + 2, s + 3] for s in range(k - 1)])


def _curve(ctrl: np.ndarray, closed: bool) -> np.ndarray:
    """Sample the Catmull-Rom curve through `ctrl` `(m, K, 2)` -> `(m, P, 2)`."""
    m, k, _ = ctrl.shape
    if not closed:
        # reflected end points give a natural (not hooked) start and end
        ctrl = np.concatenate([2 * ctrl[:, :1] - ctrl[:, 1:2], ctrl, 2 * ctrl[:, -1:] - ctrl[:, -2:-1]], axis=1)
    idx = _segment_indices(k, closed)
    g = ctrl[:, idx]  # (m, S, 4, 2)
    w = _catmull_rom_weights(np.arange(SAMPLES_PER_SEGMENT) / SAMPLES_PER_SEGMENT)  # (T, 4)
    # explicit sum (not matmul/BLAS) keeps the rounding identical on every machine
    pts = sum(w[None, None, :, j, None] * g[:, :, None, j, :] for j in range(4))  # (m, S, T, 2)
    pts = pts.reshape(m, -1, 2)
    end = g[:, -1, 2] if not closed else g[:, 0, 1]  # close the ring / reach the last point
    return np.concatenate([pts, end[:, None]], axis=1)


def _bernstein2(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quadratic Bernstein basis at `u` (clipped to [0, 1])."""
    u = np.clip(u, 0.0, 1.0)
    v = 1.0 - u
    return v * v, 2 * u * v, u * u


def _warp(pts: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Smooth random elastic warp: a 3x3 tensor-product Bezier displacement field.

    Args:
        pts: `(m, P, 2)` points on the unit canvas.
        rng: randomness source.
        amount: half-range of each control displacement, unit canvas.
    """
    m = pts.shape[0]
    d = rng.uniform(-amount, amount, size=(m, 3, 3, 2))
    bx = _bernstein2(pts[..., 0])
    by = _bernstein2(pts[..., 1])
    disp = np.zeros_like(pts)
    for i in range(3):
        for j in range(3):
            disp += (bx[i] * by[j])[..., None] * d[:, None, i, j, :]
    return pts + disp


def _variant_of(rng: np.random.Generator, weights: tuple[float, ...], m: int) -> np.ndarray:
    """Pick a variant index for each of `m` samples by `weights`."""
    cum = np.cumsum(np.asarray(weights, np.float64))
    return np.searchsorted(cum / cum[-1], rng.random(m), side="right").clip(0, len(weights) - 1)


def _geometry(variant: Variant, m: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Pen paths of `m` samples of `variant` in output pixels, and the digits' heights.

    Returns:
        A list (one per stroke) of `(m, P, 2)` float (x, y) coordinates
        centred on the canvas, and `(m,)` heights in px.
    """
    curves = []
    for stroke in variant.strokes:
        base = np.asarray(stroke.points, np.float64)  # (K, 2)
        # a repeated point (sharp corner) must move as one, so jitter unique points
        uniq, inverse = np.unique(base, axis=0, return_inverse=True)
        jit = rng.uniform(-variant.jitter, variant.jitter, size=(m, len(uniq), 2))
        curves.append(_curve(base[None] + jit[:, inverse.reshape(-1)], stroke.closed))
    sizes = [c.shape[1] for c in curves]
    pts = _warp(np.concatenate(curves, axis=1), rng, 0.09)  # (m, P, 2)

    # stroke-end tremor: a small hook where the pen lands and lifts, fading inwards
    fade = np.array([1.0, 0.5, 0.2])
    start = 0
    for size in sizes:
        for end in (start + np.arange(3), start + size - 1 - np.arange(3)):
            pts[:, end] += rng.uniform(-0.04, 0.04, size=(m, 1, 2)) * fade[None, :, None]
        start += size

    # affine about the centre: aspect, slant (shear), small rotation
    x, y = pts[..., 0] - 0.5, pts[..., 1] - 0.5
    aspect = rng.uniform(0.75, 1.3, size=(m, 1))
    slant = rng.uniform(-0.2, 0.2, size=(m, 1))
    sin = rng.uniform(-0.18, 0.18, size=(m, 1))
    cos = np.sqrt(1.0 - sin * sin)  # rotation without libm trigonometry
    x = (x - slant * y) * aspect
    x, y = cos * x - sin * y, sin * x + cos * y

    height = rng.uniform(*variant.height_px, size=m)
    centre = (CANVAS - 1) / 2
    xy = np.stack([x * height[:, None] + centre, y * height[:, None] + centre], axis=-1)
    return np.split(xy, np.cumsum(sizes)[:-1], axis=1), height


def _densify(pts: np.ndarray) -> np.ndarray:
    """Insert points along each segment so neighbours are < 1 px apart in x and y.

    Rounded to pixels, such a path is 8-connected, so scattering its points
    draws a gap-free one-pixel line. `(m, P, 2)` -> `(m, (P - 1) * U + 1, 2)`.
    """
    step = np.abs(np.diff(pts, axis=1)).max()
    u = max(1, int(np.ceil(step / 0.95)))
    t = (np.arange(u) / u)[None, None, :, None]
    seg = pts[:, :-1, None] * (1.0 - t) + pts[:, 1:, None] * t  # (m, P-1, U, 2)
    return np.concatenate([seg.reshape(len(pts), -1, 2), pts[:, -1:]], axis=1)


def _dilate(ink: np.ndarray, steps: np.ndarray) -> None:
    """Thicken each image's one-pixel skeleton in place by `steps[i]` rounds.

    Rounds alternate a 3x3 cross and a 3x3 square, which grows a pixel into
    an octagon, the closest cheap stand-in for a round pen nib. `ink` must be
    sorted by `steps`, largest first, so each round works on a prefix of the
    batch instead of masking.
    """
    for r in range(1, int(steps.max(initial=0)) + 1):
        a = ink[: int(np.count_nonzero(steps >= r))]
        grown = a.copy()
        grown[:, :, 1:] |= a[:, :, :-1]
        grown[:, :, :-1] |= a[:, :, 1:]
        src = a if r % 2 else grown.copy()  # cross: spread the original; square: the row-spread
        grown[:, 1:] |= src[:, :-1]
        grown[:, :-1] |= src[:, 1:]
        a[...] = grown


def _render_batch(variant: Variant, m: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `m` samples of `variant` -> `(m, CANVAS, CANVAS)` uint8, binary 0/255."""
    strokes, height = _geometry(variant, m, rng)
    # Hoda's strokes are 2-6 px wide at 200 dpi; width = skeleton (1 px, or 2
    # with a shifted copy) + 2 px per dilation round
    width = np.rint(height * rng.uniform(*variant.pen, size=m)).astype(np.int64).clip(2, None)
    rounds = (width - 1) // 2
    doubled = (width - 1) % 2 == 1
    # the shifted copy that makes a 2-px skeleton goes right, down or diagonally
    shift = np.array([[1, 0], [0, 1], [1, 1]])[(rng.random(m) * 3).astype(np.int64)]

    order = np.argsort(-rounds, kind="stable")  # for the prefix trick in `_dilate`
    slot = np.empty(m, np.int64)
    slot[order] = np.arange(m)
    ink = np.zeros((m, CANVAS, CANVAS), bool)
    flat = ink.reshape(-1)
    for pts in strokes:
        path = np.rint(_densify(pts)).astype(np.int64)  # (m, Q, 2)
        q = path.shape[1]
        # pressure: where it presses harder (one half of the stroke) the skeleton is doubled
        harder = (rng.random((m, 1)) < 0.3) & ((np.arange(q) < q // 2) ^ (rng.random((m, 1)) < 0.5))
        thick = doubled[:, None] ^ harder  # (m, Q)
        # broken strokes: ~3% of strokes lose a stretch of 8-20% of their length
        gap_start = rng.random((m, 1)) * 0.8 + 0.1
        gap_len = rng.uniform(0.08, 0.2, size=(m, 1))
        pos = np.arange(q)[None] / max(q - 1, 1)
        keep = ~((rng.random((m, 1)) < 0.03) & (pos >= gap_start) & (pos < gap_start + gap_len))
        for extra in (None, shift):
            p = path if extra is None else path + extra[:, None]
            sel = keep if extra is None else keep & thick
            x = p[..., 0].clip(0, CANVAS - 1)
            y = p[..., 1].clip(0, CANVAS - 1)
            idx = (slot[:, None] * CANVAS + y) * CANVAS + x
            flat[idx[sel]] = True
    _dilate(ink, rounds[order])
    return np.where(ink[slot], np.uint8(255), np.uint8(0))


def _check_count(value: object, name: str) -> int:
    """`value` as an int, or a ValueError naming `name` unless it is a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value}")
    return int(value)


def _generate(n: int, seed_seq: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """`generate` from a SeedSequence (so splits can use independent child streams)."""
    shuffle_seq, *class_seqs = seed_seq.spawn(1 + NUM_CLASSES)
    # balanced labels: n // 10 each, the remainder to the lowest digits
    counts = np.full(NUM_CLASSES, n // NUM_CLASSES)
    counts[: n % NUM_CLASSES] += 1
    labels = np.random.default_rng(shuffle_seq).permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), counts))
    images = np.zeros((n, CANVAS, CANVAS), np.uint8)
    for digit in range(NUM_CLASSES):
        rng = np.random.default_rng(class_seqs[digit])
        where = np.flatnonzero(labels == digit)
        variants = GLYPHS[digit]
        choice = _variant_of(rng, tuple(v.weight for v in variants), len(where))
        for v, variant in enumerate(variants):
            idx = where[choice == v]
            if idx.size:
                images[idx] = _render_batch(variant, idx.size, rng)
    return images, labels


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate `n` synthetic handwritten Persian digits.

    Args:
        n: number of images; labels are balanced (`n // 10` per digit, the
            remainder going to the lowest digits) and shuffled.
        seed: non-negative integer; the same `(n, seed)` gives bit-identical
            output on any machine.

    Returns:
        `(images, labels)`: `(n, CANVAS, CANVAS)` uint8 images, white ink (255)
        on black (0), not yet preprocessed; `(n,)` int64 labels 0-9.

    Raises:
        ValueError: if `n` or `seed` is not a non-negative integer.
    """
    n = _check_count(n, "n")
    seed = _check_count(seed, "seed")
    return _generate(n, np.random.SeedSequence(seed))


def synthetic_splits(
    n_train: int = 30000, n_test: int = 5000, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Generate a train and a test set from independent random streams.

    Args:
        n_train: number of training images.
        n_test: number of test images.
        seed: non-negative integer from which both streams are derived.

    Returns:
        `{"train": (images, labels), "test": (images, labels)}` as `generate` returns them.

    Raises:
        ValueError: if a count or `seed` is not a non-negative integer.
    """
    n_train = _check_count(n_train, "n_train")
    n_test = _check_count(n_test, "n_test")
    seed = _check_count(seed, "seed")
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    return {"train": _generate(n_train, train_seq), "test": _generate(n_test, test_seq)}


class Numbers(NamedTuple):
    """Synthetic handwritten numbers: one image per number and what is written in it."""

    images: list[np.ndarray]  # each (h, w) uint8, white ink (255) on black, one line of digits
    texts: list[str]  # the digits, left to right, as ASCII ("0912...")
    boxes: list[list[tuple[int, int, int, int]]]  # per digit, the ink's box (x0, y0, x1, y1), exclusive ends


NUMBER_MARGIN = 8  # px of paper around each number


def generate_numbers(
    n: int, seed: int, *, lengths: tuple[int, int] = (4, 11), touching: float = 0.15, wobble: float = 0.06
) -> Numbers:
    """Generate `n` handwritten numbers: lines of synthetic digits, left to right.

    The digits come from `generate` (so ۰ is the small dot or ring it draws,
    a third or so of the others' height); each is cropped to its ink and set
    on a line with spacing jitter (gaps of 15-60% of a digit's width), a
    wobbling baseline (each digit's middle drifts by up to `wobble` of the
    line's height from its neighbour's), and some touching pairs (gap -1 or
    0 px, where strokes usually meet). Same `(n, seed)`, same images.

    Args:
        n: how many numbers.
        seed: non-negative integer.
        lengths: fewest and most digits per number.
        touching: probability that two neighbours are set with no gap.
        wobble: baseline drift per digit, as a fraction of the tallest digit.

    Returns:
        `Numbers(images, texts, boxes)`.

    Raises:
        ValueError: a count, the seed or `lengths` out of range.
    """
    n, seed = _check_count(n, "n"), _check_count(seed, "seed")
    lo, hi = lengths
    if not 1 <= lo <= hi:
        raise ValueError(f"lengths must be (fewest, most) with 1 <= fewest <= most; got {lengths!r}")
    layout_seq, digit_seq = np.random.SeedSequence([seed, 1]).spawn(2)  # [seed, 1]: apart from generate(seed)
    rng = np.random.default_rng(layout_seq)
    counts = rng.integers(lo, hi + 1, size=n)
    glyphs, labels = _generate(int(counts.sum()), digit_seq)
    images, texts, boxes = [], [], []
    start = 0
    for count in counts:
        crops = [_ink_crop(g) for g in glyphs[start : start + count]]
        texts.append("".join(str(d) for d in labels[start : start + count]))
        start += count
        tallest = max(c.shape[0] for c in crops)
        mids = np.cumsum(rng.uniform(-wobble, wobble, size=count)) * tallest  # the drifting middle line
        mids -= mids.mean()
        spaced = rng.uniform(0.15, 0.6, size=count) * np.array([c.shape[1] for c in crops])
        gaps = np.where(rng.random(count) < touching, rng.integers(-1, 1, size=count), np.rint(spaced)).astype(int)
        height = int(tallest + 2 * np.abs(mids).max() + 2 * NUMBER_MARGIN) + 1
        width = int(sum(c.shape[1] for c in crops) + gaps[:-1].sum() + 2 * NUMBER_MARGIN)
        line = np.zeros((height, width), np.uint8)
        x, placed = NUMBER_MARGIN, []
        for crop, mid, gap in zip(crops, mids, gaps, strict=True):
            h, w = crop.shape
            y = int(round(height / 2 + mid - h / 2))
            np.maximum(line[y : y + h, x : x + w], crop, out=line[y : y + h, x : x + w])
            placed.append((x, y, x + w, y + h))
            x += w + int(gap)
        images.append(line)
        boxes.append(placed)
    return Numbers(images, texts, boxes)


def _ink_crop(image: np.ndarray) -> np.ndarray:
    """The bounding box of an image's ink (a generated digit always has some)."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
