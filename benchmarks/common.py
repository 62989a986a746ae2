"""What the benchmark scripts share: running the real CLI in a subprocess, and formatting."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from lenet_edge.machine import cpu_identity, isa_line

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


class LoadSampler:
    """The 1-minute load average every 20 s while a command runs: `summary()` gives its mean and maximum."""

    def __init__(self, every_s: float = 20.0):
        self.every_s, self.samples, self.stop = every_s, [os.getloadavg()[0]], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        return {"mean": round(statistics.mean(self.samples), 2), "max": round(max(self.samples), 2)}


def run_loaded(args: list[str], env: dict, log: Path) -> tuple[float, dict]:
    """`run`, and the load average while it ran (mean and max): wall times mean little without it."""
    with LoadSampler() as load:
        seconds = run(args, env, log)
    return seconds, load.summary()


def hoda_runs(data: Path, log_name: str, *, fresh: bool = True) -> tuple[Path, Path]:
    """Check `data` holds Hoda's test file; return (benchmarks/runs, the log file there: emptied if `fresh`)."""
    if not (data / "Test 20000.cdb").is_file():
        sys.exit(f"{data}: no 'Test 20000.cdb' there; pass --data DIR")
    runs_dir = HERE / "runs"
    runs_dir.mkdir(exist_ok=True)
    log = runs_dir / log_name
    if fresh or not log.exists():
        log.write_text("")
    return runs_dir, log


def portable(text: str) -> str:
    """`text` with this checkout's absolute paths written relative to the project root."""
    return text.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")  # the deeper path first


def percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def cpu_line() -> str:
    """This machine's CPU, cores and instruction sets, in one line (what a timing depends on)."""
    machine = cpu_identity()
    return f"{machine['cpu']}, {os.cpu_count()} cores; CPU instruction sets: {isa_line(machine)}"


def machine_line(bench: dict, versions: dict) -> str:
    """The CPU (model, instruction sets: they decide int8 speed), cores, Python and versions of a result."""
    machine = bench["machine"]
    return (
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, Python {machine.get('python', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"\n\nCPU instruction sets: {isa_line(machine)}."
    )
