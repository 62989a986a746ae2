"""`bench --on qemu:CORE[/KERNELS]`: the int8 model as Cortex-M firmware, built here and run in QEMU.

For each int8 model of the run (a run's teacher and mixed model stay out, as
in TFLM on the host):

1. TFLM is compiled from the tree `--tflm DIR` / `$TFLM_DIR` names, only what
   the model's op resolver needs, for the core and kernel set (`mcu.build`;
   the library is cached, so a second build only links);
2. the firmware (the model array as exported, metadata included, `micro_ops.h`'s
   resolver, `mcu/bench_main.cc`, `mcu/startup.c`, `mcu/mps2.ld`) is linked,
   and its flash and RAM read from the ELF and the map file;
3. QEMU's MPS2 board for the core runs it with semihosting: the digits go in
   as one file of int8 inputs (quantized here as every runtime does), each
   digit's 10 int8 outputs come back, with the SysTick ticks of its Invoke();
4. the outputs are compared with TFLM-in-Python's and LiteRT's on the same
   digits (argmax and raw values), and the ticks turned into instructions.

Instructions: QEMU runs with `-icount shift=0`, so its virtual clock advances
exactly 1 ns per instruction executed; SysTick counts that clock. The firmware
times a loop of a known instruction count with the same counter, which turns
ticks into instructions without assuming the board's clock. Instructions are
not cycles: a real core stalls on flash wait states, loads and branches.

A missing toolchain, tree, CMSIS-NN or QEMU, a compile or link error, a
firmware that hangs (timeout) or faults: a `TargetError` naming what is
missing and how to get it; the other targets are still measured. Build trees
go to a temporary directory unless `--keep-build DIR` names one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .config import QemuConfig
from .errors import LenetEdgeError
from .fileio import sha256_file
from .harness import SCHEMA_VERSION, accuracy_stats, data_sha256, output_agreement
from .machine import loadavg, machine_info
from .report import model_rows
from .targets import TargetError

PREFIX = "qemu:"
QEMU = "qemu-system-arm"
QEMU_INSTALL = "apt-get install qemu-system-arm"
SAMPLE_SEED = 0  # a --qemu-sample draws its digits in this seed's order
ARENA_MARGIN = 0.25  # kArenaSize = the minimum TFLM allocates the model in + this, as export --micro writes it
ARENA_SYMBOL = "_ZN12_GLOBAL__N_112tensor_arenaE"  # bench_main.cc's tensor_arena (anonymous namespace)
MODEL_OBJECT = "lenet5_int8.o"
# Parts an embedded engineer plans with: (name, flash bytes, RAM bytes)
PARTS = (
    ("a Cortex-M0+ part with 64 KB flash / 20 KB RAM", 64 * 1024, 20 * 1024),
    ("an STM32L4-class Cortex-M4 part with 256 KB flash / 64 KB RAM", 256 * 1024, 64 * 1024),
    ("a Cortex-M7 part with 1 MB flash / 256 KB RAM", 1024 * 1024, 256 * 1024),
)
METHOD = {
    "runtime": "TensorFlow Lite Micro compiled for the core (arm-none-eabi-gcc -Os, newlib-nano, semihosting), "
    "the model's ops only, run in qemu-system-arm on the core's MPS2 board; the model array is the .tflite as "
    "exported (metadata included), the arena export --micro's kTensorArenaSize",
    "outputs": "each digit's 10 int8 outputs read back from the firmware; litert / tflm = agreement with LiteRT "
    "on this machine / TFLM-in-Python on the same digits (argmax, all 10 raw outputs equal, largest difference)",
    "instructions": "per Invoke(): QEMU -icount shift=0 (1 ns of virtual time per instruction) read through "
    "SysTick, calibrated in the firmware by a loop of known instruction count; instructions, not cycles",
    "flash_bytes": "vectors + text + rodata + exception index + data's initial values of the linked ELF "
    "(arm-none-eabi-size); split by the map file into the model array, TFLM (runtime, kernels, CMSIS-NN) "
    "and the application (start-up, bench program, C library)",
    "ram_bytes": "data + bss (the tensor arena included) + the heap the program used + the peak stack "
    "(painted at reset, measured after the run)",
}


class RunError(LenetEdgeError):
    """The firmware did not run to its end in QEMU: missing, hung, faulted (one line)."""


@dataclass(frozen=True)
class QemuTarget:
    """One core and kernel set under QEMU: `qemu:cortex-m4`, `qemu:cortex-m4/reference`."""

    url: str
    core: str
    kernels: str
    kind: ClassVar[str] = "qemu"
    local: ClassVar[bool] = True  # QEMU runs on this machine's CPU: after the host, alone


def parse_target(spec: str) -> QemuTarget:
    """`qemu:CORE[/KERNELS]` -> QemuTarget (KERNELS: cmsis-nn, the default, or reference).

    Raises:
        ValueError: an unknown core or kernel set (with the ones there are).
    """
    from .mcu.build import CORES, KERNEL_SETS

    body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else ""
    core, _, kernels = body.partition("/")
    kernels = kernels or KERNEL_SETS[0]
    if core not in CORES or kernels not in KERNEL_SETS:
        raise ValueError(
            f"{spec!r}: expected qemu:CORE[/KERNELS], CORE one of {', '.join(CORES)}, "
            f"KERNELS one of {', '.join(KERNEL_SETS)} (default {KERNEL_SETS[0]})"
        )
    url = f"{PREFIX}{core}" + ("" if kernels == KERNEL_SETS[0] else f"/{kernels}")
    return QemuTarget(url, core, kernels)


def default_cache_dir() -> Path:
    """Where compiled TFLM libraries are kept: `tflm/` in lenet-edge's cache ($LENET_EDGE_CACHE, ~/.cache/...)."""
    if os.environ.get("LENET_EDGE_CACHE"):
        return Path(os.environ["LENET_EDGE_CACHE"]).expanduser() / "tflm"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lenet-edge" / "tflm"


