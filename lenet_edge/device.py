"""The runner `bench --on` starts on a device: the host's harness over the device's own TFLite runtime.

`remote` sends this package's measuring modules (harness, machine, config,
runtimes/base and runtimes/litert, with a minimal `__init__` of its own) into
a private temporary directory on the device, next to `job.json`, the run's
.tflite files and the images as one uint8 array, then runs `main` there. It
needs Python 3.8+, numpy, and `ai_edge_litert` or the older `tflite_runtime`,
whichever the device has: both ship the same `interpreter` module API, and
`LiteRTModel` takes the one found. The timing is `harness.measure`'s, the very
code the host runs.

It prints one line on stdout, `RESULT_MARK` + JSON: the results dict, or
`{"error": ..., "kind": ...}` when the device lacks something (the message
says what to install there). Progress goes to stderr as `PROGRESS_MARK` lines.
Its standard input stays open while the host waits: end of file means the host
is gone (Ctrl-C, a timeout, a dropped link), and the runner quits at once so
the remote shell's trap removes the directory.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import threading

RESULT_MARK = "lenet-edge-result "
PROGRESS_MARK = "lenet-edge-progress "
RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")  # in order of preference
EXIT_MISSING = 3  # the device lacks numpy or a TFLite runtime (the result line says which)
EXIT_HOST_GONE = 75  # standard input closed: nobody is waiting for the result
EXIT_DEADLINE = 76  # the run outlived the host's timeout


def report(result: dict) -> None:
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    sys.stderr.write(PROGRESS_MARK + message + "\n")
    sys.stderr.flush()


def interpreter_module():
    """The first TFLite interpreter module this Python can import, or None."""
    for name in RUNTIMES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def runtime_versions(interpreter) -> dict:
    """Versions of numpy and of the runtime in use, keyed like the host's `compat.versions()`."""
    from importlib import metadata  # Python 3.8+

    import numpy as np

    package = interpreter.__name__.split(".")[0]
    try:
        version = metadata.version(package.replace("_", "-"))
    except metadata.PackageNotFoundError:  # no distribution metadata (a runtime copied in by hand)
        version = getattr(importlib.import_module(package), "__version__", "unknown")
    return {package: version, "numpy": np.__version__}


def missing(what: str) -> dict:
    """The error entry for a device without numpy or a TFLite runtime: what to install, for which Python."""
    if what == "numpy":
        return {"kind": "numpy", "error": f"no numpy for {sys.executable} on the target: `pip install numpy` there"}
    return {
        "kind": "runtime",
        "error": f"no TFLite runtime for {sys.executable} on the target (neither ai_edge_litert nor "
        "tflite_runtime): `pip install ai-edge-litert` there (or tflite-runtime where no ai-edge-litert "
        "wheel exists), or name another interpreter with --remote-python",
    }


def watch(stdin, deadline_s: float) -> None:
    """Quit as soon as the host stops waiting (stdin at end of file) or the deadline passes.

    `os._exit` skips Python's clean-up on purpose: the shell that started this
    process removes the directory when it returns, whatever state it is in.
    """

    def host_gone() -> None:
        while stdin.read(65536):
            pass
        os._exit(EXIT_HOST_GONE)

    threading.Thread(target=host_gone, daemon=True).start()
    timer = threading.Timer(deadline_s, os._exit, (EXIT_DEADLINE,))
    timer.daemon = True
    timer.start()


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(directory: str, stdin, deadline_s: float) -> int:
    """Benchmark the job in `directory` and print its result line; the exit status for the remote shell."""
    watch(stdin, deadline_s)
    try:
        import numpy as np
    except ImportError:
        report(missing("numpy"))
        return EXIT_MISSING
    interpreter = interpreter_module()
    if interpreter is None:
        report(missing("runtime"))
        return EXIT_MISSING
    try:
        report(run_job(directory, interpreter, np))
    except Exception as exc:  # the process boundary: any failure becomes the target's error entry
        report({"kind": "runner", "error": f"the runner failed: {type(exc).__name__}: {' '.join(str(exc).split())}"})
        return 1
    return 0


def run_job(directory: str, interpreter, np) -> dict:
    """`harness.measure` over the job's models and data with the device's interpreter."""
    from . import harness
    from .config import BenchConfig
    from .runtimes.litert import LiteRTModel

    with open(os.path.join(directory, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    images = np.load(os.path.join(directory, "data", "images.npy"), allow_pickle=False)
    labels = np.load(os.path.join(directory, "data", "labels.npy"), allow_pickle=False)
    config = BenchConfig(**dict(job["config"], batch_sizes=tuple(job["config"]["batch_sizes"])))
    files = {name: os.path.join(directory, entry["file"]) for name, entry in job["models"].items()}

    def load(name: str):
        return LiteRTModel(files[name], threads=config.threads, xnnpack=config.xnnpack, interpreter=interpreter)

    def describe_file(name: str) -> dict:  # the host's path (the copy here is temporary), this copy's bytes
        path = files[name]
        return {"path": job["models"][name]["path"], "size_bytes": os.path.getsize(path), "sha256": sha256_of(path)}

    return harness.measure(
        list(job["models"]),
        load,
        images,
        labels,
        config,
        reference=job["reference"],
        files=describe_file,
        versions=runtime_versions(interpreter),
        data_info=job["data_info"],
        progress=progress,
    )
