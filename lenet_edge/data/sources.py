"""Resolve a `--data SOURCE` string to a `Dataset`, with a cache of preprocessed arrays.

Sources, in the order they are tried:
  synthetic[:TRAIN[:TEST]]  the built-in generator (no files, no download)
  hoda                      Hoda from the cache, put there by `lenet-edge data download hoda`
  PATH.cdb[:SPLIT]          one Hoda-format file: Hoda's file names say their split, else name it
  PATH.npz                  x_train, y_train, x_test, y_test (the Keras mnist.npz convention)
  DIR                       Hoda .cdb files, or image folders (Train/class_0/*.jpg ...)

Every source's images go through `preprocess` (the model's input contract).
The result is cached under the cache directory, keyed by the content hash of
the source files and the preprocessing version, so a second run of Hoda loads
in well under a second. Nothing here ever touches the network.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path, sha256_file
from .frontend import FRONTEND_VERSION, digit_images
from .preprocess import PREPROCESSING_VERSION, preprocess_many

SPLITS = ("train", "test", "remaining")
LOADER_VERSION = 1  # bump when a reader's output changes, so caches are rebuilt
DEFAULT_SYNTHETIC = (30_000, 5_000)
SYNTHETIC_SEED = 0  # the built-in dataset is one fixed dataset, whatever the training seed

RawSplits = dict[str, tuple[list[np.ndarray] | np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Split:
    """One split: `images` (N, 28, 28) uint8 white ink on black, `labels` (N,) int64 in 0-9."""

    images: np.ndarray
    labels: np.ndarray
    raw_shapes: np.ndarray  # (N, 2) height, width of each image before preprocessing

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index], self.raw_shapes[index])


@dataclass(frozen=True)
class Dataset:
    """A loaded source: its splits plus where it came from."""

    source: str  # canonical form: "synthetic:30000:5000", "hoda", or a resolved path
    kind: str  # "synthetic", "cdb", "npz", "folder"
    splits: dict[str, Split]
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    location: str = ""  # where it was read from
    from_cache: bool = False

    def split(self, name: str) -> Split:
        if name not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise DataError(f"{self.location or self.source}: no '{name}' split (it has: {have})")
        return self.splits[name]

    @property
    def written_sizes(self) -> bool:
        """Whether the splits' `raw_shapes` are the digits' sizes as written: Hoda's .cdb records are 200 dpi
        scans cropped to the ink; synthetic digits, image files and .npz arrays come in frames of one size."""
        return self.kind == "cdb"

    def describe(self) -> dict:
        """What a manifest records about the data."""
        return {
            "source": self.source,
            "kind": self.kind,
            "location": self.location,
            "files": self.files,
            "split_sizes": {name: len(s) for name, s in self.splits.items()},
        }


def load_dataset(
    source: str,
    *,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    advance: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Load any supported source into preprocessed 28x28 splits.

    Args:
        source: a `--data` string (see the module docstring).
        cache_dir: where preprocessed arrays are cached and where `hoda` lives;
            None disables the cache (and `hoda`).
        progress: optional callable(message) for long steps.
        advance: optional callable(images_done, images_total) for a progress bar
            while images are preprocessed (only when the cache cannot serve them).

    Raises:
        DataError: the source is missing or malformed, naming the file and the problem.
    """
    kind, location, spec = _resolve(source, cache_dir)
    files = _hash_files(kind, location)
    key = _cache_key(kind, spec, files)
    canonical = spec if kind == "synthetic" else ("hoda" if source == "hoda" else str(location))
    if kind == "cdb" and spec in SPLITS:  # FILE.cdb:SPLIT stays explicit in a manifest
        canonical += f":{spec}"
    if cache_dir is not None:
        cached = _read_cache(Path(cache_dir), key)
        if cached is not None:
            return Dataset(canonical, kind, cached, files, str(location or ""), from_cache=True)
    if progress:
        progress(f"reading {location or canonical} and preprocessing (once; then cached)")
    raw = _read_raw(kind, location, spec)
    total, done = sum(len(labels) for _, labels in raw.values()), 0

    def step(k: int) -> None:
        nonlocal done
        done += k
        advance(done, total)

    counter = step if advance else None
    # Image files may be photos of paper: the photo front end (byte-identical to `preprocess` on clean images).
    prepare = digit_images if kind == "folder" else preprocess_many
    splits = {
        name: _preprocess_split(name, location, images, labels, counter, prepare)
        for name, (images, labels) in raw.items()
    }
    if cache_dir is not None:
        _write_cache(Path(cache_dir), key, splits)
    return Dataset(canonical, kind, splits, files, str(location or ""))


