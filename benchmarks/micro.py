"""The microcontroller target on Hoda: the int8 model as TFLM firmware on emulated Cortex-M4 and M7 cores.

    python benchmarks/micro.py [--data ../shared/data/hoda] [--run benchmarks/runs/lenet5] [--tflm ../shared/tflm]
                               [--reference-sample 2000]

1. `lenet-edge train` with default settings on Hoda (skipped when --run already holds a trained run), then
   `lenet-edge export --int8 --micro`;
2. `lenet-edge bench --on qemu:cortex-m4 --on qemu:cortex-m7 --split test`: CMSIS-NN firmware, every test digit;
3. `lenet-edge bench --on qemu:cortex-m4/reference --qemu-sample N`: TFLM's portable reference kernels
   (about 14x the instructions: a seeded sample of the test digits).

Rewrites benchmarks/MICRO.md (atomically) from the two bench.json files. Run artifacts go to benchmarks/runs/
(git-ignored: Hoda's licence); only figures land in MICRO.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from common import DEFAULT_HODA, HERE, ROOT, hoda_runs, portable, run_loaded

DEFAULT_TFLM = ROOT.parent / "shared" / "tflm"


HEADER = (
    "| core (board) | kernels | flash KB | model KB | TFLM KB | app KB | RAM KB | arena KB | arena used KB | "
    "peak stack KB | instructions/digit | digits | top-1 % | = LiteRT % | = TFLM % | raw = LiteRT % | "
    "raw = TFLM % | library build s | QEMU s |"
)


def kb(n: int) -> str:
    return f"{n / 1024:.1f}"


def rows(entries: list[dict], load: dict) -> list[str]:
    out = []
    for e in entries:
        if e.get("error"):
            out.append(f"| {e['target']} | ERROR: {e['error']} |")
            continue
        m = e["models"]["int8"]
        image, config = m["image"], e["config"]
        out.append(
            f"| {config['core']} ({e['machine']['qemu']['board']}) | {config['kernels']} | {kb(image['flash_bytes'])} "
            f"| {kb(image['flash_model_bytes'])} | {kb(image['flash_tflm_bytes'])} | "
            f"{kb(image['flash_application_bytes'])} | {kb(image['ram_bytes'])} | {kb(m['arena_size_bytes'])} | "
            f"{kb(m['arena_used_bytes'])} | {kb(m['stack_peak_bytes'])} | {m['instructions']['p50']:,} | "
            f"{m['n']:,} | {100 * m['accuracy']:.2f} | {100 * m['litert']['agreement']:.2f} | "
            f"{100 * m['tflm']['agreement']:.2f} | {100 * m['litert']['identical_outputs']:.2f} | "
            f"{100 * m['tflm']['identical_outputs']:.2f} | {m['build']['library_build_s']:.0f} | "
            f"{m['qemu_s']:.0f} |"
        )
    return out


def render(entries: list[dict], loads: list[dict], model_bytes: int, data: str) -> str:
    from lenet_edge.qemu import fits_line

    first = next(e for e in entries if not e.get("error"))
    machine = first["machine"]
    versions = machine["versions"]
    verdicts = [f"- **{e['target']}**: {e['verdict']}" for e in entries]
    parts = []
    for e in entries:
        if not e.get("error"):
            parts.append(f"- {e['config']['core']}, {e['config']['kernels']}: {fits_line(e['models']['int8'])}.")
    load_text = "; ".join(f"{name}: mean {load['mean']}, max {load['max']}" for name, load in loads)
    return f"""# The microcontroller target: LeNet-5 int8 as TFLM firmware on emulated Cortex-M cores

Regenerate with `python benchmarks/micro.py` (data: `{data}`). The default Hoda run's int8 model
({model_bytes:,} bytes with its TFLite metadata, embedded as exported) is built with TensorFlow Lite Micro
(only the model's 4 ops, and the CMSIS-NN functions they call) by `arm-none-eabi-gcc` {first["config"]["opt"]},
linked with newlib-nano and semihosting, and run in `qemu-system-arm` on every Hoda test digit (reference
kernels: a seeded sample). Every digit's 10 int8 outputs are read back and compared with LiteRT's and
TFLM-in-Python's on this machine.

{HEADER}
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows(entries, loads))}

