"""Nothing lost: Ctrl-C or a kill in the middle of a command leaves earlier results as they were.

Real processes (`python -m lenet_edge ...`), real signals. A `train --force`
over a completed run is stopped once it has printed its first epoch line:

- SIGINT: exit code 130, one line on stderr, no traceback, the previous run
  byte-identical, no temporary file (`fileio.TMP_PREFIX`) left behind;
- SIGKILL: the previous run byte-identical. A kill can land while a file is
  being written, which leaves a temporary behind (planted here, since the
  kill window is too short to hit on purpose); `train`, `export` and
  `bench` all sweep such leftovers when they next start on the directory.

And `bench`, interrupted with SIGINT inside its (very long) timing loop,
exits 130 with one line and leaves the earlier bench.json alone.
"""

from __future__ import annotations

import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import copy_run, default_sigint, snapshot

from lenet_edge.cli import main
from lenet_edge.fileio import TMP_PREFIX

INTERRUPTED = "interrupted; earlier results are left as they were"
START_TIMEOUT_S = 120  # TensorFlow's import alone takes a few seconds on a busy 2-core machine


class Command:
    """A `python -m lenet_edge` process whose output lines can be awaited while it runs.

    With `stderr_tty`, stderr is a pseudo-terminal, as in an interactive shell:
    the CLI then prints its progress lines there, which tests can wait for.
    """

    def __init__(self, args: list[str], cache: Path, stderr_tty: bool = False):
        env = {**os.environ, "LENET_EDGE_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user gets: the CLI's own default quiets TensorFlow
        master, terminal = pty.openpty() if stderr_tty else (None, subprocess.PIPE)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lenet_edge", *args], env=env, text=True,
            stdout=subprocess.PIPE, stderr=terminal,
            preexec_fn=default_sigint,
        )  # fmt: skip
        if stderr_tty:
            os.close(terminal)  # the child holds its own copy
            stderr = open(master, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed by _read)
        else:
            stderr = self.process.stderr
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout, self.lines), daemon=True),
            threading.Thread(
                target=self._read, args=(stderr, self.stderr, self.lines if stderr_tty else None), daemon=True
            ),
        ]
        self._streams, self._ended = (2 if stderr_tty else 1), 0
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str], notify: queue.Queue | None) -> None:
        try:
            for line in stream:
                lines.append(line.rstrip("\r\n"))  # a terminal ends lines with \r\n
                if notify is not None:
                    notify.put(line)
        except OSError:  # a pseudo-terminal reports EIO once the child has closed it
            pass
        finally:
            stream.close()
        if notify is not None:
            notify.put(None)  # end of output

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT_S) -> str:
        """Block until an awaited line matches `pattern`; fail if the process ends or time runs out first.

        stdout is awaited, and stderr too when it is a terminal. With two streams
        one of them may end first; the wait only fails when both have.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                pytest.fail(f"no line matching {pattern!r} within {timeout} s; stdout so far: {self.stdout}")
            if line is None:
                self._ended += 1
                if self._ended < self._streams:
                    continue
                self.finish()
                pytest.fail(f"ended (code {self.process.returncode}) before {pattern!r}:\n{self.stdout}\n{self.stderr}")
            if re.search(pattern, line):
                return line

    def __enter__(self) -> Command:
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:  # a test that failed before its process ended
            self.process.kill()
            self.finish()

    def finish(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code


def train_over(run_dir: Path, tiny_npz: Path, cache: Path) -> Command:
    """A long `train --force` over the completed run in `run_dir`."""
    return Command(
        ["train", "--data", str(tiny_npz), "--dir", str(run_dir), "--force", "--epochs", "50",
         "--batch-size", "32", "--val-fraction", "0.2"],
        cache,
    )  # fmt: skip


def temporaries(directory: Path) -> list[Path]:
    return sorted(directory.glob(TMP_PREFIX + "*"))


def test_sigint_during_training_keeps_the_previous_run(exported_run, tiny_npz, tmp_path):
    run_dir = copy_run(exported_run, tmp_path / "run")
    before = snapshot(tmp_path, ("run",))

    with train_over(run_dir, tiny_npz, tmp_path / "cache") as command:
        command.wait_for(r"^float +epoch +1/50 ")
        command.process.send_signal(signal.SIGINT)
        code = command.finish()

    assert code == 130, (command.stdout, command.stderr)
    assert command.stderr == [INTERRUPTED]  # one line: no traceback, no library chatter
    assert snapshot(tmp_path, ("run",)) == before
    assert temporaries(run_dir) == []


def test_sigkill_during_training_keeps_the_previous_run_and_the_next_start_sweeps(
    exported_run, tiny_npz, tmp_path, monkeypatch
):
    run_dir = copy_run(exported_run, tmp_path / "run")
    before = snapshot(tmp_path, ("run",))

    with train_over(run_dir, tiny_npz, tmp_path / "cache") as command:
        command.wait_for(r"^float +epoch +1/50 ")
        command.process.kill()
        assert command.finish() == -signal.SIGKILL
    assert snapshot(tmp_path, ("run",)) == before

    # What a kill during the final save leaves: half-written temporaries beside the real files.
    leftovers = [run_dir / f"{TMP_PREFIX}a1b2c3.keras", run_dir / f"{TMP_PREFIX}d4e5f6.weights.h5"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    # The next start sweeps them before it reads any data (bad data here, so it stops right after).
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["train", "--data", str(tmp_path / "nope.npz"), "--dir", str(run_dir), "--force"],
        env={"LENET_EDGE_CACHE": str(tmp_path / "cache")},
    )
    assert result.exit_code == 1 and result.stderr.startswith("error: "), result.output
    assert temporaries(run_dir) == []
    assert snapshot(tmp_path, ("run",)) == before


def test_export_and_bench_sweep_leftover_temporaries(exported_run, tiny_npz, tmp_path, monkeypatch):
    """Export sweeps once it has read the manifest; bench sweeps the directory it writes its results to."""
    monkeypatch.chdir(tmp_path)
    run_dir = copy_run(exported_run, tmp_path / "run")
    (run_dir / "lenet5_qat.weights.h5").unlink()  # export --int8 then fails right after the sweep: no conversion
    (run_dir / f"{TMP_PREFIX}x.tflite").write_bytes(b"half")
    result = CliRunner().invoke(
        main, ["export", "--int8", "--dir", str(run_dir)], env={"LENET_EDGE_CACHE": str(tmp_path / "cache")}
    )
    assert result.exit_code == 1 and "qat_weights" in result.stderr, result.output
    assert temporaries(run_dir) == []

    from lenet_edge.benchmark import write_results

    out = tmp_path / "bench-out"
    out.mkdir()
    (out / f"{TMP_PREFIX}y.png").write_bytes(b"half")
    results = {
        "models": {},
        "config": {"batch_sizes": [1], "runs": 10, "warmup": 0, "threads": 1, "xnnpack": True},
        "reference": "-",
        "machine": {
            "cpu": "-",
            "cores": 1,
            "python": "-",
            "versions": {},
            "loadavg_1m_start": None,
            "loadavg_1m_end": None,
        },
        "data": {"source": None, "split": None, "n": 0},
    }
    write_results(results, out)
    assert temporaries(out) == [] and (out / "bench.json").is_file()


def test_sigint_during_bench_timing_exits_130_and_keeps_earlier_results(exported_run, tiny_npz, tmp_path):
    run_dir = copy_run(exported_run, tmp_path / "run")
    (run_dir / "bench.json").write_text('{"earlier": "results"}\n')
    before = snapshot(tmp_path, ("run",))

    # On a terminal, bench announces each phase on stderr; "latency: ..." starts the timed
    # rounds, and 10^8 of them take hours, so the signal lands inside the timing loop.
    with Command(
        ["bench", "--dir", str(run_dir), "--runs", "100000000", "--warmup", "0", "--batch-sizes", "1"],
        tmp_path / "cache",
        stderr_tty=True,
    ) as command:
        command.wait_for(r"^latency: ")
        time.sleep(0.5)
        assert command.process.poll() is None, (command.stdout, command.stderr)
        command.process.send_signal(signal.SIGINT)
        code = command.finish()

    assert code == 130, (command.stdout, command.stderr)
    assert command.stderr[-1] == INTERRUPTED and not any("Traceback" in line for line in command.stderr)
    assert snapshot(tmp_path, ("run",)) == before
    assert temporaries(run_dir) == []
