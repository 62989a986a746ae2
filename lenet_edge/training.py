"""Stage 2: train a LeNet-5 in float, then fine-tune it with quantization-aware training.

`train(config, run_dir)` loads the data, carves a stratified validation split
from train and trains the digit model (`train_digit_model`):

1. with `config.teacher`, a larger CNN (`model.build_teacher`) first, or the
   teacher of an earlier run on the same split (`teacher_from`);
2. the float LeNet-5 on augmented batches (`augment`) with a cosine
   learning-rate schedule, on the true labels or, with a teacher, on its soft
   targets as well (`distill`), keeping the epoch that is best on validation;
   or the float LeNet-5 of an earlier run on the same split (`float_from`);
3. tfmot's `quantize_model` around it, fine-tuned at a lower rate with the
   same targets (again keeping the best validation epoch), on batches
   augmented as the float ones or (`qat_augment` off) on the images as they are.

For lenet5, `read`'s helpers follow, each trained in float and then with QAT on
numbers composed of the training digits: the piece verifier
(`verifier.train_verifier`) and, with `config.line_model`, the line model
(`line_model.train_line_model`).

Then the manifest is built and every artifact is written. The test split is
only evaluated at the end, for the report; it never chooses anything.

Artifacts land in the run directory through temporary names and renames, the
manifest last, so an interrupted run leaves the previous one intact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .augment import augment
from .compat import keras, tf, versions
from .config import LineConfig, TrainConfig, VerifierConfig
from .distill import Distiller
from .errors import ModelError
from .fileio import sha256_file, staged_files, sweep_temporaries
from .line_model import member_files, member_keys, member_stage
from .manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PERSIAN_DIGITS,
    artifact_path,
    read_manifest,
    record_artifact,
    remove_stale_artifacts,
    write_manifest,
)
from .model import NUM_CLASSES, build_lenet5, build_teacher, load_float, quantize_aware, to_model_input
from .plots import training_curves
from .verifier import VERIFIER_FLOAT_MODEL, VERIFIER_QAT_WEIGHTS

FLOAT_MODEL = "lenet5_float.keras"
QAT_WEIGHTS = "lenet5_qat.weights.h5"
TEACHER_MODEL = "teacher_float.keras"
HISTORY_PLOT = "history.png"


@dataclass
class TrainResult:
    run_dir: Path
    manifest: dict = field(repr=False)

    @property
    def metrics(self) -> dict:
        return self.manifest["metrics"]


@dataclass
class DigitModel:
    """What `train_digit_model` hands on: the trained models and how each got there."""

    models: dict  # stage -> Keras model: "teacher" (if any), "float", "qat" (unless qat_epochs is 0)
    history: dict[str, list[dict]]  # stage -> one row per epoch
    best_epoch: dict[str, int]
    seconds: dict[str, float]  # stage -> wall time
    cpu_seconds: dict[str, float]  # stage -> this process's CPU time, all threads (steadier on a shared machine)
    teacher: dict | None = None  # the manifest's record of the teacher: arch, parameters, where it came from
    student: dict | None = None  # where a reused float model came from (`float_from`): from, from_sha256


def train(
    config: TrainConfig,
    run_dir: str | Path = "export",
    *,
    force: bool = False,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    advance: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train the digit model (teacher, float, QAT) and write the models and `manifest.json` into `run_dir`.

    Args:
        config: the training recipe.
        run_dir: where artifacts land; an existing run there is kept unless `force`.
        force: replace an existing run (only once the new one is complete).
        cache_dir: dataset cache (see `lenet_edge.data.load_dataset`).
        log: where progress lines go.
        advance: optional callable(images_done, images_total) while the data is preprocessed.

    Raises:
        ModelError: `run_dir` already holds a run and `force` is not set, or `teacher_from`
            names a run without a usable teacher.
        DataError: the data cannot be read.
    """
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST_NAME).exists() and not force:
        raise ModelError(f"{run_dir}: already holds a trained run; pass --force to replace it")
    sweep_temporaries(run_dir)  # what an interrupted earlier run left; run_dir is created only when saving
    started = time.perf_counter()

    from .data import PREPROCESSING, load_splits

    dataset, splits = load_splits(
        config.data, config.val_fraction, config.seed, cache_dir=cache_dir, progress=log, advance=advance
    )
    if "train" not in splits:
        raise ModelError(f"{dataset.location or dataset.source}: has no training split to train on")
    data_record = {
        **dataset.describe(),
        "val_fraction": config.val_fraction,
        "split_seed": config.seed,
        "split_sizes": {name: len(s) for name, s in splits.items()},
    }
    reused = reused_teacher(config, data_record) if config.teacher_from else None  # before any slow step
    reused_student = reused_float(config, data_record) if config.float_from else None
    loaded = time.perf_counter()
    log(f"data: {dataset.source} ({', '.join(f'{k} {v:,}' for k, v in data_record['split_sizes'].items())})")

    digits = train_digit_model(config, splits, log, teacher=reused, float_model=reused_student)
    verifier, verifier_recipe = None, verifier_config(config)
    if config.verifier and config.arch == "lenet5":
        from .verifier import train_verifier

        verifier = train_verifier(verifier_recipe, splits, config.seed, log)
    elif config.verifier:
        log(f"verifier: not trained for --arch {config.arch} (only for lenet5); `read` cuts by the digit model alone")
    line, line_recipe = None, line_config(config)
    if config.line_model and config.arch == "lenet5":
        from .line_model import train_line_model

        line = train_line_model(line_recipe, splits, config.seed, log, scanned=dataset.written_sizes)
    elif config.line_model:
        log(f"line model: not trained for --arch {config.arch} (only for lenet5)")

    val_x, val_labels = to_model_input(splits["val"].images), splits["val"].labels
    metrics = {
        stage: {**_scores(m, val_x, val_labels, "val"), "best_epoch": digits.best_epoch[stage]}
        for stage, m in digits.models.items()
    }
    if "test" in splits:  # reported, never used to choose anything
        test_x = to_model_input(splits["test"].images)
        for stage, m in digits.models.items():
            metrics[stage]["test_accuracy"] = _scores(m, test_x, splits["test"].labels, "test")["test_accuracy"]

    old_manifest = _previous_manifest(run_dir)
    student = digits.models["float"]
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "lenet-edge", "version": __version__},
        "config": asdict(config),
        "data": data_record,
        "preprocessing": PREPROCESSING,
        "labels": {"digits": list(range(10)), "persian": list(PERSIAN_DIGITS)},
        "model": {
            "arch": config.arch,
            "parameters": int(student.count_params()),
            "input": "float32 (B, 28, 28, 1) = uint8 / 255",
            "output": "logits (B, 10)",
            **(digits.student or {}),
        },
        **({"teacher": digits.teacher} if digits.teacher else {}),
        **({"verifier": _verifier_record(verifier, verifier_recipe)} if verifier else {}),
        **({"line_model": _line_record(line, line_recipe)} if line else {}),
        "versions": versions(),
        "metrics": metrics,
        "history": digits.history,
        "wall_time_s": {"data": round(loaded - started, 2), **{k: round(v, 2) for k, v in digits.seconds.items()}},
        "cpu_time_s": {k: round(v, 2) for k, v in digits.cpu_seconds.items()},
    }
    with staged_files(run_dir) as stage:  # all files appear together, or none
        if "teacher" in digits.models:
            digits.models["teacher"].save(stage(TEACHER_MODEL))
        student.save(stage(FLOAT_MODEL))
        if "qat" in digits.models:
            digits.models["qat"].save_weights(stage(QAT_WEIGHTS, suffix=".weights.h5"))
        training_curves(manifest["history"], stage(HISTORY_PLOT))
        if verifier is not None:
            verifier.models["float"].save(stage(VERIFIER_FLOAT_MODEL))
            if "qat" in verifier.models:
                verifier.models["qat"].save_weights(stage(VERIFIER_QAT_WEIGHTS, suffix=".weights.h5"))
        for k in _line_members(line):
            float_file, qat_file = member_files(k)
            line.models[member_stage("float", k)].save(stage(float_file))
            if member_stage("qat", k) in line.models:
                line.models[member_stage("qat", k)].save_weights(stage(qat_file, suffix=".weights.h5"))
    if "teacher" in digits.models:
        record_artifact(manifest, "teacher_keras", run_dir / TEACHER_MODEL)
    record_artifact(manifest, "float_keras", run_dir / FLOAT_MODEL)
    if "qat" in digits.models:
        record_artifact(manifest, "qat_weights", run_dir / QAT_WEIGHTS)
    record_artifact(manifest, "history_png", run_dir / HISTORY_PLOT)
    if verifier is not None:
        record_artifact(manifest, "verifier_float_keras", run_dir / VERIFIER_FLOAT_MODEL)
        if "qat" in verifier.models:
            record_artifact(manifest, "verifier_qat_weights", run_dir / VERIFIER_QAT_WEIGHTS)
    for k in _line_members(line):
        (float_file, qat_file), (float_key, qat_key) = member_files(k), member_keys(k)
        record_artifact(manifest, float_key, run_dir / float_file)
        if member_stage("qat", k) in line.models:
            record_artifact(manifest, qat_key, run_dir / qat_file)
    manifest["wall_time_s"]["total"] = round(time.perf_counter() - started, 2)
    write_manifest(run_dir, manifest)
    remove_stale_artifacts(run_dir, old_manifest, manifest)
    summary = [f"{stage} val {m['val_accuracy']:.2%}" for stage, m in metrics.items()]
    summary += [f"{stage} test {m['test_accuracy']:.2%}" for stage, m in metrics.items() if "test_accuracy" in m]
    log(f"done: {', '.join(summary)}, {manifest['wall_time_s']['total']:.0f} s -> {run_dir}")
    return TrainResult(run_dir, manifest)


