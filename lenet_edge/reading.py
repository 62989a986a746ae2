"""Read: whole handwritten numbers in image files, digit by digit.

`read(paths)` loads each image as `predict` does (`load_image`: grayscale,
white ink on black), refusing images above `MAX_PIXELS` before their pixels
are decoded; cleans it with the photo front end `predict` uses
(`frontend.clean_page`: lighting flattened, ruled lines and box frames
removed; a clean scan passes unchanged); finds the digits with `segment.segment` (which asks the model to
choose where touching digits are cut); every segment is preprocessed exactly
as a single digit for `predict` and classified by one loaded interpreter, in
at most two batched calls per image (the groups whole, then the pieces of
those that may hold touching digits). With the run's line model (`line_model`),
the number is read whole first, in one more call: where that reading is so
likely that no other could stand against it, it is the answer and the
segmentation is skipped; otherwise, where it differs from the segmentation's
and is much more likely, it replaces it (`read_array`). The
result per image is the number as written (most significant digit first, left
to right), in ASCII and Persian digits, with a box and a confidence per digit.

An image that gives no number is an `error` entry naming why: no ink, only
specks, ink over most of the image (no paper), more pieces than a number has,
or pieces that do not look like digits (a digit below `min_confidence`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from .config import READ_MIN_CONFIDENCE
from .data.folders import load_image
from .data.frontend import Page, clean_page, ink_image, shrunk_by
from .data.preprocess import INK_THRESHOLD
from .errors import DataError, ModelError
from .inference import PROB_DIGITS, _without_path, image_files, resolve_model, softmax
from .line_model import CLASSES as LINE_CLASSES
from .line_model import FRAME, LineImage, combined, line_image, log_likelihood, member_logp, read_line
from .manifest import PERSIAN_DIGITS, artifact_path, manifest_path, read_manifest
from .quiet import native_stderr_captured
from .runtimes.base import NUM_CLASSES
from .segment import SegmentConfig, TooManyMarks, layout, segment
from .verifier import CLASSES as VERIFIER_CLASSES
from .verifier import scores as one_digit

VERIFIER_KEY = "verifier_int8_tflite"  # the manifest entry of the piece verifier `export --int8` writes
MIXED_KEY, MIXED_VERIFIER_KEY = "mixed_tflite", "verifier_mixed_tflite"  # `export --mixed`'s pair
LINE_KEY = "line_int8_tflite"  # the manifest entry of the line model `export --int8` writes
MIXED_LINE_KEY = "line_mixed_tflite"  # ... and `export --mixed`'s, paired with the mixed digit model
MAX_PIXELS = 40_000_000  # largest image read accepts (40 MP, a large phone photo), checked before decoding
MAX_DIGITS = 40  # more segments than this is not one number
MAX_INK_SHARE = 0.5  # ink over more than half the image: no paper to write on, so no number
BATCH_STEP = 4  # interpreter batches are multiples of this (a chunk of pieces padded up to the next one)
MAX_BATCH = 16  # pieces per interpreter call at most: per image, larger batches are no faster
NO_INK = "no ink (a blank image, or only lines or an empty box)"
READ_HEIGHT = 48  # px: a clean image whose writing is taller is read shrunk to this height (`_shrunk`)
CORE_ROWS = 0.2  # the writing's height, before any labelling: its rows with this share of the busiest row's ink
WRITING_SHARE = 0.75  # ... and a line of writing leaves paper above or below it: at most this share of the rows
MIN_CONFIDENCE = READ_MIN_CONFIDENCE  # default: a segment the model is less sure of than this is no digit


class Classifier:
    """The model, kept loaded, classifying preprocessed digits in batches.

    The one place `read` touches a runtime: model handles (`runtimes.open_model`,
    LiteRT with XNNPACK), one per batch size. A call's pieces go through in
    chunks of `MAX_BATCH`, the last padded up to a multiple of `BATCH_STEP`, so
    a handful of handles (4, 8, ..., `MAX_BATCH`) serve every number and stay
    open: XNNPACK plans a graph once per handle and never again for a new size,
    and per image a batch of 16 costs what one of 96 does.
    `classes` 2 opens the piece verifier (`verifier`), whose output is
    reduced to P(exactly one digit).
    """

    def __init__(self, model: bytes | str | os.PathLike, classes: int = NUM_CLASSES):
        self.classes = classes
        self.source = bytes(model) if isinstance(model, bytes | bytearray) else Path(model)
        self.handles: dict[int, object] = {}
        self._handle(BATCH_STEP)  # opened now: a file that is no such model fails here, not on the first image

    def _handle(self, batch: int):
        from .runtimes import open_model

        if batch not in self.handles:
            with native_stderr_captured():  # XNNPACK's "Created delegate" INFO line
                self.handles[batch] = handle = open_model(self.source, classes=self.classes)
            handle.set_batch(batch)
        return self.handles[batch]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) uint8 preprocessed digits -> (N, 10) float64 probabilities (verifier: (N,) P(one))."""
        logits = []
        for start in range(0, max(1, len(images)), MAX_BATCH):
            chunk = images[start : start + MAX_BATCH]
            padded = np.zeros((max(1, math.ceil(len(chunk) / BATCH_STEP)) * BATCH_STEP, *images.shape[1:]), np.uint8)
            padded[: len(chunk)] = chunk
            handle = self._handle(len(padded))
            logits.append(handle.logits(handle.run(padded))[: len(chunk)])
        logits = np.concatenate(logits)
        return softmax(logits) if self.classes == NUM_CLASSES else one_digit(logits)


