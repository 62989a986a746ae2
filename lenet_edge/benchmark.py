"""Benchmark TFLite models side by side: accuracy, latency, throughput, load cost.

One harness for every model (float32, int8, anything with a (1, 28, 28, 1)
input and 10 logits out). For each model it measures

1. accuracy on the given split, the confusion matrix, and how many
   predictions differ from the reference model's ("flips");
2. single-image latency end to end (uint8 image -> float -> quantize ->
   set_tensor -> invoke -> get_tensor -> argmax of the raw output) and of
   `invoke()` alone, with `time.perf_counter_ns`, after warm-up, with the
   models **interleaved**: every timing round runs each model once, in an
   order rotated every round, so drift of a shared machine (frequency,
   neighbours, thermal) lands on all models alike, and ratios to the reference
   are taken round by round;
3. throughput in images/s at each batch size, in interleaved chunks, median
   of the chunks;
4. load + allocate time, growth of the process RSS across the first load,
   the graph's weight and activation bytes, and whether XNNPACK took the
   graph and in how many partitions.

A model that cannot be loaded or run becomes `{"error": "..."}` and the others
still run; `results["ok"]` is False then. `write_results` writes bench.json,
bench.md and the plots; `format_table` renders the stdout summary.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .compat import Interpreter, OpResolverType, versions
from .data.preprocess import MODEL_INPUT_SHAPE, NUM_CLASSES
from .errors import ModelError
from .fileio import atomic_write_json, atomic_write_text, sweep_temporaries
from .manifest import PERSIAN_DIGITS
from .plots import figure, save_png
from .tflite import delegation, no_delegation

SCHEMA_VERSION = 1
INPUT_SHAPE = (1, *MODEL_INPUT_SHAPE)  # the one input every benchmarked model must take
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


@dataclass(frozen=True)
class BenchConfig:
    threads: int = 1  # interpreter threads (LiteRT's own default is 1 as well)
    runs: int = 2000  # timed single-image rounds; each round runs every model once
    warmup: int = 200  # untimed rounds before the timed ones, interleaved the same way
    batch_sizes: tuple[int, ...] = (1, 32)  # throughput is measured at each
    xnnpack: bool = True  # False: BUILTIN_WITHOUT_DEFAULT_DELEGATES (reference kernels only)
    accuracy_batch: int = 256  # batch used to compute accuracy over the split
    throughput_seconds: float = 2.0  # target timed seconds per model and batch size
    throughput_chunks: int = 5  # the throughput is the median over this many interleaved chunks
    load_repeats: int = 5  # fresh loads timed per model for load_ms

    def __post_init__(self):
        for name in ("threads", "runs", "accuracy_batch", "throughput_chunks", "load_repeats"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {getattr(self, name)!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0; got {self.warmup!r}")
        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be a non-empty tuple of integers >= 1; got {self.batch_sizes!r}")
        if not self.throughput_seconds > 0:
            raise ValueError(f"throughput_seconds must be > 0; got {self.throughput_seconds!r}")


# --------------------------------------------------------------------------- one model


class _Model:
    """An interpreter plus its input/output quantization: uint8 images in, logits out."""

    def __init__(self, path: Path, config: BenchConfig):
        resolver = OpResolverType.AUTO if config.xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(
            model_path=str(path), num_threads=config.threads, experimental_op_resolver_type=resolver
        )
        self.interpreter.allocate_tensors()  # the default XNNPACK delegate is applied here
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}")
        self.input, self.output = inputs[0], outputs[0]
        if tuple(self.input["shape"]) != INPUT_SHAPE:
            raise ModelError(f"input shape {self.input['shape'].tolist()}, expected {list(INPUT_SHAPE)}")
        if tuple(self.output["shape"]) != (1, NUM_CLASSES):
            raise ModelError(f"output shape {self.output['shape'].tolist()}, expected [1, {NUM_CLASSES}]")
        self.in_dtype, self.out_dtype = np.dtype(self.input["dtype"]), np.dtype(self.output["dtype"])
        self.in_scale, self.in_zp = _quant_params(self.input)
        self.out_scale, self.out_zp = _quant_params(self.output)
        self.levels = _input_levels(self.in_dtype, self.in_scale, self.in_zp)
        self.xnnpack = config.xnnpack
        self.batch = 1

    def set_batch(self, batch: int) -> None:
        if batch != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [batch, 28, 28, 1])
            self.interpreter.allocate_tensors()
            self.batch = batch

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """(B, 28, 28) uint8 -> (B, 28, 28, 1) in the model's input dtype, via the 256-entry table."""
        return self.levels[images][..., None]

    def to_logits(self, raw: np.ndarray) -> np.ndarray:
        if self.out_dtype.kind in "iu":
            return (raw.astype(np.float32) - self.out_zp) * self.out_scale
        return raw

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class predictions for (B, 28, 28) uint8 images, B == the current batch."""
        self.interpreter.set_tensor(self.input["index"], self.to_input(images))
        self.interpreter.invoke()
        return self.to_logits(self.interpreter.get_tensor(self.output["index"])).argmax(axis=-1)

    def time_one(self, image: np.ndarray) -> tuple[int, int]:
        """(end-to-end ns, invoke ns) for one (1, 28, 28) uint8 image."""
        clock = time.perf_counter_ns
        t0 = clock()
        self.interpreter.set_tensor(self.input["index"], self.to_input(image))
        t1 = clock()
        self.interpreter.invoke()
        t2 = clock()
        # The digit is the argmax of the raw output: dequantizing (scale > 0) cannot change it,
        # so a deployed int8 classifier, like this loop, skips that step.
        self.interpreter.get_tensor(self.output["index"]).argmax(axis=-1)
        t3 = clock()
        return t3 - t0, t2 - t1

    def describe(self) -> dict:
        """Tensor specs, op list, XNNPACK coverage and graph bytes, read after allocate_tensors()."""
        # `_get_ops_details` is the interpreter's (experimental) node list; after delegation it
        # still holds the original nodes, followed by one DELEGATE node per partition.
        ops = self.interpreter._get_ops_details()
        return {
            "input": _tensor_spec(self.input),
            "output": _tensor_spec(self.output),
            "ops": [op["op_name"] for op in ops if op["op_name"] != "DELEGATE"],
            "xnnpack": delegation(ops) if self.xnnpack else no_delegation(ops),
            **_graph_bytes(self.interpreter, ops),
        }


def _input_levels(dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """The model input for each of the 256 pixel values: float32 v/255, quantized for integer inputs.

    The images are uint8, so applying this table is exactly the per-pixel
    formula below, at the cost of one indexing op instead of five numpy calls
    (which would otherwise dominate a ~30 µs single-image latency).
    """
    x = np.arange(256, dtype=np.float32) / np.float32(255.0)
    if dtype.kind not in "iu":
        return x.astype(dtype)
    # q = round(x / scale) + zero_point, saturated to the integer type's range
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / np.float32(scale)) + zero_point, info.min, info.max).astype(dtype)


def _quant_params(detail: dict) -> tuple[float, int]:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and not scale > 0:
        raise ModelError(f"tensor {detail['name']!r} is {np.dtype(detail['dtype']).name} without a scale")
    return float(scale), int(zero_point)


def _tensor_spec(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    quantized = np.dtype(detail["dtype"]).kind in "iu"
    return {
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(d) for d in detail["shape"]],
        "scale": float(scale) if quantized else None,
        "zero_point": int(zero_point) if quantized else None,
    }


def _graph_bytes(interpreter, ops: list[dict]) -> dict:
    """Bytes of constant tensors (weights) and the plain sum of all other tensors at batch 1."""
    produced = {int(t) for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    weights = activations = 0
    for t in interpreter.get_tensor_details():
        nbytes = int(np.prod(t["shape"], dtype=np.int64)) * np.dtype(t["dtype"]).itemsize
        if t["index"] in produced or t["index"] in inputs:
            activations += nbytes
        else:
            weights += nbytes
    return {"weights_bytes": weights, "activations_sum_bytes": activations}


def _rss_kb() -> float | None:
    """Current resident set size of this process in kB, or None where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _load(path: Path, config: BenchConfig) -> tuple[_Model, float]:
    """Load + allocate one model; return it and the milliseconds that took."""
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file")
    t0 = time.perf_counter_ns()
    try:
        model = _Model(path, config)
    except (ValueError, RuntimeError) as exc:  # LiteRT's words for a file that is not a usable flatbuffer
        raise ModelError(f"{path}: not a loadable TFLite model ({' '.join(str(exc).split())})") from None
    except ModelError as exc:  # wrong input/output shape or quantization: say which file
        raise ModelError(f"{path}: {exc}") from None
    return model, (time.perf_counter_ns() - t0) / 1e6