def _verifier_record(verifier, config: VerifierConfig) -> dict:
    """The manifest's record of the piece verifier: its model, data, validation figures and history."""
    from .verifier import held_out, scores

    val_x, val_y = verifier.val
    metrics = {}
    for stage, model in verifier.models.items():
        logits = model.predict((val_x.astype(np.float32) / 255.0)[..., None], batch_size=1024, verbose=0)
        metrics[stage] = {**held_out(scores(logits) >= 0.5, val_y), "best_epoch": verifier.best_epoch[stage]}
    shapes = (
        "float32 (B, 28, 28, 1) = uint8 / 255, a preprocessed piece",
        "logits (B, 2): not one digit, exactly one digit",
    )
    return _helper_record(verifier, config, shapes, metrics)


def _helper_record(helper, config, shapes: tuple[str, str], metrics: dict) -> dict:
    """The manifest's section for one of `read`'s helpers (the verifier, the line model)."""
    return {
        "model": {
            "parameters": sum(int(m.count_params()) for k, m in helper.models.items() if k.startswith("float")),
            "input": shapes[0],
            "output": shapes[1],
        },
        "config": asdict(config),
        "data": helper.data,
        "metrics": metrics,
        "history": helper.history,
        "wall_time_s": {k: round(v, 2) for k, v in helper.seconds.items()},
    }


