"""Atomic artifact writing and content hashing.

Every artifact is written to a temporary file in its final directory, flushed
and fsynced, then renamed over the target: a reader sees the old file or the
new one, never half of either, and an interrupted run leaves earlier results
intact. Temporary names share one prefix so a later run can sweep leftovers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".lenet-edge-tmp-"


def _temporary(directory: Path, suffix: str) -> Path:
    """A new empty file in `directory` with our prefix and the usual 0666 & ~umask mode.

    mkstemp creates files 0600; artifacts are meant to be as readable as any
    file the user writes, so the mode is set as open() would have set it.
    """
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it into place on success.

    The caller writes the file at the yielded path (by any means, e.g. a
    library's own `save()`). On an exception the temporary file is removed and
    `target` is untouched. `suffix` keeps an extension some writers insist on.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temporary(target.parent, suffix or target.suffix)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


@contextlib.contextmanager
def staged_files(directory: str | os.PathLike) -> Iterator:
    """Stage several files, then rename them all into place together on success.

    Yields `stage(name, suffix="") -> Path`, which returns a temporary path in
    `directory` for the file that will become `directory/name`. Nothing visible
    changes until the block ends without an exception; then every staged file
    is fsynced and renamed. On an exception all staged files are removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []

    def stage(name: str, suffix: str = "") -> Path:
        target = directory / name
        tmp = _temporary(directory, suffix or target.suffix)
        staged.append((tmp, target))
        return tmp

    try:
        yield stage
        for tmp, _ in staged:
            _fsync_file(tmp)
        for tmp, target in staged:
            os.replace(tmp, target)
        _fsync_dir(directory)
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `target` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `target` atomically."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def json_text(obj) -> str:
    """`obj` as indented, key-sorted JSON (stable diffs), UTF-8 characters kept, with a final newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(target: str | os.PathLike, obj) -> Path:
    """Write `obj` as `json_text` atomically."""
    return atomic_write_text(target, json_text(obj))


def sweep_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove temporary files an interrupted run left in `directory`; return them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
