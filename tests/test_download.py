"""The explicit Hoda downloader, against a local HTTP server on 127.0.0.1.

Nothing here touches the network beyond loopback: the server runs in a thread
on an ephemeral port and serves tiny .cdb fixtures written with `write_cdb`.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from lenet_edge.data.cdb import read_cdb, write_cdb
from lenet_edge.data.download import (
    HODA_BASE_URL,
    HODA_FILES,
    _redirect_problem,
    download_hoda,
    file_url,
    is_loopback_host,
)
from lenet_edge.errors import DownloadError
from lenet_edge.fileio import TMP_PREFIX

NAME = "Digits 3.cdb"  # a space, like the real "Train 60000.cdb", to exercise URL encoding


# ---------------------------------------------------------------- fixtures


def _cdb_bytes(tmp_path: Path, count: int, seed: int = 0) -> bytes:
    """A small valid .cdb file of `count` records, as bytes."""
    rng = np.random.default_rng(seed)
    images = [
        (rng.random((int(rng.integers(3, 12)), int(rng.integers(3, 12)))) > 0.5).astype(np.uint8) * 255
        for _ in range(count)
    ]
    labels = [i % 10 for i in range(count)]
    path = tmp_path / f"fixture-{count}-{seed}.cdb"
    write_cdb(path, images, labels)
    return path.read_bytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Looks the (decoded) path up in `server.routes`; each route is a callable taking the handler."""

    def do_GET(self):
        self.server.requests.append(self.path)
        route = self.server.routes.get(urllib.parse.unquote(self.path))
        if route is None:
            self.send_error(404)
        else:
            try:
                route(self)
            except ConnectionError:  # the client gave up (timeout, size cap): expected here
                pass

    def log_message(self, *args):  # keep pytest output quiet
        pass


