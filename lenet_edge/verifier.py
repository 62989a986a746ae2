"""The piece verifier: a second small network that says whether a piece of a number is exactly one digit.

The 10-class digit model is about as sure of two touching digits, or half of
one, as of a real digit: it was only ever shown single digits. `read` cuts
touching digits by weighing candidate pieces (`segment`), and needs a score
for "this piece is one digit". The verifier gives it: P(one digit | piece),
a LeNet-sized CNN with two logits (not one digit, one digit), trained by
`lenet-edge train` right after the digit model. A separate model rather
than an 11th class leaves the digit model, its contract and its figures as
they were.

Its data (`training_pieces`) is made from the *training* split only:

1. lines of 4-11 training digits, each scaled to a line height of 24-70 px
   (۰ to a third of it, at mid-line, as it is written), spaced or touching
   (gaps of -1 to 2 px at Hoda's scale, so strokes meet and overlap);
2. every candidate piece `segment.candidate_pieces` makes of the line (the
   pieces `read`'s dynamic programme weighs: touching pairs, cuts at wrong
   columns, halves, a digit with a neighbour's stroke), labelled by which
   digits' ink it holds: one (at least 95% of its ink one digit's, and 90%
   of that digit) or not one (under 85% or 75%); what lies between is left out;
3. fragments of single digits (a third to a half of one) and specks, as
   further negatives.

`train_verifier` trains it in float, then with quantization-aware training,
as the digit model; `export --int8` converts it to `verifier_int8.tflite`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .config import VerifierConfig
from .data.preprocess import INK_THRESHOLD, MODEL_INPUT_SHAPE, preprocess
from .segment import SegmentConfig, candidate_pieces

CLASSES = 2  # logits: (not one digit, one digit)
NOT_ONE, ONE = 0, 1  # the logits: "not one digit", "exactly one digit"
ZERO = 0  # the digit ۰, written small at mid-line
VERIFIER_QAT_WEIGHTS = "verifier_qat.weights.h5"
VERIFIER_FLOAT_MODEL = "verifier_float.keras"


def build_verifier():
    """Build an untrained verifier: float32 `(B, 28, 28, 1)` pieces in [0, 1] -> `(B, 2)` logits."""
    from .compat import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=MODEL_INPUT_SHAPE, name="image"),  # (B, 28, 28, 1)
            layers.Conv2D(8, 5, padding="same", activation="relu", name="c1"),  # (B, 28, 28, 8)
            layers.MaxPooling2D(2, name="s2"),  # (B, 14, 14, 8)
            layers.Conv2D(16, 5, activation="relu", name="c3"),  # (B, 10, 10, 16)
            layers.MaxPooling2D(2, name="s4"),  # (B, 5, 5, 16)
            layers.Flatten(name="flatten"),  # (B, 400)
            layers.Dense(64, activation="relu", name="f5"),  # (B, 64)
            layers.Dense(CLASSES, name="logits"),  # (B, 2)
        ],
        name="verifier",
    )


def load_verifier_qat(weights_path):
    """The QAT verifier rebuilt from our own code, its weights loaded (as `model.load_qat`)."""
    from .model import rebuilt_qat

    return rebuilt_qat(build_verifier(), weights_path)


# --- data ------------------------------------------------------------------------------------------


def _ink_crop(image: np.ndarray) -> np.ndarray:
    ink = image > INK_THRESHOLD
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return image[:0, :0]
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _scaled(crop: np.ndarray, height: float) -> np.ndarray:
    h, w = crop.shape
    size = (max(1, round(w * height / h)), max(1, round(height)))
    return np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR), np.uint8)


def compose_line(
    images: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    tight: bool,
    heights: tuple[float, float] = (0.85, 1.0),
    scanned: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Preprocessed digits on one line: `(gray, owner, ink per digit)`.

    `gray` is white on black; `owner[y, x]` is 1 + the index of the digit whose ink is brightest
    there (0: paper). Heights follow Hoda's: every digit but ۰ `heights` (a range) of the line's
    height, ۰ 30-50%. With `scanned`, the digits' ink heights as written (px at Hoda's 200 dpi, where
    the dataset keeps them), each digit is drawn at its own height instead, all at the line's scale:
    the number keeps its writers' proportions (a ۰ small, a ۵ lower than a ۲, a large hand's digits
    large).
    """
    line_height = rng.uniform(24, 70)
    unit = line_height / 30  # Hoda's digits are about 30 px tall at 200 dpi: gaps are drawn at that scale
    crops = []
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        crop = _ink_crop(image)
        if crop.size == 0:
            continue
        if scanned is not None:
            drawn = float(scanned[k]) * unit
        else:
            drawn = (rng.uniform(0.3, 0.5) if label == ZERO else rng.uniform(*heights)) * line_height
        crops.append(_scaled(crop, drawn))  # `drawn` px tall
    widths = [c.shape[1] for c in crops]
    if tight:
        gaps = [round(g * unit) for g in rng.integers(-1, 3, size=len(crops))]
    else:
        gaps = [round(rng.uniform(0.15, 0.6) * w) for w in widths]
    margin = 8
    height = int(max(line_height * 1.2, max((c.shape[0] + 4 for c in crops), default=0))) + 2 * margin
    width = sum(widths) + sum(gaps[:-1]) + 2 * margin + 4
    gray = np.zeros((height, width), np.uint8)
    owner = np.zeros((height, width), np.int32)
    x = margin
    for k, (crop, gap) in enumerate(zip(crops, gaps, strict=True)):
        h, w = crop.shape
        y = int(round(height / 2 + rng.uniform(-0.04, 0.04) * line_height - h / 2))
        cell, who = gray[y : y + h, x : x + w], owner[y : y + h, x : x + w]
        brighter = (crop > cell) & (crop > INK_THRESHOLD)
        who[brighter] = k + 1
        np.maximum(cell, crop, out=cell)
        x += w + gap
    ink_per_digit = np.bincount(owner[gray > INK_THRESHOLD].ravel(), minlength=len(crops) + 1).tolist()
    return gray, owner, ink_per_digit


