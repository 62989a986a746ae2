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
still run; `results["ok"]` is False then. `bench_run` is the stage's entry
(the run's models and data -> results, written into the run directory); the
phases themselves are in `harness`, the machine record in `machine`, the
tables and plots in `report`.

`bench_run` also measures on devices (`on=["ssh://pi"]`, see `remote`): the
same phases run there while the host measures, and `results["targets"]` lists
the host first, then each device, each with its machine record, its models
and a verdict. The top level stays the first target's results (the host's
unless `host=False`), so a host-only reader sees what it always saw.

With `BenchConfig.micro` the host also runs every model in TensorFlow Lite
Micro (`results["tflm"]`, see `bench_micro`): exact tensor arena, flash, MACs
per layer, agreement with LiteRT output by output. A run's distillation
teacher is the exception: a reference row in LiteRT, never a device's model. That section has its own
`ok`: a model TFLM has no kernel for is a finding, not a failed bench.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .compat import versions
from .config import BenchConfig, RemoteConfig
from .errors import DataError
from .fileio import sha256_file
from .harness import METHOD, SCHEMA_VERSION, compare_to_reference
from .report import format_markdown, format_table, write_results
from .runtimes import open_model
from .verdict import verdict

__all__ = [
    "METHOD",
    "SCHEMA_VERSION",
    "BenchConfig",
    "RemoteConfig",
    "bench_micro",
    "bench_models",
    "bench_run",
    "compare_to_reference",
    "format_markdown",
    "format_table",
    "write_results",
]


MICRO_METHOD = {
    "timing": "TFLM's portable reference kernels, compiled for this host (the tflite-micro package's "
    "interpreter): the figures prove correctness and memory, not microcontroller speed; micro_runs timed "
    "rounds after micro_warmup; load_ms includes LiteRT's flatbuffer check, done before TFLM reads a model",
    "min_arena_bytes": "the least arena_size at which TFLM allocates the model (allocation fails one byte "
    "below): bisection between 1024 bytes and the first power of two that allocates; on this 64-bit host",
    "flash_bytes": "the .tflite flatbuffer, which firmware compiles in unchanged as a C array (TFLM's own "
    "code not counted)",
    "macs": "multiply-accumulates per op from the graph's shapes: CONV_2D H*W*C_out*kh*kw*C_in, "
    "DEPTHWISE_CONV_2D H*W*C_out*kh*kw, FULLY_CONNECTED outputs*depth; other ops 0",
    "litert": "the same model's outputs in LiteRT (as configured for the main table) on the same images: "
    "agreement = share of identical argmax, identical_outputs = share of images whose 10 raw outputs are "
    "bit-identical, max_abs_diff = largest raw output difference (int8: quantization steps)",
    "litert_builtin": "the same comparison with LiteRT's built-in kernels (no XNNPACK; its optimized CPU kernels, "
    "not the reference ones TFLM's are ported from): XNNPACK requantizes int8 with its own rounding, so a model "
    "can agree with these and still differ from XNNPACK by a step or a few where two classes are nearly tied",
    "litert_reference": "the same comparison with LiteRT's reference kernels (BUILTIN_REF), the code TFLM's kernels "
    "are ported from; neither LiteRT's optimized kernels nor these are TFLM's twin (int8 TANH, for one, is computed "
    "otherwise by the optimized ones), so bench shows all three",
}


def litert_loader(paths: dict[str, Path], config: BenchConfig) -> harness.Loader:
    """name -> a fresh LiteRT handle of that model, with the config's threads and XNNPACK setting."""
    return lambda name: open_model(paths[name], "litert", threads=config.threads, xnnpack=config.xnnpack)


