"""The line model: reads a whole number at once, a second opinion on the cuts `segment` chooses.

`segment` reads a number digit by digit: it must first decide where touching
digits end, and a wrong cut (two digits read as one, one read as two) is a
wrong number however well each piece is then read. The line model needs no
cuts. A small fully convolutional network slides along the number, scaled so
that its digits are `LINE_HEIGHT` px tall in a `FRAME` px high strip, and says
at every `STRIDE`-th column which digit is there, or none (the blank). Trained
with connectionist temporal classification (CTC: Graves et al. 2006, the loss
of line recognizers from handwriting to licence plates) on lines composed of
training digits, it learns where digits begin and end from the lines alone. It is three such
networks (*members*, `LineConfig.dropout`: the second and third trained with dropout),
each trained alone on the same numbers; `read_line` reads them together: of
each member's reading and that of the mean of their log-probabilities at every
frame (`combined`), the one most likely to all of them. They err on different
numbers.

`read` asks both it and the segmentation: where the line model reads the
number otherwise, and finds its own reading more likely than the
segmentation's by more than `SegmentConfig.line_margin` (log-likelihoods by the
CTC forward algorithm), its reading is the answer; otherwise the
segmentation's stands. It reads first: where its own reading is so likely that
no other could come within the margin, the segmentation is not run at all.

Its data (`training_lines`) is made from the *training* split only: lines of
1-12 digits (`verifier.compose_line`: spaced or touching), with Gaussian noise
and specks, put through the same `line_image` step `read` uses. Where the
dataset keeps each digit's size as written (Hoda's scans), every digit is drawn
at its own height, so the lines keep their writers' proportions; otherwise
each is 70-100% of the line's height, a ۰ 30-50%. `train_line_model` trains
each member in float, then with quantization-aware training; `export --int8`
converts them to one `line_int8.tflite` (one output per member), whose input
width follows the number's (XNNPACK plans one graph per width, multiples of
`WIDTH_STEP`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .config import LineConfig
from .data.preprocess import INK_THRESHOLD
from .segment import SegmentConfig, layout
from .verifier import Trained, compose_line

FRAME = 40  # px: the strip's height
LINE_HEIGHT = 20  # px: the line's ordinary digits (`segment`'s H) are scaled to this height
MARGIN = 8  # px of paper left and right of the ink
STRIDE = 2  # input columns per output frame (one 2x2 pooling)
WIDTH_STEP = 32  # strips are padded to a multiple of this width: a handful of interpreter shapes serve every number
STORED_WIDTH = 256  # px: the width `line_int8.tflite` is stored with (about 11 digits); LiteRT resizes it per number
MAX_WIDTH = 2048  # px: a wider strip (over ~80 digits) is no number; the segmentation's reading stands alone
BLANK = 10  # the CTC blank: no digit at this frame
FLOOR = 170.0  # nats: `log_likelihoods` counts a class further below its frame's likeliest as this far
RESCALE = 4  # frames between `log_likelihoods`' rescalings: RESCALE * FLOOR < 708, float64's e^-708
MAX_STATES = 160  # `log_likelihoods` takes more (member, reading) states than this a few readings at a time
CLASSES = 11  # the ten digits, then the blank
NOISE_SIGMA = 12.0  # Gaussian noise on 0-255 grey levels in the training lines (`on_paper`)
LINE_MODEL_FLOAT = "line_float.keras"
LINE_MODEL_QAT_WEIGHTS = "line_qat.weights.h5"


@dataclass(frozen=True)
class LineImage:
    """A number as the line model sees it, and the way back to the image's pixels."""

    pixels: np.ndarray  # (FRAME, W) uint8, white on black; W a multiple of WIDTH_STEP
    x0: float  # the image column at strip column MARGIN
    column: float  # image columns per strip column
    ink: np.ndarray  # (h, w) bool: the kept ink (specks and stray marks dropped) in the image window the strip shows
    origin: tuple[int, int]  # (row, column) of that window in the image

    def columns(self, first: int, last: int) -> tuple[int, int]:
        """Frames `first`..`last` (inclusive) as a range of image columns `[x0, x1)` inside the window."""
        a = self.x0 + (first * STRIDE - MARGIN) * self.column
        b = self.x0 + ((last + 1) * STRIDE - MARGIN) * self.column
        left, width = self.origin[1], self.ink.shape[1]
        return min(max(left, math.floor(a)), left + width), max(left, min(left + width, math.ceil(b)))