def firmware_models(job) -> dict[str, Path]:
    """The job's models the firmware runs: int8 in and out, neither a run's teacher nor its mixed model."""
    from .manifest import CPU_ONLY, REFERENCE_ONLY
    from .runtimes.litert import inspect_tflite

    chosen = {}
    for name, path in job.models.items():
        if name in REFERENCE_ONLY + CPU_ONLY:
            continue
        info = inspect_tflite(path)
        if info["inputs"][0]["dtype"] == "int8" and info["outputs"][0]["dtype"] == "int8":
            chosen[name] = path
    return chosen


def measure(target: QemuTarget, job, say) -> dict:
    """Build the firmware for each int8 model, run it in QEMU on the job's digits, and read its figures.

    Raises:
        TargetError: no toolchain / tree / CMSIS-NN / QEMU, a build error, a firmware that hung or faulted.
    """
    from .mcu import build

    config = job.options.get("qemu") or QemuConfig()
    try:
        tools = build.find_toolchain()
        tree = build.check_tree(Path(config.tflm) if config.tflm else None, target.kernels)
    except build.BuildError as exc:
        raise TargetError(str(exc)) from None
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise TargetError(f"no {QEMU} on PATH: {QEMU_INSTALL}")
    models = firmware_models(job)
    if not models:
        raise TargetError("no int8 model to build firmware for (lenet-edge export --int8)")
    core = build.CORES[target.core]
    index = _sample(len(job.images), config.sample)
    images, labels = job.images[index], np.asarray(job.labels)[index]
    loadavg_start = loadavg()
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    entries = {}
    with _build_root(config.keep_build) as root:
        for name, path in models.items():
            try:
                entries[name] = _measure_model(
                    name, path, job, index, images, labels, core, target.kernels, tree, tools, qemu, cache,
                    root / f"{target.core}-{target.kernels}-{name}", config, say,
                )  # fmt: skip
            except (build.BuildError, RunError) as exc:
                raise TargetError(f"{name}: {exc}") from None
    qemu_version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    machine = machine_info(loadavg_start, {"qemu": qemu_version, "gcc": tools.version})
    machine["qemu"] = {"board": core.machine, "core": core.name, "kernels": target.kernels, "qemu": qemu_version}
    reference_raw = job.litert_outputs(job.reference)[index] if job.reference in job.models else None
    return {
        "schema_version": SCHEMA_VERSION,
        "ok": True,
        "reference": job.reference,
        "reference_accuracy": None if reference_raw is None else float((reference_raw.argmax(-1) == labels).mean()),
        "data": {**job.data_info, "n": len(images), "sha256": data_sha256(images, labels)},
        "machine": machine,
        "config": {**dataclasses.asdict(config), "core": core.name, "kernels": target.kernels, "opt": build.OPT},
        "method": METHOD,
        "models": entries,
    }


