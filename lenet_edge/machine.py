"""What machine a figure was measured on: CPU identity, the instruction sets that decide int8 speed, load.

int8 against float32 is a property of the CPU as much as of the model: on
three x86 CPUs XNNPACK's int8 LeNet-5 took 1.01x, 1.65x and 3.5x the float
latency (AVX-512 VNNI, AVX2 only, AMX). So every result carries the CPU's
model, architecture and the flags below. Only the standard library and numpy:
the same probe describes a remote device.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

# The instruction sets that decide int8 (and float) inference speed, as /proc/cpuinfo names them.
ISA_FLAGS = {
    "x86_64": ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8"),
    "aarch64": ("asimd", "asimddp", "i8mm", "sve", "sve2", "bf16"),
}
ISA_NAMES = {  # how a report spells them
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_int8": "AMX-INT8",
    "asimd": "NEON",
    "asimddp": "dot product (asimddp)",
    "i8mm": "int8 matrix multiply (i8mm)",
    "sve": "SVE",
    "sve2": "SVE2",
    "bf16": "BF16",
}
INT8_DOT = {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}  # int8 dot-product hardware


def cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's `key: value` lines (Linux), else {}."""
    info: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in info:
                    info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_identity(info: dict[str, str] | None = None, arch: str | None = None) -> dict:
    """`{"cpu": model, "cpu_arch", "cpu_isa": [flags present, in ISA_FLAGS order], "cpu_isa_checked": [looked for]}`."""
    info = cpuinfo() if info is None else info
    arch = arch or platform.machine() or "unknown"
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch.lower(), arch)
    flags = set((info.get("flags") or info.get("Features") or "").split())
    checked = ISA_FLAGS.get(arch, ())
    model = info.get("model name") or info.get("Hardware") or info.get("Model")
    if not model and "CPU part" in info:  # arm: implementer and part numbers only
        model = f"CPU implementer {info.get('CPU implementer', '?')} part {info['CPU part']}"
    model = model or platform.processor() or "unknown"
    if "cpu family" in info:  # x86: a virtual machine often shows only "AMD EPYC"; family/model tell the generation
        model += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return {
        "cpu": model,
        "cpu_arch": arch,
        "cpu_isa": [flag for flag in checked if flag in flags],
        "cpu_isa_checked": list(checked),
    }


def isa_line(machine: dict) -> str:
    """One line for a report, e.g. 'x86_64, AVX2, FMA; no AVX-512 VNNI, AVX-VNNI, AMX-INT8'.

    Names what the CPU has of `ISA_FLAGS` and which int8 dot-product instructions it lacks.
    """
    have = machine.get("cpu_isa") or []
    missing = [f for f in machine.get("cpu_isa_checked") or [] if f in INT8_DOT and f not in have]
    text = ", ".join([machine.get("cpu_arch") or "unknown architecture", *(ISA_NAMES.get(f, f) for f in have)])
    return text + (f"; no {', '.join(ISA_NAMES.get(f, f) for f in missing)}" if missing else "")


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info(loadavg_start: float | None, versions: dict[str, str]) -> dict:
    """The machine record of a benchmark: CPU identity, cores, governor, load, Python, timer, peak RSS, versions."""
    clock = time.get_clock_info("perf_counter")
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    except ImportError:  # Windows
        peak = None
    return {
        **cpu_identity(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_governor": _read_first_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "loadavg_1m_start": loadavg_start,
        "loadavg_1m_end": loadavg(),
        "os": os_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "timer": {
            "name": "time.perf_counter_ns",
            "resolution_ns": clock.resolution * 1e9,
            "overhead_ns_p50": timer_overhead_ns(),
        },
        "peak_rss_kb": peak,
        "versions": versions,
    }


def os_name(path: str = "/etc/os-release") -> str:
    """The distribution's name as it gives it (PRETTY_NAME), else the kernel's name and release."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "PRETTY_NAME" and value.strip('"'):
                    return value.strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}".strip() or "unknown"


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.readline().strip() or None
    except OSError:
        return None


def timer_overhead_ns(samples: int = 10_000) -> float:
    """Median cost of one back-to-back perf_counter_ns pair: the floor under every timing."""
    clock = time.perf_counter_ns
    deltas = np.empty(samples, dtype=np.int64)
    for i in range(samples):
        t0 = clock()
        deltas[i] = clock() - t0
    return float(np.median(deltas))


def runtime_label(versions: dict) -> str:
    """The TFLite runtime the target ran: LiteRT's wheel on the host, either wheel on a device."""
    for key, name in (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")):
        if versions.get(key) not in (None, "not installed"):
            return f"{name} {versions[key]}"
    return "no TFLite runtime recorded"
