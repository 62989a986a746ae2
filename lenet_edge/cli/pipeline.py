"""`lenet-edge train`, `export` and `bench`: the pipeline's three stages."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import (
    ARCHITECTURES,
    AUTO,
    DEFAULT_SPLIT,
    RECIPE_NAMES,
    RECIPES,
    TEACHER_ARCHITECTURES,
    BenchConfig,
    BrowserConfig,
    ExportConfig,
    QemuConfig,
    RemoteConfig,
    recipe_config,
)
from ..errors import ModelError
from ..quiet import native_stderr_captured
from . import (
    BENCH,
    BROWSER,
    DATA_HELP,
    DIR_OPTION,
    EXPORT,
    QEMU,
    RECIPE,
    REMOTE,
    ProgressBars,
    cache_dir,
    echo,
    import_tensorflow,
    main,
    status,
)

# --- train / export / bench -------------------------------------------------------------------


def best_differs(field: str, text: str) -> str:
    """Help text that also names the `best` recipe's value when it is not the `fast` one's."""
    best = getattr(RECIPES["best"], field)
    if best == getattr(RECIPE, field):
        return text
    return f"{text} [best: {('on' if best else 'off') if isinstance(best, bool) else best}]"


# option name -> TrainConfig field, where the two differ
TRAIN_FIELDS = {"source": "data", "elastic": "elastic_alpha"}


def recipe_option(flags: str, text: str, field: str | None = None, **kwargs):
    """A `train` option whose default is the `fast` recipe's `field` (by default the option's own name), its help
    naming `best`'s value where that differs."""
    field = field or flags.split("/")[0].removeprefix("--").replace("-", "_")
    default = getattr(RECIPE, field)
    return click.option(
        flags, default=default, show_default=default is not None, help=best_differs(field, text), **kwargs
    )