def train_val_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of indices into (train, val); each sorted.

    Every class gives round(val_fraction * its count) samples to validation, so
    both parts keep the class balance of the whole.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = int(round(val_fraction * len(members)))
        val.append(rng.permutation(members)[:take])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_mask = np.ones(len(labels), bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def load_splits(
    source: str,
    val_fraction: float,
    seed: int,
    *,
    cache_dir: Path | None = None,
    progress: Callable | None = None,
    advance: Callable[[int, int], None] | None = None,
) -> tuple[Dataset, dict[str, Split]]:
    """The dataset and its splits with "val" carved from "train" (stratified, seeded).

    The test split is returned untouched and is never part of train or val.
    """
    dataset = load_dataset(source, cache_dir=cache_dir, progress=progress, advance=advance)
    splits = dict(dataset.splits)
    if "train" in splits:
        train_idx, val_idx = train_val_split(splits["train"].labels, val_fraction, seed)
        full = splits["train"]
        splits["train"], splits["val"] = full.subset(train_idx), full.subset(val_idx)
    return dataset, splits


def load_run_splits(
    manifest: dict,
    source: str | None = None,
    *,
    cache_dir: Path | None = None,
    progress: Callable | None = None,
    advance: Callable[[int, int], None] | None = None,
) -> tuple[Dataset, dict[str, Split]]:
    """The splits a trained run saw: its recorded source (or `source`) with its own val carve-out.

    Export and bench use this so that "val" is exactly the validation split
    training chose epochs on, and "test" is the split it never saw.
    """
    data, config = manifest.get("data", {}), manifest.get("config", {})
    source = source or data.get("source")
    if source is None:
        raise DataError("no dataset: pass --data (there is no run manifest to take it from)")
    val_fraction = data.get("val_fraction", config.get("val_fraction", 0.1))
    seed = data.get("split_seed", config.get("seed", 0))
    return load_splits(source, val_fraction, seed, cache_dir=cache_dir, progress=progress, advance=advance)


# --- resolving and reading ---------------------------------------------------------------


def _resolve(source: str, cache_dir: Path | None) -> tuple[str, Path | None, str]:
    """(kind, location, spec) for a source string; DataError if it names nothing usable."""
    match = re.fullmatch(r"synthetic(?::(\d+))?(?::(\d+))?", source)
    if match:
        n_train = int(match[1]) if match[1] else DEFAULT_SYNTHETIC[0]
        n_test = int(match[2]) if match[2] else (max(n_train // 6, 10) if match[1] else DEFAULT_SYNTHETIC[1])
        if n_train < 10:
            raise DataError(f"{source}: synthetic needs at least 10 training images (one per class)")
        return "synthetic", None, f"synthetic:{n_train}:{n_test}"
    if source == "hoda":
        if cache_dir is None:
            raise DataError("hoda: no cache directory to read it from")
        location = Path(cache_dir) / "hoda"
        if not any(location.glob("*.cdb")):
            raise DataError(f"hoda: not in the cache ({location}); run `lenet-edge data download hoda` first")
        return "cdb", location, "hoda"
    path = Path(source).expanduser()
    explicit = re.fullmatch(r"(.+\.cdb):(train|test|remaining)", source, re.IGNORECASE)
    if explicit and not path.exists():  # FILE.cdb:SPLIT
        path = Path(explicit[1]).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        return "cdb", path.resolve(), explicit[2].lower()
    if not path.exists():
        raise DataError(f"{source}: no such file or directory (and not a known source name: synthetic, hoda)")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".cdb":
            split_of_cdb(path)  # fail now, before hashing, when the name says no split
        if suffix in (".cdb", ".npz"):
            return suffix[1:], path.resolve(), ""
        raise DataError(f"{path}: not a dataset (expected a .cdb or .npz file, or a directory)")
    if any(_cdb_files(path)):
        return "cdb", path.resolve(), ""
    return "folder", path.resolve(), ""


def _cdb_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".cdb")


# A .cdb file's split, from its name with case, spaces, '_' and '-' ignored: Hoda's three files as
# distributed, or the split's own name. Nothing else is guessed ("latest.cdb" is not a test set).
CDB_SPLIT_NAMES = {
    "train60000": "train",
    "test20000": "test",
    "remainingsamples": "remaining",
    "train": "train",
    "test": "test",
    "remaining": "remaining",
}


def split_of_cdb(path: Path) -> str:
    """The split a .cdb file holds, from its name (see `CDB_SPLIT_NAMES`).

    Raises:
        DataError: a name that says no split, with how to name one.
    """
    key = re.sub(r"[\s_-]+", "", path.stem).lower()
    if key not in CDB_SPLIT_NAMES:
        raise DataError(
            f"{path}: the file name does not say which split it holds; use Hoda's names "
            f"('Train 60000.cdb', 'Test 20000.cdb', 'RemainingSamples.cdb') or name the split: --data '{path}:test'"
        )
    return CDB_SPLIT_NAMES[key]


def _read_raw(kind: str, location: Path | None, spec: str) -> RawSplits:
    if kind == "synthetic":
        from .synthetic import synthetic_splits

        _, n_train, n_test = spec.split(":")
        return synthetic_splits(int(n_train), int(n_test), seed=SYNTHETIC_SEED)
    if kind == "npz":
        from .npz import load_npz

        return load_npz(location)
    if kind == "folder":
        from .folders import load_image_folder

        return load_image_folder(location)
    from .cdb import read_cdb

    files = _cdb_files(location) if location.is_dir() else [location]
    raw: RawSplits = {}
    for path in files:
        split = spec if spec in SPLITS else split_of_cdb(path)
        if split in raw:
            raise DataError(f"{path}: a second .cdb file for the '{split}' split in {location}")
        data = read_cdb(path)
        raw[split] = (data.images, data.labels)
    return raw


def _preprocess_split(
    name: str, location, images, labels, progress: Callable[[int], None] | None, prepare=preprocess_many
) -> Split:
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise DataError(f"{location}: the '{name}' split is empty")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{location}: the '{name}' split has labels outside 0-9")
    shapes = np.array([image.shape[:2] for image in images], dtype=np.int32).reshape(-1, 2)
    return Split(prepare(images, progress), labels, shapes)


# --- hashing and the cache -----------------------------------------------------------


def _hash_files(kind: str, location: Path | None) -> dict[str, str]:
    """sha256 of each source file (a folder source: one digest over all its files)."""
    if location is None:
        return {}
    if location.is_file():
        return {location.name: sha256_file(location)}
    if kind == "cdb":
        return {p.name: sha256_file(p) for p in _cdb_files(location)}
    tree = hashlib.sha256()
    count = 0
    for path in sorted(p for p in location.rglob("*") if p.is_file()):
        tree.update(f"{path.relative_to(location).as_posix()}\0{sha256_file(path)}\n".encode())
        count += 1
    return {f"{location.name}/ ({count} files)": tree.hexdigest()}


def _cache_key(kind: str, spec: str, files: dict[str, str]) -> str:
    from . import synthetic_version

    recipe = {
        "kind": kind,
        "spec": spec,
        "files": files,
        "preprocessing": PREPROCESSING_VERSION,
        "loader": LOADER_VERSION,
        "synthetic": synthetic_version() if kind == "synthetic" else None,
        "frontend": FRONTEND_VERSION if kind == "folder" else None,  # photos in a folder go through it
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]


def _cache_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / "datasets" / f"{key}.npz"


def _read_cache(cache_dir: Path, key: str) -> dict[str, Split] | None:
    path = _cache_file(cache_dir, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = [k[: -len("/images")] for k in arrays.files if k.endswith("/images")]
            return {n: Split(arrays[f"{n}/images"], arrays[f"{n}/labels"], arrays[f"{n}/raw_shapes"]) for n in names}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # a damaged cache entry is rebuilt from the source, never trusted


def _write_cache(cache_dir: Path, key: str, splits: dict[str, Split]) -> None:
    arrays = {}
    for name, split in splits.items():
        arrays.update(
            {f"{name}/images": split.images, f"{name}/labels": split.labels, f"{name}/raw_shapes": split.raw_shapes}
        )
    try:
        with atomic_path(_cache_file(cache_dir, key)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError:
        pass  # an unwritable cache only costs speed next time
