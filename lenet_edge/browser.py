"""`bench --on browser`: the run's models in LiteRT.js inside headless Chromium, on this machine.

What a web app would get: the same .tflite files the host measured, run by
LiteRT.js (WebAssembly, XNNPACK, one thread) in Debian's Chromium, driven
over the DevTools protocol on a pipe (`chromium`: no driver, no port, no
package; Playwright and Selenium would each add a dependency and a driver
matched to the browser's version, for three calls). A loopback HTTP server
(`web.Server`) serves the bench page, LiteRT.js and the models; the images
go as one binary file. In the page (`web/page/bench.js`):

1. every model is loaded and compiled (`load_ms`);
2. every image is run once per model and the raw outputs come back, so
   accuracy, the confusion matrix, agreement with the reference model and
   with the host's LiteRT outputs (argmax and raw values) are computed here,
   by the same functions as the host's;
3. `warmup` + `runs` timing rounds, interleaved as on the host: each round
   runs every model once on image (round mod n), in an order rotated every
   round. One image end to end: uint8 -> the model's input by a 256-entry
   table, written into the input buffer, run, the output read, argmax;
   `invoke` is the run alone. The page is cross-origin isolated, so
   `performance.now()` steps by 5 µs (100 µs otherwise); the step found is
   recorded with the results.

A missing Chromium or LiteRT.js, a page that fails or times out: a
`TargetError` naming what to install or fix, so the entry records it and
the other targets stand.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .config import BrowserConfig
from .errors import LenetEdgeError
from .fileio import sha256_file
from .harness import SCHEMA_VERSION, accuracy_stats, compare_to_reference, data_sha256, output_agreement, stats_us
from .machine import isa_line, loadavg, machine_info
from .report import fmt, model_rows, summary_row
from .targets import TargetError
from .verdict import SAME_SPEED

SPEC = "browser"
METHOD = {
    "runtime": "LiteRT.js (@litertjs/core) in headless Chromium: WebAssembly with XNNPACK, one thread, the "
    "single-threaded build for the browser's SIMD (relaxed SIMD when it has it); models run through its "
    "WebAssembly bindings with one host-memory input buffer of the model's own type",
    "latency_us": "one 28x28 image end to end in the page: uint8 -> the model's input by one 256-entry table "
    "written into the input buffer, run, the output read, argmax; performance.now() (its step in "
    "machine.browser.timer), after warm-up, models interleaved with the order rotated every round",
    "invoke_us": "the run (CompiledModel.run) alone inside the same rounds",
    "ratios_to_reference": "p50_latency and p50_invoke: median over rounds of this model's time / the "
    "reference's in the same round (ties at the timer's step are common)",
    "accuracy": "top-1 over the whole split from the raw outputs of every image, one image per run",
    "litert": "the same model's outputs in LiteRT on the host (as configured for the host's table) on the same "
    "images: agreement = share of identical argmax, identical_outputs = share of images whose 10 raw outputs "
    "are equal, max_abs_diff = largest raw output difference (int8: quantization steps)",
    "load_ms": "loadModel + compileModel in the page, once per model (the first load in the page)",
}


@dataclass(frozen=True)
class BrowserTarget:
    """This machine's headless Chromium: `browser`."""

    url: str = SPEC
    kind: ClassVar[str] = "browser"
    local: ClassVar[bool] = True  # this machine's CPU: it runs after the host, alone


def parse_target(spec: str) -> BrowserTarget:
    """`browser` -> BrowserTarget (the browser itself is `--chromium`).

    Raises:
        ValueError: anything after `browser`.
    """
    if spec.rstrip(":") != SPEC:
        raise ValueError(f"{spec!r}: expected `browser` (name the executable with --chromium PATH)")
    return BrowserTarget()