class LineReader:
    """The line model (`line_model`), kept loaded: a strip's (T, 11) log-probabilities.

    One LiteRT interpreter (XNNPACK, one thread) per strip width: widths are multiples of
    `line_model.WIDTH_STEP`, so a few handles serve every number, each planned once.
    """

    def __init__(self, model: bytes | str | os.PathLike):
        from .runtimes.litert import label

        self.label = label(model)  # its path, for messages
        self.source = bytes(model) if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
        self.handles: dict[int, tuple] = {}
        self._handle(4 * FRAME)  # opened now: a file that is no line model fails here, not on the first image

    def _handle(self, width: int) -> tuple:
        from .runtimes.base import input_levels
        from .runtimes.litert import load_interpreter, tensor_spec

        if width not in self.handles:
            with native_stderr_captured():  # XNNPACK's "Created delegate" INFO line
                interpreter = load_interpreter(self.source, xnnpack=True)
                (given,), outputs = interpreter.get_input_details(), interpreter.get_output_details()
                shapes = [taken["shape"].tolist() for taken in outputs]
                if len(given["shape"]) != 4 or given["shape"][1] != FRAME or any(s[-1] != LINE_CLASSES for s in shapes):
                    raise ModelError(
                        f"{self.label}: not a line model (input {given['shape'].tolist()}, outputs {shapes}; "
                        f"expected (1, {FRAME}, W, 1) -> (1, 1, W/2, {LINE_CLASSES}), one output per member)"
                    )
                interpreter.resize_tensor_input(given["index"], [1, FRAME, width, 1], strict=False)
                interpreter.allocate_tensors()
            # uint8 pixel -> model input by a table (as for the digit model); each output's quantization to read it
            levels = input_levels(tensor_spec(given))
            members = [(taken["index"], tensor_spec(taken)) for taken in sorted(outputs, key=lambda t: t["name"])]
            self.handles[width] = (interpreter, given["index"], levels, members)
        return self.handles[width]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """A (FRAME, W) uint8 strip (`LineImage.pixels`) -> (k, T, 11) float64 log-probabilities of the line
        model's k members, T = W / 2."""
        from .runtimes.base import dequantized

        interpreter, given, levels, members = self._handle(pixels.shape[1])
        interpreter.set_tensor(given, levels[pixels][None, :, :, None])  # (1, FRAME, W, 1)
        interpreter.invoke()
        logits = [dequantized(interpreter.get_tensor(taken), output)[0, 0] for taken, output in members]
        return member_logp(np.concatenate(logits, axis=-1))  # (k, T, 11)