def train_digit_model(
    config: TrainConfig, splits: dict, log: Callable[[str], None], *, teacher=None, float_model=None
) -> DigitModel:
    """Teacher (if the recipe has one), then the float LeNet-5, then its QAT fine-tuning.

    Args:
        config: the recipe.
        splits: "train" and "val" `Split`s (the test split is not looked at).
        log: where progress lines go.
        teacher: `(model, record)` of a teacher to reuse (`reused_teacher`) instead of training one.
        float_model: `(model, record)` of a float LeNet-5 to reuse (`reused_float`): only QAT is trained.
    """
    _seed_everything(config.seed)
    student = build_lenet5(config.arch)  # first, so that its initial weights are those of a run without a teacher
    log(f"model: {config.arch}, {student.count_params():,} parameters")
    train_ds = _train_pipeline(splits["train"], config)
    val_x, val_labels = to_model_input(splits["val"].images), splits["val"].labels
    val_xy = (val_x, one_hot(val_labels))
    steps = math.ceil(len(splits["train"]) / config.batch_size)
    models, history, best, seconds, cpu = {}, {}, {}, {}, {}

    def fit(stage, model, epochs, optimizer, teacher=None, batches=train_ds):
        begun, begun_cpu = time.perf_counter(), time.process_time()
        history[stage], best[stage] = _fit(
            model, batches, val_xy, steps, epochs, optimizer, stage, log, config, teacher=teacher
        )
        models[stage], seconds[stage] = model, time.perf_counter() - begun
        cpu[stage] = time.process_time() - begun_cpu

    record = None
    if teacher is not None:
        models["teacher"], record = teacher
        history["teacher"], best["teacher"], seconds["teacher"], cpu["teacher"] = [], 0, 0.0, 0.0
        log(f"teacher: {record['arch']} from {record['from']}, {record['parameters']:,} parameters")
    elif config.teacher:
        model = build_teacher(config.teacher_arch)
        log(f"teacher: {config.teacher_arch}, {model.count_params():,} parameters")
        fit("teacher", model, config.teacher_epochs, _cosine_adam(config.teacher_lr, config.teacher_epochs * steps))
        record = {"arch": config.teacher_arch, "parameters": int(model.count_params()), "from": None}
    teacher_model = models.get("teacher")

    if float_model is None:
        fit("float", student, config.epochs, _cosine_adam(config.lr, config.epochs * steps), teacher_model)
    else:
        student, student_record = float_model
        models["float"] = student
        history["float"], best["float"], seconds["float"], cpu["float"] = [], 0, 0.0, 0.0
        log(f"float: from {student_record['from']} (only QAT is trained)")
    if config.qat_epochs:  # 0 epochs: no QAT model (its quantizer ranges would be uncalibrated)
        batches = train_ds if config.qat_augment else _train_pipeline(splits["train"], config, augmented=False)
        qat = quantize_aware(student)
        fit("qat", qat, config.qat_epochs, keras.optimizers.Adam(config.qat_lr), teacher_model, batches)
    else:
        history["qat"] = []
    return DigitModel(models, history, best, seconds, cpu, record, None if float_model is None else student_record)