def bench_models(
    models: dict[str, Path],
    images: np.ndarray,
    labels: np.ndarray,
    config: BenchConfig,
    *,
    reference: str = "float32",
    data_info: dict | None = None,
    progress: Callable[[str], None] | None = None,
    load: harness.Loader | None = None,
    outputs: dict[str, np.ndarray] | None = None,
) -> dict:
    """Benchmark models on the same images and compare them with a reference.

    Args:
        models: name -> .tflite path; every model must take a (1, 28, 28, 1)
            float32, int8 or uint8 input and return (1, 10) scores.
        images: (N, 28, 28) uint8, white on black, already preprocessed.
        labels: (N,) integer classes 0..9.
        config: what to run and how often.
        reference: the name in `models` others are compared with.
        data_info: {"source", "split"} describing `images`, copied into the result.
        progress: called with a short message at the start of each phase.
        load: name -> a fresh `ModelHandle` (default: LiteRT with the config's
            threads and XNNPACK setting); how another runtime is benchmarked.
        outputs: if given, filled with name -> `(N, 10)` raw outputs on `images`
            (what the accuracy was computed from), to compare runtimes output by output.

    Returns:
        The JSON-ready results dict (see module docstring and `METHOD`); a model
        that failed is `{"error": "..."}` and `results["ok"]` is False.

    Raises:
        ValueError: empty `models`, `reference` not among them, or malformed data.
    """
    paths = {name: Path(p) for name, p in models.items()}

    def describe_file(name: str) -> dict:
        path = paths[name]
        return {"path": str(path), "size_bytes": path.stat().st_size, "sha256": sha256_file(path)}

    return harness.measure(
        list(paths),
        load or litert_loader(paths, config),
        images,
        labels,
        config,
        reference=reference,
        files=describe_file,
        versions=versions(),
        data_info=data_info,
        progress=progress,
        outputs=outputs,
    )


