"""The `lenet-edge` command line: a thin layer over the library.

Each command parses its options, builds a config, calls one library function
and prints a short summary. Library errors (`LenetEdgeError`) become one line
on stderr and exit code 1; usage errors are click's, exit code 2; Ctrl-C is
one line and exit code 130. A traceback means a bug.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__
from .config import (
    ARCHITECTURES,
    DEFAULT_SPLIT,
    READ_MIN_CONFIDENCE,
    BenchConfig,
    ExportConfig,
    RemoteConfig,
    TrainConfig,
)
from .errors import DataError, LenetEdgeError, ModelError
from .quiet import native_stderr_captured

CACHE_ENV = "LENET_EDGE_CACHE"
RECIPE = TrainConfig()  # every option default is its config's own
EXPORT = ExportConfig()
BENCH = BenchConfig()
REMOTE = RemoteConfig()


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
        from .compat import tf  # noqa: F401


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


# --- data ------------------------------------------------------------------------------


@main.group(cls=Group)
def data():
    """Inspect datasets and download Hoda."""


@data.command("info")
@click.option("--data", "source", default="synthetic", show_default=True, help=DATA_HELP)
def data_info(source):
    """Counts per class per split, image sizes, and where the data was read from.

    \b
    Examples:
      lenet-edge data info --data synthetic
      lenet-edge data info --data "../shared/data/hoda"
      lenet-edge data info --data "Test 20000.cdb"
    """
    import time

    from .data import load_dataset

    started = time.perf_counter()
    with ProgressBars("preprocessing") as bar:
        dataset = load_dataset(source, cache_dir=cache_dir(), progress=status, advance=bar)
    seconds = time.perf_counter() - started
    echo(f"source:   {dataset.source} ({dataset.kind})")
    if dataset.location:
        echo(f"location: {dataset.location}")
    for name, sha in dataset.files.items():
        echo(f"file:     {name}  sha256 {sha[:16]}...")
    echo(f"loaded in {seconds:.2f} s" + (" (from cache)" if dataset.from_cache else ""))
    echo("")
    echo(f"{'split':<10}{'total':>8}" + "".join(f"{d:>7}" for d in range(10)))
    for name, split in dataset.splits.items():
        counts = [int((split.labels == d).sum()) for d in range(10)]
        echo(f"{name:<10}{len(split):>8,}" + "".join(f"{c:>7,}" for c in counts))
    echo("")
    echo("raw image size (h x w): min / median / max")
    for name, split in dataset.splits.items():
        h, w = split.raw_shapes[:, 0], split.raw_shapes[:, 1]
        echo(
            f"{name:<10}{h.min()}x{w.min()} / {int(np.median(h))}x{int(np.median(w))} / {h.max()}x{w.max()}"
            if len(h)
            else f"{name:<10}-"
        )


@data.command("preview")
@click.option("--data", "source", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--split", default="train", show_default=True, help="Which split to sample.")
@click.option("--per-class", default=10, show_default=True, type=click.IntRange(1, 100), help="Samples per digit.")
@click.option("--seed", default=0, show_default=True, type=int, help="Which samples to show.")
@click.option("--scale", default=3, show_default=True, type=click.IntRange(1, 16), help="Pixels per image pixel.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@click.option(
    "--numbers",
    type=click.IntRange(1, 200),
    default=None,
    help="Instead: this many synthetic handwritten numbers (4-11 digits), one per row, as `read` sees them.",
)
def data_preview(source, split, per_class, seed, scale, output, numbers):
    """A PNG grid of preprocessed samples: one row per digit ۰-۹ (or, with --numbers, whole numbers).

    \b
    Examples:
      lenet-edge data preview --data synthetic -o synthetic.png
      lenet-edge data preview --data ../shared/data/hoda --split test -o hoda.png
      lenet-edge data preview --numbers 8 -o numbers.png
    """
    from .data import load_dataset
    from .data.preview import number_sheet, sample_grid

    if numbers is not None:
        from .data.synthetic import generate_numbers

        generated = generate_numbers(numbers, seed)
        echo(f"wrote {number_sheet(generated.images, output, scale=scale)}: " + " ".join(generated.texts))
        return

    with ProgressBars("preprocessing") as bar:
        dataset = load_dataset(source, cache_dir=cache_dir(), progress=status, advance=bar)
    path = sample_grid(dataset.split(split), output, per_class=per_class, seed=seed, scale=scale)
    echo(f"wrote {path}")


@data.command("download")
@click.argument("name", type=click.Choice(["hoda"]))
@click.option("--force", is_flag=True, help="Download again even if a verified copy is in the cache.")
def data_download(name, force):
    """Download a dataset into the cache (the only command that uses the network).

    Hoda's three files come from their public GitHub mirror; each is fully
    parsed, its record count checked (and its sha256 where known) before it
    is moved into the cache.

    \b
    Example:
      lenet-edge data download hoda
      lenet-edge train --data hoda
    """
    from .data.download import download_hoda

    with ProgressBars("download") as bars:
        paths = download_hoda(
            cache_dir() / "hoda", force=force, progress=lambda name, done, total: bars(done, total, name)
        )
    for path in paths:
        echo(f"ok: {path}")


# --- train / export / bench -------------------------------------------------------------------


@main.command()
@click.option("--data", "source", default=RECIPE.data, show_default=True, help=DATA_HELP)
@DIR_OPTION
@click.option(
    "--arch",
    type=click.Choice(ARCHITECTURES),
    default=RECIPE.arch,
    show_default=True,
    help="lenet5: ReLU + max pooling (int8 in one XNNPACK partition). lenet5-classic: tanh + average pooling (1998).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=RECIPE.epochs,
    show_default=True,
    help="Float pretraining epochs.",
)
@click.option(
    "--qat-epochs",
    type=click.IntRange(min=0),
    default=RECIPE.qat_epochs,
    show_default=True,
    help="Quantization-aware fine-tuning epochs (0: no QAT model).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=RECIPE.batch_size,
    show_default=True,
    help="Training batch size.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=RECIPE.lr,
    show_default=True,
    help="Peak float learning rate (cosine decay).",
)
@click.option(
    "--qat-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=RECIPE.qat_lr,
    show_default=True,
    help="QAT learning rate.",
)
@click.option(
    "--seed",
    type=int,
    default=RECIPE.seed,
    show_default=True,
    help="Seed for the split, initialisation, shuffling and augmentation.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=RECIPE.val_fraction,
    show_default=True,
    help="Fraction of train held out (stratified) for choosing the best epoch.",
)
@click.option(
    "--augment/--no-augment",
    default=RECIPE.augment,
    show_default=True,
    help="Light rotation/scale/shift/stroke augmentation.",
)
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0, 1, max_open=True),
    default=RECIPE.label_smoothing,
    show_default=True,
    help="Soften the one-hot targets: less overconfidence, steadier epochs.",
)
@click.option("--force", is_flag=True, help="Replace an existing run in --dir (only once the new one is complete).")
def train(
    source,
    run_dir,
    arch,
    epochs,
    qat_epochs,
    batch_size,
    lr,
    qat_lr,
    seed,
    val_fraction,
    augment,
    label_smoothing,
    force,
):
    """Train LeNet-5 in float, then fine-tune it with quantization-aware training.

    Writes the float model, the QAT weights and manifest.json into --dir.

    \b
    Examples:
      lenet-edge train                                   # built-in synthetic data
      lenet-edge train --data ../shared/data/hoda --dir runs/hoda
      lenet-edge train --arch lenet5-classic --epochs 5 --force
    """
    import_tensorflow()
    from .training import train as run_training

    config = TrainConfig(
        data=source,
        arch=arch,
        epochs=epochs,
        qat_epochs=qat_epochs,
        batch_size=batch_size,
        lr=lr,
        qat_lr=qat_lr,
        seed=seed,
        val_fraction=val_fraction,
        augment=augment,
        label_smoothing=label_smoothing,
    )
    with ProgressBars("preprocessing") as bar:
        run_training(config, run_dir, force=force, cache_dir=cache_dir(), log=echo, advance=bar)


def run_splits(manifest: dict, source: str | None = None):
    """The run's dataset (or `source` instead) with the run's own validation carve-out."""
    from .data import load_run_splits

    with ProgressBars("preprocessing") as bar:
        return load_run_splits(manifest, source, cache_dir=cache_dir(), progress=status, advance=bar)


@main.command()
@DIR_OPTION
@click.option("--int8", is_flag=True, help="Also write lenet5_int8.tflite: full-integer int8 from the QAT model.")
@click.option("--ptq", is_flag=True, help="Also write lenet5_int8_ptq.tflite: post-training int8 of the float model.")
@click.option(
    "--c-array", is_flag=True, help="Also write the int8 model as a C array (lenet5_int8.h/.cc); implies --int8."
)
@click.option(
    "--micro",
    is_flag=True,
    help="Also write micro/: a TensorFlow Lite Micro project folder for the int8 model; implies --int8.",
)
@click.option(
    "--arena-margin",
    type=click.FloatRange(0, 10),
    default=EXPORT.micro_arena_margin,
    show_default=True,
    help="micro/'s kTensorArenaSize: the measured minimum arena plus this fraction.",
)
@click.option(
    "--calibration-size",
    type=click.IntRange(min=1),
    default=EXPORT.calibration_size,
    show_default=True,
    help="Training images used to calibrate int8 ranges.",
)
@click.option(
    "--calibration-seed",
    type=int,
    default=EXPORT.calibration_seed,
    show_default=True,
    help="Which training images calibrate.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=EXPORT.min_agreement,
    show_default=True,
    help="Fail unless int8 and Keras QAT predictions agree on at least this fraction of validation.",
)
def export(run_dir, int8, ptq, c_array, micro, arena_margin, calibration_size, calibration_seed, min_agreement):
    """Convert a trained run to TFLite: float32 always, int8 and PTQ on request.

    Every int8 model is verified (int8 input/output, no float op, no
    QUANTIZE/DEQUANTIZE) and compared with the Keras QAT model on the
    validation split; export fails loudly if a check fails. With --micro the
    int8 model also runs in TensorFlow Lite Micro (exact arena, the example's
    digit). Files an earlier export wrote and this one does not (a PTQ model,
    the C array, micro/) are removed.

    \b
    Examples:
      lenet-edge export --int8
      lenet-edge export --dir runs/hoda --int8 --ptq --c-array
      lenet-edge export --dir runs/hoda --micro
    """
    from .manifest import read_manifest

    manifest = read_manifest(run_dir)  # fail fast, before TensorFlow loads
    config = ExportConfig(
        int8=int8 or c_array or micro,
        ptq=ptq,
        c_array=c_array,
        micro=micro,
        micro_arena_margin=arena_margin,
        calibration_size=calibration_size,
        calibration_seed=calibration_seed,
        min_agreement=min_agreement,
    )
    import_tensorflow()
    from .conversion import export_run, format_summary

    _, splits = run_splits(manifest)
    with native_stderr_captured():  # the converter's C++ INFO lines
        summary = export_run(run_dir, config, splits=splits, progress=status)
    echo(format_summary(summary))


def parse_batch_sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of positive integers") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of positive integers")
    return sizes


def parse_targets(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    from .remote import parse_target

    try:
        return tuple(parse_target(value).url for value in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_model(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    path = Path(path if sep else value)
    return (name if sep else path.stem), path


@main.command()
@DIR_OPTION
@click.option("--data", "source", default=None, help="Dataset to evaluate on (default: the run's own). " + DATA_HELP)
@click.option(
    "--split", default=DEFAULT_SPLIT, show_default=True, help="Split to evaluate: test, val, train, remaining."
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="[NAME=]PATH",
    help="Benchmark these .tflite files instead of the run's (repeatable).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=BENCH.threads, show_default=True, help="Interpreter threads."
)
@click.option(
    "--runs",
    type=click.IntRange(min=10),
    default=BENCH.runs,
    show_default=True,
    help="Timed single-image runs per model.",
)
@click.option(
    "--warmup", type=click.IntRange(min=0), default=BENCH.warmup, show_default=True, help="Untimed runs first."
)
@click.option(
    "--batch-sizes",
    default=",".join(map(str, BENCH.batch_sizes)),
    show_default=True,
    callback=parse_batch_sizes,
    help="Batch sizes for throughput, comma-separated.",
)
@click.option(
    "--xnnpack/--no-xnnpack", default=BENCH.xnnpack, show_default=True, help="Use LiteRT's default XNNPACK delegate."
)
@click.option(
    "--micro/--no-micro",
    default=BENCH.micro,
    show_default=True,
    help="Also run every model in TensorFlow Lite Micro: exact arena, flash, MACs, agreement with LiteRT.",
)
@click.option(
    "--micro-runs",
    type=click.IntRange(min=10),
    default=BENCH.micro_runs,
    show_default=True,
    help="Timed single-image runs per model in TFLM (its reference kernels are slow on a PC).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "md", "json"]),
    default="table",
    show_default=True,
    help="What to print on stdout (bench.json, bench.md and plots are always written).",
)
@click.option(
    "--on",
    "on",
    multiple=True,
    metavar="ssh://[USER@]HOST[:PORT]",
    callback=parse_targets,
    help="Also benchmark on this device over SSH (repeatable; devices run at once). "
    "It needs Python 3.8+, numpy and ai-edge-litert or tflite-runtime.",
)
@click.option(
    "--host/--no-host",
    default=True,
    show_default=True,
    help="Measure on this machine too, as the first target; --no-host measures only the --on devices.",
)
@click.option(
    "--ssh-config",
    type=click.Path(exists=True, dir_okay=False),
    default=REMOTE.ssh_config,
    help="OpenSSH client config for --on (ssh -F FILE) instead of ~/.ssh/config.",
)
@click.option(
    "--remote-python",
    default=REMOTE.python,
    show_default=True,
    help="Python on the devices: a command on their PATH, or a path (a venv's bin/python).",
)
@click.option(
    "--remote-sample",
    type=click.IntRange(min=1),
    default=REMOTE.sample,
    metavar="N",
    help="Send a seeded sample of N images to the devices instead of the whole split (slow links).",
)
@click.option(
    "--remote-timeout",
    type=click.FloatRange(min=1),
    default=REMOTE.timeout,
    show_default=True,
    help="Seconds one device may take in all (connect, send, measure, answer).",
)
def bench(
    run_dir,
    source,
    split,
    models,
    threads,
    runs,
    warmup,
    batch_sizes,
    xnnpack,
    micro,
    micro_runs,
    fmt,
    on,
    host,
    **remote,
):
    """Accuracy and latency of float32 vs int8 (and PTQ), interleaved in one process, here and on devices.

    Then (unless --no-micro) the same models on this machine in TensorFlow
    Lite Micro: exact tensor arena, flash bytes, MACs per layer, agreement
    with LiteRT. Writes bench.json, bench.md, latency.png (latency_tflm.png)
    and the confusion matrices into --dir, and ends with a verdict per target. A model that fails
    becomes an error entry; the others still run, and the command then
    exits 1. With --on, the same measurement runs on each device over SSH
    at the same time; a device that cannot be reached or lacks a runtime
    becomes an error entry too.

    \b
    Examples:
      lenet-edge bench
      lenet-edge bench --dir runs/hoda --split test --runs 5000 --threads 2
      lenet-edge bench --model a=one.tflite --model b=two.tflite --data hoda --format json
      lenet-edge bench --dir runs/hoda --on ssh://pi@raspberrypi.local --on ssh://jetson --remote-sample 2000
    """
    import json

    from .benchmark import bench_run, format_markdown, format_table

    if not host and not on:
        raise click.UsageError("--no-host leaves nothing to measure: name a device with --on")
    config = BenchConfig(
        threads=threads,
        runs=runs,
        warmup=warmup,
        batch_sizes=batch_sizes,
        xnnpack=xnnpack,
        micro=micro,
        micro_runs=micro_runs,
    )
    remote_config = RemoteConfig(
        ssh_config=remote["ssh_config"],
        python=remote["remote_python"],
        sample=remote["remote_sample"],
        timeout=remote["remote_timeout"],
    )
    with native_stderr_captured():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" INFO line
        results, written = bench_run(
            run_dir,
            config,
            models=dict(parse_model(m) for m in models) or None,
            source=source,
            split=split,
            load_splits=run_splits,
            progress=status,
            on=on,
            host=host,
            remote=remote_config,
        )
    echo({"table": format_table, "md": format_markdown, "json": lambda r: json.dumps(r, indent=2)}[fmt](results))
    if fmt == "table":
        echo("wrote " + ", ".join(str(p) for p in written.values()))
    if not results.get("ok", True):
        lost = [t["target"] for t in results.get("targets", []) if t.get("error")]
        raise ModelError(
            f"no result from {', '.join(lost)}; see the error entries above"
            if lost
            else "some models failed; see their error entries above"
        )


# --- predict ---------------------------------------------------------------------------------


@main.command()
@IMAGES_ARGUMENT
@DIR_OPTION
@MODEL_OPTION
@click.option(
    "--top-k",
    type=click.IntRange(1, 10),
    default=3,
    show_default=True,
    help="Digits ranked per image: the prediction and its runners-up.",
)
@JSON_OPTION
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Images per interpreter call."
)
@click.option(
    "--explain",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write per image DIR/NAME.png: the photo front end's stages (flattened, binarized, kept, final 28x28).",
)
@QUIET_OPTION
def predict(images, run_dir, model_path, top_k, as_json, batch_size, explain, quiet):
    """Read the handwritten digit in image files (photos or scans, any size, either polarity).

    IMAGES are files or directories (searched recursively). Each image goes
    through the preprocessing the model was trained with; a photo of paper is
    first cleaned (lighting flattened, ruled lines and boxes removed, the
    digit's ink kept). A file that cannot be read, shows no digit or several
    is reported and the others still run; the command then exits 1.

    \b
    Examples:
      lenet-edge predict digit.png
      lenet-edge predict scans/ --dir runs/hoda --top-k 2
      lenet-edge predict photo.jpg --model lenet5_float32.tflite --json
      lenet-edge predict photos/ --explain why/
    """

    from .inference import predict as run_predict
    from .inference import resolve_model

    model = resolve_model(model_path, run_dir, log=lambda message: click.echo(message, err=True))
    with ProgressBars("predicting", shown=not quiet) as bar:
        results = run_predict(images, model, top_k=top_k, batch_size=batch_size, progress=bar, explain=explain)

    def line(r: dict, width: int) -> str:
        others = ", ".join(f"{d} {100 * p:.1f}%" for d, p in r["top_k"][1:])
        return f"{r['path']:<{width}}  {r['persian']} {r['digit']}  {100 * r['confidence']:5.1f}%" + (
            f"   ({others})" if others else ""
        )

    echo_records(results, as_json, line, "images could not be read")


# --- read ------------------------------------------------------------------------------------


@main.command("read")
@IMAGES_ARGUMENT
@DIR_OPTION
@MODEL_OPTION
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    default=READ_MIN_CONFIDENCE,
    show_default=True,
    help="A mark read as a digit with less confidence than this makes the image 'not digits'.",
)
@JSON_OPTION
@QUIET_OPTION
def read_numbers(images, run_dir, model_path, min_confidence, as_json, quiet):
    """Read whole handwritten numbers (postal codes, phone numbers, amounts) in image files.

    IMAGES are files or directories (searched recursively), one number per
    image, either polarity, any size up to 40 megapixels. The digits are found
    (touching ones split, broken ones joined, specks dropped, the small ۰ kept)
    and each goes through the preprocessing the model was trained with. An
    image without a number is reported and the others still run; the command
    then exits 1.

    \b
    Examples:
      lenet-edge read phone.png
      lenet-edge read forms/ --dir runs/hoda --json
    """

    from .inference import resolve_model
    from .reading import read as run_read

    model = resolve_model(model_path, run_dir, log=lambda message: click.echo(message, err=True))
    with ProgressBars("reading", shown=not quiet) as bar:
        results = run_read(images, model, min_confidence=min_confidence, progress=bar)
    echo_records(
        results,
        as_json,
        lambda r, width: f"{r['path']:<{width}}  {r['persian']}  {r['text']}  {100 * r['confidence']:5.1f}%",
        "images gave no number",
    )