def measure(target: BrowserTarget, job, say) -> dict:
    """The job's models in LiteRT.js in headless Chromium: results as a host's, with `litert` agreement per model.

    Raises:
        TargetError: no Chromium, no LiteRT.js (`npm ci`), or the page failed or timed out (its message).
    """
    from .chromium import BrowserError, Chromium, find_chromium
    from .web import bench_routes, litertjs_version, serving

    config = job.options.get("browser") or BrowserConfig()
    try:
        executable = find_chromium(config.chromium)
        routes = bench_routes()
        litertjs = litertjs_version()
    except LenetEdgeError as exc:
        raise TargetError(str(exc)) from None
    names = list(job.models)
    routes.update({f"models/{i}.tflite": job.models[name] for i, name in enumerate(names)})
    routes["images.bin"] = np.ascontiguousarray(job.images, np.uint8).tobytes()
    bench = {
        "models": [{"name": name, "url": f"models/{i}.tflite"} for i, name in enumerate(names)],
        "images": "images.bin",
        "n": len(job.images),
        "runs": job.config.runs,
        "warmup": job.config.warmup,
    }
    loadavg_start = loadavg()
    deadline = time.monotonic() + config.timeout
    say(f"headless Chromium ({executable}), LiteRT.js {litertjs}: {len(names)} model(s), {len(job.images)} images")
    try:
        with serving(routes=routes) as server, Chromium(executable, timeout=config.timeout) as chromium:
            product = chromium.version.get("product", "Chromium")
            with chromium.page() as page:
                page.goto(server.url + "bench.html", timeout=max(1.0, deadline - time.monotonic()))
                page.wait_for("window.benchReady === true", timeout=max(1.0, deadline - time.monotonic()))
                say(f"accuracy on {len(job.images)} images, then {job.config.warmup} + {job.config.runs} rounds")
                left = max(1.0, deadline - time.monotonic())
                page_result = page.evaluate(f"runBench({json.dumps(bench)})", timeout=left)
    except BrowserError as exc:
        raise TargetError(f"headless Chromium: {exc}") from None
    except OSError as exc:
        raise TargetError(f"headless Chromium: {exc.strerror or exc}") from None
    versions = {"chromium": product.split("/", 1)[-1], "litertjs": litertjs}
    machine = machine_info(loadavg_start, versions)
    machine["browser"] = {
        "product": product,
        "executable": str(executable),
        "user_agent": page_result["user_agent"],
        "runtime": page_result["runtime"],
        "timer": page_result["timer"],
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "ok": not any("error" in m for m in page_result["models"].values()),
        "reference": job.reference,
        "data": {**job.data_info, "n": len(job.images), "sha256": data_sha256(job.images, job.labels)},
        "machine": machine,
        "config": {
            "runs": job.config.runs,
            "warmup": job.config.warmup,
            "threads": 1,
            "xnnpack": True,
            **dataclasses.asdict(config),
        },
        "method": METHOD,
        "models": _models(job, names, page_result["models"]),
    }


def _models(job, names: list[str], page: dict) -> dict:
    """Each model's entry from what the page returned: accuracy, agreement, latency, as the host's."""
    labels = np.asarray(job.labels).astype(np.int64)
    entries, preds, samples = {}, {}, {}
    for name in names:
        found = page[name]
        path = job.models[name]
        if "error" in found:
            entries[name] = {"error": found["error"]}
            continue
        dtype = np.dtype(found["raw_dtype"])
        raw = np.frombuffer(base64.b64decode(found["raw"]), dtype).reshape(len(labels), 10)
        preds[name] = raw.argmax(axis=-1)
        latency_ns = np.rint(np.asarray(found["latency_us"]) * 1e3).astype(np.int64)
        invoke_ns = np.rint(np.asarray(found["invoke_us"]) * 1e3).astype(np.int64)
        samples[name] = np.stack([latency_ns, invoke_ns], axis=1)
        entries[name] = {
            "path": str(path),
            "size_bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "runtime": "litert.js",
            "input": _spec(found["input"]),
            "output": _spec(found["output"]),
            "has_metadata": found["has_metadata"],
            "load_ms": round(found["load_ms"], 3),
            **accuracy_stats(preds[name], labels),
            "litert": output_agreement(raw, job.litert_outputs(name)),
            "latency_us": stats_us(latency_ns),
            "invoke_us": stats_us(invoke_ns),
            "latency_samples_ns": latency_ns.tolist(),
        }
    compare_to_reference(entries, preds, samples, job.reference)
    return entries


def _spec(tensor: dict) -> dict:
    quantized = tensor["dtype"] != "float32"
    return {
        "dtype": tensor["dtype"],
        "shape": tensor["shape"],
        "scale": tensor["scale"] if quantized else None,
        "zero_point": tensor["zeroPoint"] if quantized else None,
    }


# --- reports --------------------------------------------------------------------------------------