def bench_micro(
    models: dict[str, Path],
    images: np.ndarray,
    labels: np.ndarray,
    config: BenchConfig,
    litert_outputs: dict[str, np.ndarray],
    *,
    reference: str,
    data_info: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The models in TensorFlow Lite Micro: `bench_models` with the TFLM runtime, plus what firmware needs.

    Every model gets the TFLM benchmark (accuracy on the whole split, `micro_runs`
    timed rounds) and, when TFLM runs it: `min_arena_bytes` (exact), `flash_bytes`,
    `macs` per layer and `macs_total`, `litert` (agreement with `litert_outputs[name]`, LiteRT as
    `config` runs it), `litert_builtin` (agreement with LiteRT's built-in kernels, without XNNPACK) and
    `litert_reference` (with LiteRT's reference kernels).
    A model TFLM cannot run (an op it has no kernel for) is an error entry naming it.
    """
    from .runtimes.litert import inspect_tflite
    from .runtimes.micro import macs, min_arena_bytes

    (progress or (lambda message: None))("TensorFlow Lite Micro: the same models in TFLM's interpreter")
    outputs: dict[str, np.ndarray] = {}
    section = bench_models(
        models,
        images,
        labels,
        dataclasses.replace(config, runs=config.micro_runs, warmup=config.micro_warmup),
        reference=reference,
        data_info=data_info,
        progress=progress,
        load=lambda name: open_model(models[name], "tflm"),
        outputs=outputs,
    )
    section["method"] = {**section["method"], **MICRO_METHOD}
    for name, entry in section["models"].items():
        if "error" in entry:
            continue
        layers = macs(inspect_tflite(models[name]))
        entry.update(
            min_arena_bytes=min_arena_bytes(models[name]),
            flash_bytes=entry["size_bytes"],
            macs=layers,
            macs_total=sum(layer["macs"] for layer in layers),
            litert=_agreement(outputs[name], litert_outputs.get(name)),
            litert_builtin=_agreement(
                outputs[name], _undelegated_outputs(models[name], images, config, litert_outputs.get(name))
            ),
            litert_reference=_agreement(
                outputs[name], _undelegated_outputs(models[name], images, config, None, reference=True)
            ),
        )
    return section


def _undelegated_outputs(
    model: Path, images: np.ndarray, config: BenchConfig, litert: np.ndarray | None, reference: bool = False
) -> np.ndarray:
    """`model`'s raw outputs in LiteRT without XNNPACK: its built-in kernels (`litert` itself when XNNPACK was off
    for it), or with `reference` its reference kernels."""
    if litert is not None and not config.xnnpack and not reference:
        return litert
    handle = open_model(model, "litert", threads=config.threads, xnnpack=False, reference=reference)
    return handle.raw_all(images, config.accuracy_batch)


def _agreement(tflm: np.ndarray, litert: np.ndarray | None) -> dict | None:
    """How TFLM's raw outputs compare with LiteRT's on the same images; None when LiteRT has none."""
    return None if litert is None else harness.output_agreement(tflm, litert)


VERIFIER_SEED = 101  # apart from the seeds `train` composes its pieces with (the run's seed and seed + 1)
VERIFIER_LINES = 300  # lines of the benched split's digits composed into held-out pieces for the verifier


# manifest key -> bench.json key of each piece verifier `export` may write (`--mixed` adds the second)
VERIFIERS = {"verifier_int8_tflite": "verifier", "verifier_mixed_tflite": "verifier_mixed"}


def bench_verifiers(run_dir, manifest: dict, split, config: BenchConfig, progress=None) -> dict[str, dict]:
    """The run's piece verifiers on held-out pieces of the benched split's digits: accuracy and latency.

    The pieces are made as for training (`verifier.training_pieces`, other lines and seed) from the
    digits of the split being benched, so on `--split test` no piece was seen in training. Latency:
    one piece end to end (`ModelHandle.time_one`, LiteRT with XNNPACK, one thread), p50/p90 after warm-up.
    Returns bench.json key (`VERIFIERS`) -> result, for each verifier the run has.
    """
    from .manifest import artifact_path
    from .verifier import CLASSES, held_out, scores, training_pieces

    say = progress or (lambda message: None)
    keys = [key for key in VERIFIERS if key in manifest.get("artifacts", {})]
    if not keys:
        return {}
    lines = max(4, min(VERIFIER_LINES, len(split.labels) // 8))
    say(f"verifier: composing {lines} lines of the split's digits into pieces")
    pieces, labels = training_pieces(split.images, split.labels, lines, seed=VERIFIER_SEED)
    results = {}
    for key in keys:
        path = artifact_path(run_dir, manifest, key)
        handle = open_model(path, threads=config.threads, classes=CLASSES)
        accuracy = held_out(scores(handle.scores(pieces)) >= 0.5, labels)
        say(f"verifier: timing {path.name} on {config.runs} single pieces")
        timing = _percentiles(lambda piece, handle=handle: handle.time_one(piece[None])[0], pieces, config)
        results[VERIFIERS[key]] = {
            "file": path.name,
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            **accuracy,
            "ones": int((labels == 1).sum()),
            "lines": lines,
            **timing,
        }
    return results


def _percentiles(time_one: Callable[[Any], int], items, config: BenchConfig) -> dict[str, float | int]:
    """`p50_us`, `p90_us` and `runs` of `time_one(item)` (ns) over `config.runs` items in turn, after
    `config.warmup` untimed calls."""
    for i in range(config.warmup):
        time_one(items[i % len(items)])
    ns = np.array([time_one(items[i % len(items)]) for i in range(config.runs)])
    return {
        "p50_us": float(np.percentile(ns, 50) / 1e3),
        "p90_us": float(np.percentile(ns, 90) / 1e3),
        "runs": config.runs,
    }


LINE_SEED = 103  # apart from the seeds `train` composes its numbers with (the run's seed and seed + 1)
LINE_NUMBERS = 300  # numbers of the benched split's digits the line model reads


# manifest key -> bench.json key of each line model `export` may write (`--mixed` adds the second)
LINE_MODELS = {"line_int8_tflite": "line_model", "line_mixed_tflite": "line_mixed"}


def bench_line_model(run_dir, manifest: dict, split, config: BenchConfig, progress=None) -> dict[str, dict]:
    """The run's line models on numbers composed of the benched split's digits: exact numbers and latency.

    The numbers are made as for training (`line_model.training_lines`, another seed) from the digits
    of the split being benched, so on `--split test` no digit was seen in training; each digit at its
    height as written where the line model was trained so (the manifest's `written_heights`). Latency: one
    number's strip end to end (`reading.LineReader`: LiteRT with XNNPACK, one thread, as `read` runs
    it), p50/p90 after warm-up. Returns bench.json key (`LINE_MODELS`) -> result, for each line model the
    run has.
    """
    import time

    from .line_model import read_line, split_lines
    from .manifest import artifact_path
    from .reading import LineReader

    keys = [key for key in LINE_MODELS if key in manifest.get("artifacts", {})]
    if not keys:
        return {}
    say = progress or (lambda message: None)
    numbers = max(8, min(LINE_NUMBERS, len(split.labels) // 4))
    say(f"line model: composing {numbers} numbers of the split's digits")
    written = bool(manifest.get("line_model", {}).get("data", {}).get("written_heights"))
    strips, digits = split_lines(split, numbers, LINE_SEED, written)
    results = {}
    for key in keys:
        path = artifact_path(run_dir, manifest, key)
        reader = LineReader(path)
        read = [[d for d, *_ in read_line(reader(s))] for s in strips]
        say(f"line model: timing {path.name} on {config.runs} numbers")

        def time_one(strip, reader=reader) -> int:
            start = time.perf_counter_ns()
            reader(strip)
            return time.perf_counter_ns() - start

        results[LINE_MODELS[key]] = {
            "file": path.name,
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "numbers": int(numbers),
            "written_heights": written,
            "exact": float(np.mean([r == t.tolist() for r, t in zip(read, digits, strict=True)])),
            "median_width_px": int(np.median([s.shape[1] for s in strips])),
            **_percentiles(time_one, strips, config),
        }
    return results


def reading_lines(entry: dict) -> list[str]:
    """A line for bench's table and bench.md per model `read` uses beside the digit model: accuracy and latency."""
    lines = [
        f"Piece verifier {v['file']} ({v['bytes']:,} bytes): {100 * v['accuracy']:.2f}% of {v['pieces']:,} held-out "
        f"pieces ({100 * v['one_accuracy']:.2f}% of the {v['ones']:,} single digits, "
        f"{100 * v['not_one_accuracy']:.2f}% of the others); one piece p50 {v['p50_us']:.1f} µs, "
        f"p90 {v['p90_us']:.1f} µs (LiteRT, XNNPACK)"
        for v in (entry[name] for name in VERIFIERS.values() if name in entry)
    ]
    for v in (entry[name] for name in LINE_MODELS.values() if name in entry):
        lines.append(
            f"Line model {v['file']} ({v['bytes']:,} bytes): {100 * v['exact']:.2f}% of {v['numbers']:,} held-out "
            f"numbers of 1-12 digits{' (at their heights as written)' if v.get('written_heights') else ''} "
            f"read exactly on its own; one number (median strip {v['median_width_px']} px "
            f"wide) p50 {v['p50_us']:.1f} µs, p90 {v['p90_us']:.1f} µs (LiteRT, XNNPACK, one thread)"
        )
    return lines


def bench_run(
    run_dir: str | os.PathLike = "export",
    config: BenchConfig | None = None,
    *,
    models: dict[str, str | os.PathLike] | None = None,
    source: str | None = None,
    split: str = "test",
    write: bool = True,
    load_splits: Callable | None = None,
    progress: Callable[[str], None] | None = None,
    on: tuple[str, ...] | list[str] = (),
    host: bool = True,
    remote: RemoteConfig | None = None,
    target_options: Mapping[str, Any] | None = None,
) -> tuple[dict, dict[str, Path]]:
    """The bench stage: a run's exported models (or `models`) on a split of its data (or `source`'s).

    Args:
        run_dir: the run; its models are benchmarked unless `models` is given,
            and the results are written into it.
        config: what to run (default `BenchConfig()`).
        models: name -> .tflite path, instead of the run's models (no run needed then).
        source: a dataset source instead of the run's own.
        split: the split to measure accuracy on ("test", "val", "train", "remaining").
        write: write bench.json, bench.md and the plots into `run_dir`.
        load_splits: `(manifest, source) -> (dataset, splits)`, as `data.load_run_splits`
            (the command line passes one with its cache and progress bar).
        progress: called with a short message at the start of each phase.
        on: other targets to measure on, in the order given (see `targets`): devices
            (`ssh://[user@]host[:port]`, concurrently with the host) and targets on this
            machine (after the host, one at a time).
        host: measure on this machine too (the first target); False needs `on`.
        remote: how to reach and run on the ssh devices (default `RemoteConfig()`).
        target_options: target kind -> its config (the defaults for a kind not given).

    Returns:
        The results dict, and file name -> path of what was written (empty without `write`).
        A target that gave no result is an entry with an `error`; `results["ok"]` is False then.

    Raises:
        ModelError: no run or no exported model (says what to run), a bad model path.
        DataError: no such split in the data.
        ValueError: a malformed target spec, or nothing to measure.
    """
    from .manifest import CPU_ONLY, REFERENCE_ONLY, exported_models, manifest_path, read_manifest
    from .remote import Sessions
    from .targets import Job, parse_target, run_local

    targets = [parse_target(spec) for spec in on]
    if not host and not targets:
        raise ValueError("host=False leaves nothing to measure: name a target in `on`")
    config = config or BenchConfig()
    manifest = read_manifest(run_dir) if (not models or manifest_path(run_dir).exists()) else {}
    paths = {name: Path(p) for name, p in models.items()} if models else exported_models(run_dir, manifest)
    if load_splits is None:
        from .data import load_run_splits as load_splits
    dataset, splits = load_splits(manifest, source)
    if split not in splits:
        raise DataError(f"{dataset.location or dataset.source}: no '{split}' split (it has: {', '.join(splits)})")
    data = splits[split]
    reference = "float32" if "float32" in paths else next(iter(paths))
    data_info = {"source": dataset.source, "split": split}
    job = Job(paths, data.images, data.labels, config, reference, data_info, dict(target_options or {}), Path(run_dir))
    sessions = Sessions(
        [t for t in targets if t.kind == "ssh"],
        paths,
        data.images,
        data.labels,
        config,
        remote or RemoteConfig(),
        reference=reference,
        data_info=data_info,
        progress=progress,
    )
    with sessions:  # the devices measure while the host does
        entries = []
        if host:
            host_results = bench_models(
                paths,
                data.images,
                data.labels,
                config,
                reference=reference,
                data_info=data_info,
                progress=progress,
                outputs=job._litert,
            )
            # A run's teacher (a reference) and mixed model (CPUs only) stay out of TFLM; models given by path all run.
            host_only = REFERENCE_ONLY + CPU_ONLY
            micro_paths = paths if models else {name: p for name, p in paths.items() if name not in host_only}
            if config.micro and micro_paths:
                host_results["tflm"] = bench_micro(
                    micro_paths,
                    data.images,
                    data.labels,
                    config,
                    job._litert,
                    reference=reference if reference in micro_paths else next(iter(micro_paths)),
                    data_info=data_info,
                    progress=progress,
                )
            if not models:
                host_results.update(bench_verifiers(run_dir, manifest, data, config, progress))
                host_results.update(bench_line_model(run_dir, manifest, data, config, progress))
            entries.append({"target": "host", "kind": "host", **host_results})
        local_entries = iter(run_local([t for t in targets if t.kind != "ssh"], job, progress or (lambda m: None)))
        remote_entries = iter(sessions.results())
    entries += [next(remote_entries if t.kind == "ssh" else local_entries) for t in targets]  # in the order given
    for entry in entries:
        entry["verdict"] = verdict(entry)
    first = {key: value for key, value in entries[0].items() if key not in ("target", "kind", "error", "verdict")}
    results = {**first, "ok": all(entry["ok"] for entry in entries), "targets": entries}
    return results, (write_results(results, Path(run_dir)) if write else {})