def verifier_config(config: TrainConfig) -> VerifierConfig:
    """The piece verifier's recipe in a run of `config`: `VerifierConfig` with the run's verifier epochs."""
    return replace(VerifierConfig(), epochs=config.verifier_epochs, qat_epochs=config.verifier_qat_epochs)


def line_config(config: TrainConfig) -> LineConfig:
    """The line model's recipe in a run of `config`: `LineConfig` with the run's line-model epochs."""
    return replace(LineConfig(), epochs=config.line_epochs, qat_epochs=config.line_qat_epochs)


def _line_record(line, config: LineConfig) -> dict:
    """The manifest's record of the line model: its model, data, validation figures and history.

    Each stage keeps the weights of its best epoch, so its validation figures are that epoch's row of the history.
    """
    metrics = {}
    for stage, best in line.best_epoch.items():
        row = line.history[stage][best - 1]
        metrics[stage] = {"val_exact": row["val_exact"], "val_loss": row["val_loss"], "best_epoch": best}
    if line.together:
        metrics["together"] = line.together
    shapes = (
        "float32 (1, 40, W, 1) = uint8 / 255, W a multiple of 32",
        "logits (1, 1, W/2, 11) per member: digits 0-9, then the CTC blank",
    )
    return _helper_record(line, config, shapes, metrics)


def _line_members(line) -> range:
    """The members of the trained line model, by number (none without one)."""
    return range(sum(stage.startswith("float") for stage in line.models) if line else 0)


def reused_teacher(config: TrainConfig, data: dict) -> tuple:
    """`(model, manifest record)` of the teacher in run `config.teacher_from`, checked to fit this run.

    The teacher must have been trained on the same data with the same validation
    carve-out: one trained on another split may have learnt this run's
    validation images, and the epochs chosen on them would be chosen on seen data.

    Raises:
        ModelError: no such run, no teacher in it, a changed file, or another split.
    """
    hint = "train it with --teacher"
    source, other, path = _same_split_artifact(config.teacher_from, data, "teacher", "teacher_keras", hint)
    model = load_float(path)
    teacher = other.get("teacher", {})
    record = {
        "arch": teacher.get("arch", model.name),
        "parameters": int(model.count_params()),
        "from": str(source),
        "from_sha256": sha256_file(path),
    }
    return model, record


def reused_float(config: TrainConfig, data: dict) -> tuple:
    """`(model, manifest record)` of the float LeNet-5 in run `config.float_from`, checked to fit this run.

    Same split as this run (its epoch was chosen on this run's validation images), same architecture.

    Raises:
        ModelError: no such run, no float model in it, a changed file, another split or another arch.
    """
    source, other, path = _same_split_artifact(config.float_from, data, "float model", "float_keras", "train it first")
    arch = other.get("model", {}).get("arch")
    if arch != config.arch:
        raise ModelError(f"{source}: its float model is {arch}, this run trains {config.arch}")
    return load_float(path), {"from": str(source), "from_sha256": sha256_file(path)}


def _same_split_artifact(run: str, data: dict, what: str, key: str, hint: str) -> tuple[Path, dict, Path]:
    """`(run dir, its manifest, path of artifact key)` of an earlier run trained on this run's split."""
    source = Path(run)
    other = read_manifest(source)
    path = artifact_path(source, other, key, hint)
    theirs = other.get("data", {})
    mine = {k: data.get(k) for k in ("files", "val_fraction", "split_seed")}
    if {k: theirs.get(k) for k in mine} != mine or theirs.get("source") != data.get("source"):
        raise ModelError(
            f"{source}: its {what} was trained on another split (data {theirs.get('source')}, val_fraction "
            f"{theirs.get('val_fraction')}, seed {theirs.get('split_seed')}; this run: {data.get('source')}, "
            f"{data.get('val_fraction')}, {data.get('split_seed')}), so it may have seen this run's validation images"
        )
    return source, other, path


