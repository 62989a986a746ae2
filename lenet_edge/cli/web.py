"""`lenet-edge serve-web`: serve a run's exported page (`export --web`) on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ModelError
from . import SERVE, echo, main


@main.command("serve-web")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--host",
    default=SERVE.host,
    show_default=True,
    help="Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 to open it from a phone on your network.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=SERVE.port, show_default=True, help="Port (0: any free one)."
)
def serve_web(run_dir, host, port):
    """Serve RUN_DIR/web/ (written by `export --web`) until Ctrl-C.

    The page needs HTTP (browsers load WebAssembly and modules only over
    HTTP, not from file://); nothing else: it works offline. This server adds
    the cross-origin isolation headers (COOP/COEP) that give the page the
    browser's finer timer; `python -m http.server -d RUN_DIR/web` serves it too.

    \b
    Examples:
      lenet-edge serve-web runs/hoda
      lenet-edge serve-web runs/hoda --host 0.0.0.0 --port 8080
    """
    from ..manifest import manifest_path
    from ..web import MODEL_FILE, WEB_DIR, Server

    folder = run_dir / WEB_DIR
    if not (folder / "index.html").is_file() or not (folder / MODEL_FILE).is_file():
        hint = f"run `lenet-edge export --dir {run_dir} --web` first"
        where = folder if manifest_path(run_dir).is_file() else run_dir
        raise ModelError(f"{where}: no exported web page; {hint}")
    try:
        server = Server(folder, host=host, port=port)
    except OSError as exc:
        raise ModelError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    echo(f"serving {folder} at {server.url} (Ctrl-C stops)")
    with server:
        server.serve_forever()