def _sample(n: int, sample: int | None) -> np.ndarray:
    if sample is None or sample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(n, sample, replace=False))


class _build_root:
    """The directory build trees go in: `keep` (kept), or a temporary one removed afterwards."""

    def __init__(self, keep: str | None):
        self.keep = keep
        self._tmp = None

    def __enter__(self) -> Path:
        if self.keep:
            Path(self.keep).mkdir(parents=True, exist_ok=True)
            return Path(self.keep)
        self._tmp = tempfile.TemporaryDirectory(prefix="lenet-edge-firmware-")
        return Path(self._tmp.name)

    def __exit__(self, *exc):
        if self._tmp is not None:
            self._tmp.cleanup()


def _measure_model(name, path, job, index, images, labels, core, kernels, tree, tools, qemu, cache, build_dir,
                   config, say) -> dict:  # fmt: skip
    from .carray import C_NAME, c_array
    from .firmware import arena_size, resolver_header
    from .mcu import build
    from .runtimes import open_model
    from .runtimes.micro import TFLM_OPS, min_arena_bytes, read_model

    data, info = read_model(path)
    ops = list(dict.fromkeys(op["op"] for op in info["ops"]))
    methods = [TFLM_OPS[op] for op in ops]
    start = time.monotonic()
    library = build.build_library(tree, core, kernels, methods, cache, tools, config.jobs, say)
    quant = {side: info[f"{side}s"][0] for side in ("input", "output")}
    header, source = c_array(data, C_NAME, quant=quant)
    minimum = min_arena_bytes(data)
    arena = arena_size(minimum, ARENA_MARGIN)
    handle = open_model(data, "tflm", arena_size=max(arena, 1 << 16))
    inputs = handle.to_input(images).reshape(len(images), -1).astype(np.int8)
    settings = (
        "// The bench program's sizes (written by lenet-edge bench --on qemu:...).\n#pragma once\n"
        f"constexpr int kArenaSize = {arena};\nconstexpr unsigned kInputBytes = {inputs.shape[1]};\n"
        "constexpr unsigned kOutputBytes = 10;\n"
    )
    files = {
        f"{C_NAME}.h": header,
        f"{C_NAME}.cc": source,
        "micro_ops.h": resolver_header(ops),
        "bench_settings.h": settings,
    }
    if build_dir.exists():
        shutil.rmtree(build_dir)
    elf = build.build_firmware(build_dir, tree, core, kernels, library, tools, files, config.jobs)
    build_s = time.monotonic() - start
    figures = build.image_figures(tools, elf, MODEL_OBJECT, library, ARENA_SYMBOL)
    say(f"{name}: firmware {figures['flash_bytes']:,} B flash; {len(images)} digits in {QEMU} -M {core.machine}")
    run = run_firmware(qemu, core, elf, inputs, config.timeout)
    raw = run["outputs"]
    python_tflm = _tflm_outputs(job, name, handle, index)
    ram = figures["data_bytes"] + figures["bss_bytes"] + run["heap_used"] + run["stack_peak"]
    return {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "runtime": "tflm-firmware",
        "ops": ops,
        **accuracy_stats(raw.argmax(-1), labels.astype(np.int64)),
        "litert": output_agreement(raw, job.litert_outputs(name)[index]),
        "tflm": output_agreement(raw, python_tflm),
        "image": {**figures, "ram_bytes": ram},
        "arena_size_bytes": arena,
        "arena_min_host_bytes": minimum,
        "arena_used_bytes": run["arena_used"],
        "stack_peak_bytes": run["stack_peak"],
        "heap_used_bytes": run["heap_used"],
        "instructions": run["instructions"],
        "build": {
            "library_sources": len(library.sources),
            "library_cached": library.cached,
            "library_build_s": round(library.build_s, 1),
            "build_s": round(build_s, 1),
        },
        "qemu_s": round(run["seconds"], 1),
    }