def _manifest_beside(model: str | os.PathLike) -> tuple[Path, dict | None]:
    """`model`'s directory and the run manifest there (None: the model has none beside it)."""
    folder = Path(model).parent
    return folder, read_manifest(folder) if manifest_path(folder).is_file() else None


def resolve_verifier(model: str | os.PathLike, log: Callable[[str], None] | None = None) -> Path | None:
    """The piece verifier exported beside the digit model `model`, or None.

    Found through the manifest in `model`'s directory and sha256-checked against it: `verifier_mixed.tflite`
    beside the run's mixed model (`export --mixed`: float32 where int8 loses on this CPU, for both
    models), `verifier_int8.tflite` beside any other. A model without a manifest beside it, or a run
    without a verifier (trained before it existed, or for another architecture), has none: `read` then
    cuts by the digit model alone (said through `log`).

    Raises:
        ModelError: the manifest names a verifier whose file is missing or fails its sha256.
    """
    folder, manifest = _manifest_beside(model)
    if manifest is None:
        return None
    artifacts = manifest.get("artifacts", {})
    if VERIFIER_KEY not in artifacts:
        if log:
            log(
                f"{folder}: no piece verifier (train and export the run again with this lenet-edge to add one); "
                "touching digits are cut by the digit model alone"
            )
        return None
    return artifact_path(folder, manifest, _paired(model, artifacts, MIXED_VERIFIER_KEY, VERIFIER_KEY))


def _paired(model: str | os.PathLike, artifacts: dict, mixed_key: str, key: str) -> str:
    """`mixed_key` for the run's mixed digit model when the run has that file too (`export --mixed`), else `key`."""
    mixed = artifacts.get(MIXED_KEY, {}).get("path") == Path(model).name and mixed_key in artifacts
    return mixed_key if mixed else key


def resolve_line_model(model: str | os.PathLike, log: Callable[[str], None] | None = None) -> Path | None:
    """The line model exported beside the digit model `model` (`line_int8.tflite`), or None.

    Found, and sha256-checked, through the manifest in `model`'s directory, as `resolve_verifier`:
    `line_mixed.tflite` beside the run's mixed model, where `export --mixed` wrote one. Without
    one (a model without a manifest beside it, a run trained before the line model existed or for
    another architecture), `read` takes the segmentation's reading as it is (said through `log`).

    Raises:
        ModelError: the manifest names a line model whose file is missing or fails its sha256.
    """
    folder, manifest = _manifest_beside(model)
    if manifest is None:
        return None
    artifacts = manifest.get("artifacts", {})
    if LINE_KEY not in artifacts:
        if log:
            log(f"{folder}: no line model (`lenet-edge train --line-model`, then `export --int8`, add one)")
        return None
    return artifact_path(folder, manifest, _paired(model, artifacts, MIXED_LINE_KEY, LINE_KEY))