@main.command()
@click.option(
    "--recipe",
    type=click.Choice(RECIPE_NAMES),
    default=RECIPE.recipe,
    show_default=True,
    help="Starting settings: fast (a few minutes on Hoda) or best (elastic augmentation, a distilled teacher, "
    "48 epochs; several times longer). Options given explicitly override the recipe's values.",
)
@click.option("--data", "source", default=RECIPE.data, show_default=True, help=DATA_HELP)
@DIR_OPTION
@click.option(
    "--arch",
    type=click.Choice(ARCHITECTURES),
    default=RECIPE.arch,
    show_default=True,
    help="lenet5: ReLU + max pooling (int8 in one XNNPACK partition). lenet5-classic: tanh + average pooling (1998).",
)
@recipe_option("--epochs", "Float pretraining epochs.", type=click.IntRange(min=1))
@recipe_option("--qat-epochs", "Quantization-aware fine-tuning epochs (0: no QAT model).", type=click.IntRange(min=0))
@recipe_option("--batch-size", "Training batch size.", type=click.IntRange(min=1))
@recipe_option("--lr", "Peak float learning rate (cosine decay).", type=click.FloatRange(min=0, min_open=True))
@recipe_option("--qat-lr", "QAT learning rate.", type=click.FloatRange(min=0, min_open=True))
@recipe_option(
    "--qat-augment/--no-qat-augment",
    "Augment QAT's batches as the float epochs' (off: QAT fine-tunes on the training images as they are).",
)
@recipe_option("--seed", "Seed for the split, initialisation, shuffling and augmentation.", type=int)
@recipe_option(
    "--val-fraction",
    "Fraction of train held out (stratified) for choosing the best epoch.",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
)
@recipe_option(
    "--augment/--no-augment", "Augment every batch: rotation, scale, shift, shear, stroke width (and --elastic)."
)
@recipe_option(
    "--elastic",
    "Elastic distortion strength (Simard et al.'s alpha; 0: none).",
    field="elastic_alpha",
    type=click.FloatRange(0, 100),
)
@recipe_option("--elastic-sigma", "Smoothness of the elastic field, px.", type=click.FloatRange(0.5, 10))
@recipe_option(
    "--label-smoothing",
    "Soften the one-hot targets: less overconfidence, steadier epochs.",
    type=click.FloatRange(0, 1, max_open=True),
)
@recipe_option("--teacher/--no-teacher", "Train a larger CNN first and distil the LeNet-5 from its soft targets.")
@recipe_option(
    "--teacher-arch",
    "The teacher: wide (a 5x wider LeNet, 0.88 M parameters) or deep (0.43 M).",
    type=click.Choice(TEACHER_ARCHITECTURES),
)
@recipe_option(
    "--teacher-from",
    "Reuse the teacher of this earlier run (same data and split) instead of training one; implies --teacher.",
    type=click.Path(file_okay=False, exists=True),
)
@recipe_option(
    "--float-from",
    "Reuse the float LeNet-5 of this earlier run (same data, split and arch) and train only its QAT "
    "(with a teacher, that run's teacher unless --teacher-from says otherwise).",
    type=click.Path(file_okay=False, exists=True),
)
@recipe_option("--teacher-epochs", "The teacher's training epochs.", type=click.IntRange(min=1))
@recipe_option(
    "--temperature",
    "Distillation temperature: softens both models' scores.",
    type=click.FloatRange(min=0, min_open=True),
)
@recipe_option(
    "--distill-alpha",
    "Weight of the teacher's soft targets; the rest goes to the true labels.",
    type=click.FloatRange(0, 1),
)
@recipe_option(
    "--verifier/--no-verifier",
    "Also train the piece verifier `read` cuts touching digits with (lenet5; on Hoda most of a fast run's time). "
    "Without it, `read` cuts by the digit model alone.",
)
@recipe_option("--verifier-epochs", "The piece verifier's float epochs (lenet5).", type=click.IntRange(min=1))
@recipe_option("--verifier-qat-epochs", "The piece verifier's QAT epochs (lenet5).", type=click.IntRange(min=1))
@recipe_option(
    "--line-model/--no-line-model",
    "Also train the line model `read` checks its cuts with (lenet5 only; on Hoda it takes several times as long "
    "as the rest of the run).",
)
@recipe_option("--line-epochs", "The line model's float epochs (with --line-model).", type=click.IntRange(min=1))
@recipe_option("--line-qat-epochs", "The line model's QAT epochs (with --line-model).", type=click.IntRange(min=1))
@click.option("--force", is_flag=True, help="Replace an existing run in --dir (only once the new one is complete).")
@click.pass_context
def train(ctx, recipe, run_dir, force, **options):
    """Train LeNet-5 in float, then fine-tune it with quantization-aware training.

    Writes the float model, the QAT weights (and with a teacher, the teacher)
    and manifest.json into --dir; the manifest records the resolved settings.

    \b
    Examples:
      lenet-edge train                                   # built-in synthetic data
      lenet-edge train --data ../shared/data/hoda --dir runs/hoda
      lenet-edge train --data ../shared/data/hoda --no-verifier --dir runs/digits   # the digit model alone
      lenet-edge train --recipe best --data ../shared/data/hoda --dir runs/best
      lenet-edge train --recipe best --epochs 20 --teacher-from runs/best --dir runs/best20
      lenet-edge train --recipe best --float-from runs/best --qat-epochs 6 --dir runs/best-qat6
      lenet-edge train --arch lenet5-classic --epochs 5 --force
    """
    from click.core import ParameterSource

    given = {
        TRAIN_FIELDS.get(name, name): value
        for name, value in options.items()
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    }
    if given.get("teacher_from"):
        given.setdefault("teacher", True)
    if given.get("float_from") and given.get("teacher", RECIPES[recipe].teacher):
        given.setdefault("teacher_from", given["float_from"])  # the teacher its float model learnt from
    try:
        config = recipe_config(recipe, **given)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    import_tensorflow()
    from ..training import train as run_training

    with ProgressBars("preprocessing") as bar:
        run_training(config, run_dir, force=force, cache_dir=cache_dir(), log=echo, advance=bar)


def run_splits(manifest: dict, source: str | None = None):
    """The run's dataset (or `source` instead) with the run's own validation carve-out."""
    from ..data import load_run_splits

    with ProgressBars("preprocessing") as bar:
        return load_run_splits(manifest, source, cache_dir=cache_dir(), progress=status, advance=bar)