def label_piece(box, crop: np.ndarray, owner: np.ndarray, ink_per_digit: list[int]) -> int | None:
    """1: the piece is one digit (>= 95% of its ink one digit's, and >= 90% of that digit); 0: not one
    (under 85% or under 75%); None: in between (left out of training)."""
    x0, y0, x1, y1 = box
    own = crop > INK_THRESHOLD
    counts = np.bincount(owner[y0:y1, x0:x1][own].ravel(), minlength=len(ink_per_digit))
    total = int(own.sum())
    if total == 0:
        return 0
    k = int(counts[1:].argmax()) + 1
    share, coverage = counts[k] / total, counts[k] / max(1, ink_per_digit[k])
    if share >= 0.95 and coverage >= 0.9:
        return 1
    if share < 0.85 or coverage < 0.75:
        return 0
    return None


def _balanced(x: list, y: list, rng: np.random.Generator, ratio: float = 3.0) -> tuple[list, list]:
    """At most `ratio` negatives per positive: most candidate pieces of a tight line are not one digit."""
    ones = [i for i, label in enumerate(y) if label == ONE]
    others = [i for i, label in enumerate(y) if label != ONE]
    keep = int(ratio * max(1, len(ones)))
    if len(others) > keep:
        others = rng.choice(others, size=keep, replace=False).tolist()
    kept = sorted(ones + others)
    return [x[i] for i in kept], [y[i] for i in kept]