def read_array(
    gray: np.ndarray,
    classify: Classifier,
    *,
    min_confidence: float = MIN_CONFIDENCE,
    config: SegmentConfig | None = None,
    verify: Classifier | None = None,
    line: LineReader | None = None,
) -> dict:
    """Read the number in one white-on-black uint8 image.

    `verify` is the piece verifier (a `Classifier` of 2 classes): with it, touching digits are cut where
    every piece is most surely one digit; without it, by the digit model's confidences alone. `line`
    is the line model: with it, the segmentation's reading stands unless the line model reads the
    number otherwise and finds its own reading more likely by more than `config.line_margin`
    (log-likelihood); then the line model's is the answer. Where the line model's reading is likely
    enough to overrule any other (`LineReading.beyond_overruling`), the segmentation is not run at all.

    With the line model, clean writing taller than `READ_HEIGHT` px is read shrunk to that height
    (`_shrunk`); the boxes are in `gray`'s own pixels all the same.

    Returns:
        `text`, `persian`, `confidence` (the lowest of the digits'), `digits`
        (`[{digit, box, confidence}]`, left to right); or `error` saying why
        there is no number.
    """
    config = config or SegmentConfig()
    page = clean_page(gray)  # the photo front end `predict` uses: lighting, rules and frames
    if line is not None:  # the line model settles or checks the cuts: tall writing is read smaller, sooner
        page = _shrunk(page)
    ink = page.ink
    share = float(ink.mean()) if ink.size else 0.0
    if share == 0:
        return {"error": NO_INK}
    if share > MAX_INK_SHARE:
        return {"error": f"no number: ink covers {100 * share:.0f}% of the image (no paper around the writing)"}
    digits = page.flattened if page.clean else ink_image(page, ink)  # a clean scan is read as it is
    try:
        found = layout(digits, ink, config, fragments=True)  # the segmentation's and the line model's
        whole = LineReading.of(digits, ink, found, line, config) if line is not None and found else None
        sure = whole is not None and whole.beyond_overruling
        segments = segment(digits, ink, classify, config, verify, found) if found and not sure else []
    except TooManyMarks as exc:
        return _too_many_marks(exc.count)
    if sure:  # no reading the segmentation could make would stand against the line model's: not made
        read, confidence, boxes = whole.reading()
    else:
        if not segments:
            return {"error": "no digits: only specks of ink"}
        probs = np.stack([s.probs for s in segments])  # (N, 10), scored inside `segment`
        read = probs.argmax(axis=1).tolist()
        confidence = probs[np.arange(len(read)), read].tolist()
        boxes = [s.box for s in segments]
        if whole is not None and whole.overrules(read):
            read, confidence, boxes = whole.reading()
    if len(read) > MAX_DIGITS:
        return _too_many_marks(len(read))
    return _record(read, confidence, [_input_box(b, page.scale, gray.shape) for b in boxes], min_confidence)


def _shrunk(page: Page) -> Page:
    """A clean page whose writing is taller than `READ_HEIGHT` px, shrunk to that height (area averaging, the
    ink again the pixels above `INK_THRESHOLD`); any other page as it is.

    The models see no more than that: the line model reads the line 20 px tall and the digit model each piece
    in a 20 px box, while labelling and cropping cost time in proportion to the pixels. The writing's height
    is taken before any labelling, from the rows holding at least `CORE_ROWS` of the busiest row's ink
    (0.76-1.07x the segmentation's H on 90% of numbers of training digits). Photos are already brought to
    a working size by `clean_page`. Ink over more than `WRITING_SHARE` of the rows is no line of writing (a
    page of noise, which averaging would make solid): it is read as it is, where its marks can be counted.
    `READ_HEIGHT` was chosen on numbers of validation digits read with the line model: at 48 px they read as
    well as at full size (9,316 against 9,311 of 9,600 exactly), where 40 px lost some (9,306). Without the
    line model the segmentation alone decides, and its cuts lost at that size (with the piece verifier 4,471
    against 4,479 of 4,800, the tight numbers 0.4-0.7 points), so `read_array` shrinks only with it.
    """
    if not page.clean:
        return page
    rows = np.count_nonzero(page.ink, axis=1)
    height = int(np.count_nonzero(rows >= CORE_ROWS * rows.max())) if rows.any() else 0
    if height <= READ_HEIGHT or height > WRITING_SHARE * len(rows):
        return page
    scale = READ_HEIGHT / height
    flattened = shrunk_by(page.flattened, scale)
    ink = flattened > INK_THRESHOLD
    return replace(page, flattened=flattened, ink=ink, removed=np.zeros_like(ink), scale=scale)


