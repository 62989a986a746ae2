"""Read: whole handwritten numbers in image files, digit by digit.

`read(paths)` loads each image as `predict` does (`load_image`: grayscale,
white ink on black), refusing images above `MAX_PIXELS` before their pixels
are decoded; cleans it with the photo front end `predict` uses
(`frontend.clean_page`: lighting flattened, ruled lines and box frames
removed; a clean scan passes unchanged); finds the digits with `segment.segment` (which asks the model to
choose where touching digits are cut); every segment is preprocessed exactly
as a single digit for `predict` and classified by one loaded interpreter, in
at most two batched calls per image (the groups whole, then the pieces of
those that may hold touching digits). The result per image is the number as written (most
significant digit first, left to right), in ASCII and Persian digits, with a
box and a confidence per digit.

An image that gives no number is an `error` entry naming why: no ink, only
specks, ink over most of the image (no paper), more pieces than a number has,
or pieces that do not look like digits (a digit below `min_confidence`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .config import READ_MIN_CONFIDENCE
from .data.folders import load_image
from .data.frontend import clean_page, ink_image
from .errors import DataError
from .inference import PROB_DIGITS, _without_path, image_files, resolve_model, softmax
from .manifest import PERSIAN_DIGITS, artifact_path, manifest_path, read_manifest
from .quiet import native_stderr_captured
from .runtimes.base import NUM_CLASSES
from .segment import Segment, SegmentConfig, TooManyMarks, segment
from .verifier import CLASSES as VERIFIER_CLASSES
from .verifier import scores as one_digit

VERIFIER_KEY = "verifier_int8_tflite"  # the manifest entry of the piece verifier `export --int8` writes
MIXED_KEY, MIXED_VERIFIER_KEY = "mixed_tflite", "verifier_mixed_tflite"  # `export --mixed`'s pair
MAX_PIXELS = 40_000_000  # largest image read accepts (40 MP, a large phone photo), checked before decoding
MAX_DIGITS = 40  # more segments than this is not one number
MAX_INK_SHARE = 0.5  # ink over more than half the image: no paper to write on, so no number
BATCH_STEP = 4  # interpreter batches are multiples of this (a chunk of pieces padded up to the next one)
MAX_BATCH = 16  # pieces per interpreter call at most: per image, larger batches are no faster
NO_INK = "no ink (a blank image, or only lines or an empty box)"
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
    folder = Path(model).parent
    if not manifest_path(folder).is_file():
        return None
    manifest = read_manifest(folder)
    artifacts = manifest.get("artifacts", {})
    if VERIFIER_KEY not in artifacts:
        if log:
            log(
                f"{folder}: no piece verifier (train and export the run again with this lenet-edge to add one); "
                "touching digits are cut by the digit model alone"
            )
        return None
    mixed = artifacts.get(MIXED_KEY, {}).get("path") == Path(model).name and MIXED_VERIFIER_KEY in artifacts
    return artifact_path(folder, manifest, MIXED_VERIFIER_KEY if mixed else VERIFIER_KEY)


def read_array(
    gray: np.ndarray,
    classify: Classifier,
    *,
    min_confidence: float = MIN_CONFIDENCE,
    config: SegmentConfig | None = None,
    verify: Classifier | None = None,
) -> dict:
    """Read the number in one white-on-black uint8 image.

    `verify` is the piece verifier (a `Classifier` of 2 classes): with it, touching digits are cut where
    every piece is most surely one digit; without it, by the digit model's confidences alone.

    Returns:
        `text`, `persian`, `confidence` (the lowest of the digits'), `digits`
        (`[{digit, box, confidence}]`, left to right); or `error` saying why
        there is no number.
    """
    page = clean_page(gray)  # the photo front end `predict` uses: lighting, rules and frames
    ink = page.ink
    share = float(ink.mean()) if ink.size else 0.0
    if share == 0:
        return {"error": NO_INK}
    if share > MAX_INK_SHARE:
        return {"error": f"no number: ink covers {100 * share:.0f}% of the image (no paper around the writing)"}
    digits = page.flattened if page.clean else ink_image(page, ink)  # a clean scan is read as it is
    try:
        segments = segment(digits, ink, classify, config or SegmentConfig(), verify)
    except TooManyMarks as exc:
        return _too_many_marks(exc.count)
    if not segments:
        return {"error": "no digits: only specks of ink"}
    if len(segments) > MAX_DIGITS:
        return _too_many_marks(len(segments))
    return _record(segments, min_confidence, page.scale, gray.shape)


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


def _record(segments: list[Segment], min_confidence: float, scale: float, shape: tuple[int, int]) -> dict:
    probs = np.stack([s.probs for s in segments])  # (N, 10), scored inside `segment`
    digits = probs.argmax(axis=1)
    confidence = probs[np.arange(len(digits)), digits]
    boxes = [_input_box(s.box, scale, shape) for s in segments]
    worst = int(confidence.argmin())
    if confidence[worst] < min_confidence:
        return {
            "error": f"does not look like digits: the mark at {boxes[worst]} is a digit with "
            f"{100 * confidence[worst]:.0f}% confidence at best (minimum {100 * min_confidence:.0f}%)"
        }
    text = "".join(str(d) for d in digits)
    return {
        "text": text,
        "persian": "".join(PERSIAN_DIGITS[d] for d in digits),
        "confidence": round(float(confidence.min()), PROB_DIGITS),  # as sure as its least sure digit
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
) -> list[dict]:
    """Read the handwritten number in each image file.

    Args:
        paths: image files (any format Pillow reads; either polarity, any size up to
            `MAX_PIXELS`) and directories (searched recursively, see `image_files`).
        model_path: a .tflite digit model, as for `predict`; default the run's int8 model.
        run_dir: the run directory, when `model_path` is None.
        min_confidence: a segment classified below this (0-1) makes the image "not digits".
        verifier: cut touching digits with the run's piece verifier (`resolve_verifier`), when it has one.
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
    results = []
    for path in files:
        try:
            gray = load_image(path, max_pixels=MAX_PIXELS)
        except DataError as exc:
            entry = {"error": _without_path(str(exc), path)}
        else:
            entry = read_array(gray, classify, min_confidence=min_confidence, verify=verify)
        results.append({"path": str(path), **entry})
        if progress:
            progress(len(results), len(files))
    return results