@main.command()
@DIR_OPTION
@click.option("--int8", is_flag=True, help="Also write lenet5_int8.tflite: full-integer int8 from the QAT model.")
@click.option("--ptq", is_flag=True, help="Also write lenet5_int8_ptq.tflite: post-training int8 of the float model.")
@click.option(
    "--teacher/--no-teacher",
    "teacher",
    default=EXPORT.teacher,
    show_default=True,
    help="Also write teacher_float32.tflite when the run has a distillation teacher (bench's reference row).",
)
@click.option(
    "--c-array", is_flag=True, help="Also write the int8 model as a C array (lenet5_int8.h/.cc); implies --int8."
)
@click.option(
    "--micro",
    is_flag=True,
    help="Also write micro/: a TensorFlow Lite Micro project folder for the int8 model; implies --int8.",
)
@click.option(
    "--mixed",
    is_flag=True,
    help="Also write lenet5_mixed.tflite: the first layers in float32 (those int8 loses on this CPU), "
    "a QUANTIZE, the rest int8, from the QAT model (and for `read`, the piece verifier and the line model "
    "likewise: verifier_mixed.tflite, line_mixed.tflite); implies --int8.",
)
@click.option(
    "--float-layers",
    default=AUTO if EXPORT.float_layers == AUTO else ",".join(EXPORT.float_layers),
    show_default=True,
    callback=lambda ctx, param, value: _float_layers(value),
    metavar="auto|c1[,c3,...]",
    help="The mixed model's float32 layers: 'auto' times each candidate here and keeps the fastest, or the "
    "first k weighted layers (c1; c1,c3; ...). Implies --mixed when given.",
)
@click.option(
    "--mediapipe",
    is_flag=True,
    help="Also write lenet5_int8_mediapipe.tflite: the int8 model with uint8 RGB in and probabilities out, the "
    "form MediaPipe's ImageClassifier takes; implies --int8.",
)
@click.option(
    "--web",
    is_flag=True,
    help="Also write web/: a static page that runs the int8 model in the browser (LiteRT.js); implies --int8.",
)
@click.option("--author", default=EXPORT.author, show_default=True, help="The models' metadata: who made them.")
@click.option(
    "--license",
    "license_",
    default=EXPORT.license,
    help="The models' metadata: their licence (default: from the training data, e.g. Hoda's research-only terms).",
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
def export(
    run_dir,
    int8,
    ptq,
    teacher,
    c_array,
    micro,
    mixed,
    float_layers,
    mediapipe,
    web,
    author,
    license_,
    arena_margin,
    calibration_size,
    calibration_seed,
    min_agreement,
):
    """Convert a trained run to TFLite: float32 always, int8 and PTQ on request.

    Every int8 model is verified (int8 input/output, no float op, no
    QUANTIZE/DEQUANTIZE) and compared with the Keras QAT model on the
    validation split; export fails loudly if a check fails. --mixed writes a
    float-then-int8 model for CPUs where int8 loses on the first layers, its
    split timed here by default (--float-layers auto). Every model carries
    TFLite metadata (labels 0-9 and ۰-۹, the input contract, author, version,
    licence), checked to leave its outputs unchanged. With --micro the
    int8 model also runs in TensorFlow Lite Micro (exact arena, the example's
    digit). Files an earlier export wrote and this one does not (a PTQ model,
    the C array, micro/, web/) are removed.

    \b
    Examples:
      lenet-edge export --int8
      lenet-edge export --dir runs/hoda --int8 --ptq --c-array
      lenet-edge export --dir runs/hoda --micro
      lenet-edge export --dir runs/hoda --mixed                 # float layers chosen on this CPU
      lenet-edge export --dir runs/hoda --float-layers c1,c3    # given: c1 and c3 float32
      lenet-edge export --dir runs/hoda --web --mediapipe --author "Your Lab"
    """
    from ..manifest import read_manifest

    manifest = read_manifest(run_dir)  # fail fast, before TensorFlow loads
    mixed = mixed or float_layers != EXPORT.float_layers
    config = _config(
        ExportConfig,
        int8=int8 or c_array or micro or mixed or mediapipe or web,
        ptq=ptq,
        teacher=teacher,
        c_array=c_array,
        micro=micro,
        mixed=mixed,
        float_layers=float_layers,
        mediapipe=mediapipe,
        web=web,
        author=author,
        license=license_,
        micro_arena_margin=arena_margin,
        calibration_size=calibration_size,
        calibration_seed=calibration_seed,
        min_agreement=min_agreement,
    )
    import_tensorflow()
    from ..conversion import export_run, format_summary

    _, splits = run_splits(manifest)
    with native_stderr_captured():  # the converter's C++ INFO lines
        summary = export_run(run_dir, config, splits=splits, progress=status)
    echo(format_summary(summary))


def _float_layers(value: str):
    from ..config import parse_float_layers

    try:
        return parse_float_layers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _config(cls, **fields):
    """A config dataclass from options; a combination it refuses is a usage error (exit 2)."""
    try:
        return cls(**fields)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def parse_batch_sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of positive integers") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of positive integers")
    return sizes