@dataclass(frozen=True)
class LineReading:
    """The line model's reading of a number: its strip, the (k, T, 11) log-probabilities of its k members (or
    (T, 11) of one), the margin.

    Its reading is `read_line`'s (of the members' readings, the most likely to all of them); it is weighed
    against the segmentation's by their log-likelihoods under the members' frame-wise combination
    (`combined`). Where the members read the same digits, all is as with that combination alone; where
    they put a digit on other frames, their reading keeps it, but is seldom sure enough to overrule the
    segmentation's.

    It replaces the segmentation's reading where it differs and is more likely by more than `margin`
    (`SegmentConfig.line_margin`, log-likelihood), whether or not the two have as many digits: a cut at
    the wrong column spoils two digits without changing the count (on numbers of Hoda's validation
    digits, this read 96.58% of spaced and 95.17% of tight numbers exactly, against 96.25% and 93.00%
    when only another digit count could be overruled).
    """

    strip: LineImage
    logp: np.ndarray
    margin: float

    @classmethod
    def of(cls, gray, ink, found: tuple, line: LineReader, config: SegmentConfig) -> LineReading | None:
        """The number's strip (`line_image`, from `layout`'s `found`) read by `line`; None without a strip."""
        strip = line_image(gray, ink, config, found)
        return None if strip is None else cls(strip, line(strip.pixels), config.line_margin)

    @cached_property
    def _frames(self) -> np.ndarray:
        """(T, 11): the members' log-probabilities combined frame by frame (`line_model.combined`)."""
        return combined(self.logp)

    @cached_property
    def own(self) -> list[tuple[int, int, int, float]]:
        """(digit, first frame, last frame, probability) per digit of the line model's reading (`read_line`)."""
        return read_line(self.logp)

    @property
    def digits(self) -> list[int]:
        return [d for d, *_ in self.own]

    def overrules(self, read: list[int]) -> bool:
        """Is the line model's own reading other than `read` and more likely by more than `margin`?"""
        mine = self.digits
        return bool(mine) and mine != read and log_likelihood(self._frames, read) < self.likelihood - self.margin

    @cached_property
    def likelihood(self) -> float:
        return log_likelihood(self._frames, self.digits)

    @cached_property
    def beyond_overruling(self) -> bool:
        """Would the line model's reading be the answer whatever the segmentation read?

        The probabilities of all readings of a strip sum to 1, so when the line model's own has more
        than 1 / (1 + e^-margin) of it, every other reading is less likely by more than `margin`: it
        would overrule any other the segmentation made, and one of the same digits changes nothing.
        `read` then skips the segmentation (its pieces, the digit model and the verifier): the same
        digits, in a fraction of the time; the boxes and confidences are the line model's.
        """
        return bool(self.own) and self.likelihood > -math.log1p(math.exp(-self.margin))

    def reading(self) -> tuple[list[int], list[float], list[tuple[int, int, int, int]]]:
        """`(digits, confidences, boxes)` of the line model's reading.

        A digit's box spans the columns from halfway to the previous digit's frames to halfway to the
        next one's, tightened to the kept ink there; its confidence is the highest probability its
        frames give it.
        """
        strip, own = self.strip, self.own
        centres = [(first + last) / 2 for _, first, last, _ in own]
        last = self.logp.shape[-2] - 1.0  # the last frame
        bounds = [0.0, *((a + b) / 2 for a, b in zip(centres[:-1], centres[1:], strict=True)), last]
        boxes = []
        top, left = strip.origin
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            x0, x1 = strip.columns(math.floor(start), math.ceil(end))
            inked = strip.ink[:, x0 - left : x1 - left]
            rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
            if rows.size == 0:  # no kept ink in these columns (a digit read in a gap): the columns, the line's rows
                rows, cols = np.flatnonzero(strip.ink.any(axis=1)), np.arange(max(1, x1 - x0))
            boxes.append((x0 + int(cols[0]), top + int(rows[0]), x0 + int(cols[-1]) + 1, top + int(rows[-1]) + 1))
        return self.digits, [p for *_, p in own], boxes


