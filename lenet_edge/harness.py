"""The measuring harness: accuracy, interleaved timing, throughput and load times over model handles.

`measure` runs the phases in order over named models and returns bench.json's
per-model schema (see `METHOD`); `benchmark.bench_models` calls it on the host
and `device` on a remote device, so both measure alike. Every phase takes
`ModelHandle`s (see `runtimes.base`) by name and a shared `failed` dict: a
model that raises is moved there with a one-line error and left out of every
later phase, so one broken model never stops the others.
Timing is interleaved: each round runs every model once, in an order rotated
every round, so drift of a shared machine (frequency, neighbours, thermal)
lands on all models alike and per-round ratios between models stay fair.

Only numpy and the standard library (and Python 3.8 syntax): the same code
times models on a remote device.
"""

from __future__ import annotations

import gc
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from .errors import ModelError
from .machine import loadavg, machine_info
from .runtimes.base import NUM_CLASSES, ModelHandle

if TYPE_CHECKING:
    from .config import BenchConfig

    Loader = Callable[[str], ModelHandle]  # name -> a freshly loaded handle

SCHEMA_VERSION = 1
STAT_KEYS = ("p50", "p90", "p99", "mean", "std", "min", "max")

# Errors a model may raise while loading or running; anything else is a bug here.
MODEL_FAILURES = (ModelError, ValueError, RuntimeError, OSError)

METHOD = {
    "latency_us": "wall time of one 28x28 image end to end: uint8 -> float32/255 -> quantize "
    "(int8 inputs), one table lookup -> set_tensor -> invoke -> get_tensor -> argmax (on the raw "
    "output: dequantizing with a positive scale cannot change the argmax); "
    "time.perf_counter_ns, after warm-up, garbage collector off, models interleaved with the "
    "order rotated every round",
    "invoke_us": "wall time of Interpreter.invoke() alone inside the same runs",
    "ratios_to_reference": "p50_latency and p50_invoke: median over rounds of this model's time / "
    "the reference's time in the same round; p50_latency_of_p50s: ratio of the two p50s",
    "throughput_ips": "images/s of the end-to-end pipeline at each batch size (input resized), "
    "median over interleaved chunks of repeated calls",
    "accuracy": "top-1 over the whole split, run in batches of accuracy_batch",
    "load_ms": "median over fresh loads of Interpreter(...) + allocate_tensors() (XNNPACK delegation "
    "happens in allocate_tensors); load_ms_first is the first load in this process",
    "rss_growth_kb": "growth of VmRSS (/proc/self/status) across the first load + allocate of this "
    "model; approximate (page granularity, allocator reuse; the first model loaded also carries the "
    "runtime's one-time initialisation). LiteRT's Python API does not expose the arena size",
    "weights_bytes": "sum of the sizes of the graph's constant tensors",
    "activations_sum_bytes": "sum of the sizes of all non-constant tensors at batch 1: an upper bound "
    "on the interpreter's arena, which shares buffers between tensors",
    "xnnpack": "from the interpreter's node list after allocate_tensors(): each DELEGATE node is one "
    "partition; the ops it covers are found by walking back from its outputs to its inputs",
}


