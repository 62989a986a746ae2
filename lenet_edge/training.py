"""Stage 2: train a LeNet-5 in float, then fine-tune it with quantization-aware training.

`train(config, run_dir)` loads the data, carves a stratified validation split
from train, trains the float model with light augmentation and a cosine
learning-rate schedule (keeping the epoch that is best on validation), wraps
it with tfmot's `quantize_model` and fine-tunes that at a lower rate (again
keeping the best validation epoch). The test split is only evaluated at the
end, for the report; it never chooses anything.

Artifacts land in the run directory through temporary names and renames, the
manifest last, so an interrupted run leaves the previous one intact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .compat import keras, tf, versions
from .config import TrainConfig
from .errors import ModelError
from .fileio import staged_files, sweep_temporaries
from .manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PERSIAN_DIGITS,
    read_manifest,
    record_artifact,
    remove_stale_artifacts,
    write_manifest,
)
from .model import NUM_CLASSES, build_lenet5, quantize_aware, to_model_input
from .plots import training_curves

FLOAT_MODEL = "lenet5_float.keras"
QAT_WEIGHTS = "lenet5_qat.weights.h5"
HISTORY_PLOT = "history.png"


@dataclass
class TrainResult:
    run_dir: Path
    manifest: dict = field(repr=False)

    @property
    def metrics(self) -> dict:
        return self.manifest["metrics"]


def train(
    config: TrainConfig,
    run_dir: str | Path = "export",
    *,
    force: bool = False,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    advance: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train float then QAT, and write the models and `manifest.json` into `run_dir`.

    Args:
        config: the training recipe.
        run_dir: where artifacts land; an existing run there is kept unless `force`.
        force: replace an existing run (only once the new one is complete).
        cache_dir: dataset cache (see `lenet_edge.data.load_dataset`).
        log: where progress lines go.
        advance: optional callable(images_done, images_total) while the data is preprocessed.

    Raises:
        ModelError: `run_dir` already holds a run and `force` is not set.
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
    loaded = time.perf_counter()
    sizes = {name: len(s) for name, s in splits.items()}
    log(f"data: {dataset.source} ({', '.join(f'{k} {v:,}' for k, v in sizes.items())})")

    _seed_everything(config.seed)
    model = build_lenet5(config.arch)
    log(f"model: {config.arch}, {model.count_params():,} parameters")
    train_ds = _train_pipeline(splits["train"], config)
    val_x, val_labels = to_model_input(splits["val"].images), splits["val"].labels
    val_xy = (val_x, one_hot(val_labels))
    steps = math.ceil(len(splits["train"]) / config.batch_size)

    schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=config.epochs * steps, alpha=0.01)
    float_history, float_best = _fit(
        model,
        train_ds,
        val_xy,
        steps,
        config.epochs,
        keras.optimizers.Adam(schedule),
        "float",
        log,
        config.label_smoothing,
    )
    float_done = time.perf_counter()

    models, qat_history, qat_best = {"float": model}, [], 0
    if config.qat_epochs:  # 0 epochs: no QAT model (its quantizer ranges would be uncalibrated)
        models["qat"] = quantize_aware(model)
        qat_history, qat_best = _fit(
            models["qat"],
            train_ds,
            val_xy,
            steps,
            config.qat_epochs,
            keras.optimizers.Adam(config.qat_lr),
            "qat",
            log,
            config.label_smoothing,
        )
    qat_done = time.perf_counter()

    best_epochs = {"float": float_best, "qat": qat_best}
    metrics = {
        stage: {"val_accuracy": _accuracy(m, val_x, val_labels), "best_epoch": best_epochs[stage]}
        for stage, m in models.items()
    }
    if "test" in splits:  # reported, never used to choose anything
        test_x = to_model_input(splits["test"].images)
        for stage, m in models.items():
            metrics[stage]["test_accuracy"] = _accuracy(m, test_x, splits["test"].labels)

    old_manifest = _previous_manifest(run_dir)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "lenet-edge", "version": __version__},
        "config": asdict(config),
        "data": {
            **dataset.describe(),
            "val_fraction": config.val_fraction,
            "split_seed": config.seed,
            "split_sizes": sizes,
        },
        "preprocessing": PREPROCESSING,
        "labels": {"digits": list(range(10)), "persian": list(PERSIAN_DIGITS)},
        "model": {
            "arch": config.arch,
            "parameters": int(model.count_params()),
            "input": "float32 (B, 28, 28, 1) = uint8 / 255",
            "output": "logits (B, 10)",
        },
        "versions": versions(),
        "metrics": metrics,
        "history": {"float": float_history, "qat": qat_history},
        "wall_time_s": {
            "data": round(loaded - started, 2),
            "float": round(float_done - loaded, 2),
            "qat": round(qat_done - float_done, 2),
        },
    }
    with staged_files(run_dir) as stage:  # all files appear together, or none
        model.save(stage(FLOAT_MODEL))
        if "qat" in models:
            models["qat"].save_weights(stage(QAT_WEIGHTS, suffix=".weights.h5"))
        training_curves(manifest["history"], stage(HISTORY_PLOT))
    record_artifact(manifest, "float_keras", run_dir / FLOAT_MODEL)
    if "qat" in models:
        record_artifact(manifest, "qat_weights", run_dir / QAT_WEIGHTS)
    record_artifact(manifest, "history_png", run_dir / HISTORY_PLOT)
    manifest["wall_time_s"]["total"] = round(time.perf_counter() - started, 2)
    write_manifest(run_dir, manifest)
    remove_stale_artifacts(run_dir, old_manifest, manifest)
    summary = [f"{stage} val {m['val_accuracy']:.2%}" for stage, m in metrics.items()]
    summary += [f"{stage} test {m['test_accuracy']:.2%}" for stage, m in metrics.items() if "test_accuracy" in m]
    log(f"done: {', '.join(summary)}, {manifest['wall_time_s']['total']:.0f} s -> {run_dir}")
    return TrainResult(run_dir, manifest)


def _seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    tf.config.experimental.enable_op_determinism()


def _train_pipeline(split, config: TrainConfig):
    """Shuffled, batched, augmented, repeating tf.data pipeline of (image, label) batches.

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
        if config.augment:
            x = augment(x, tf.stack([tf.constant(config.seed, tf.int64), step]))
        return x, tf.one_hot(labels, NUM_CLASSES)

    return ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(N,) int labels -> (N, 10) float32 one-hot targets (the loss smooths them)."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def augment(images, seed):
    """Light, label-preserving distortion of a (B, 28, 28, 1) float batch.

    Rotation within ±10°, scale 0.9-1.1, shift within ±2 px (about the
    slack the centre-of-mass placement leaves), slight shear, and with some
    probability a one-pixel thicker or thinner stroke, since pens differ.
    """
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)

    def uniform(i, shape, low, high):
        return tf.random.stateless_uniform(shape, seeds[i], low, high)

    angle = uniform(0, [batch], -math.radians(10), math.radians(10))
    scale = uniform(1, [batch], 0.9, 1.1)
    shift = uniform(2, [batch, 2], -2.0, 2.0)
    shear = uniform(3, [batch], -0.1, 0.1)
    # The transform maps each output pixel to the input pixel it samples:
    # p_in = M (p_out - c - t) + c, with M = (rotation * scale * shear)^-1.
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    m00, m01 = cos, sin + shear * cos
    m10, m11 = -sin, cos - shear * sin
    c = 13.5
    tx, ty = c + shift[:, 0], c + shift[:, 1]
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([m00, m01, c - m00 * tx - m01 * ty, m10, m11, c - m10 * tx - m11 * ty, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )
    stroke = uniform(4, [batch, 1, 1, 1], 0.0, 1.0)
    thicker = tf.nn.max_pool2d(out, 2, 1, "SAME")
    thinner = -tf.nn.max_pool2d(-out, 2, 1, "SAME")
    return tf.where(stroke < 0.15, thicker, tf.where(stroke < 0.25, thinner, out))


def _fit(model, train_ds, val_xy, steps, epochs, optimizer, stage, log, label_smoothing=0.0):
    """Fit for `epochs`, restore the weights of the best validation epoch; return (history, best_epoch)."""
    if epochs == 0:
        return [], 0
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    best = BestEpoch(stage, epochs, log)
    model.fit(
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


def _accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def _previous_manifest(run_dir: Path) -> dict | None:
    """The manifest being replaced (--force), or None if there is none or it is unreadable."""
    try:
        return read_manifest(run_dir)
    except ModelError:  # absent, corrupt or from a newer version: --force replaces it all the same
        return None


class BestEpoch(keras.callbacks.Callback):
    """Log one line per epoch and keep the weights of the best validation epoch."""

    def __init__(self, stage: str, epochs: int, log: Callable[[str], None]):
        super().__init__()
        self.stage, self.epochs, self.log = stage, epochs, log
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
            self.weights = self.model.get_weights()
        self.log(
            f"{self.stage:5} epoch {epoch + 1:>2}/{self.epochs}  loss {row['loss']:.4f}  "
            f"acc {row['accuracy']:.2%}  val {row['val_accuracy']:.2%}  {seconds:.1f} s"
        )