def _tflm_outputs(job, name: str, handle, index: np.ndarray) -> np.ndarray:
    """TFLM-in-Python's raw outputs of model `name` on the job's images `index`, once per job (cores share it)."""
    cache = job.__dict__.setdefault("_tflm_firmware", {})
    key = (name, index.tobytes())
    if key not in cache:
        cache[key] = handle.raw_all(job.images[index])
    return cache[key]


def run_firmware(qemu: str, core, elf: Path, inputs: np.ndarray, timeout: float) -> dict:
    """Run `elf` in QEMU on `inputs` (N, bytes) int8: its outputs, instructions per Invoke() and memory use.

    Raises:
        RunError: QEMU failed, the firmware hung (`timeout` seconds), faulted or reported an error.
    """
    folder = elf.parent
    (folder / "digits.bin").write_bytes(b"LEDG" + struct.pack("<I", len(inputs)) + inputs.tobytes())
    out = folder / "outputs.bin"
    out.unlink(missing_ok=True)
    command = [qemu, "-M", core.machine, "-nographic", "-monitor", "none", "-serial", "null",
               "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]  # fmt: skip
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunError(f"{QEMU} -M {core.machine}: the firmware did not finish in {timeout:.0f} s (hung?)") from None
    seconds = time.monotonic() - start
    lines = done.stdout.splitlines()
    fault = [line for line in (lines + done.stderr.splitlines()) if "HARD FAULT" in line]
    if fault:
        raise RunError(f"the firmware stopped on a fault in {QEMU} -M {core.machine}: {fault[0].strip()}")
    errors = [line for line in lines if line.startswith("lenet-edge error")]
    if errors:
        raise RunError(f"the firmware reported: {errors[0][len('lenet-edge error ') :]}")
    if f"lenet-edge done {len(inputs)}" not in lines:
        last = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[-1]
        raise RunError(f"{QEMU} -M {core.machine} ended before the firmware finished: {last}")
    values = dict(line.split(" ", 1) for line in lines if " " in line and not line.startswith("lenet-edge"))
    record = np.dtype([("outputs", "i1", (10,)), ("pad", "u1", (2,)), ("ticks", "<u4")])
    got = np.frombuffer(out.read_bytes(), record)
    if len(got) != len(inputs):
        raise RunError(f"outputs.bin has {len(got)} records for {len(inputs)} digits")
    per_tick = int(values["calibration_instructions"]) / (
        int(values["calibration_ticks"]) - int(values["calibration_empty_ticks"])
    )
    instructions = got["ticks"].astype(np.float64) * per_tick
    return {
        "outputs": got["outputs"].copy(),
        "arena_used": int(values["arena_used"]),
        "stack_peak": int(values["stack_peak"]),
        "heap_used": int(values["heap_used"]),
        "instructions": {
            "mean": round(float(instructions.mean())),
            "p50": round(float(np.median(instructions))),
            "min": round(float(instructions.min())),
            "max": round(float(instructions.max())),
            "resolution": round(per_tick, 3),  # instructions per SysTick tick
        },
        "seconds": seconds,
    }


# --- reports --------------------------------------------------------------------------------------


def _kb(n: int) -> str:
    return f"{n / 1024:.1f}"


def heading(entry: dict) -> str:
    machine, config = entry["machine"], entry["config"]
    return (
        f"{config['core']} ({config['kernels']} kernels) firmware in {machine['qemu']['qemu']}, "
        f"-M {machine['qemu']['board']}, built with {machine['versions']['gcc']} {config['opt']}; "
        f"on {machine['cpu']}, {machine['cores']} cores, load average {machine['loadavg_1m_start']} -> "
        f"{machine['loadavg_1m_end']}"
    )


TABLE_HEADER = [
    "model",
    "kernels",
    "flash KB",
    "model KB",
    "TFLM KB",
    "app KB",
    "RAM KB",
    "arena KB",
    "arena used KB",
    "instructions/digit",
    "digits",
    "top-1 %",
    "LiteRT agree %",
    "TFLM agree %",
    "raw = LiteRT %",
    "raw = TFLM %",
]


def table(entry: dict) -> tuple[list[str], list[list[str]]]:
    def row(name: str, m: dict) -> list[str]:
        image = m["image"]
        return [
            name,
            entry["config"]["kernels"],
            _kb(image["flash_bytes"]),
            _kb(image["flash_model_bytes"]),
            _kb(image["flash_tflm_bytes"]),
            _kb(image["flash_application_bytes"]),
            _kb(image["ram_bytes"]),
            _kb(m["arena_size_bytes"]),
            _kb(m["arena_used_bytes"]),
            f"{m['instructions']['p50']:,}",
            str(m["n"]),
            f"{100 * m['accuracy']:.2f}",
            f"{100 * m['litert']['agreement']:.2f}",
            f"{100 * m['tflm']['agreement']:.2f}",
            f"{100 * m['litert']['identical_outputs']:.2f}",
            f"{100 * m['tflm']['identical_outputs']:.2f}",
        ]

    return TABLE_HEADER, model_rows(entry["models"], row)


def notes(entry: dict) -> list[str]:
    data = entry["data"]
    lines = [
        "flash = text + rodata + data's initial values (model / TFLM runtime + kernels / application from the map "
        "file); RAM = data + bss (arena included) + heap used + peak stack; instructions per Invoke() counted "
        "with QEMU -icount through SysTick (instructions, not cycles: no per-core cycle estimate is given); "
        "raw = share of digits whose 10 int8 outputs all equal LiteRT's (XNNPACK rounds some a step or two "
        "apart) / TFLM-in-Python's.",
        "",
        f"Data: {data['source'] or 'unknown source'}, split {data['split'] or '-'}, n = {data['n']}.",
    ]
    for name, m in entry["models"].items():
        if "error" not in m:
            lines += ["", f"{name}: {fits_line(m)}."]
    return lines


def fits(m: dict) -> list[dict]:
    """Each part of `PARTS` with this firmware's flash and RAM margins (negative: it does not fit)."""
    image = m["image"]
    return [
        {"part": part, "flash_left": flash - image["flash_bytes"], "ram_left": ram - image["ram_bytes"]}
        for part, flash, ram in PARTS
    ]


def fits_line(m: dict) -> str:
    """'fits X with A KB flash and B KB RAM to spare; does not fit Y (flash short by C KB)'."""
    words = []
    for fit in fits(m):
        if fit["flash_left"] >= 0 and fit["ram_left"] >= 0:
            spare = f"{_kb(fit['flash_left'])} KB flash and {_kb(fit['ram_left'])} KB RAM to spare"
            words.append(f"fits {fit['part']} with {spare}")
        else:
            short = [
                f"{what} short by {_kb(-left)} KB"
                for what, left in (("flash", fit["flash_left"]), ("RAM", fit["ram_left"]))
                if left < 0
            ]
            words.append(f"does not fit {fit['part']} ({', '.join(short)})")
    return "; ".join(words)


def summary(entry: dict) -> list[list[str]]:
    cpu = f"{entry['config']['core']} ({entry['config']['kernels']}), QEMU"
    rows = []
    ref = entry.get("reference_accuracy")
    for name, m in entry["models"].items():
        if "error" in m:
            rows.append([entry["target"], cpu, name, f"ERROR: {m['error']}"])
            continue
        delta = "-" if ref is None else f"{100 * (m['accuracy'] - ref):+.2f}"
        ref_text = "-" if ref is None else f"{100 * ref:.2f}"
        top1 = f"{100 * m['accuracy']:.2f}"
        rows.append([entry["target"], cpu, name, str(m["n"]), top1, ref_text, delta, "-", "-", "-"])
    return rows


def verdict(entry: dict) -> str:
    models = {n: m for n, m in entry["models"].items() if "error" not in m}
    if not models:
        return "no model ran on the firmware"
    name = "int8" if "int8" in models else next(iter(models))
    m = models[name]
    image = m["image"]
    return (
        f"{name} on {entry['config']['core']} ({entry['config']['kernels']}): {_kb(image['flash_bytes'])} KB flash, "
        f"{_kb(image['ram_bytes'])} KB RAM (arena {_kb(m['arena_size_bytes'])} KB, "
        f"{_kb(m['arena_used_bytes'])} KB used), {m['instructions']['p50']:,} instructions per digit; "
        f"top-1 equal to LiteRT's on {100 * m['litert']['agreement']:.2f}% and to TFLM's on "
        f"{100 * m['tflm']['agreement']:.2f}% of {m['n']} digits; {fits_line(m)}"
    )