def measure(
    names: list[str],
    load: Loader,
    images: np.ndarray,
    labels: np.ndarray,
    config: BenchConfig,
    *,
    reference: str,
    files: Callable[[str], dict],
    versions: dict[str, str],
    data_info: dict | None = None,
    progress: Callable[[str], None] | None = None,
    outputs: dict[str, np.ndarray] | None = None,
) -> dict:
    """Every phase over the named models, compared with `reference`: bench.json's results dict.

    Args:
        names: the models, in report order.
        load: name -> a freshly loaded `ModelHandle`.
        images: (N, 28, 28) uint8, white on black, already preprocessed.
        labels: (N,) integer classes 0..9.
        config: what to run and how often.
        reference: the name in `names` others are compared with.
        files: name -> `{path, size_bytes, sha256}` of a model's file.
        versions: library versions for the machine record.
        data_info: {"source", "split"} describing `images`, copied into the result.
        progress: called with a short message at the start of each phase.
        outputs: if given, filled with name -> `(N, 10)` raw outputs on `images`.

    Raises:
        ValueError: no names, `reference` not among them, or malformed data.
    """
    if not names:
        raise ValueError("models must name at least one .tflite file")
    if reference not in names:
        raise ValueError(f"reference must be one of {', '.join(names)}; got {reference!r}")
    labels = np.asarray(labels).astype(np.int64)
    check_data(images, labels)
    say = progress or (lambda message: None)
    loadavg_start = loadavg()
    failed: dict[str, str] = {}  # name -> one-line error; a model that fails in any phase ends here

    say(f"loading {len(names)} model(s)")
    loaded, entries = load_all(names, load, images[:1], failed)
    for name, entry in entries.items():
        entry.update(files(name))

    say(f"accuracy on {len(images)} images")
    raw = raw_outputs(loaded, images, config.accuracy_batch, failed)
    if outputs is not None:
        outputs.update(raw)
    preds = {name: r.argmax(axis=-1) for name, r in raw.items()}
    for name, p in preds.items():
        entries[name].update(accuracy_stats(p, labels))

    say(f"latency: {config.warmup} warm-up + {config.runs} timed interleaved rounds")
    timed_rounds(loaded, images, config.warmup, record=False, failed=failed)
    samples = timed_rounds(_live(loaded, failed), images, config.runs, record=True, failed=failed)
    for name, s in samples.items():
        entries[name].update(
            latency_us=stats_us(s[:, 0]), invoke_us=stats_us(s[:, 1]), latency_samples_ns=s[:, 0].tolist()
        )

    say(f"throughput at batch sizes {', '.join(map(str, config.batch_sizes))}")
    rates = throughput(
        _live(loaded, failed), images, config.batch_sizes, config.throughput_seconds, config.throughput_chunks, failed
    )
    for name, ips in rates.items():
        entries[name]["throughput_ips"] = ips

    say("load times")
    for name, ms in load_times(list(_live(loaded, failed)), load, config.load_repeats, failed).items():
        entries[name]["load_ms"] = ms
    loaded.clear()

    models = {name: {"error": failed[name]} if name in failed else entries[name] for name in names}
    compare_to_reference(models, preds, samples, reference)
    return {
        "schema_version": SCHEMA_VERSION,
        "ok": not failed,
        "reference": reference,
        "data": {
            "source": (data_info or {}).get("source"),
            "split": (data_info or {}).get("split"),
            "n": int(len(images)),
            "sha256": data_sha256(images, labels),
        },
        "machine": machine_info(loadavg_start, versions),
        "config": {**asdict(config), "batch_sizes": list(config.batch_sizes)},
        "method": METHOD,
        "models": models,
    }


def _live(loaded: dict[str, ModelHandle], failed: dict[str, str]) -> dict[str, ModelHandle]:
    return {name: model for name, model in loaded.items() if name not in failed}


def compare_to_reference(entries: dict, preds: dict, samples: dict, reference: str) -> None:
    """Add agreement/flips and ratios to the reference to every model that ran (in place)."""
    ref = entries[reference]
    if "error" in ref:
        for entry in entries.values():
            if "error" not in entry:
                entry.update(agreement_with_reference=None, flips=None, ratios_to_reference=None)
        return
    for name, entry in entries.items():
        if "error" in entry:
            continue
        same = preds[name] == preds[reference]
        entry["agreement_with_reference"] = float(same.mean())
        entry["flips"] = int((~same).sum())
        entry["ratios_to_reference"] = {
            **ratios(samples[name], samples[reference]),
            "p50_latency_of_p50s": round(entry["latency_us"]["p50"] / ref["latency_us"]["p50"], 4),
            "size": round(entry["size_bytes"] / ref["size_bytes"], 4),
            "accuracy_delta_pp": round(100 * (entry["accuracy"] - ref["accuracy"]), 3),
        }