def parse_targets(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    from ..targets import parse_target

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
    metavar="TARGET",
    callback=parse_targets,
    help="Also benchmark on this target (repeatable): ssh://[USER@]HOST[:PORT], a device over SSH (devices "
    "run at once, while this machine measures; it needs Python 3.8+, numpy and ai-edge-litert or tflite-runtime); "
    "browser, LiteRT.js in headless Chromium on this machine (after the host); qemu:CORE[/KERNELS] "
    "(cortex-m3, cortex-m4, cortex-m7; cmsis-nn or reference), the int8 model as TFLM firmware in QEMU (--tflm).",
)
@click.option(
    "--host/--no-host",
    default=True,
    show_default=True,
    help="Measure on this machine too, as the first target; --no-host measures only the --on targets.",
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
@click.option(
    "--chromium",
    type=click.Path(dir_okay=False),
    default=BROWSER.chromium,
    help="The Chromium executable for --on browser (default: chromium, chromium-browser or google-chrome on PATH).",
)
@click.option(
    "--browser-timeout",
    type=click.FloatRange(min=1),
    default=BROWSER.timeout,
    show_default=True,
    help="Seconds --on browser may take in all (start, load, accuracy, timing).",
)
@click.option(
    "--tflm",
    type=click.Path(file_okay=False),
    envvar="TFLM_DIR",
    default=QEMU.tflm,
    help="The TensorFlow Lite Micro source tree --on qemu:... builds the firmware from (default: $TFLM_DIR); "
    "one generated by tflite-micro's create_tflm_tree.py with OPTIMIZED_KERNEL_DIR=cmsis_nn.",
)
@click.option(
    "--keep-build",
    type=click.Path(file_okay=False),
    default=QEMU.keep_build,
    help="Keep the firmware build trees (sources, objects, app.elf, app.map) under this directory.",
)
@click.option(
    "--qemu-sample",
    type=click.IntRange(min=1),
    default=QEMU.sample,
    metavar="N",
    help="Run a seeded sample of N digits on the firmware instead of the whole split (reference kernels are slow).",
)
@click.option(
    "--qemu-timeout",
    type=click.FloatRange(min=1),
    default=QEMU.timeout,
    show_default=True,
    help="Seconds one firmware may run in QEMU before it counts as hung.",
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
    chromium,
    browser_timeout,
    tflm,
    keep_build,
    qemu_sample,
    qemu_timeout,
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
    becomes an error entry too. --on browser runs the same models in
    LiteRT.js in headless Chromium here, after the host.

    \b
    Examples:
      lenet-edge bench
      lenet-edge bench --dir runs/hoda --split test --runs 5000 --threads 2
      lenet-edge bench --model a=one.tflite --model b=two.tflite --data hoda --format json
      lenet-edge bench --dir runs/hoda --on ssh://pi@raspberrypi.local --on ssh://jetson --remote-sample 2000
      lenet-edge bench --dir runs/hoda --on browser
      lenet-edge bench --dir runs/hoda --on qemu:cortex-m4 --on qemu:cortex-m4/reference --tflm ~/tflm-tree
    """
    import json

    from ..benchmark import bench_run, format_markdown, format_table

    if not host and not on:
        raise click.UsageError("--no-host leaves nothing to measure: name a target with --on")
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
            target_options={
                "browser": BrowserConfig(chromium=chromium, timeout=browser_timeout),
                "qemu": QemuConfig(tflm=tflm, keep_build=keep_build, sample=qemu_sample, timeout=qemu_timeout),
            },
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
