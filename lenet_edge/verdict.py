"""The verdict that ends every bench report: int8 against float32 on one target, and why, from its CPU.

The reasons are XNNPACK's coverage of the graph on that target's runtime,
then the CPU's int8 dot-product instructions, as measured for XNNPACK's int8
kernels in benchmarks/INT8_LAYERS.md.
"""

from __future__ import annotations

from .machine import INT8_DOT, ISA_NAMES, isa_line, runtime_label
from .manifest import REFERENCE_ONLY

LITERT_KINDS = (None, "host", "ssh")  # targets measured by `harness.measure` in LiteRT; others report themselves
SAME_SPEED = 0.03  # a p50 ratio within 3% of 1 is called a tie: below what repeated runs here resolve
KEEPS_ACCURACY_PP = 0.1  # a model to ship may read at most this many points fewer digits than the reference


def dot_product(machine: dict) -> list[str]:
    """The int8 dot-product instructions the CPU has, as reports name them."""
    return [ISA_NAMES.get(f, f) for f in machine.get("cpu_isa") or [] if f in INT8_DOT]


def verdict(entry: dict) -> str:
    """A few words on one target: int8 (else the first other model) against the reference, and why, from its CPU.

    Size and top-1 against the reference, the p50 latency ratio, which is the
    faster there, and the instruction sets behind it.
    """
    if entry.get("error"):
        return f"no result ({entry['error']})"
    if entry.get("kind") not in LITERT_KINDS:
        from .targets import kind_module

        return kind_module(entry["kind"]).verdict(entry)
    models, ref_name = entry["models"], entry["reference"]
    others = [name for name in models if name != ref_name]
    name = "int8" if "int8" in others else (others[0] if others else None)
    ref = models.get(ref_name)
    if ref is None:
        return "no model measured"
    if "error" in ref:
        return f"{ref_name} failed, nothing to compare with ({ref['error']})"
    if name is None:
        return f"only {ref_name} measured: top-1 {100 * ref['accuracy']:.2f}%, p50 {ref['latency_us']['p50']:.1f} µs"
    m = models[name]
    if "error" in m:
        return f"{name} failed ({m['error']})"
    r = m["ratios_to_reference"]
    if abs(r["p50_latency"] - 1) <= SAME_SPEED:
        faster = f"neither is clearly faster here (within {SAME_SPEED:.0%})"
    else:
        faster = f"{name if r['p50_latency'] < 1 else ref_name} is the faster here"
    return (
        f"{name} is {r['size']:.2f}x the size of {ref_name} ({m['size_bytes'] / 1024:.1f} vs "
        f"{ref['size_bytes'] / 1024:.1f} KB), top-1 {100 * m['accuracy']:.2f}% vs {100 * ref['accuracy']:.2f}% "
        f"({r['accuracy_delta_pp']:+.2f} pp) on {m['n']} images, p50 latency {r['p50_latency']:.2f}x "
        f"({m['latency_us']['p50']:.1f} vs {ref['latency_us']['p50']:.1f} µs): {faster}. "
        f"{_why(entry, name, r['p50_latency'])} (CPU: {isa_line(entry['machine'])}). {recommendation(entry)}"
    )


def recommendation(entry: dict) -> str:
    """Which model to ship on this target: the fastest (p50, and batch throughput) of those within
    `KEEPS_ACCURACY_PP` of the reference's top-1, with its size and speed against the reference."""
    models, ref_name = entry["models"], entry["reference"]
    ref = models[ref_name]

    def ratio(name: str, key: str) -> float:
        return 1.0 if name == ref_name else models[name]["ratios_to_reference"][key]

    keep = [
        name
        for name, m in models.items()
        if "error" not in m
        and name not in REFERENCE_ONLY  # a distillation teacher is a reference row, not a model to ship
        and (name == ref_name or m.get("ratios_to_reference"))
        and 100 * (ref["accuracy"] - m["accuracy"]) <= KEEPS_ACCURACY_PP
    ]
    best = min(keep, key=lambda name: ratio(name, "p50_latency"))
    text = (
        f"On this CPU ship {best}: the fastest of the models within {KEEPS_ACCURACY_PP} pp of {ref_name}'s top-1, "
        f"{ratio(best, 'size'):.2f}x its size, {ratio(best, 'p50_latency'):.2f}x its p50"
    )
    batch = str(max(entry["config"].get("batch_sizes") or [1]))
    rates = {name: (models[name].get("throughput_ips") or {}).get(batch) for name in keep}
    rates = {name: value for name, value in rates.items() if value}
    if batch != "1" and ref_name in rates:
        fastest = max(rates, key=rates.get)
        text += f"; at batch {batch}, {fastest} ({rates[fastest]:,.0f} img/s, {rates[fastest] / rates[ref_name]:.2f}x)"
    return text + "."


def _why(entry: dict, name: str, ratio: float) -> str:
    """Why `name` is as fast as it is against the reference there: XNNPACK's coverage first, then the CPU's ISA.

    The ISA notes are XNNPACK's int8 kernels as measured in benchmarks/INT8_LAYERS.md.
    """
    machine, arch = entry["machine"], entry["machine"].get("cpu_arch")
    dot = dot_product(machine)
    if not entry["config"]["xnnpack"]:
        return "XNNPACK off, so both ran LiteRT's built-in kernels, not the ones a phone or a PC would use"
    xnn, ref_xnn = entry["models"][name]["xnnpack"], entry["models"][entry["reference"]]["xnnpack"]
    if ref_xnn["delegated"] and xnn["ops_delegated"] < xnn["ops_total"]:
        runtime = runtime_label(machine["versions"])
        if not xnn["delegated"]:
            return f"XNNPACK did not take {name}'s graph in {runtime}: it ran on LiteRT's built-in kernels"
        left = xnn["ops_total"] - xnn["ops_delegated"]
        return f"XNNPACK left {left} of {name}'s {xnn['ops_total']} ops to the built-in kernels in {runtime}"
    if arch == "x86_64":
        if not dot:
            return (
                "AVX2 without VNNI: no int8 dot-product instruction, so XNNPACK's int8 kernels widen to 16 bits "
                "and its int8 first convolution is slow here"
            )
        if ratio < 1 - SAME_SPEED:
            return f"{' and '.join(dot)}: int8 dot products in one instruction"
        return (
            f"{' and '.join(dot)}: int8 dot products in one instruction, yet XNNPACK's int8 first convolution "
            "(one input channel) costs more than float's and gives back what the later layers gain"
        )
    if arch == "aarch64":
        if dot:
            return f"{' and '.join(dot)}: XNNPACK's int8 kernels multiply 4 bytes at a time"
        return "NEON without the dot-product extension: XNNPACK's int8 kernels widen to 16-bit multiplies here"
    return f"no int8 notes for the {arch or 'unknown'} architecture"