def _interleaved(names: list[str], rounds: int, failed: dict[str, str]):
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# --------------------------------------------------------------------------- phases


def _check_data(images: np.ndarray, labels: np.ndarray) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, 28, 28) uint8; got {images.shape} {images.dtype}")
    if labels.shape != (len(images),) or len(images) == 0:
        raise ValueError(f"labels must be (N,) with N = len(images) >= 1; got {labels.shape} for N={len(images)}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}; got {labels.min()}..{labels.max()}")


def _predict_all(model: _Model, images: np.ndarray, batch: int) -> np.ndarray:
    preds = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        model.set_batch(len(chunk))
        preds.append(model.predict(chunk))
    model.set_batch(1)
    return np.concatenate(preds)


def _accuracy(preds: np.ndarray, labels: np.ndarray) -> dict:
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


def _timed_rounds(
    models: dict[str, _Model], images: np.ndarray, rounds: int, record: bool, failed: dict[str, str]
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
        for r, name in _interleaved(names, rounds, failed):
            image = images[r % len(images)][None]  # (1, 28, 28)
            try:
                total, invoke = models[name].time_one(image)
            except MODEL_FAILURES as exc:
                failed[name] = _one_line(exc)
                continue
            if record:
                samples[name][r] = (total, invoke)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: s for name, s in samples.items() if name not in failed}