def _too_many_marks(count: int) -> dict:
    return {"error": f"not a number: {count} separate marks (at most {MAX_DIGITS} digits are read)"}


def _input_box(box: tuple[int, int, int, int], scale: float, shape: tuple[int, int]) -> list[int]:
    """A box at the front end's working size, back in the input image's pixels."""
    if scale == 1.0:
        return list(box)
    height, width = shape
    x0, y0, x1, y1 = box
    return [
        max(0, math.floor(x0 / scale)),
        max(0, math.floor(y0 / scale)),
        min(width, math.ceil(x1 / scale)),
        min(height, math.ceil(y1 / scale)),
    ]


def _record(digits: list[int], confidence: list[float], boxes: list[list[int]], min_confidence: float) -> dict:
    worst = int(np.argmin(confidence))
    if confidence[worst] < min_confidence:
        return {
            "error": f"does not look like digits: the mark at {boxes[worst]} is a digit with "
            f"{100 * confidence[worst]:.0f}% confidence at best (minimum {100 * min_confidence:.0f}%)"
        }
    return {
        "text": "".join(str(d) for d in digits),
        "persian": "".join(PERSIAN_DIGITS[d] for d in digits),
        "confidence": round(float(min(confidence)), PROB_DIGITS),  # as sure as its least sure digit
        "digits": [
            {"digit": int(d), "box": box, "confidence": round(float(c), PROB_DIGITS)}
            for d, box, c in zip(digits, boxes, confidence, strict=True)
        ],
    }


def read(
    paths: Iterable[str | os.PathLike],
    model_path: str | os.PathLike | None = None,
    run_dir: str | os.PathLike = "export",
    *,
    min_confidence: float = MIN_CONFIDENCE,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    verifier: bool = True,
    line_model: bool = True,
) -> list[dict]:
    """Read the handwritten number in each image file.

    Args:
        paths: image files (any format Pillow reads; either polarity, any size up to
            `MAX_PIXELS`) and directories (searched recursively, see `image_files`).
        model_path: a .tflite digit model, as for `predict`; default the run's int8 model.
        run_dir: the run directory, when `model_path` is None.
        min_confidence: a segment classified below this (0-1) makes the image "not digits".
        verifier: cut touching digits with the run's piece verifier (`resolve_verifier`), when it has one.
        line_model: let the run's line model (`resolve_line_model`), when it has one, overrule the segmentation.
        progress: called as `progress(done, total)` after each image.
        log: told about choices made (e.g. falling back to the float32 model).

    Returns:
        One dict per image file, in order: `path`, `text` ("09123456789"),
        `persian` ("۰۹۱۲۳۴۵۶۷۸۹"), `confidence` (the lowest of its digits'), `digits` (`[{digit, box: [x0, y0,
        x1, y1], confidence}]`, left to right); or `path` and `error`.

    Raises:
        ValueError: `min_confidence` outside 0-1.
        ModelError: no usable model (says what to run) or a preprocessing mismatch.
        DataError: a directory without image files.
    """
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be between 0 and 1; got {min_confidence!r}")
    model = resolve_model(model_path, run_dir, log=log)
    files = image_files(paths)
    classify = Classifier(model.read_bytes())  # read once: every image runs the file that was checked
    verifier_path = resolve_verifier(model, log) if verifier else None
    verify = None if verifier_path is None else Classifier(verifier_path.read_bytes(), classes=VERIFIER_CLASSES)
    line_path = resolve_line_model(model, log) if line_model else None
    line = None if line_path is None else LineReader(line_path)  # read once, as the digit model
    results = []
    for path in files:
        try:
            gray = load_image(path, max_pixels=MAX_PIXELS)
        except DataError as exc:
            entry = {"error": _without_path(str(exc), path)}
        else:
            entry = read_array(gray, classify, min_confidence=min_confidence, verify=verify, line=line)
        results.append({"path": str(path), **entry})
        if progress:
            progress(len(results), len(files))
    return results