def rss_kb() -> float | None:
    """Current resident set size of this process in kB, or None where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def interleaved(names: list[str], rounds: int, failed: dict[str, str]):
    """Yield (round, name): each round visits every model not in `failed`, in an order rotated by the round.

    Rotating keeps any position effect (first after a pause, last before one)
    from landing on one model; checking `failed` as it goes drops a model the
    moment it raises.
    """
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if name not in failed:
                yield r, name


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def check_data(images: np.ndarray, labels: np.ndarray) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, 28, 28) uint8; got {images.shape} {images.dtype}")
    if labels.shape != (len(images),) or len(images) == 0:
        raise ValueError(f"labels must be (N,) with N = len(images) >= 1; got {labels.shape} for N={len(images)}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}; got {labels.min()}..{labels.max()}")


def predictions(
    models: dict[str, ModelHandle], images: np.ndarray, batch: int, failed: dict[str, str]
) -> dict[str, np.ndarray]:
    """`(N,)` predicted digits per model over the whole array, in batches of `batch`."""
    return {name: raw.argmax(axis=-1) for name, raw in raw_outputs(models, images, batch, failed).items()}


def raw_outputs(
    models: dict[str, ModelHandle], images: np.ndarray, batch: int, failed: dict[str, str]
) -> dict[str, np.ndarray]:
    """`(N, 10)` raw outputs (the model's output dtype) per model over the whole array, in batches of `batch`."""
    outputs = {}
    for name, model in models.items():
        try:
            outputs[name] = model.raw_all(images, batch)
        except MODEL_FAILURES as exc:
            failed[name] = one_line(exc)
    return outputs


def output_agreement(outputs: np.ndarray, reference: np.ndarray) -> dict:
    """How one runtime's `(N, 10)` raw outputs compare with another's on the same images.

    `agreement` (share of equal argmax), `disagreements`, `identical_outputs` (share of images whose
    10 raw outputs are all equal) and `max_abs_diff` (in the raw outputs' units: int8 steps).
    """
    diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    same = outputs.argmax(axis=-1) == reference.argmax(axis=-1)
    return {
        "agreement": float(same.mean()),
        "disagreements": int((~same).sum()),
        "identical_outputs": float((diff.max(axis=-1) == 0).mean()),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
    }


def data_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """A content hash of evaluated data: the images' and labels' bytes with their shapes."""
    digest = hashlib.sha256(f"{images.shape} {labels.shape}".encode())
    digest.update(np.ascontiguousarray(images, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, "<i8").tobytes())
    return digest.hexdigest()


def accuracy_stats(preds: np.ndarray, labels: np.ndarray) -> dict:
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)  # rows: true, cols: predicted
    np.add.at(confusion, (labels, preds), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()),
        # None for a class absent from the split (no samples, no accuracy)
        "per_class_accuracy": [float(a) if confusion[c].sum() else None for c, a in enumerate(per_class)],
        "confusion": confusion.tolist(),
    }


def timed_rounds(
    models: dict[str, ModelHandle], images: np.ndarray, rounds: int, record: bool, failed: dict[str, str]
) -> dict[str, np.ndarray]:
    """Run `rounds` interleaved rounds; return (rounds, 2) int64 ns [end-to-end, invoke] per model.

    Round r runs the models in the order rotated by r. A model that raises is
    moved to `failed` and dropped; its samples are discarded.
    """
    names = list(models)
    samples = {name: np.zeros((rounds if record else 0, 2), dtype=np.int64) for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call would be charged to whichever model ran
    try:
        for r, name in interleaved(names, rounds, failed):
            image = images[r % len(images)][None]  # (1, 28, 28)
            try:
                total, invoke = models[name].time_one(image)
            except MODEL_FAILURES as exc:
                failed[name] = one_line(exc)
                continue
            if record:
                samples[name][r] = (total, invoke)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: s for name, s in samples.items() if name not in failed}


def stats_us(ns: np.ndarray) -> dict:
    us = ns.astype(np.float64) / 1e3
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    values = (p50, p90, p99, us.mean(), us.std(), us.min(), us.max())
    return {key: round(float(v), 3) for key, v in zip(STAT_KEYS, values)}  # noqa: B905 (no strict= in Python 3.8)