def body(data: bytes, *, declared_length: int | None = None, send_length: bool = True, delay_s: float = 0.0):
    """A route that sends `data`, optionally lying about its length or omitting it."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(delay_s)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        if send_length:
            handler.send_header("Content-Length", str(len(data) if declared_length is None else declared_length))
        handler.end_headers()
        handler.wfile.write(data)
        # HTTP/1.0: the connection closes when the handler returns, so a
        # declared length larger than `data` is a truncated response.

    return route


def redirect(location: str):
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    httpd.requests = []
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    # A short poll interval: shutdown() waits up to one interval (0.5 s by default).
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def good(tmp_path) -> bytes:
    return _cdb_bytes(tmp_path, 3)


def _temporaries(directory: Path) -> list[Path]:
    return list(directory.glob(TMP_PREFIX + "*"))


def _download(server, target_dir, files, **kwargs):
    return download_hoda(target_dir, base_url=server.base_url, files=files, timeout=5, **kwargs)


# ---------------------------------------------------------------- success and skipping


def test_download_success_lands_verified_file(server, tmp_path, good):
    other = _cdb_bytes(tmp_path, 4, seed=1)
    server.routes = {"/" + NAME: body(good), "/Other.cdb": body(other)}
    files = {NAME: (3, _sha(good)), "Other.cdb": (4, None)}  # one hashed, one parse-and-count only
    calls = []
    target_dir = tmp_path / "cache" / "hoda"  # created on demand

    paths = _download(server, target_dir, files, progress=lambda *a: calls.append(a))

    assert paths == [target_dir / NAME, target_dir / "Other.cdb"]
    assert paths[0].read_bytes() == good and paths[1].read_bytes() == other
    assert len(read_cdb(paths[0]).labels) == 3
    assert server.requests == ["/Digits%203.cdb", "/Other.cdb"]  # names are URL-encoded
    assert calls[0] == (NAME, 0, len(good))
    assert calls[-1] == ("Other.cdb", len(other), len(other))
    assert _temporaries(target_dir) == []


def test_download_skips_valid_files_already_present(server, tmp_path, good):
    server.routes = {"/" + NAME: body(good), "/Other.cdb": body(_cdb_bytes(tmp_path, 4, seed=1))}
    files = {NAME: (3, _sha(good)), "Other.cdb": (4, None)}
    target_dir = tmp_path / "hoda"
    _download(server, target_dir, files)
    server.requests.clear()

    paths = _download(server, target_dir, files)

    assert server.requests == []
    assert [p.name for p in paths] == [NAME, "Other.cdb"]


def test_download_force_fetches_again(server, tmp_path, good):
    server.routes = {"/" + NAME: body(good)}
    files = {NAME: (3, _sha(good))}
    _download(server, tmp_path / "hoda", files)
    server.requests.clear()

    _download(server, tmp_path / "hoda", files, force=True)

    assert server.requests == ["/Digits%203.cdb"]
    assert (tmp_path / "hoda" / NAME).read_bytes() == good


@pytest.mark.parametrize("sha_known", [True, False])
def test_download_replaces_an_invalid_file_already_present(server, tmp_path, good, sha_known):
    server.routes = {"/" + NAME: body(good)}
    target_dir = tmp_path / "hoda"
    target_dir.mkdir()
    (target_dir / NAME).write_bytes(good[:-5])  # an earlier, truncated copy

    _download(server, target_dir, {NAME: (3, _sha(good) if sha_known else None)})

    assert server.requests == ["/Digits%203.cdb"]
    assert (target_dir / NAME).read_bytes() == good


def test_download_follows_a_loopback_redirect(server, tmp_path, good):
    server.routes = {"/" + NAME: redirect(server.base_url + "moved.cdb"), "/moved.cdb": body(good)}

    _download(server, tmp_path / "hoda", {NAME: (3, _sha(good))})

    assert (tmp_path / "hoda" / NAME).read_bytes() == good


def test_download_sweeps_leftover_temporaries(server, tmp_path, good):
    server.routes = {"/" + NAME: body(good)}
    target_dir = tmp_path / "hoda"
    target_dir.mkdir()
    (target_dir / (TMP_PREFIX + "interrupted.cdb")).write_bytes(b"half")

    _download(server, target_dir, {NAME: (3, _sha(good))})

    assert _temporaries(target_dir) == []


# ---------------------------------------------------------------- failures


def _failing_routes(good: bytes) -> dict:
    """route, table entry and expected message for each way a download can fail."""
    return {
        "truncated": (body(good, declared_length=len(good) + 100), (3, _sha(good)), "truncated: got"),
        "truncated-unhashed": (body(good[:-7], declared_length=len(good)), (3, None), "truncated: got"),
        "wrong-hash": (body(good), (3, "0" * 64), "sha256 mismatch"),
        "wrong-count": (body(good), (5, None), "expected 5 records, found 3"),
        "corrupt": (body(good[:1024] + b"\x00" + good[1025:]), (3, None), "not a valid .cdb file"),  # bad start byte
        "garbage": (body(b"<html>not found</html>"), (3, None), "not a valid .cdb file"),
        "404": (None, (3, None), "HTTP 404"),
        "too-large-announced": (body(good), (3, None), "too large: "),
        "too-large-streamed": (body(good, send_length=False), (3, None), "too large: more than"),
        "redirect-off-loopback": (redirect("http://example.com/x.cdb"), (3, None), "plain http is only allowed"),
    }


FAILURES = list(_failing_routes(b"x" * 400))


@pytest.mark.parametrize("kind", FAILURES)
def test_download_failure_raises_one_line_and_leaves_nothing(server, tmp_path, good, kind):
    route, entry, message = _failing_routes(good)[kind]
    if route is not None:
        server.routes = {"/" + NAME: route}
    max_bytes = len(good) - 1 if kind.startswith("too-large") else 1 << 20
    target_dir = tmp_path / "hoda"

    with pytest.raises(DownloadError, match=message) as info:
        _download(server, target_dir, {NAME: entry}, max_bytes=max_bytes)

    text = str(info.value)
    assert "\n" not in text and text.startswith(NAME + ": ") and server.base_url in text
    assert not (target_dir / NAME).exists()
    assert _temporaries(target_dir) == []


@pytest.mark.parametrize("kind", FAILURES)
def test_failed_download_keeps_previous_good_file_byte_identical(server, tmp_path, good, kind):
    target_dir = tmp_path / "hoda"
    server.routes = {"/" + NAME: body(good)}
    _download(server, target_dir, {NAME: (3, None)})
    before = (target_dir / NAME).read_bytes()
    route, entry, message = _failing_routes(good)[kind]
    server.routes = {"/" + NAME: route} if route is not None else {}
    max_bytes = len(good) - 1 if kind.startswith("too-large") else 1 << 20

    with pytest.raises(DownloadError, match=message):
        _download(server, target_dir, {NAME: entry}, max_bytes=max_bytes, force=True)

    assert (target_dir / NAME).read_bytes() == before == good
    assert _temporaries(target_dir) == []


def test_size_cap_from_content_length_is_checked_before_reading(server, tmp_path, good):
    server.routes = {"/" + NAME: body(good)}
    calls = []

    with pytest.raises(DownloadError, match=f"{len(good)} bytes announced, limit is 10"):
        _download(server, tmp_path / "hoda", {NAME: (3, None)}, max_bytes=10, progress=lambda *a: calls.append(a))

    assert calls == []  # refused before the first chunk


def test_connection_refused_is_a_download_error(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(DownloadError, match="cannot connect"):
        download_hoda(tmp_path / "hoda", base_url=f"http://127.0.0.1:{port}/", files={NAME: (3, None)}, timeout=2)

    assert _temporaries(tmp_path / "hoda") == []


def test_timeout_is_a_download_error(server, tmp_path, good):
    server.routes = {"/" + NAME: body(good, delay_s=1.0)}

    start = time.perf_counter()
    with pytest.raises(DownloadError, match="timed out after 0.2 s"):
        download_hoda(tmp_path / "hoda", base_url=server.base_url, files={NAME: (3, None)}, timeout=0.2)

    assert time.perf_counter() - start < 0.9
    assert _temporaries(tmp_path / "hoda") == []


# ---------------------------------------------------------------- URL policy and names


@pytest.fixture
def no_connections(monkeypatch):
    """Fail the test if anything opens a socket connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected connection: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://example.com/",
        "http://10.0.0.1/",
        "http://localhost.example.com/",
        "ftp://127.0.0.1/",
        "file:///etc/",
        "https:///no-host/",
        "raw.githubusercontent.com/",
    ],
)
def test_disallowed_urls_are_refused_before_any_connection(tmp_path, no_connections, base_url):
    with pytest.raises(DownloadError, match="refusing to download"):
        download_hoda(tmp_path / "hoda", base_url=base_url, files={NAME: (3, None)})

    assert not (tmp_path / "hoda").exists()