- **flash** = vectors + text + rodata + exception index + the initial values of data, from `arm-none-eabi-size`
  on the linked ELF; split by the map file into the model array, TFLM (runtime, kernels and CMSIS-NN: every
  object from the library archive) and the application (start-up code, the bench program, newlib-nano with
  semihosting stdio: a product's own I/O replaces most of it).
- **RAM** = data + bss (the tensor arena included) + the heap the program used (newlib's stdio buffers) + the
  peak stack (painted at reset, read after the run). The arena is `kTensorArenaSize` of `export --micro`
  (the host's minimum + 25%); "arena used" is TFLM's `arena_used_bytes()` on the core.
- **instructions/digit**: instructions executed by one `Invoke()` (median over the digits), counted with QEMU's
  `-icount shift=0` (1 ns of virtual time per instruction; this Debian QEMU ships no TCG plugins) through SysTick,
  calibrated in the firmware by a loop of known instruction count. Instructions are not cycles: a real core adds
  flash wait states, load-use and branch stalls, and cache misses (M7); no documented per-core estimate is
  applied here.
- **= LiteRT / = TFLM**: share of digits whose top-1 equals LiteRT's / TFLM-in-Python's; **raw =**: share
  whose 10 int8 outputs are all identical (LiteRT's XNNPACK kernels round some outputs a step or two apart).
- Build and QEMU seconds are wall time on a shared machine (load average {load_text}); the library build is
  cached (a second build of the same core, kernels and ops only links).

## What fits where

{chr(10).join(parts)}

(The M0+ line is from these builds' sizes; an M0+ build (Armv6-M, no DSP instructions) would differ somewhat.)

## Verdict per target

{chr(10).join(verdicts)}

Machine: {machine["cpu"]}, {machine["cores"]} cores; {versions["qemu"]}; {versions["gcc"]}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_HODA, help="the Hoda folder (.cdb files)")
    parser.add_argument("--run", type=Path, default=None, help="run directory (default benchmarks/runs/lenet5)")
    parser.add_argument("--tflm", type=Path, default=DEFAULT_TFLM, help="the TFLM source tree")
    parser.add_argument("--reference-sample", type=int, default=2000, help="test digits for the reference kernels")
    args = parser.parse_args()
    runs_dir, log = hoda_runs(args.data, "micro.log")
    run_dir = args.run or runs_dir / "lenet5"
    env = {**os.environ, "LENET_EDGE_CACHE": str(runs_dir / "cache"), "TFLM_DIR": str(args.tflm)}
    if not (run_dir / "manifest.json").is_file():
        run_loaded(["train", "--data", str(args.data), "--dir", str(run_dir)], env, log)
    run_loaded(["export", "--dir", str(run_dir), "--int8", "--micro"], env, log)
    common = ["bench", "--dir", str(run_dir), "--split", "test", "--no-host", "--no-micro"]
    loads, entries = [], []
    for name, extra in (
        ("CMSIS-NN", ["--on", "qemu:cortex-m4", "--on", "qemu:cortex-m7"]),
        ("reference", ["--on", "qemu:cortex-m4/reference", "--qemu-sample", str(args.reference_sample)]),
    ):
        _, load = run_loaded([*common, *extra], env, log)
        loads.append((name, load))
        bench = json.loads((run_dir / "bench.json").read_text())
        entries += bench["targets"]
        shutil.copy(run_dir / "bench.md", run_dir / f"bench_micro_{name}.md")
    from lenet_edge.fileio import atomic_write_text

    model_bytes = (run_dir / "lenet5_int8.tflite").stat().st_size
    text = render(entries, loads, model_bytes, portable(str(args.data.absolute())))
    atomic_write_text(HERE / "MICRO.md", text)
    print(f"wrote {HERE / 'MICRO.md'}")


if __name__ == "__main__":
    main()