def _fragment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A third to a half of a digit, cut off along one side: a piece that is not a digit."""
    crop = _ink_crop(image)
    h, w = crop.shape
    part = rng.uniform(0.3, 0.5)
    side = rng.integers(4)
    if side == 0:
        crop = crop[: max(1, round(h * part))]
    elif side == 1:
        crop = crop[h - max(1, round(h * part)) :]
    elif side == 2:
        crop = crop[:, : max(1, round(w * part))]
    else:
        crop = crop[:, w - max(1, round(w * part)) :]
    return preprocess(np.ascontiguousarray(crop))


def _speck(rng: np.random.Generator) -> np.ndarray:
    """A small blob or dash of ink (a speck, a dot of dust), preprocessed as a piece."""
    canvas = np.zeros((12, 12), np.uint8)
    h, w = rng.integers(1, 4), rng.integers(1, 6)
    canvas[4 : 4 + h, 3 : 3 + w] = 255
    return preprocess(canvas)


def training_pieces(
    images: np.ndarray, labels: np.ndarray, lines: int, seed: int, segment_config: SegmentConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pieces for the verifier from one split's preprocessed digits.

    Args:
        images: (N, 28, 28) uint8 preprocessed digits (a training split's).
        labels: (N,) their digits (to draw ۰ small).
        lines: how many lines to compose (half tight, half spaced).
        seed: the generator's seed.
        segment_config: the thresholds `read` segments with.

    Returns:
        `(x, y)`: (M, 28, 28) uint8 pieces and (M,) int64, 1 for "exactly one digit", shuffled.
    """
    rng = np.random.default_rng(seed)
    x, y = [], []
    for i in range(lines):
        idx = rng.integers(0, len(images), size=int(rng.integers(4, 12)))
        gray, owner, ink_per_digit = compose_line(images[idx], labels[idx], rng, tight=i % 2 == 0)
        for box, crop, piece in candidate_pieces(gray, gray > INK_THRESHOLD, segment_config or SegmentConfig()):
            label = label_piece(box, crop, owner, ink_per_digit)
            if label is not None:
                x.append(piece)
                y.append(label)
    x, y = _balanced(x, y, rng)
    extra = max(1, len(x) // 10)
    for i in rng.integers(0, len(images), size=extra):  # fragments of single digits
        x.append(_fragment(images[i], rng))
        y.append(0)
    for _ in range(max(1, extra // 4)):
        x.append(_speck(rng))
        y.append(0)
    order = rng.permutation(len(x))
    return np.stack(x)[order], np.asarray(y, np.int64)[order]


# --- training --------------------------------------------------------------------------------------


@dataclass
class Trained:
    """What training one of `read`'s helpers (`train_verifier`, `line_model.train_line_model`) hands on."""

    models: dict  # "float", "qat" -> Keras model
    history: dict[str, list[dict]]
    best_epoch: dict[str, int]
    seconds: dict[str, float]
    data: dict  # how much data was composed per split, and how long it took
    val: tuple  # the validation data: (pieces, labels), or (strips, digits) for the line model
    together: dict | None = None  # a line model of several members: their validation figures read together


def train_verifier(config: VerifierConfig, splits: dict, seed: int, log: Callable[[str], None]) -> Trained:
    """Compose pieces from the train split (and, to choose epochs, the validation split), train float then QAT.

    Args:
        config: the verifier's recipe.
        splits: "train" and "val" `Split`s of preprocessed digits (the test split is not looked at).
        seed: the run's seed.
        log: where progress lines go.
    """
    from .compat import keras
    from .model import quantize_aware

    begun = time.perf_counter()
    train, val = splits["train"], splits["val"]
    lines = min(config.lines, max(8, len(train.labels) // 8))
    train_x, train_y = training_pieces(train.images, train.labels, lines, seed)
    val_x, val_y = training_pieces(val.images, val.labels, max(4, lines // 8), seed + 1)
    made = time.perf_counter() - begun
    data = {
        "lines": {"train": lines, "val": max(4, lines // 8)},
        "pieces": {
            split: {"one": int(y.sum()), "not_one": int((y == 0).sum())}
            for split, y in (("train", train_y), ("val", val_y))
        },
        "seconds": round(made, 2),
    }
    log(
        f"verifier: {len(train_y):,} training pieces ({int(train_y.sum()):,} one digit) from {lines:,} lines "
        f"of training digits, {len(val_y):,} validation pieces, {made:.0f} s"
    )
    keras.utils.set_random_seed(seed)
    model = build_verifier()
    x = (train_x.astype(np.float32) / 255.0)[..., None]
    targets = np.eye(CLASSES, dtype=np.float32)[train_y]
    val_xy = ((val_x.astype(np.float32) / 255.0)[..., None], np.eye(CLASSES, dtype=np.float32)[val_y])
    steps = math.ceil(len(x) / config.batch_size)
    history, best, seconds, models = {}, {}, {}, {}
    stages = (
        (
            "float",
            model,
            config.epochs,
            keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=config.epochs * steps, alpha=0.01)
            ),
        ),
    )
    for stage, m, epochs, optimizer in stages:
        history[stage], best[stage], seconds[stage] = _fit(m, x, targets, val_xy, epochs, optimizer, config, log)
        models[stage] = m
    if config.qat_epochs:
        qat = quantize_aware(model)
        history["qat"], best["qat"], seconds["qat"] = _fit(
            qat, x, targets, val_xy, config.qat_epochs, keras.optimizers.Adam(config.qat_lr), config, log, "qat"
        )
        models["qat"] = qat
    return Trained(models, history, best, seconds, data, (val_x, val_y))


def _fit(model, x, targets, val_xy, epochs, optimizer, config: VerifierConfig, log, stage="float"):
    from .compat import keras
    from .training import BestEpoch

    begun = time.perf_counter()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    best = BestEpoch(f"v-{stage}", epochs, log, model)
    model.fit(
        x,
        targets,
        batch_size=config.batch_size,
        epochs=epochs,
        validation_data=val_xy,
        validation_batch_size=1024,
        callbacks=[best],
        verbose=0,
        shuffle=True,
    )
    model.set_weights(best.weights)
    return best.history, best.best_epoch, time.perf_counter() - begun


def scores(logits: np.ndarray) -> np.ndarray:
    """(N, 2) logits -> (N,) P(exactly one digit) (a two-way softmax)."""
    logits = np.asarray(logits, np.float64)
    return 1.0 / (1.0 + np.exp(logits[:, NOT_ONE] - logits[:, ONE]))


def held_out(predicted_one: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy on held-out pieces, overall and on each label."""
    right = predicted_one == (y == ONE)
    return {
        "pieces": int(len(y)),
        "accuracy": float(right.mean()) if len(y) else 0.0,
        "one_accuracy": float(right[y == ONE].mean()) if (y == ONE).any() else 0.0,
        "not_one_accuracy": float(right[y != ONE].mean()) if (y != ONE).any() else 0.0,
    }