def heading(entry: dict) -> str:
    machine = entry["machine"]
    browser = machine["browser"]
    runtime = browser["runtime"]
    return (
        f"{browser['product']} headless, LiteRT.js {machine['versions']['litertjs']} "
        f"({runtime['variant']}, {runtime['threads']} thread), on {machine['cpu']}, {machine['cores']} cores, "
        f"load average {machine['loadavg_1m_start']} -> {machine['loadavg_1m_end']}"
    )


TABLE_HEADER = [
    "model",
    "size KB",
    "input",
    "top-1 %",
    "Δpp",
    "LiteRT agree %",
    "same raw %",
    "max |Δ|",
    "p50 µs",
    "p90 µs",
    "p99 µs",
    "p50 x",
    "invoke p50 µs",
    "load ms",
]


def table(entry: dict) -> tuple[list[str], list[list[str]]]:
    def row(name: str, m: dict) -> list[str]:
        ratios = m.get("ratios_to_reference") or {}
        return [
            name,
            f"{m['size_bytes'] / 1024:.1f}",
            m["input"]["dtype"],
            f"{100 * m['accuracy']:.2f}",
            fmt(ratios.get("accuracy_delta_pp"), "{:+.2f}"),
            f"{100 * m['litert']['agreement']:.2f}",
            f"{100 * m['litert']['identical_outputs']:.2f}",
            f"{m['litert']['max_abs_diff']:.4g}",
            f"{m['latency_us']['p50']:.1f}",
            f"{m['latency_us']['p90']:.1f}",
            f"{m['latency_us']['p99']:.1f}",
            fmt(ratios.get("p50_latency"), "{:.3f}"),
            f"{m['invoke_us']['p50']:.1f}",
            f"{m['load_ms']:.1f}",
        ]

    return TABLE_HEADER, model_rows(entry["models"], row)


def notes(entry: dict) -> list[str]:
    machine, data, config = entry["machine"], entry["data"], entry["config"]
    timer = machine["browser"]["timer"]
    return [
        f"reference: {entry['reference']}; {config['runs']} timed rounds after {config['warmup']} warm-up, "
        f"models interleaved; LiteRT agree / same raw = argmax / all 10 raw outputs equal to the host LiteRT's "
        f"on the same images; timer: performance.now(), step {timer['resolution_us']:.1f} µs"
        f"{' (cross-origin isolated)' if timer['cross_origin_isolated'] else ' (not isolated: coarse)'}.",
        "",
        f"Data: {data['source'] or 'unknown source'}, split {data['split'] or '-'}, n = {data['n']}. "
        f"CPU instruction sets: {isa_line(machine)}. {machine['browser']['user_agent']}.",
    ]


def summary(entry: dict) -> list[list[str]]:
    cpu = f"{entry['machine']['cpu_arch']}, LiteRT.js WASM"
    models, reference = entry["models"], entry["reference"]
    ref = models.get(reference, {"error": "not measured"})
    return [summary_row(entry["target"], cpu, name, m, ref) for name, m in models.items() if name != reference]


def verdict(entry: dict) -> str:
    models, reference = entry["models"], entry["reference"]
    name = "int8" if "int8" in models and reference != "int8" else next((n for n in models if n != reference), None)
    ref = models.get(reference)
    if ref is None or "error" in ref:
        return f"{reference} did not run in the browser ({(ref or {}).get('error', 'not measured')})"
    if name is None:
        return f"only {reference} measured in the browser: p50 {ref['latency_us']['p50']:.1f} µs"
    m = models[name]
    if "error" in m:
        return f"{name} did not run in the browser ({m['error']})"
    r = m["ratios_to_reference"]
    ratio = r["p50_latency"]
    faster = f"neither (within {SAME_SPEED:.0%})" if abs(ratio - 1) <= SAME_SPEED else name if ratio < 1 else reference
    return (
        f"in LiteRT.js {name} reads {100 * m['accuracy']:.2f}% vs {reference}'s {100 * ref['accuracy']:.2f}% "
        f"({r['accuracy_delta_pp']:+.2f} pp) and gives the host LiteRT's digit on "
        f"{100 * m['litert']['agreement']:.2f}% of {m['n']} images; p50 {m['latency_us']['p50']:.1f} vs "
        f"{ref['latency_us']['p50']:.1f} µs an image ({r['p50_latency']:.2f}x): faster in the browser: {faster}"
    )