def throughput(
    models: dict[str, ModelHandle],
    images: np.ndarray,
    batch_sizes: tuple[int, ...],
    seconds: float,
    chunks: int,
    failed: dict[str, str],
) -> dict[str, dict[str, float]]:
    """Images/s per model and batch size: median over `chunks` interleaved chunks of repeated calls.

    About `seconds` are timed per model and batch size. A runtime that cannot run
    a batch that large (`max_batch`) gets no figure for it.
    """
    result: dict[str, dict[str, float]] = {name: {} for name in models}
    chunk_s = seconds / chunks
    for batch in batch_sizes:
        batch_images = images[np.resize(np.arange(len(images)), batch)]  # cycles a split smaller than a batch
        calls = {}
        for name in [n for n in models if n not in failed]:
            if (models[name].max_batch or batch) < batch:
                continue
            try:
                models[name].set_batch(batch)
                calls[name] = _calls_for(models[name], batch_images, chunk_s)
            except MODEL_FAILURES as exc:
                failed[name] = one_line(exc)
        rates: dict[str, list[float]] = {name: [] for name in calls}
        for _, name in interleaved(list(calls), chunks, failed):
            try:
                seconds = _time_calls(models[name], batch_images, calls[name])
            except MODEL_FAILURES as exc:
                failed[name] = one_line(exc)
                continue
            rates[name].append(batch * calls[name] / seconds)
        for name, r in rates.items():
            if name not in failed:
                result[name][str(batch)] = round(float(np.median(r)), 1)
    for name, model in models.items():
        if name not in failed:
            model.set_batch(1)
    return result


def _calls_for(model: ModelHandle, batch_images: np.ndarray, seconds: float) -> int:
    """How many calls fill about `seconds`, from a short timed probe."""
    model.predict(batch_images)  # warm the new tensor sizes
    probe, elapsed = 1, 0.0
    while elapsed < 0.02:
        elapsed = _time_calls(model, batch_images, probe)
        probe *= 2
    per_call = elapsed / (probe // 2)
    return max(1, math.ceil(seconds / per_call))


def _time_calls(model: ModelHandle, batch_images: np.ndarray, calls: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            model.predict(batch_images)
        return (time.perf_counter_ns() - t0) / 1e9
    finally:
        if gc_was_enabled:
            gc.enable()


def load_all(
    names: list[str], load: Loader, probe: np.ndarray, failed: dict[str, str]
) -> tuple[dict[str, ModelHandle], dict[str, dict]]:
    """Load each model once, kept alive for the later phases; describe it and run `probe` (one image).

    Returns:
        name -> handle, and name -> `{**handle.describe(), load_ms_first, rss_growth_kb}`.
    """
    loaded, entries = {}, {}
    for name in names:
        rss_before = rss_kb()
        try:
            t0 = time.perf_counter_ns()
            model = load(name)
            load_ms_first = (time.perf_counter_ns() - t0) / 1e6
            rss_after = rss_kb()
            entry = model.describe()
            model.predict(probe)  # fail here, not in the middle of the timing loop
        except MODEL_FAILURES as exc:
            failed[name] = one_line(exc)
            continue
        entry["load_ms_first"] = round(load_ms_first, 3)
        entry["rss_growth_kb"] = None if None in (rss_before, rss_after) else rss_after - rss_before
        loaded[name], entries[name] = model, entry
    return loaded, entries


def load_times(names: list[str], load: Loader, repeats: int, failed: dict[str, str]) -> dict[str, float]:
    """Median load ms over `repeats` fresh handles per model, loads interleaved across models."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for _, name in interleaved(names, repeats, failed):
        try:
            t0 = time.perf_counter_ns()
            load(name)  # dropped right away
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
        except MODEL_FAILURES as exc:
            failed[name] = one_line(exc)
    return {name: round(float(np.median(t)), 3) for name, t in times.items() if name not in failed}


def ratios(samples: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Median over rounds of this model's time / the reference's in the same round: end to end and invoke."""
    per_round = samples / reference  # (rounds, 2)
    return {
        "p50_latency": round(float(np.median(per_round[:, 0])), 4),
        "p50_invoke": round(float(np.median(per_round[:, 1])), 4),
    }
