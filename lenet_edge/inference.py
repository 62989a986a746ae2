"""Predict: the digit in image files, with an exported TFLite model.

`predict(paths)` expands directories into their image files, loads each image
exactly as the training data was loaded (`load_image` -> `preprocess`, the
contract the run's manifest records; a photo of paper first goes through
`data.frontend`, which finds the digit among lines, boxes and shadows), runs
the model in the LiteRT interpreter in batches (a `runtimes` model handle:
input quantized with the model's own scale and zero point, output
dequantized) and returns per image
the digit, its confidence (softmax over the logits) and the runners-up. A file
that cannot be read becomes an `error` entry and the others are still
predicted.

By default the model is the run's int8 export, else its float32 one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from .data.folders import IGNORED_NAMES, load_image
from .data.frontend import check_single, run_frontend
from .data.preprocess import NUM_CLASSES, PREPROCESSING_VERSION
from .errors import DataError, ModelError
from .manifest import PERSIAN_DIGITS, exported_models, manifest_path, read_manifest
from .plots import save_explain

PROB_DIGITS = 6  # decimals kept of each probability: an int8 model's scores are far coarser


def image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, in order; each directory replaced by the image files under it.

    A directory is searched recursively for files with an extension Pillow can
    open (sorted, hidden entries and OS debris skipped). A file given by name is
    kept whatever its extension, so an unreadable one is reported, not skipped.

    Raises:
        DataError: a directory holds no image file.
    """
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(
            Path(root) / name
            for root, dirs, names in os.walk(path)
            if not _skipped(Path(root).relative_to(path))
            for name in names
            if not _skipped(Path(name)) and Path(name).suffix.lower() in extensions
        )
        if not found:
            raise DataError(f"{path}: no image files in this directory or below it")
        files += found
    return files


def _skipped(relative: Path) -> bool:
    """Hidden entries and other systems' debris, anywhere in a path below the searched directory."""
    return any(part.startswith(".") or part.lower() in IGNORED_NAMES for part in relative.parts)


def resolve_model(
    model_path: str | os.PathLike | None = None,
    run_dir: str | os.PathLike = "export",
    *,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The model `predict` runs, after checking it expects this code's preprocessing.

    Without `model_path`: the run's int8 export, else its float32 one (said
    through `log`), sha256-verified against the manifest. With `model_path`:
    that file, checked against the manifest beside it if there is one (else the
    current preprocessing is assumed).

    Raises:
        ModelError: no run or no export (says what to run), a file that fails
            its sha256, or a manifest recording another preprocessing version.
    """
    if model_path is None:
        manifest = read_manifest(run_dir)
        models = exported_models(run_dir, manifest)
        path = models.get("int8") or models.get("float32")
        if path is None:  # export always writes float32: only an edited manifest gets here
            raise ModelError(f"{run_dir}: no int8 or float32 model; run `lenet-edge export --dir {run_dir} --int8`")
        if "int8" not in models and log:
            log(f"{run_dir}: no int8 export, using float32 (`lenet-edge export --dir {run_dir} --int8` adds int8)")
    else:
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        manifest = read_manifest(path.parent) if manifest_path(path.parent).is_file() else None
    if manifest is not None:
        version = manifest.get("preprocessing", {}).get("version")
        if version != PREPROCESSING_VERSION:
            raise ModelError(
                f"{manifest_path(path.parent)}: the model was trained with preprocessing version {version}, "
                f"but this lenet-edge preprocesses with version {PREPROCESSING_VERSION}; use the lenet-edge "
                "that trained it, or train and export it again"
            )
    return path


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, 10) logits -> (N, 10) probabilities, in float64 (shifted by the max: no overflow)."""
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predict(
    paths: Iterable[str | os.PathLike],
    model_path: str | os.PathLike | None = None,
    run_dir: str | os.PathLike = "export",
    top_k: int = 3,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    *,
    log: Callable[[str], None] | None = None,
    explain: str | os.PathLike | None = None,
) -> list[dict]:
    """Predict the digit in each image file.

    Args:
        paths: image files (any format Pillow reads; either polarity, any size)
            and directories (searched recursively, see `image_files`).
        model_path: a .tflite file taking (1, 28, 28, 1) float32, int8 or uint8 and
            returning 10 scores; default the run's int8 model (else float32).
        run_dir: the run directory, when `model_path` is None.
        top_k: how many digits each result ranks (1-10).
        batch_size: images per interpreter call (and per batch of decoding).
        progress: called as `progress(done, total)` after each image is read.
        log: told about choices made (e.g. falling back to the float32 model).
        explain: a directory to write, per readable image, `STEM.png` with the
            front end's stages side by side (see `plots.save_explain`).

    Returns:
        One dict per image file, in order: `path`, `digit` (0-9), `persian`
        ("۰"-"۹"), `confidence` (softmax probability of `digit`) and `top_k`
        (`[[digit, probability], ...]`, most likely first); or `path` and
        `error` for a file that could not be read or that holds no digit, or
        several side by side (photos go through `data.frontend`).

    Raises:
        ValueError: `top_k` or `batch_size` out of range.
        ModelError: no usable model (says what to run) or a preprocessing mismatch.
        DataError: a directory without image files.
    """
    if not (isinstance(top_k, int) and 1 <= top_k <= NUM_CLASSES):
        raise ValueError(f"top_k must be an integer from 1 to {NUM_CLASSES}; got {top_k!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    model_file = resolve_model(model_path, run_dir, log=log)
    files = image_files(paths)
    from .runtimes import open_model

    model = open_model(model_file, xnnpack=False)  # loaded and checked once; the same kernels as export's parity
    explain_dir, explained = (Path(explain), set()) if explain is not None else (None, set())
    if explain_dir is not None:
        explain_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for start in range(0, len(files), batch_size):
        images, entries = [], []
        for path in files[start : start + batch_size]:
            entry = {"path": str(path)}
            try:
                stages = run_frontend(load_image(path))
                if explain_dir is not None:
                    save_explain(stages, explain_dir / _unique(path.stem, explained))
                check_single(stages.digit, stages.page.scale)
                images.append(stages.final)  # (28, 28) uint8
            except DataError as exc:
                entry["error"] = _without_path(str(exc), path)
            entries.append(entry)
            results.append(entry)
            if progress:
                progress(len(results), len(files))
        if not images:
            continue
        probs = softmax(model.scores(np.stack(images), batch_size))  # (B, 10)
        ok = (entry for entry in entries if "error" not in entry)
        for entry, p in zip(ok, probs, strict=True):
            ranked = np.argsort(-p, kind="stable")[:top_k]  # ties: the lower digit first, as argmax
            digit = int(ranked[0])
            entry.update(
                digit=digit,
                persian=PERSIAN_DIGITS[digit],
                confidence=round(float(p[digit]), PROB_DIGITS),
                top_k=[[int(d), round(float(p[d]), PROB_DIGITS)] for d in ranked],
            )
    return results


def _unique(stem: str, taken: set[str]) -> str:
    """`STEM.png`, or `STEM-2.png`, ... when two inputs share a name."""
    name, k = f"{stem}.png", 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}.png"
    taken.add(name)
    return name


def _without_path(message: str, path: Path) -> str:
    """`load_image`'s messages start with the path; the result already carries it."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
