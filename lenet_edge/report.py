"""Bench reports: the terminal table, bench.md, the verdicts, and the plots (latency boxes, confusion matrices).

Everything here reads a results dict as `benchmark.bench_models` or
`benchmark.bench_run` returns it and writes nothing but the files
`write_results` names. With several targets (`bench --on`), each gets its own
table, then one summary compares every model with the reference across
targets; every report ends with a verdict per target (`verdict`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .fileio import atomic_write_json, atomic_write_text, sweep_temporaries
from .machine import isa_line, runtime_label
from .manifest import PERSIAN_DIGITS
from .plots import figure, save_png
from .runtimes.base import NUM_CLASSES
from .verdict import LITERT_KINDS, dot_product, verdict


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

    def row(name: str, m: dict) -> list[str]:
        ratios = m.get("ratios_to_reference") or {}
        lat = m["latency_us"]
        xnn = m["xnnpack"]
        return [
            name,
            f"{m['size_bytes'] / 1024:.1f}",
            fmt(ratios.get("size"), "{:.3f}"),
            f"{100 * m['accuracy']:.2f}",
            fmt(ratios.get("accuracy_delta_pp"), "{:+.2f}"),
            fmt(m.get("agreement_with_reference"), "{:.2%}", strip="%"),
            fmt(m.get("flips"), "{}"),
            f"{lat['p50']:.1f}",
            f"{lat['p90']:.1f}",
            f"{lat['p99']:.1f}",
            fmt(ratios.get("p50_latency"), "{:.3f}"),
            *[fmt(m["throughput_ips"].get(b), "{:,.0f}") for b in batches],
            (f"{xnn['partitions']} part, {xnn['ops_delegated']}/{xnn['ops_total']} ops" if xnn["delegated"] else "off"),
        ]

    return header, model_rows(results["models"], row)


def model_rows(models: dict, row) -> list[list[str]]:
    """A table's rows, one per model: `row(name, result)`, or the name and its error where the model gave none."""
    return [[name, "ERROR: " + m["error"]] if "error" in m else row(name, m) for name, m in models.items()]


def fmt(value, spec: str, strip: str = "") -> str:
    """`value` formatted by `spec` (trailing `strip` characters removed), or "-" where there is none."""
    return "-" if value is None else spec.format(value).rstrip(strip)


TFLM_NOTE = (
    "TFLM timing is TensorFlow Lite Micro's portable reference kernels compiled for this host: it proves "
    "correctness and memory, not microcontroller speed"
)


