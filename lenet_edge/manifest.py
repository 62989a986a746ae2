"""The run manifest: `manifest.json` in a run directory, the hand-off between stages.

`train` writes it; `export` and `bench` read it instead of taking the same flags
again, add what they produce, and write it back atomically. Every artifact is
recorded with its sha256 and size, and is verified against them before a later
stage uses it, so a file changed behind our back is caught, not silently used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ModelError
from .fileio import atomic_write_json, json_text, sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

PERSIAN_DIGITS = "۰۱۲۳۴۵۶۷۸۹"


def manifest_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / MANIFEST_NAME


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Read and check a run's manifest.

    Raises:
        ModelError: no manifest (says to run `train` first), unreadable JSON,
            or a format version newer than this lenet-edge understands.
    """
    path = manifest_path(run_dir)
    if not path.is_file():
        raise ModelError(f"{path}: no manifest; run `lenet-edge train --dir {run_dir}` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format_version"), int):
        raise ModelError(f"{path}: not a lenet-edge manifest (no format_version)")
    if manifest["format_version"] > FORMAT_VERSION:
        raise ModelError(
            f"{path}: format version {manifest['format_version']} is newer than this "
            f"lenet-edge understands ({FORMAT_VERSION}); upgrade lenet-edge"
        )
    return manifest


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically (temporary file + rename)."""
    return atomic_write_json(manifest_path(run_dir), manifest)


def stage_manifest(stage, manifest: dict[str, Any]) -> Path:
    """Write the manifest into a `fileio.staged_files` block, so it is renamed into place with the files it lists."""
    path = stage(MANIFEST_NAME)
    path.write_text(json_text(manifest), encoding="utf-8")
    return path


def remove_stale_artifacts(run_dir: str | Path, old: dict | None, new: dict) -> None:
    """Delete the files of `old`'s artifacts that `new` no longer lists (a replaced run's, an old export's)."""
    if not old:
        return
    run_dir = Path(run_dir)
    keep = {entry["path"] for entry in new.get("artifacts", {}).values()}
    emptied = set()
    for entry in old.get("artifacts", {}).values():
        path = run_dir / entry["path"]
        inside = path.resolve().is_relative_to(run_dir.resolve()) and ".." not in Path(entry["path"]).parts
        if entry["path"] not in keep and inside and path.is_file():
            path.unlink()
            if path.parent != run_dir:
                emptied.add(path.parent)
    for folder in emptied:  # a folder of artifacts (export's micro/) goes with its last file
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def record_artifact(
    manifest: dict[str, Any], key: str, path: str | Path, *, name: str | None = None, **extra: Any
) -> dict:
    """Record the file at `path` (inside the run directory) under `artifacts[key]`.

    The path is stored relative to the run directory, so a run directory can
    be moved or copied whole. `name` is the file's final name when `path` is
    still a staged temporary file.
    """
    path = Path(path)
    entry = {"path": name or path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size, **extra}
    manifest.setdefault("artifacts", {})[key] = entry
    return entry


def artifact_path(run_dir: str | Path, manifest: dict[str, Any], key: str, hint: str = "") -> Path:
    """The verified path of artifact `key`.

    Raises:
        ModelError: the artifact is not recorded (with `hint` saying what to run),
            its file is missing, or its sha256 no longer matches the manifest.
    """
    entry = manifest.get("artifacts", {}).get(key)
    if entry is None:
        raise ModelError(f"{manifest_path(run_dir)}: the run has no {key}" + (f"; {hint}" if hint else ""))
    path = Path(run_dir) / entry["path"]
    if not path.is_file():
        raise ModelError(f"{path}: missing, but recorded in the manifest as {key}")
    if sha256_file(path) != entry["sha256"]:
        raise ModelError(f"{path}: sha256 does not match the manifest; the file changed after it was written")
    return path


# name -> artifact key of each TFLite model `export` may write, in the order reports list them
RUN_MODELS = {
    "float32": "float32_tflite",
    "int8": "int8_tflite",
    "int8_ptq": "int8_ptq_tflite",
    "mixed": "mixed_tflite",
    "teacher": "teacher_tflite",  # the distillation teacher, float32: a reference row, not a model for a device
}
REFERENCE_ONLY = ("teacher",)  # run models that bench measures on the host's LiteRT only (not in TFLM)
CPU_ONLY = ("mixed",)  # run models made for CPUs with a float unit and XNNPACK, never a microcontroller: not in TFLM


def exported_models(run_dir: str | Path, manifest: dict[str, Any] | None = None) -> dict[str, Path]:
    """The run's exported TFLite models that exist: name ("float32", "int8", "int8_ptq", "mixed", "teacher") ->
    verified path.

    Args:
        run_dir: the run directory.
        manifest: its manifest, if already read.

    Raises:
        ModelError: no manifest or no exported model (each says what to run), or
            a model file that is missing or fails its sha256.
    """
    manifest = read_manifest(run_dir) if manifest is None else manifest
    artifacts = manifest.get("artifacts", {})
    models = {name: artifact_path(run_dir, manifest, key) for name, key in RUN_MODELS.items() if key in artifacts}
    if not models:
        raise ModelError(f"{run_dir}: no exported models; run `lenet-edge export --dir {run_dir} --int8` first")
    return models
