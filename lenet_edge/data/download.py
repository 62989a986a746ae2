"""The explicit Hoda downloader behind `lenet-edge data download hoda`.

Nothing else in the package downloads: the data loaders only read files that
are already on disk, and this module is imported by the CLI command alone.

Each file is streamed into a temporary file beside its target, checked (size
cap, no truncation, sha256 where known, a full parse with `read_cdb` and the
record count), and only then renamed into place. A failure raises
`DownloadError` with one line naming the file and the URL, removes the
temporary file, and leaves any file already at the target untouched.

URL policy: only `https://` URLs are fetched. Plain `http://` is allowed for
loopback hosts alone (`localhost`, 127.0.0.0/8, `::1`), so tests can serve
fixtures from a local server; nothing leaves the machine unencrypted. A
redirect is checked against the same policy before it is followed (and may
not go from https, or from a non-loopback host, to plain http), and the final
URL of the response is checked again. Loopback URLs bypass any proxy.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import DataError, DownloadError
from ..fileio import TMP_PREFIX, atomic_path, sha256_file, sweep_temporaries
from .cdb import read_cdb

HODA_BASE_URL = "https://raw.githubusercontent.com/amir-saniyan/HodaDatasetReader/master/DigitDB/"

# name -> (record count, sha256 of the distributed file or None when unknown).
# The distributed `Train 60000.cdb` has never been hashed by us (the copy in
# ../shared is a re-encoding), so it is checked by a full parse and count only.
HODA_FILES: dict[str, tuple[int, str | None]] = {
    "Train 60000.cdb": (60_000, None),
    "Test 20000.cdb": (20_000, "f947c38071c886677ec212fe5000863fafae0b4ed349d97d51c33abe3c8e2b07"),
    "RemainingSamples.cdb": (22_352, "11c9b0661b8de5f743b1b01ac76b4de19b238062d6da3500b5d6128fb1989e3d"),
}

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # per file; the largest Hoda file is ~6.5 MB
DEFAULT_TIMEOUT_S = 30.0  # per blocking socket operation (connect, each read), not the whole file
CHUNK_BYTES = 64 * 1024

Progress = Callable[[str, int, int | None], None]  # (file name, bytes done, bytes total or None)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def download_hoda(
    target_dir: str | os.PathLike,
    *,
    base_url: str = HODA_BASE_URL,
    files: Mapping[str, tuple[int, str | None]] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
    progress: Progress | None = None,
) -> list[Path]:
    """Download the Hoda .cdb files into `target_dir` and verify each one.

    A file already in `target_dir` that verifies (sha256 where known,
    otherwise a full parse and record count) is kept and not fetched again
    unless `force`; one that does not verify is replaced. Temporaries left in
    `target_dir` by an interrupted earlier run are removed first.

    Args:
        target_dir: Directory to download into (created if missing). The
            caller decides it; this function never looks at the environment.
        base_url: URL the URL-encoded file names are appended to. Must be
            https, or http on a loopback host (see the module docstring).
        files: name -> (expected record count, sha256 or None); defaults to
            `HODA_FILES`. Names must be plain file names.
        max_bytes: Largest response accepted per file, checked against
            Content-Length before reading and again while streaming.
        timeout: Seconds allowed for each socket operation.
        force: Download even when a valid file is already present.
        progress: Called as `(file name, bytes done, bytes total or None)`
            when a download starts and after each chunk; not called for
            files that are skipped.

    Returns:
        The path of every file in the table, in table order, whether it was
        downloaded or already present.

    Raises:
        DownloadError: The URL is not allowed, or a file could not be
            fetched, written, or verified.
        ValueError: `files`, `max_bytes` or `timeout` is malformed.
    """
    files = HODA_FILES if files is None else files
    _check_table(files)
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    urls = {name: file_url(base_url, name) for name in files}
    for url in urls.values():  # refuse before any connection is made
        if problem := _url_problem(url):
            raise DownloadError(f"refusing to download {url}: {problem}")

    target_dir = Path(target_dir)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create download directory {target_dir}: {exc}") from exc
    sweep_temporaries(target_dir)

    paths = []
    for name, (records, sha256) in files.items():
        target = target_dir / name
        if force or not _is_valid(target, records, sha256):
            _download_one(urls[name], target, records, sha256, max_bytes, timeout, progress)
        paths.append(target)
    return paths


def file_url(base_url: str, name: str) -> str:
    """The URL of `name` under `base_url` (`Train 60000.cdb` -> `Train%2060000.cdb`)."""
    return base_url + urllib.parse.quote(name)


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and `::1` (the only hosts plain http may reach)."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problem(url: str) -> str | None:
    """Why `url` may not be fetched, or None when it may."""
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if not host:
        return "the URL has no host"
    if scheme == "https":
        return None
    if scheme == "http":
        if is_loopback_host(host):
            return None
        return "plain http is only allowed for loopback hosts; use https"
    return f"scheme {scheme or '(none)'!r} is not allowed; use https"


def _redirect_problem(origin: str, newurl: str) -> str | None:
    """Why a redirect from `origin` to `newurl` may not be followed, or None when it may."""
    if problem := _url_problem(newurl):
        return problem
    # Plain http to a loopback host is fine from a loopback origin (a test
    # server), never from a remote one, which would downgrade the transport.
    if urllib.parse.urlsplit(newurl).scheme.lower() != "https" and not is_loopback_host(
        urllib.parse.urlsplit(origin).hostname or ""
    ):
        return "a redirect from a remote host may not leave https"
    return None


def _check_table(files: Mapping[str, tuple[int, str | None]]) -> None:
    """Reject names that could escape the target directory, and malformed entries."""
    if not files:
        raise ValueError("files must name at least one file")
    for name, entry in files.items():
        if (
            not isinstance(name, str)
            or not name
            or name in (".", "..")
            or ".." in name
            or "/" in name
            or "\\" in name
            or "\0" in name
            or (os.altsep and os.altsep in name)
            or name.startswith(TMP_PREFIX)  # would be swept as a leftover temporary
        ):
            raise ValueError(f"files: {name!r} is not a plain file name")
        try:
            records, sha256 = entry
        except (TypeError, ValueError):
            raise ValueError(f"files[{name!r}] must be (record count, sha256 or None), got {entry!r}") from None
        if not isinstance(records, int) or records < 0:
            raise ValueError(f"files[{name!r}]: record count must be a non-negative int, got {records!r}")
        if sha256 is not None and not (isinstance(sha256, str) and _SHA256_RE.fullmatch(sha256)):
            raise ValueError(f"files[{name!r}]: sha256 must be 64 lowercase hex digits or None, got {sha256!r}")


def _is_valid(path: Path, records: int, sha256: str | None) -> bool:
    """Whether an existing file passes the same checks a fresh download must."""
    if not path.is_file():
        return False
    try:
        if sha256 is not None:
            return sha256_file(path) == sha256
        return _record_count_problem(path, records) is None
    except OSError:
        return False


def _record_count_problem(path: Path, records: int) -> str | None:
    """Parse `path` fully; say what is wrong with it, or None when it holds `records` records."""
    try:
        data = read_cdb(path)
    except DataError as exc:
        # read_cdb names the file it read, here the temporary; drop that name.
        detail = str(exc).removeprefix(f"{path}: ")
        return f"not a valid .cdb file: {detail}"
    if len(data.labels) != records:
        return f"expected {records} records, found {len(data.labels)}"
    return None


def _download_one(
    url: str,
    target: Path,
    records: int,
    sha256: str | None,
    max_bytes: int,
    timeout: float,
    progress: Progress | None,
) -> None:
    name = target.name

    def fail(what: str) -> DownloadError:
        return DownloadError(f"{name}: {what} ({url})")

    # atomic_path removes the temporary on any exception and renames it over
    # `target` only when the block finishes, so `target` is never half-written.
    try:
        with atomic_path(target) as tmp:
            digest = _fetch(url, tmp, max_bytes, timeout, progress, name, fail)
            if sha256 is not None and digest != sha256:
                raise fail(f"sha256 mismatch: expected {sha256}, got {digest}")
            if problem := _record_count_problem(tmp, records):
                raise fail(problem)
    except OSError as exc:  # creating, reading back or renaming the temporary
        raise fail(f"cannot write {target}: {exc}") from exc


def _fetch(url, tmp: Path, max_bytes, timeout, progress, name, fail) -> str:
    """Stream `url` into `tmp` within the size cap; return the content's sha256."""
    opener = _opener(url, fail)
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity", "User-Agent": "lenet-edge"})
    digest = hashlib.sha256()
    try:
        with opener.open(request, timeout=timeout) as response:
            if problem := _url_problem(response.geturl()):
                raise fail(f"ended at {response.geturl()}: {problem}")
            total = _content_length(response.headers.get("Content-Length"))
            if total is not None and total > max_bytes:
                raise fail(f"too large: {total} bytes announced, limit is {max_bytes}")
            done = 0
            if progress:
                progress(name, done, total)
            with open(tmp, "wb") as out:
                while chunk := response.read(CHUNK_BYTES):
                    done += len(chunk)
                    if done > max_bytes:
                        raise fail(f"too large: more than {max_bytes} bytes received")
                    digest.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress(name, done, total)
            # http.client stops quietly at a closed connection, so count bytes.
            if total is not None and done < total:
                raise fail(f"truncated: got {done} of {total} bytes")
    except urllib.error.HTTPError as exc:
        raise fail(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise fail(f"timed out after {timeout:g} s") from exc
        raise fail(f"cannot connect: {reason}") from exc
    except TimeoutError as exc:
        raise fail(f"timed out after {timeout:g} s") from exc
    except http.client.IncompleteRead as exc:
        raise fail(f"truncated: connection closed after {len(exc.partial)} bytes of a chunk") from exc
    except (http.client.HTTPException, OSError) as exc:  # connection reset, TLS error, disk full, ...
        raise fail(f"failed: {type(exc).__name__}: {exc}") from exc
    return digest.hexdigest()


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _opener(url: str, fail) -> urllib.request.OpenerDirector:
    """An opener that checks each redirect against the URL policy before following it."""

    class PolicyRedirectHandler(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if problem := _redirect_problem(req.full_url, newurl):  # each hop, not just the first
                fp.close()
                raise fail(f"redirected to {newurl}: {problem}")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    handlers: list = [PolicyRedirectHandler()]
    if is_loopback_host(urllib.parse.urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # a loopback URL never goes through a proxy
    return urllib.request.build_opener(*handlers)