def _micro_rows(section: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the TensorFlow Lite Micro table (`results["tflm"]`)."""
    header = [
        "model",
        "top-1 %",
        "LiteRT agree %",
        "same raw %",
        "max |Δ|",
        "built-in agree %",
        "built-in max |Δ|",
        "ref-kernel agree %",
        "ref-kernel max |Δ|",
        "arena B",
        "flash B",
        "MACs",
        "p50 µs",
        "p50 x",
    ]

    def row(name: str, m: dict) -> list[str]:
        litert, builtin, ref = (m.get(key) or {} for key in ("litert", "litert_builtin", "litert_reference"))
        return [
            name,
            f"{100 * m['accuracy']:.3f}",
            fmt(litert.get("agreement"), "{:.3%}", strip="%"),
            fmt(litert.get("identical_outputs"), "{:.2%}", strip="%"),
            fmt(litert.get("max_abs_diff"), "{:.4g}"),
            fmt(builtin.get("agreement"), "{:.3%}", strip="%"),
            fmt(builtin.get("max_abs_diff"), "{:.4g}"),
            fmt(ref.get("agreement"), "{:.3%}", strip="%"),
            fmt(ref.get("max_abs_diff"), "{:.4g}"),
            f"{m['min_arena_bytes']:,}",
            f"{m['flash_bytes']:,}",
            f"{m['macs_total']:,}",
            f"{m['latency_us']['p50']:.1f}",
            fmt((m.get("ratios_to_reference") or {}).get("p50_latency"), "{:.3f}"),
        ]

    return header, model_rows(section["models"], row)


def _micro_footer(section: dict) -> str:
    c = section["config"]
    return (
        f"TensorFlow Lite Micro: reference {section['reference']}; {c['runs']} timed rounds after {c['warmup']} "
        f"warm-up; arena B = the exact minimum tensor arena; flash B = the model's bytes; MACs = multiply-accumulates "
        f"per image; LiteRT agree / same raw = argmax / all 10 raw outputs equal to LiteRT's (as the main table "
        f"ran it) on the same images; built-in = against LiteRT's built-in kernels, without XNNPACK (XNNPACK rounds "
        f"int8 its own way, which can move an output a step or a few); ref-kernel = against LiteRT's reference "
        f"kernels, the code TFLM's kernels are ported from. "
        f"{TFLM_NOTE}."
    )


def _micro_layers(section: dict) -> list[str]:
    """Per-layer MACs of the first model TFLM ran (int8 first): the figure to multiply by cycles per MAC."""
    ok = {n: m for n, m in section["models"].items() if "error" not in m}
    if not ok:
        return []
    name = "int8" if "int8" in ok else next(iter(ok))
    layers = [layer for layer in ok[name]["macs"] if layer["macs"]]
    out = [f"MACs per layer ({name}; ops not listed count 0):", "", "| op | output shape | MACs |", "|---|---|---:|"]
    out += [f"| {layer['op']} | {'x'.join(map(str, layer['output_shape']))} | {layer['macs']:,} |" for layer in layers]
    return [*out, f"| total | | {ok[name]['macs_total']:,} |"]


def targets(results: dict) -> list[dict]:
    """The measured targets, host first: `results["targets"]`, or the results themselves (`bench_models`)."""
    return results.get("targets") or [{"target": "host", **results}]


def _fixed_width(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Aligned lines: the first `left` columns (names) left, numbers right; a short row (an error) runs on."""
    full = [r for r in rows if len(r) == len(header)]
    widths = [max(len(str(r[i])) for r in [header, *full]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append(line(r) if len(r) == len(header) else f"{r[0].ljust(widths[0])}  {'  '.join(r[1:])}")
    return out


def _markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    out = [
        "| " + " | ".join(c.replace("|", "\\|") for c in header) + " |",
        "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|",
    ]
    for r in rows:
        cells = r if len(r) == len(header) else [*r, *[""] * (len(header) - len(r))]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


def _headed(entries: list[dict]) -> bool:
    """A heading per target, unless the host is the only one (bench's report as it always was)."""
    return len(entries) > 1 or entries[0]["target"] != "host"


def format_table(results: dict) -> str:
    """The results for the terminal: a table per target, the cross-target summary, the verdicts."""
    from .benchmark import reading_lines

    entries = targets(results)
    out = []
    for entry in entries:
        if _headed(entries):
            out += ["", f"== {entry['target']}: {_machine_line(entry)}"]
        if entry.get("error"):
            out += [f"ERROR: {entry['error']}"]
        elif entry.get("kind") not in LITERT_KINDS:
            kind = _kind(entry)
            out += [*_fixed_width(*kind.table(entry)), *kind.notes(entry)]
        else:
            out += [*_fixed_width(*_rows(entry)), _footer(entry), *_precision_lines(entry)]
        out += reading_lines(entry)
        if "tflm" in entry:
            out += ["", *_fixed_width(*_micro_rows(entry["tflm"])), _micro_footer(entry["tflm"])]
    if len(entries) > 1:
        summary = _fixed_width(*_summary(entries), left=3)
        out += ["", f"== every model vs {results['reference']}, across targets", *summary]
    out += ["", "verdict:", *[f"  {e['target']}: {e.get('verdict') or verdict(e)}" for e in entries]]
    return "\n".join(out).lstrip("\n")


def format_markdown(results: dict) -> str:
    """bench.md: a table per target with the conditions it was measured under, the summary, the verdicts."""
    entries = targets(results)
    out = []
    for entry in entries:
        if _headed(entries):
            out += [f"## {entry['target']}", ""]
        out += _markdown_target(entry, _headed(entries)) + [""]
    if len(entries) > 1:
        summary = _markdown_table(*_summary(entries), left=3)
        out += [f"## Every model vs {results['reference']}, across targets", "", *summary]
        out += ["", SUMMARY_NOTE, ""]
    out += ["## Verdict" if _headed(entries) else "Verdict:", ""]
    out += [f"- {e['target']}: {e.get('verdict') or verdict(e)}" for e in entries]
    return "\n".join(out) + "\n"


def precision_summary(ops: list[str], kinds: list[str]) -> str:
    """The ops grouped by the type they compute in, in graph order: 'float32 (CONV_2D, ...) -> QUANTIZE ... -> int8'."""
    groups: list[tuple[str, list[str]]] = []
    for op, kind in zip(ops, kinds, strict=True):
        if "->" in kind:
            groups.append((f"{op} {kind}", []))
        elif groups and groups[-1][0] == kind:
            groups[-1][1].append(op)
        else:
            groups.append((kind, [op]))
    if len(groups) == 1:
        return f"{groups[0][0]} (all {len(ops)} ops)"
    return " -> ".join(f"{kind} ({', '.join(names)})" if names else kind for kind, names in groups)


def _precision_lines(entry: dict) -> list[str]:
    """Which ops of each model compute in which type, when a model mixes them (a mixed-precision export)."""
    models = {n: m for n, m in entry["models"].items() if "error" not in m and m.get("precision")}
    if all(len(set(m["precision"])) == 1 for m in models.values()):
        return []
    lines = ["", "Ops by the type they compute in (graph order):", ""]
    return lines + [f"- {name}: {precision_summary(m['ops'], m['precision'])}" for name, m in models.items()]


def _kind(entry: dict):
    """The module of a target kind that reports itself (see `targets`)."""
    from .targets import kind_module

    return kind_module(entry["kind"])


def _markdown_target(entry: dict, headed: bool = False) -> list[str]:
    if entry.get("error"):
        return [f"No result: {entry['error']}."]
    if entry.get("kind") not in LITERT_KINDS:
        kind = _kind(entry)
        return [f"{kind.heading(entry)}.", "", *_markdown_table(*kind.table(entry)), "", *kind.notes(entry)]
    machine, data = entry["machine"], entry["data"]
    return [
        *_markdown_table(*_rows(entry)),
        "",
        _footer(entry),
        "",
        f"Data: {data['source'] or 'unknown source'}, split {data['split'] or '-'}, n = {data['n']}"
        + (f", a sample (seed {data['sample_seed']}) of {data['sample_of']}" if data.get("sample_of") else "")
        + (f" (sha256 {data['sha256'][:12]})" if data.get("sha256") else "")
        + ". "
        f"Machine: {_machine_line(entry)}.",
        "",
        f"CPU instruction sets: {isa_line(machine)}.",
        "",
        "Latency is one image end to end (uint8 to the model's input type by one table lookup, set_tensor, "
        "invoke, get_tensor, argmax of the raw output); `p50 x` is the median over timing rounds of the "
        "per-round ratio to the reference, the models being interleaved round by round.",
        *_precision_lines(entry),
        *_reading_lines(entry),
        *_markdown_micro(entry, "###" if headed else "##"),
    ]


def _reading_lines(entry: dict) -> list[str]:
    from .benchmark import reading_lines

    return [text for line in reading_lines(entry) for text in ("", line + ".")]


def _markdown_micro(entry: dict, level: str) -> list[str]:
    """bench.md's TensorFlow Lite Micro section, when the target ran one (`level`: its heading's #s)."""
    if "tflm" not in entry:
        return []
    section = entry["tflm"]
    return [
        "",
        f"{level} TensorFlow Lite Micro",
        "",
        *_markdown_table(*_micro_rows(section)),
        "",
        _micro_footer(section),
        "",
        *_micro_layers(section),
    ]


def _machine_line(entry: dict) -> str:
    machine = entry.get("machine")
    if not machine:
        return "no result"
    if entry.get("kind") not in LITERT_KINDS:
        return _kind(entry).heading(entry)
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine.get('os') or machine.get('platform') or 'unknown OS'}, "
        f"Python {machine['python']}, {runtime_label(machine['versions'])}, "
        f"load average {machine['loadavg_1m_start']} -> {machine['loadavg_1m_end']}"
    )


SUMMARY_NOTE = (
    "`p50 x` is the model's p50 latency over the reference's on the same target, as the median of per-round "
    "ratios; top-1 is measured on each target's own images (`images`: a sample when `--remote-sample` was given)."
)


SUMMARY_HEADER = ["target", "CPU", "model", "images", "top-1 %", "ref top-1 %", "Δpp", "p50 µs", "ref p50 µs", "p50 x"]


def _summary(entries: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Each model against the reference, one row per target and model."""
    rows = []
    for entry in entries:
        if entry.get("error"):
            rows.append([entry["target"], f"ERROR: {entry['error']}"])
            continue
        if entry.get("kind") not in LITERT_KINDS:
            rows += _kind(entry).summary(entry)
            continue
        dot = dot_product(entry["machine"])
        cpu = ", ".join([entry["machine"]["cpu_arch"], *(dot or ["no int8 dot product"])])
        ref = entry["models"][entry["reference"]]
        rows += [
            summary_row(entry["target"], cpu, name, m, ref)
            for name, m in entry["models"].items()
            if name != entry["reference"]
        ]
    return SUMMARY_HEADER, rows


def summary_row(target: str, cpu: str, name: str, m: dict, ref: dict) -> list[str]:
    """One model against the reference on one target: a row of `SUMMARY_HEADER` (or an error row)."""
    if "error" in m or "error" in ref:
        return [target, cpu, name, f"ERROR: {(m if 'error' in m else ref)['error']}"]
    r = m["ratios_to_reference"]
    return [
        target,
        cpu,
        name,
        str(m["n"]),
        f"{100 * m['accuracy']:.2f}",
        f"{100 * ref['accuracy']:.2f}",
        f"{r['accuracy_delta_pp']:+.2f}",
        f"{m['latency_us']['p50']:.1f}",
        f"{ref['latency_us']['p50']:.1f}",
        f"{r['p50_latency']:.3f}",
    ]


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
    entries = targets(results)
    timed = {  # every target's models in one plot, "target: model" when there are several targets
        (f"{entry['target']}: {name}" if len(entries) > 1 else name): m
        for entry in entries
        for name, m in entry["models"].items()
        if "latency_samples_ns" in m  # a timed model (not an error; not a kind that counts instructions instead)
    }
    if timed:
        written["latency.png"] = _plot_latency(timed, out_dir / "latency.png")
    micro_ok = {n: m for n, m in results.get("tflm", {}).get("models", {}).items() if "error" not in m}
    if micro_ok:
        written["latency_tflm.png"] = _plot_latency(
            micro_ok, out_dir / "latency_tflm.png", "TFLM reference kernels on this host (not MCU speed)"
        )
    ok = {name: m for name, m in results["models"].items() if "error" not in m}  # the first target's
    for name, m in ok.items():
        file_name = f"confusion_{_safe_name(name)}.png"
        written[file_name] = _plot_confusion(name, m, out_dir / file_name)
    return written


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


WHISKERS = (1, 99)  # percentiles; samples outside them are not drawn (the title says how many)


def _plot_latency(models: dict, target: Path, runtime: str = "") -> Path:
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
    ax.set_xlabel("single-image latency, end to end (µs)" + (f": {runtime}" if runtime else ""))
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
