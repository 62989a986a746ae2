"""What the benchmark scripts share: running the real CLI in a subprocess, and formatting."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lenet_edge.machine import isa_line

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_HODA = ROOT.parent / "shared" / "data" / "hoda"


def run(args: list[str], env: dict, log: Path) -> float:
    """Run `python -m lenet_edge ARGS`, tee its output to `log`, return wall seconds."""
    command = [sys.executable, "-m", "lenet_edge", *args]
    print("$ lenet-edge " + " ".join(args), flush=True)
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        out.write("$ lenet-edge " + " ".join(args) + "\n")
        process = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out.write(process.stdout)
    seconds = time.perf_counter() - started
    print(process.stdout, end="", flush=True)
    if process.returncode != 0:
        sys.exit(f"failed ({process.returncode}): lenet-edge {' '.join(args)}")
    return seconds


def hoda_runs(data: Path, log_name: str) -> tuple[Path, Path]:
    """Check `data` holds Hoda's test file; return (benchmarks/runs, a fresh log file there)."""
    if not (data / "Test 20000.cdb").is_file():
        sys.exit(f"{data}: no 'Test 20000.cdb' there; pass --data DIR")
    runs_dir = HERE / "runs"
    runs_dir.mkdir(exist_ok=True)
    log = runs_dir / log_name
    log.write_text("")
    return runs_dir, log


def portable(text: str) -> str:
    """`text` with this checkout's absolute paths written relative to the project root."""
    return text.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")  # the deeper path first


def percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def machine_line(bench: dict, versions: dict) -> str:
    """The CPU (model, instruction sets: they decide int8 speed), cores, Python and versions of a result."""
    machine = bench["machine"]
    return (
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, Python {machine.get('python', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"\n\nCPU instruction sets: {isa_line(machine)}."
    )
