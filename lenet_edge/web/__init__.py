"""`export --web`'s static page, the LiteRT.js files it runs on, and the small HTTP server that serves it.

The page (`page/`: index.html, app.js, lenet.js, tflite.js, preprocess.js,
style.css) draws or takes a digit, preprocesses it as `predict` does and
runs the int8 model in LiteRT.js, Google's WebAssembly build of LiteRT
(`@litertjs/core` from npm, pinned by `package.json` and `package-lock.json`
beside this file; `npm ci --prefix lenet_edge/web` installs it). `web_files`
lists what the exported folder holds: the page, LiteRT.js's two
single-threaded WebAssembly builds (relaxed SIMD, and plain SIMD for browsers
without it) and the model, so the folder works offline, with no CDN.

A browser loads WebAssembly and ES modules over HTTP only, not from
file://, so `Server` serves a folder (or a map of paths to files) on a
loopback port, with the headers that make the page cross-origin isolated
(COOP/COEP: `performance.now()` then steps by 5 µs instead of 100 µs, which
`bench --on browser` needs). `lenet-edge serve-web RUN` runs it in front of
a run's `web/`; any static server works for the page itself
(`python -m http.server -d RUN/web`).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ModelError

WEB_DIR = "web"  # the folder `export --web` writes in the run directory
PAGE_DIR = Path(__file__).parent / "page"
PACKAGE_DIR = Path(__file__).parent  # package.json, package-lock.json; `npm ci` puts node_modules/ here
PAGE_FILES = ("index.html", "app.js", "lenet.js", "tflite.js", "preprocess.js", "style.css")
BENCH_FILES = ("bench.html", "bench.js", "lenet.js", "tflite.js", "preprocess.js")
MODEL_FILE = "model.tflite"  # the page's default model: the run's int8 export, metadata included
# served name -> the file in node_modules (LiteRT.js's single-threaded builds; the page picks one)
RUNTIME_FILES = {
    "litert.js": "@litertjs/core/dist/index.js",
    "wasm-utils.js": "@litertjs/wasm-utils/dist/index.js",
    "litert_wasm_internal.js": "@litertjs/core/wasm/litert_wasm_internal.js",
    "litert_wasm_internal.wasm": "@litertjs/core/wasm/litert_wasm_internal.wasm",
    "litert_wasm_compat_internal.js": "@litertjs/core/wasm/litert_wasm_compat_internal.js",
    "litert_wasm_compat_internal.wasm": "@litertjs/core/wasm/litert_wasm_compat_internal.wasm",
}
FOLDER_FILES = (*PAGE_FILES, *RUNTIME_FILES, MODEL_FILE)  # what `export --web` writes into web/
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",
    ".tflite": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".json": "application/json",
    ".png": "image/png",
}


def install_hint() -> str:
    return f"run `npm ci --prefix {_shown(PACKAGE_DIR)}` once (README: Web page)"


def _shown(path: Path) -> str:
    """A path as a command should name it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def node_modules() -> Path:
    """The node_modules folder `npm ci` made beside package.json, checked to hold every runtime file.

    Raises:
        ModelError: LiteRT.js is not installed (says which command installs it).
    """
    root = PACKAGE_DIR / "node_modules"
    missing = [name for name in RUNTIME_FILES.values() if not (root / name).is_file()]
    if missing:
        raise ModelError(f"{root / missing[0]}: LiteRT.js is not installed; {install_hint()}")
    return root


def litertjs_version() -> str:
    """The installed @litertjs/core version (from its package.json)."""
    package = node_modules() / "@litertjs/core/package.json"
    return json.loads(package.read_text(encoding="utf-8"))["version"]


def runtime_files() -> dict[str, Path]:
    """Served name -> path of LiteRT.js's files."""
    root = node_modules()
    return {name: root / path for name, path in RUNTIME_FILES.items()}


def web_files(model: bytes) -> dict[str, bytes | Path]:
    """The exported folder: file name -> its bytes or the file to copy (the page, LiteRT.js, `model`)."""
    files: dict[str, bytes | Path] = {name: PAGE_DIR / name for name in PAGE_FILES}
    files.update(runtime_files())
    files[MODEL_FILE] = model
    return files


def bench_routes() -> dict[str, Path]:
    """The files `bench --on browser` serves besides the models and images: its page, lenet.js, LiteRT.js."""
    return {**{name: PAGE_DIR / name for name in BENCH_FILES}, **runtime_files()}


# --- serving --------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the server's routes (or files under its root), cross-origin isolated, no listing."""

    server: Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path).lstrip("/") or "index.html"
        data = self.server.lookup(path)
        if data is None:
            self.send_error(404, "Not found")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPES.get(Path(path).suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")


class Server(http.server.ThreadingHTTPServer):
    """An HTTP server on `host`:`port` (0: any free port) for a folder (`root`) or a map of paths (`routes`).

    `routes` maps a URL path (without the leading /) to bytes or a file; a
    `root` serves the files under it, never above it (no `..`, no symlink out).
    """

    daemon_threads = True

    def __init__(self, root: str | os.PathLike | None = None, routes: Mapping[str, bytes | Path] | None = None,
                 host: str = "127.0.0.1", port: int = 0, log=None):  # fmt: skip
        self.root = None if root is None else Path(root).resolve()
        self.routes = dict(routes or {})
        self.log = log
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def lookup(self, path: str) -> bytes | None:
        found = self.routes.get(path)
        if found is None and self.root is not None:
            target = (self.root / path).resolve()
            found = target if target.is_relative_to(self.root) and target.is_file() else None
        if isinstance(found, Path):
            try:
                return found.read_bytes()
            except OSError:  # gone since it was listed: a 404, which the page reports
                return None
        return None if found is None else bytes(found)


@contextlib.contextmanager
def serving(root=None, routes=None) -> Iterator[Server]:
    """A `Server` on a free loopback port, running in a thread for the duration of the block."""
    server = Server(root, routes)
    thread = threading.Thread(target=server.serve_forever, name="web-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