def _stats_us(ns: np.ndarray) -> dict:
    us = ns.astype(np.float64) / 1e3
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    values = (p50, p90, p99, us.mean(), us.std(), us.min(), us.max())
    return {key: round(float(v), 3) for key, v in zip(STAT_KEYS, values, strict=True)}


def _throughput(
    models: dict[str, _Model], images: np.ndarray, config: BenchConfig, failed: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Images/s per model and batch size: median over interleaved chunks of repeated calls."""
    result: dict[str, dict[str, float]] = {name: {} for name in models}
    chunk_s = config.throughput_seconds / config.throughput_chunks
    for batch in config.batch_sizes:
        batch_images = images[np.resize(np.arange(len(images)), batch)]  # cycles a split smaller than a batch
        calls = {}
        for name in [n for n in models if n not in failed]:
            try:
                models[name].set_batch(batch)
                calls[name] = _calls_for(models[name], batch_images, chunk_s)
            except MODEL_FAILURES as exc:
                failed[name] = _one_line(exc)
        rates: dict[str, list[float]] = {name: [] for name in calls}
        for _, name in _interleaved(list(calls), config.throughput_chunks, failed):
            try:
                seconds = _time_calls(models[name], batch_images, calls[name])
            except MODEL_FAILURES as exc:
                failed[name] = _one_line(exc)
                continue
            rates[name].append(batch * calls[name] / seconds)
        for name, r in rates.items():
            if name not in failed:
                result[name][str(batch)] = round(float(np.median(r)), 1)
    for name, model in models.items():
        if name not in failed:
            model.set_batch(1)
    return result


def _calls_for(model: _Model, batch_images: np.ndarray, seconds: float) -> int:
    """How many calls fill about `seconds`, from a short timed probe."""
    model.predict(batch_images)  # warm the new tensor sizes
    probe, elapsed = 1, 0.0
    while elapsed < 0.02:
        elapsed = _time_calls(model, batch_images, probe)
        probe *= 2
    per_call = elapsed / (probe // 2)
    return max(1, math.ceil(seconds / per_call))


def _time_calls(model: _Model, batch_images: np.ndarray, calls: int) -> float:
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


def _load_all(
    paths: dict[str, Path], images: np.ndarray, config: BenchConfig, failed: dict[str, str]
) -> tuple[dict[str, _Model], dict[str, dict]]:
    """Load each model once, kept alive for the later phases; describe it and run one image."""
    loaded, entries = {}, {}
    for name, path in paths.items():
        rss_before = _rss_kb()
        try:
            model, load_ms_first = _load(path, config)
            rss_after = _rss_kb()
            entry = {"path": str(path), "size_bytes": path.stat().st_size, **model.describe()}
            model.predict(images[:1])  # fail here, not in the middle of the timing loop
        except MODEL_FAILURES as exc:
            failed[name] = _one_line(exc)
            continue
        entry["load_ms_first"] = round(load_ms_first, 3)
        entry["rss_growth_kb"] = None if None in (rss_before, rss_after) else rss_after - rss_before
        loaded[name], entries[name] = model, entry
    return loaded, entries


def _load_times(paths: dict[str, Path], config: BenchConfig, failed: dict[str, str]) -> dict[str, float]:
    """Median load + allocate ms over fresh interpreters, loads interleaved across models."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _, name in _interleaved(list(paths), config.load_repeats, failed):
        try:
            _, ms = _load(paths[name], config)  # the interpreter is dropped right away
        except MODEL_FAILURES as exc:
            failed[name] = _one_line(exc)
            continue
        times[name].append(ms)
    return {name: round(float(np.median(t)), 3) for name, t in times.items() if name not in failed}


# --------------------------------------------------------------------------- public entry


def bench_models(
    models: dict[str, Path],
    images: np.ndarray,
    labels: np.ndarray,
    config: BenchConfig,
    *,
    reference: str = "float32",
    data_info: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Benchmark TFLite models on the same images and compare them with a reference.

    Args:
        models: name -> .tflite path; every model must take a (1, 28, 28, 1)
            float32 or int8 input and return (1, 10) logits.
        images: (N, 28, 28) uint8, white on black, already preprocessed.
        labels: (N,) integer classes 0..9.
        config: what to run and how often.
        reference: the name in `models` others are compared with.
        data_info: {"source", "split"} describing `images`, copied into the result.
        progress: called with a short message at the start of each phase.

    Returns:
        The JSON-ready results dict (see module docstring and `METHOD`); a model
        that failed is `{"error": "..."}` and `results["ok"]` is False.

    Raises:
        ValueError: empty `models`, `reference` not among them, or malformed data.
    """
    if not models:
        raise ValueError("models must name at least one .tflite file")
    if reference not in models:
        raise ValueError(f"reference must be one of {', '.join(models)}; got {reference!r}")
    labels = np.asarray(labels).astype(np.int64)
    _check_data(images, labels)
    say = progress or (lambda message: None)
    paths = {name: Path(p) for name, p in models.items()}
    loadavg_start = _loadavg()

    say(f"loading {len(paths)} model(s)")
    failed: dict[str, str] = {}  # name -> one-line error; a model that fails in any phase ends here
    loaded, entries = _load_all(paths, images, config, failed)

    say(f"accuracy on {len(images)} images")
    preds = {}
    for name, model in loaded.items():
        try:
            preds[name] = _predict_all(model, images, config.accuracy_batch)
        except MODEL_FAILURES as exc:
            failed[name] = _one_line(exc)
            continue
        entries[name].update(_accuracy(preds[name], labels))
    live = {n: m for n, m in loaded.items() if n not in failed}

    say(f"latency: {config.warmup} warm-up + {config.runs} timed interleaved rounds")
    _timed_rounds(live, images, config.warmup, record=False, failed=failed)
    samples = _timed_rounds(
        {n: m for n, m in live.items() if n not in failed}, images, config.runs, record=True, failed=failed
    )
    for name, s in samples.items():
        entries[name]["latency_us"] = _stats_us(s[:, 0])
        entries[name]["invoke_us"] = _stats_us(s[:, 1])
        entries[name]["latency_samples_ns"] = s[:, 0].tolist()

    say(f"throughput at batch sizes {', '.join(map(str, config.batch_sizes))}")
    live = {n: m for n, m in loaded.items() if n not in failed}
    for name, ips in _throughput(live, images, config, failed).items():
        entries[name]["throughput_ips"] = ips

    say("load times")
    for name, ms in _load_times({n: paths[n] for n in loaded if n not in failed}, config, failed).items():
        entries[name]["load_ms"] = ms
    loaded.clear()

    results_models = {}
    for name in paths:  # keep the caller's order
        results_models[name] = {"error": failed[name]} if name in failed else entries[name]
    _compare(results_models, preds, samples, reference)
    return {
        "schema_version": SCHEMA_VERSION,
        "ok": not failed,
        "reference": reference,
        "data": {
            "source": (data_info or {}).get("source"),
            "split": (data_info or {}).get("split"),
            "n": int(len(images)),
        },
        "machine": _machine(loadavg_start),
        "config": {**asdict(config), "batch_sizes": list(config.batch_sizes)},
        "method": METHOD,
        "models": results_models,
    }


def _compare(entries: dict, preds: dict, samples: dict, reference: str) -> None:
    """Add agreement/flips and ratios to the reference to every model that ran (in place)."""
    ref = entries[reference]
    if "error" in ref:
        for entry in entries.values():
            if "error" not in entry:
                entry.update(agreement_with_reference=None, flips=None, ratios_to_reference=None)
        return
    ref_ns = samples[reference]
    for name, entry in entries.items():
        if "error" in entry:
            continue
        same = preds[name] == preds[reference]
        per_round = samples[name] / ref_ns  # (rounds, 2): this model / reference, round by round
        entry["agreement_with_reference"] = float(same.mean())
        entry["flips"] = int((~same).sum())
        entry["ratios_to_reference"] = {
            "p50_latency": round(float(np.median(per_round[:, 0])), 4),
            "p50_invoke": round(float(np.median(per_round[:, 1])), 4),
            "p50_latency_of_p50s": round(entry["latency_us"]["p50"] / ref["latency_us"]["p50"], 4),
            "size": round(entry["size_bytes"] / ref["size_bytes"], 4),
            "accuracy_delta_pp": round(100 * (entry["accuracy"] - ref["accuracy"]), 3),
        }


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _machine(loadavg_start: float | None) -> dict:
    clock = time.get_clock_info("perf_counter")
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    except ImportError:  # Windows
        peak = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_governor": _read_first_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "loadavg_1m_start": loadavg_start,
        "loadavg_1m_end": _loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "timer": {
            "name": "time.perf_counter_ns",
            "resolution_ns": clock.resolution * 1e9,
            "overhead_ns_p50": _timer_overhead_ns(),
        },
        "peak_rss_kb": peak,
        "versions": versions(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.readline().strip() or None
    except OSError:
        return None


def _timer_overhead_ns(samples: int = 10_000) -> float:
    """Median cost of one back-to-back perf_counter_ns pair: the floor under every timing."""
    clock = time.perf_counter_ns
    deltas = np.empty(samples, dtype=np.int64)
    for i in range(samples):
        t0 = clock()
        deltas[i] = clock() - t0
    return float(np.median(deltas))


# --------------------------------------------------------------------------- reports


def _rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row of strings per model, shared by the table and the Markdown."""
    batches = [str(b) for b in results["config"]["batch_sizes"]]
    header = [
        "model",
        "size KB",
        "size x",
        "top-1 %",
        "Δpp",
        "agree %",
        "flips",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p50 x",
        *[f"b{b} img/s" for b in batches],
        "XNNPACK",
    ]
    rows = []
    for name, m in results["models"].items():
        if "error" in m:
            rows.append([name, "ERROR: " + m["error"]])
            continue
        ratios = m.get("ratios_to_reference") or {}
        lat = m["latency_us"]
        xnn = m["xnnpack"]
        rows.append(
            [
                name,
                f"{m['size_bytes'] / 1024:.1f}",
                _fmt(ratios.get("size"), "{:.3f}"),
                f"{100 * m['accuracy']:.2f}",
                _fmt(ratios.get("accuracy_delta_pp"), "{:+.2f}"),
                _fmt(m.get("agreement_with_reference"), "{:.2%}", strip="%"),
                _fmt(m.get("flips"), "{}"),
                f"{lat['p50']:.1f}",
                f"{lat['p90']:.1f}",
                f"{lat['p99']:.1f}",
                _fmt(ratios.get("p50_latency"), "{:.3f}"),
                *[_fmt(m["throughput_ips"].get(b), "{:,.0f}") for b in batches],
                (
                    f"{xnn['partitions']} part, {xnn['ops_delegated']}/{xnn['ops_total']} ops"
                    if xnn["delegated"]
                    else "off"
                ),
            ]
        )
    return header, rows


def _fmt(value, spec: str, strip: str = "") -> str:
    return "-" if value is None else spec.format(value).rstrip(strip)


def format_table(results: dict) -> str:
    """A fixed-width table of the results for the terminal."""
    header, rows = _rows(results)
    full = [r for r in rows if len(r) == len(header)]
    widths = [max(len(str(r[i])) for r in [header, *full]) for i in range(len(header))]
    left = {0}  # the model name is left-aligned, numbers right-aligned

    def line(cells):
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append(line(r) if len(r) == len(header) else f"{r[0].ljust(widths[0])}  {r[1]}")
    out.append(_footer(results))
    return "\n".join(out)


def format_markdown(results: dict) -> str:
    """The same table in Markdown, with the conditions it was measured under."""
    header, rows = _rows(results)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        cells = r if len(r) == len(header) else [r[0], r[1]] + [""] * (len(header) - 2)
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    machine, data = results["machine"], results["data"]
    out += [
        "",
        _footer(results),
        "",
        f"Data: {data['source'] or 'unknown source'}, split {data['split'] or '-'}, n = {data['n']}. "
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"ai-edge-litert {machine['versions'].get('ai_edge_litert')}, "
        f"load average {machine['loadavg_1m_start']} -> {machine['loadavg_1m_end']}.",
        "",
        "Latency is one image end to end (uint8 to the model's input type by one table lookup, set_tensor, "
        "invoke, get_tensor, argmax of the raw output); `p50 x` is the median over timing rounds of the "
        "per-round ratio to the reference, the models being interleaved round by round.",
    ]
    return "\n".join(out) + "\n"


def _footer(results: dict) -> str:
    c = results["config"]
    return (
        f"reference: {results['reference']}; {c['runs']} timed rounds after {c['warmup']} warm-up, "
        f"{c['threads']} thread(s), XNNPACK {'on' if c['xnnpack'] else 'off'}; "
        f"x = ratio to the reference; Δpp = top-1 difference in percentage points"
    )


def write_results(results: dict, out_dir: Path) -> dict[str, Path]:
    """Write bench.json, bench.md, latency.png and confusion_<model>.png into `out_dir`, atomically.

    Returns:
        file name -> path of every file written.
    """
    out_dir = Path(out_dir)
    sweep_temporaries(out_dir)  # what an interrupted earlier bench left
    written = {
        "bench.json": atomic_write_json(out_dir / "bench.json", results),
        "bench.md": atomic_write_text(out_dir / "bench.md", format_markdown(results)),
    }
    ok = {name: m for name, m in results["models"].items() if "error" not in m}
    if ok:
        written["latency.png"] = _plot_latency(ok, out_dir / "latency.png")
    for name, m in ok.items():
        file_name = f"confusion_{_safe_name(name)}.png"
        written[file_name] = _plot_confusion(name, m, out_dir / file_name)
    return written


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


WHISKERS = (1, 99)  # percentiles; samples outside them are not drawn (the title says how many)


def _plot_latency(models: dict, target: Path) -> Path:
    """Box per model of the single-image latencies (p1-p99 whiskers), samples as dots, p50 labelled."""
    fig = figure()
    ax = fig.add_subplot()
    names = list(models)
    samples = [np.asarray(models[n]["latency_samples_ns"], dtype=np.float64) / 1e3 for n in names]
    positions = np.arange(1, len(names) + 1)
    ax.boxplot(
        samples,
        positions=positions,
        orientation="horizontal",
        whis=WHISKERS,
        showfliers=False,
        widths=0.5,
        medianprops={"color": "black", "linewidth": 2},
    )
    jitter = np.random.default_rng(0)  # fixed seed: the same results always draw the same picture
    hidden = 0
    for pos, name, us in zip(positions, names, samples, strict=True):
        lo, hi = np.percentile(us, WHISKERS)
        shown = us[(us >= lo) & (us <= hi)]
        hidden += len(us) - len(shown)
        ax.scatter(shown, pos + jitter.uniform(-0.2, 0.2, len(shown)), s=2, alpha=0.15, color="tab:blue")
        p50 = models[name]["latency_us"]["p50"]
        ax.annotate(f"p50 {p50:.1f} µs", (p50, pos + 0.3), ha="center", va="bottom", fontsize=9)
    ax.set_yticks(positions, names)
    lo_all = min(np.percentile(us, WHISKERS[0]) for us in samples)
    hi_all = max(np.percentile(us, WHISKERS[1]) for us in samples)
    if hi_all / lo_all > 10:  # a slow and a fast model side by side: a linear axis would squash one
        ax.set_xscale("log")
    ax.set_xlabel("single-image latency, end to end (µs)")
    ax.set_title(
        f"Box p25-p75, line p50, whiskers p{WHISKERS[0]}-p{WHISKERS[1]}; "
        f"{hidden} samples outside the whiskers not drawn",
        fontsize=10,
    )
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, target)


def _plot_confusion(name: str, model: dict, target: Path) -> Path:
    """Confusion matrix with counts; colour is the row-normalised fraction."""
    confusion = np.asarray(model["confusion"])
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig = figure()
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=8, color="white" if rows[i, j] > 0.5 else "black"
            )
    # Western and Persian digits (DejaVu Sans, matplotlib's default font, has both)
    ax.set_xticks(range(NUM_CLASSES), [f"{d}\n{p}" for d, p in enumerate(PERSIAN_DIGITS)])
    ax.set_yticks(range(NUM_CLASSES), [f"{d} {p}" for d, p in enumerate(PERSIAN_DIGITS)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{name}: top-1 {100 * model['accuracy']:.2f}% on {model['n']} images")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    return save_png(fig, target)
