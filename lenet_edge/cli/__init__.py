"""The `lenet-edge` command line: a thin layer over the library.

Each command parses its options, builds a config, calls one library function
and prints a short summary. Library errors (`LenetEdgeError`) become one line
on stderr and exit code 1; usage errors are click's, exit code 2; Ctrl-C is
one line and exit code 130. A traceback means a bug.

This module holds the group and what the commands share; the commands live
in `datasets` (data info/preview/download), `pipeline` (train, export, bench),
`images` (predict, read) and `web` (serve-web), imported at the end so that they register.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .. import __version__
from ..config import BenchConfig, BrowserConfig, ExportConfig, QemuConfig, RemoteConfig, ServeConfig, TrainConfig
from ..errors import DataError, LenetEdgeError
from ..quiet import native_stderr_captured

CACHE_ENV = "LENET_EDGE_CACHE"
RECIPE = TrainConfig()  # every option default is its config's own
EXPORT = ExportConfig()
BENCH = BenchConfig()
REMOTE = RemoteConfig()
BROWSER = BrowserConfig()
QEMU = QemuConfig()
SERVE = ServeConfig()


class Group(click.Group):
    """A click group that turns our errors and Ctrl-C into one clean line."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LenetEdgeError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; earlier results are left as they were", err=True)
            ctx.exit(130)


def cache_dir() -> Path:
    """The dataset cache: $LENET_EDGE_CACHE, else $XDG_CACHE_HOME/lenet-edge, else ~/.cache/lenet-edge."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lenet-edge"


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up log (must happen before its first import)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow() -> None:
    """Import TensorFlow (through `compat`) with its start-up chatter hidden.

    TensorFlow 2.16+ writes INFO lines (oneDNN, CUDA) to fd 2 before its
    logging is configured, where TF_CPP_MIN_LOG_LEVEL cannot reach them.
    """
    with native_stderr_captured():
        from ..compat import tf  # noqa: F401


def echo(message: str) -> None:
    click.echo(message)


def status(message: str) -> None:
    """A progress line on stderr when it is a terminal (stdout stays the command's result), unless --quiet."""
    if showing_progress():
        click.echo(message, err=True)


def showing_progress() -> bool:
    """Progress output goes to stderr when it is a terminal, unless the user asked for --quiet."""
    ctx = click.get_current_context(silent=True)
    return sys.stderr.isatty() and not (ctx and ctx.find_root().params.get("quiet"))


class ProgressBars:
    """click progress bars on stderr, one per label, each created on its first update.

    Call it as `bars(done, total)` (one bar) or `bars(done, total, label)`; use it as a
    context manager so the bars are closed. Silent off a terminal or with --quiet.
    """

    def __init__(self, label: str, shown: bool = True):
        self.label, self.shown, self.bars = label, shown and showing_progress(), {}

    def __call__(self, done: int, total: int | None, label: str | None = None) -> None:
        if not self.shown:
            return
        label = label or self.label
        if label not in self.bars:
            self.bars[label] = click.progressbar(length=total or 0, label=label, file=sys.stderr)
            self.bars[label].__enter__()
        self.bars[label].update(done - self.bars[label].pos)

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.__exit__(None, None, None)


DATA_HELP = (
    "Dataset: synthetic[:TRAIN[:TEST]], hoda, a .cdb or .npz file, or a directory (.cdb files or class folders)."
)
DIR_OPTION = click.option(
    "--dir",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("export"),
    show_default=True,
    help="Run directory: where train writes and export, bench and predict read.",
)
# predict's and read's: image files in, one record per image out
IMAGES_ARGUMENT = click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
MODEL_OPTION = click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A .tflite model to run instead of the run's int8 (else float32) export.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="One JSON object per image on stdout.")
QUIET_OPTION = click.option("--quiet", is_flag=True, help="No progress bar.")


def echo_records(results: list[dict], as_json: bool, line, failure: str) -> None:
    """Print predict's or read's records (`line(record, path_width)` for a good one), then fail if any failed."""
    import json

    width = max((len(r["path"]) for r in results), default=0)
    for r in results:
        if as_json:
            echo(json.dumps(r, ensure_ascii=False))
        elif "error" in r:
            click.echo(f"error: {r['path']}: {r['error']}", err=True)
        else:
            echo(line(r, width))
    failed = sum("error" in r for r in results)
    if failed:
        raise DataError(f"{failed} of {len(results)} {failure}")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="lenet-edge")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on the terminal (results still print).")
def main(quiet):
    """Train, quantize and benchmark a LeNet-5 for handwritten Persian digits (۰-۹).

    \b
    The pipeline, on built-in synthetic data (no download):
      lenet-edge train
      lenet-edge export --int8
      lenet-edge bench
    """
    quiet_tensorflow()


from . import datasets, images, pipeline, web  # noqa: E402, F401  (each registers its commands on `main`)