def line_image(
    gray: np.ndarray, ink: np.ndarray, config: SegmentConfig | None = None, found: tuple | None = None
) -> LineImage | None:
    """The strip the line model reads: the number's kept ink, its ordinary digits `LINE_HEIGHT` px tall.

    The ink `segment` would read (specks, and marks off the line that are neither a ۰ nor beside a
    digit, dropped) is scaled so that the line's ink height H becomes `LINE_HEIGHT`, centred on the
    line's middle in a `FRAME` px strip (ink more than FRAME/2 from the middle is cut off), with
    `MARGIN` px of paper at each end. None without writing, or for a strip wider than `MAX_WIDTH`.
    `found` is `segment.layout(gray, ink, config, fragments=True)` when the caller has it already.
    """
    found = found or layout(gray, ink, config or SegmentConfig(), fragments=True)
    if found is None or not found[2]:
        return None
    labels, height, groups, tall = found
    x0, x1 = min(g.x0 for g in groups), max(g.x1 for g in groups)
    middle = float(np.median([(g.y0 + g.y1) / 2 for g in (tall or groups)]))
    scale = LINE_HEIGHT / height
    width = max(1, round((x1 - x0) * scale))
    padded = math.ceil((width + 2 * MARGIN) / WIDTH_STEP) * WIDTH_STEP
    if padded > MAX_WIDTH:
        return None
    half = FRAME / 2 / scale
    top, bottom = math.floor(middle - half), math.ceil(middle + half)
    r0, r1 = max(0, top), min(gray.shape[0], bottom)
    ids = [label for g in groups for label in g.labels]
    wanted = np.zeros(max(ids) + 2, bool)  # component label -> kept; every label above them -> the last, False
    wanted[ids] = True
    kept = np.take(wanted, labels[r0:r1, x0:x1], mode="clip")
    crop = np.pad(gray[r0:r1, x0:x1] * kept, ((r0 - top, bottom - r1), (0, 0)))
    strip = cv2.resize(crop, (width, FRAME), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    pixels = np.zeros((FRAME, padded), np.uint8)
    pixels[:, MARGIN : MARGIN + width] = strip
    return LineImage(pixels, float(x0), (x1 - x0) / width, kept, (r0, x0))


def build_line_model(dropout: float = 0.0):
    """Build an untrained line model: float32 `(B, FRAME, W, 1)` strips in [0, 1] -> `(B, 1, W/2, 11)` logits.

    `dropout` > 0 adds dropout at that rate to the column features (after c7) and before the logits
    (after c9): in training only, so the model it exports is the same graph as one without.
    """
    from .compat import keras

    layers = keras.layers
    dropped = (lambda name: [layers.Dropout(dropout, name=name)]) if dropout > 0 else (lambda name: [])
    return keras.Sequential(
        [
            keras.Input(shape=(FRAME, None, 1), name="line"),  # (B, 40, W, 1)
            layers.Conv2D(16, 3, padding="same", activation="relu", name="c1"),  # (B, 40, W, 16)
            layers.MaxPooling2D(2, name="s2"),  # (B, 20, W/2, 16): one frame per 2 columns from here on
            layers.Conv2D(32, 3, padding="same", activation="relu", name="c3"),  # (B, 20, W/2, 32)
            layers.MaxPooling2D((2, 1), name="s4"),  # (B, 10, W/2, 32)
            layers.Conv2D(48, 3, padding="same", activation="relu", name="c5"),  # (B, 10, W/2, 48)
            layers.MaxPooling2D((2, 1), name="s6"),  # (B, 5, W/2, 48)
            layers.Conv2D(64, (FRAME // 8, 1), activation="relu", name="c7"),  # (B, 1, W/2, 64): the column
            *dropped("d7"),
            # two 5-frame convolutions: each frame sees 36 columns, 1.8 digit heights, a digit and its neighbours
            layers.Conv2D(64, (1, 5), padding="same", activation="relu", name="c8"),  # (B, 1, W/2, 64)
            layers.Conv2D(64, (1, 5), padding="same", activation="relu", name="c9"),  # (B, 1, W/2, 64)
            *dropped("d9"),
            layers.Conv2D(CLASSES, 1, name="logits"),  # (B, 1, W/2, 11)
        ],
        name="line_model",
    )


def load_line_qat(weights_path, dropout: float = 0.0):
    """The QAT line model rebuilt from our own code, its weights loaded (as `model.load_qat`)."""
    from .model import rebuilt_qat

    return rebuilt_qat(build_line_model(dropout), weights_path)


def member_files(k: int) -> tuple[str, str]:
    """`(float model, QAT weights)` file names of member `k` of a run's line model (the first: the plain names)."""
    if k == 0:
        return LINE_MODEL_FLOAT, LINE_MODEL_QAT_WEIGHTS
    return f"line_float_{k}.keras", f"line_qat_{k}.weights.h5"


def member_stage(name: str, k: int) -> str:
    """`name` ("float", "qat", an artifact key) for member `k`: the first keeps it, the others add `_k`."""
    return f"{name}_{k}" if k else name


def member_keys(k: int) -> tuple[str, str]:
    """The manifest's artifact keys of member `k`'s `member_files`."""
    return member_stage("line_float_keras", k), member_stage("line_qat_weights", k)


# --- decoding --------------------------------------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(T, 11) logits -> log-probabilities, in float64."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def combined(logp: np.ndarray) -> np.ndarray:
    """(k, ..., T, 11) log-probabilities (or logits) of a line model's k members -> (..., T, 11) log-probabilities,
    in float64; a (T, 11) array is one member's.

    Per frame, the mean of the members' log-probabilities, normalised again (the normalised geometric
    mean of their posteriors): a digit the members disagree on loses what either doubts. One member: its
    `log_softmax`.
    """
    z = np.asarray(logp, np.float64)
    # logits or log-probabilities alike: normalising a member adds a constant per frame, which the last removes
    return log_softmax(z if z.ndim == 2 else z.mean(axis=0))


def best_path(logp: np.ndarray) -> list[tuple[int, int, int, float]]:
    """Greedy CTC decoding: the most likely class per frame, repeats merged, blanks dropped.

    Returns one `(digit, first frame, last frame, probability)` per digit read, left to right; the
    probability is the highest its frames give it.
    """
    best = logp.argmax(axis=1)
    digits = []
    for t, k in enumerate(best.tolist()):
        if k == BLANK:
            continue
        p = float(np.exp(logp[t, k]))
        if t > 0 and best[t - 1] == k:  # the same digit over another frame
            digit, first, _, q = digits[-1]
            digits[-1] = (digit, first, t, max(p, q))
        else:
            digits.append((k, t, t, p))
    return digits


def member_logp(logits: np.ndarray) -> np.ndarray:
    """(..., T, 11 k) logits of a line model's k members, side by side -> (k, ..., T, 11) log-probabilities, in
    float64: each member's own."""
    z = np.asarray(logits, np.float64)
    return np.moveaxis(log_softmax(z.reshape(*z.shape[:-1], z.shape[-1] // CLASSES, CLASSES)), -2, 0)


def log_likelihood(logp: np.ndarray, digits: Sequence[int]) -> float:
    """log P(digits | strip): the CTC forward algorithm over the (T, 11) log-probabilities `logp`; over the
    (k, T, 11) of a line model's k members, the mean of their log-likelihoods (the log of the geometric mean
    of their probabilities). -inf when T frames cannot hold the digits. `log_likelihoods` of one reading."""
    return float(log_likelihoods(logp, [digits])[0])


def log_likelihoods(logp: np.ndarray, readings: Sequence[Sequence[int]]) -> np.ndarray:
    """`log_likelihood` of each of `readings` (digit sequences), all members and readings at once.

    The digits interleaved with blanks (b d1 b d2 ... b) are the states; a path may skip a blank between
    two different digits, never between two equal ones. The forward algorithm runs on probabilities, each
    frame's divided by its likeliest class's: per frame, one product with the transitions of every (member,
    reading) at once (a block-diagonal matrix, at most `MAX_STATES` states: more readings are taken a few at
    a time) and one with the frame's emissions, where sums of logarithms took five NumPy calls (their cost,
    not the arithmetic, is what a strip's 100-200 frames spend). Every `RESCALE` frames each (member,
    reading)'s probabilities are divided by their sum, its logarithm kept. A class more than `FLOOR` nats
    below its frame's likeliest counts as `FLOOR` below (the int8 line models' logits span 90-140 nats): a
    path's probability then falls at most `RESCALE * FLOOR` nats between rescalings, within float64's range,
    and only readings no path can make are -inf.
    """
    members = np.asarray(logp, np.float64)
    members = members.reshape(-1, *members.shape[-2:])  # (k, T, 11)
    lengths = np.array([2 * len(r) + 1 for r in readings])  # states per reading
    size = lengths.max()
    at_once = max(1, MAX_STATES // (len(members) * size))  # readings per product
    if len(readings) > at_once:
        chunks = [readings[i : i + at_once] for i in range(0, len(readings), at_once)]
        return np.concatenate([log_likelihoods(members, chunk) for chunk in chunks])
    count = len(members) * len(readings)  # (member, reading) pairs, member-major
    states = np.full((len(readings), size), BLANK)
    for i, digits in enumerate(readings):
        states[i, 1 : lengths[i] : 2] = digits
    index = np.arange(size)
    live = index < lengths[:, None]  # (readings, states): a shorter reading's last states are padding
    moves = np.zeros((len(readings), size, size))  # from state i (rows) to state j (columns)
    moves[:, index, index] = 1.0
    moves[:, index[:-1], index[1:]] = 1.0
    moves[:, index[:-2], index[2:]] = (states[:, 2:] != BLANK) & (states[:, 2:] != states[:, :-2])
    moves *= live[:, None, :]  # no path enters padding
    move = np.zeros((count * size, count * size))
    for pair in range(count):
        block = slice(pair * size, (pair + 1) * size)
        move[block, block] = moves[pair % len(readings)]
    total = np.kron(np.eye(count), np.ones((size, 1)))  # (pairs states, pairs): alpha @ total sums each pair
    spread = np.ascontiguousarray(total.T)  # (pairs, pairs states): a value per pair, to each of its states
    best = members.max(axis=2, keepdims=True)  # (k, T, 1)
    emit = np.exp(np.maximum(members - best, -FLOOR))[:, :, states]  # (k, T, readings, states)
    emit = np.ascontiguousarray(emit.transpose(1, 0, 2, 3)).reshape(emit.shape[1], -1)  # (T, pairs states)
    alpha = np.where(np.tile((index < 2) & live, (len(members), 1)).ravel(), emit[0], 0.0)  # paths begin
    step, inverse, factor = np.empty_like(alpha), np.empty(count), np.empty_like(alpha)
    starts = range(1, len(emit), RESCALE)
    # What each pair was divided by at each rescaling; never 0: a path may always stay on the first blank, and
    # every emission is above 0.
    sums = np.empty((len(starts), count))
    for n, start in enumerate(starts):
        for t in range(start, min(start + RESCALE, len(emit))):
            np.dot(alpha, move, out=step)
            np.multiply(step, emit[t], out=alpha)
        np.dot(alpha, total, out=sums[n])
        np.divide(1.0, sums[n], out=inverse)
        np.dot(inverse, spread, out=factor)
        np.multiply(alpha, factor, out=alpha)
    alpha = alpha.reshape(len(members), len(readings), size)
    rows = np.arange(len(readings))
    # ending on the final blank, or on the last digit
    end = alpha[:, rows, lengths - 1] + np.where(lengths > 1, alpha[:, rows, np.maximum(lengths - 2, 0)], 0.0)
    with np.errstate(divide="ignore"):
        scale = np.log(sums).sum(axis=0).reshape(len(members), len(readings))
        found = np.log(end) + scale + best.sum(axis=(1, 2))[:, None]
    return found.mean(axis=0)


def read_line(logp: np.ndarray) -> list[tuple[int, int, int, float]]:
    """The line model's reading of a strip, as `best_path` gives it.

    Of one member's (T, 11) log-probabilities: their `best_path`. Of several members' (k, T, 11): the best
    path of their frame-wise mean (`combined`) or of one member, whichever reading is the most likely to all
    of them (the highest `log_likelihood`, the mean over the members; the frame-wise mean's on a tie). The
    members' frames need not agree: CTC puts a digit's spike anywhere on the digit, and where two members
    put it frames apart, their frame-wise mean is a blank there and loses the digit. Where all read the
    same digits (most numbers), nothing is weighed and the frame-wise mean's path is the reading.
    """
    logp = np.asarray(logp, np.float64)
    members = logp.reshape(-1, *logp.shape[-2:])
    if len(members) == 1:
        return best_path(members[0])
    paths = [best_path(one) for one in (combined(members), *members)]
    digits = [tuple(d for d, *_ in path) for path in paths]
    if len(set(digits)) == 1:
        return paths[0]
    weighed = list(dict.fromkeys(digits))  # each reading once, the frame-wise mean's first
    return paths[digits.index(weighed[int(np.argmax(log_likelihoods(members, weighed)))])]


# --- data ------------------------------------------------------------------------------------------


def training_lines(
    images: np.ndarray, labels: np.ndarray, count: int, seed: int, scanned: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Strips of numbers composed from one split's preprocessed digits, and their digits.

    Args:
        images: (N, 28, 28) uint8 preprocessed digits (a training split's).
        labels: (N,) their digits.
        count: how many numbers (1-12 digits each; alternately tight and spaced).
        seed: the generator's seed.
        scanned: (N,) the digits' ink heights as written, where the dataset keeps them: each digit is then
            drawn at its own height (`compose_line`), not at 70-100% of the line's.

    Returns:
        `(strips, digits)`: `count` (FRAME, W) uint8 strips (`line_image`) and (L,) int32 digit arrays.
    """
    rng = np.random.default_rng(seed)
    strips, digits = [], []
    while len(strips) < count:
        idx = rng.integers(0, len(images), size=int(rng.integers(1, 13)))
        sizes = None if scanned is None else scanned[idx]
        gray, _, _ = compose_line(images[idx], labels[idx], rng, len(strips) % 2 == 0, (0.7, 1.0), sizes)
        gray = on_paper(gray, rng)
        strip = line_image(gray, gray > INK_THRESHOLD)
        if strip is not None:  # a line of one ۰ may be lower than `min_height`
            strips.append(strip.pixels)
            digits.append(np.asarray(labels[idx], np.int32))
    return strips, digits


def split_lines(split, count: int, seed: int, written_heights: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`training_lines` of one `Split`'s digits, each drawn at its height as written (`split.raw_shapes`)
    if `written_heights` (the line model's manifest record `data.written_heights`), else at 70-100% of the
    line's."""
    scanned = split.raw_shapes[:, 0] if written_heights else None
    return training_lines(split.images, split.labels, count, seed, scanned=scanned)


def validation_lines(val, count: int, seed: int, written_heights: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The numbers of validation digits that choose the line model's epoch (`train_line_model`), made again
    the same way wherever they are needed (`export` checks the int8 model on them): `split_lines` of the
    `val` split with the run's `seed` + 1."""
    return split_lines(val, count, seed + 1, written_heights)


def on_paper(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to three 1-2 px specks and Gaussian noise (sigma `NOISE_SIGMA`), as a scan adds: a white-on-black
    uint8 line as a user would hand it over (also benchmarks/read_numbers.py's numbers, after scaling)."""
    image = gray.astype(np.float64)
    for _ in range(rng.integers(0, 4)):
        y, x = rng.integers(0, image.shape[0] - 2), rng.integers(0, image.shape[1] - 2)
        image[y : y + rng.integers(1, 3), x : x + rng.integers(1, 3)] = 255
    image += rng.normal(0, NOISE_SIGMA, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def batch(strips: Sequence[np.ndarray], digits: Sequence[np.ndarray] | None = None):
    """Strips padded on the right to the widest -> float32 `(B, FRAME, W, 1)` in [0, 1]; with `digits`, also
    `(B, L)` int32 digits (0-padded) and `(B,)` their counts."""
    width = max(s.shape[1] for s in strips)
    x = np.zeros((len(strips), FRAME, width, 1), np.float32)
    for k, s in enumerate(strips):
        x[k, :, : s.shape[1], 0] = s / 255.0
    if digits is None:
        return x
    y = np.zeros((len(digits), max(1, max(len(d) for d in digits))), np.int32)
    for k, d in enumerate(digits):
        y[k, : len(d)] = d
    return x, y, np.array([len(d) for d in digits], np.int32)


def _batches(widths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index batches of similar widths (little padding), in random order."""
    order = rng.permutation(len(widths))
    batches = []
    for start in range(0, len(order), size * 32):  # sorted by width within chunks of 32 batches
        chunk = order[start : start + size * 32]
        chunk = chunk[np.argsort(widths[chunk], kind="stable")]
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches


# --- training --------------------------------------------------------------------------------------


def train_line_model(
    config: LineConfig, splits: dict, seed: int, log: Callable[[str], None], scanned: bool = False
) -> Trained:
    """Compose numbers from the train split (and, to choose epochs, the validation split); train float, then QAT.

    Args:
        config: the line model's recipe.
        splits: "train" and "val" `Split`s of preprocessed digits (the test split is not looked at).
        seed: the run's seed.
        log: where progress lines go.
        scanned: the splits' `raw_shapes` are the digits' sizes as written (`Dataset.written_sizes`): each
            digit is drawn at its own height (recorded as the data's `written_heights`).
    """
    from .compat import keras
    from .model import quantize_aware

    begun = time.perf_counter()
    train, val = splits["train"], splits["val"]
    lines = min(config.lines, max(16, 2 * len(train.labels)))  # a number draws ~6.5 digits: each seen ~13 times
    val_lines = max(8, lines // 16)
    train_xy = split_lines(train, lines, seed, scanned)
    val_xy = validation_lines(val, val_lines, seed, scanned)
    made = time.perf_counter() - begun
    data = {"lines": {"train": lines, "val": val_lines}, "written_heights": scanned, "seconds": round(made, 2)}
    drawn = "as written" if scanned else "70-100% of the line's"
    log(
        f"line model: {lines:,} numbers of training digits, {val_lines:,} of validation digits, "
        f"digit heights {drawn}, {made:.0f} s"
    )
    steps = math.ceil(lines / config.batch_size)
    history, best, seconds, models = {}, {}, {}, {}
    for k, dropout in enumerate(config.dropout):  # the same numbers, in the same order, for every member
        if len(config.dropout) > 1:
            log(f"line model: member {k + 1} of {len(config.dropout)}, dropout {dropout}")
        keras.utils.set_random_seed(seed)
        model = build_line_model(dropout)
        schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=config.epochs * steps, alpha=0.01)
        rng = np.random.default_rng(seed)
        stage = member_stage("float", k)
        history[stage], best[stage], seconds[stage] = _fit(
            model, train_xy, val_xy, config.epochs, keras.optimizers.Adam(schedule), config, rng, log, stage
        )
        models[stage] = model
        if config.qat_epochs:
            qat, stage = quantize_aware(model), member_stage("qat", k)
            history[stage], best[stage], seconds[stage] = _fit(
                qat, train_xy, val_xy, config.qat_epochs, keras.optimizers.Adam(config.qat_lr), config, rng, log, stage
            )
            models[stage] = qat
    together = None
    if len(config.dropout) > 1:  # what `read` gets: the members' log-probabilities combined
        final = "qat" if config.qat_epochs else "float"
        members = [models[member_stage(final, k)] for k in range(len(config.dropout))]
        exact, loss = evaluate(members, *val_xy)
        together = {"stage": final, "val_exact": round(exact, 5), "val_loss": round(loss, 5)}
        log(f"line model: the {len(members)} {final} members together read {exact:.2%} of the validation numbers")
    return Trained(models, history, best, seconds, data, val_xy, together)


def _fit(model, train_xy, val_xy, epochs, optimizer, config: LineConfig, rng, log, stage):
    """Train on the CTC loss for `epochs`; keep the weights of the epoch that reads most validation numbers."""
    from .compat import tf

    spec = (
        tf.TensorSpec((None, FRAME, None, 1), tf.float32),
        tf.TensorSpec((None, None), tf.int32),
        tf.TensorSpec((None,), tf.int32),
    )

    @tf.function(input_signature=spec)  # one trace for every batch shape
    def step(x, y, counts):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(ctc_loss(model(x, training=True), y, counts))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    strips, digits = train_xy
    widths = np.array([s.shape[1] for s in strips])
    rows, best_epoch, best_exact, weights, begun = [], 0, -1.0, None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        losses = [
            float(step(*batch([strips[i] for i in b], [digits[i] for i in b])))
            for b in _batches(widths, config.batch_size, rng)
        ]
        exact, val_loss = evaluate(model, *val_xy)
        row = {
            "epoch": epoch,
            "seconds": round(time.perf_counter() - started, 2),
            "loss": round(float(np.mean(losses)), 5),
        }
        row.update({"val_loss": round(val_loss, 5), "val_exact": round(exact, 5)})
        rows.append(row)
        if exact >= best_exact:  # ties to the later epoch, as for the digit model
            best_epoch, best_exact, weights = epoch, exact, model.get_weights()
        log(
            f"line-{stage:5} epoch {epoch:>2}/{epochs}  loss {row['loss']:.4f}  val exact {exact:.2%}  "
            f"val loss {val_loss:.4f}  {row['seconds']:.1f} s"
        )
    model.set_weights(weights)
    return rows, best_epoch, time.perf_counter() - begun


def ctc_loss(logits, digits, counts):
    """Per-number CTC loss of `(B, 1, T, 11)` logits for `(B, L)` digits, `counts` of them each."""
    from .compat import tf

    logits = logits[:, 0]  # (B, T, 11)
    frames = tf.fill([tf.shape(logits)[0]], tf.shape(logits)[1])
    return tf.nn.ctc_loss(digits, logits, counts, frames, logits_time_major=False, blank_index=BLANK)


def evaluate(model, strips: Sequence[np.ndarray], digits: Sequence[np.ndarray], size: int = 128) -> tuple[float, float]:
    """`(share of numbers read exactly, mean CTC loss)` of a Keras line model, or of a list of members read
    together (`read_line`; their mean loss)."""
    from .compat import tf

    members = model if isinstance(model, list | tuple) else [model]
    right, losses = 0, []
    order = np.argsort([s.shape[1] for s in strips], kind="stable")
    for start in range(0, len(order), size):
        chosen = order[start : start + size]
        x, y, counts = batch([strips[i] for i in chosen], [digits[i] for i in chosen])
        logits = tf.concat([m(x, training=False) for m in members], axis=-1).numpy()  # (B, 1, T, 11 k)
        logp = member_logp(logits[:, 0])  # (k, B, T, 11)
        losses.append(np.mean([ctc_loss(tf.constant(one[:, None], tf.float32), y, counts) for one in logp], axis=0))
        for k, i in enumerate(chosen):
            read = [d for d, *_ in read_line(logp[:, k])]
            right += read == digits[i].tolist()
    return right / max(1, len(strips)), float(np.concatenate(losses).mean()) if losses else 0.0
