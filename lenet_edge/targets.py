"""Where `bench` measures besides this machine: `--on SPEC`, one target per spec, each of a kind.

A kind is a module named in `KINDS` by the prefix of its specs (`ssh://` is
`remote`). Every kind module provides

- `parse_target(spec) -> target`: a frozen object with `url` (the canonical
  spec, as reports name the target), `kind` (the key in `KINDS`) and `local`
  (True when it runs on this machine's own CPU); `ValueError` for a malformed spec;

and every kind but `ssh` (whose sessions `remote.Sessions` runs alongside the
host) also provides

- `measure(target, job, say) -> dict`: the target's results, the keys of a
  host result (`schema_version`, `ok`, `reference`, `data`, `machine`,
  `config`, `method`, `models`) plus what the kind adds; `TargetError` (one
  line saying what is missing and how to get it) when the target gave none;
- `heading(entry) -> str`: one line on where it ran (the report's heading for it);
- `table(entry) -> (header, rows[, left])` and `notes(entry) -> [lines]`: its
  table in the report (`left`: how many name columns) and the lines after it;
- `summary(entry) -> [rows]`: its rows of the cross-target summary
  (`report.SUMMARY_HEADER`, "-" where a figure does not apply);
- `verdict(entry) -> str`: the words that close the report for it.

Devices elsewhere (ssh) measure while the host does. Local targets (an
emulator, a browser) run after the host, one at a time, so that no two
measurements share this machine's two cores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .config import BenchConfig
from .errors import LenetEdgeError
from .harness import METHOD, SCHEMA_VERSION

# spec prefix -> the module of that kind, imported when a spec of it is parsed or reported
KINDS = {"ssh://": "lenet_edge.remote", "browser:": "lenet_edge.browser", "qemu:": "lenet_edge.qemu"}
SPEC_FORMS = ("ssh://[USER@]HOST[:PORT]", "browser", "qemu:CORE[/KERNELS]")  # what --on takes, for help and errors


class TargetError(LenetEdgeError):
    """A target gave no result; the message is its one-line `error`, saying what to install or fix."""


def kind_module(kind: str) -> ModuleType:
    """The module of target kind `kind` (a key of `KINDS` without its separator, as entries record it)."""
    for prefix, module in KINDS.items():
        if _kind_name(prefix) == kind:
            return import_module(module)
    raise ValueError(f"unknown target kind {kind!r}")


def _kind_name(prefix: str) -> str:
    return prefix.split(":", 1)[0]


def parse_target(spec: str):
    """`--on SPEC` -> that kind's target object.

    Raises:
        ValueError: no kind takes this spec, or its kind finds it malformed (says the expected form).
    """
    for prefix, module in KINDS.items():
        if spec.startswith(prefix) or spec == prefix.rstrip(":/"):
            return import_module(module).parse_target(spec)
    raise ValueError(f"{spec!r}: expected {' or '.join(SPEC_FORMS)}")


@dataclass
class Job:
    """What every target measures: the models, the images, how, and what the host already found."""

    models: dict[str, Path]  # name -> .tflite path on this machine
    images: np.ndarray  # (N, 28, 28) uint8, preprocessed
    labels: np.ndarray  # (N,) int
    config: BenchConfig
    reference: str
    data_info: dict  # {"source", "split"}
    options: Mapping[str, Any] = field(default_factory=dict)  # kind -> that kind's config (None: its defaults)
    run_dir: Path | None = None
    _litert: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def litert_outputs(self, name: str) -> np.ndarray:
        """Model `name`'s raw `(N, 10)` outputs in LiteRT on `images`: the host's, or computed now (`--no-host`)."""
        if name not in self._litert:
            from .runtimes import open_model

            model = open_model(self.models[name], "litert", threads=self.config.threads, xnnpack=self.config.xnnpack)
            self._litert[name] = model.raw_all(self.images, self.config.accuracy_batch)
        return self._litert[name]

    def skeleton(self, target) -> dict:
        """What a target that gave no result still records (its error is added beside)."""
        return {
            "target": target.url,
            "kind": target.kind,
            "schema_version": SCHEMA_VERSION,
            "ok": False,
            "reference": self.reference,
            "data": {**self.data_info, "n": len(self.images)},
            "machine": None,
            "config": None,
            "method": METHOD,
            "models": {},
        }


def run_local(targets: list, job: Job, say: Callable[[str], None], cancel: threading.Event | None = None) -> list:
    """Measure the non-ssh targets one after another; each gives its results or an entry with `error`."""
    entries = []
    for target in targets:
        say(f"{target.url}: measuring")
        try:
            result = kind_module(target.kind).measure(target, job, lambda m, t=target: say(f"{t.url}: {m}"))
        except TargetError as exc:
            say(f"{target.url}: {exc}")
            entries.append({**job.skeleton(target), "error": str(exc)})
            continue
        say(f"{target.url}: done")
        entries.append({"target": target.url, "kind": target.kind, **result})
    return entries