@pytest.mark.parametrize(
    ("origin", "newurl", "allowed"),
    [
        ("https://example.org/a.cdb", "https://cdn.example.org/a.cdb", True),
        ("https://example.org/a.cdb", "http://example.org/a.cdb", False),
        ("https://example.org/a.cdb", "http://127.0.0.1/a.cdb", False),  # remote host pointing at loopback
        ("http://127.0.0.1:8000/a.cdb", "http://localhost:8001/a.cdb", True),
        ("http://127.0.0.1:8000/a.cdb", "http://example.com/a.cdb", False),
        ("https://example.org/a.cdb", "file:///etc/passwd", False),
    ],
)
def test_redirect_policy(origin, newurl, allowed):
    assert (_redirect_problem(origin, newurl) is None) is allowed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("example.com", False),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("", False),
    ],
)
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "name", ["../evil.cdb", "..", ".", "sub/x.cdb", "/abs.cdb", "sub\\x.cdb", "", "a\0b", TMP_PREFIX + "x.cdb"]
)
def test_names_that_could_escape_target_dir_are_refused(tmp_path, no_connections, name):
    with pytest.raises(ValueError, match="not a plain file name"):
        download_hoda(tmp_path / "hoda", base_url="http://127.0.0.1:1/", files={name: (3, None)})

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"files": {NAME: (3, "ABC")}}, "sha256 must be 64 lowercase hex"),
        ({"files": {NAME: (-1, None)}}, "record count"),
        ({"files": {NAME: 3}}, "must be \\(record count"),
        ({"files": {}}, "at least one file"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_malformed_arguments_are_value_errors(tmp_path, no_connections, kwargs, message):
    kwargs = {"files": {NAME: (3, None)}, "base_url": "http://127.0.0.1:1/", **kwargs}
    with pytest.raises(ValueError, match=message):
        download_hoda(tmp_path / "hoda", **kwargs)


def test_hoda_table_and_urls():
    assert list(HODA_FILES) == ["Train 60000.cdb", "Test 20000.cdb", "RemainingSamples.cdb"]
    assert HODA_FILES["Train 60000.cdb"] == (60_000, None)
    assert HODA_FILES["Test 20000.cdb"][0] == 20_000
    assert HODA_FILES["RemainingSamples.cdb"][0] == 22_352
    assert file_url(HODA_BASE_URL, "Train 60000.cdb") == (
        "https://raw.githubusercontent.com/amir-saniyan/HodaDatasetReader/master/DigitDB/Train%2060000.cdb"
    )


def test_data_loaders_do_not_import_the_downloader():
    import ast

    data_dir = Path(__file__).resolve().parents[1] / "lenet_edge" / "data"
    for path in data_dir.glob("*.py"):
        if path.name == "download.py":
            continue
        tree = ast.parse(path.read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)] + [
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        ]
        assert not any("download" in module for module in imported), path