def _seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    tf.config.experimental.enable_op_determinism()


def _train_pipeline(split, config: TrainConfig, augmented: bool = True):
    """Shuffled, batched, augmented (if `config.augment` and `augmented`), repeating tf.data pipeline of
    (image, label) batches.

    Each batch's augmentation is drawn from a stateless generator keyed by
    (seed, batch counter), so the same seed gives the same stream on every run.
    """
    ds = tf.data.Dataset.from_tensor_slices((split.images[..., None], split.labels)).cache()
    ds = ds.shuffle(len(split.labels), seed=config.seed, reshuffle_each_iteration=True)
    ds = ds.batch(config.batch_size).repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))

    def to_input(batch, step):
        images, labels = batch
        x = tf.cast(images, tf.float32) / 255.0
        if config.augment and augmented:
            x = augment(x, tf.stack([tf.constant(config.seed, tf.int64), step]), config)
        return x, tf.one_hot(labels, NUM_CLASSES)

    return ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(N,) int labels -> (N, 10) float32 one-hot targets (the loss smooths them)."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def _cosine_adam(lr: float, steps: int):
    """Adam with its rate cosine-decayed from `lr` to 1% of it over `steps`."""
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.01))


def _fit(model, train_ds, val_xy, steps, epochs, optimizer, stage, log, config, teacher=None):
    """Fit for `epochs` (on `teacher`'s soft targets too, if given) and restore the best validation epoch.

    Returns:
        (history rows, best epoch).
    """
    if epochs == 0:
        return [], 0
    trained = model if teacher is None else Distiller(model, teacher, config.temperature, config.distill_alpha)
    trained.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    best = BestEpoch(stage, epochs, log, model)
    trained.fit(
        train_ds,
        steps_per_epoch=steps,
        epochs=epochs,
        validation_data=val_xy,
        validation_batch_size=1024,
        callbacks=[best],
        verbose=0,
    )
    model.set_weights(best.weights)
    return best.history, best.best_epoch


def _scores(model, x, y, split: str) -> dict:
    """`{split}_accuracy` and `{split}_loss` (mean cross-entropy of the true digit, unsmoothed) of `model`."""
    logits = model.predict(x, batch_size=1024, verbose=0)
    log_p = logits - np.logaddexp.reduce(logits.astype(np.float64), axis=1, keepdims=True)
    return {
        f"{split}_accuracy": float(np.mean(np.argmax(logits, axis=1) == y)),
        f"{split}_loss": round(float(-np.mean(log_p[np.arange(len(y)), y])), 6),
    }


def _previous_manifest(run_dir: Path) -> dict | None:
    """The manifest being replaced (--force), or None if there is none or it is unreadable."""
    try:
        return read_manifest(run_dir)
    except ModelError:  # absent, corrupt or from a newer version: --force replaces it all the same
        return None


class BestEpoch(keras.callbacks.Callback):
    """Log one line per epoch and keep the weights of the best validation epoch."""

    def __init__(self, stage: str, epochs: int, log: Callable[[str], None], keep: keras.Model):
        super().__init__()
        self.stage, self.epochs, self.log, self.keep = stage, epochs, log, keep  # keep: whose weights to snapshot
        self.history, self.best_epoch, self.best_acc, self.weights = [], 0, -1.0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        row = {"epoch": epoch + 1, "seconds": round(seconds, 2)}
        row.update({k: round(float(logs[k]), 5) for k in ("loss", "accuracy", "val_loss", "val_accuracy")})
        self.history.append(row)
        # Ties go to the later epoch: its learning rate was lower, so its weights are the more settled.
        if row["val_accuracy"] >= self.best_acc:
            self.best_acc, self.best_epoch = row["val_accuracy"], epoch + 1
            self.weights = self.keep.get_weights()
        self.log(
            f"{self.stage:7} epoch {epoch + 1:>2}/{self.epochs}  loss {row['loss']:.4f}  "
            f"acc {row['accuracy']:.2%}  val {row['val_accuracy']:.2%}  {seconds:.1f} s"
        )
