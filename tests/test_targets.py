"""`bench --on`'s target kinds: dispatch by spec, local targets after the host, error entries, reports.

A kind is a module (`targets.KINDS`); here a small one defined in this file
stands in for it, so the mechanism is tested apart from any one kind.
"""

import sys
import types

import numpy as np
import pytest

from lenet_edge import targets
from lenet_edge.benchmark import bench_run
from lenet_edge.config import BenchConfig
from lenet_edge.report import SUMMARY_HEADER, format_markdown, format_table
from lenet_edge.targets import TargetError, parse_target

FAST = BenchConfig(runs=20, warmup=2, batch_sizes=(1,), throughput_seconds=0.05, load_repeats=1, micro=False)


def echo_kind() -> types.ModuleType:
    """A kind `echo:NAME` that reports LiteRT's argmax agreement with itself; `echo:broken` gives no result."""
    kind = types.ModuleType("echo_kind")
    kind.calls = []

    class Target:
        kind, local = "echo", True

        def __init__(self, url):
            self.url = url

    def parse(spec):
        if not spec.startswith("echo:") or not spec[5:]:
            raise ValueError(f"{spec!r}: expected echo:NAME")
        return Target(spec)

    def measure(target, job, say):
        kind.calls.append(target.url)
        if target.url == "echo:broken":
            raise TargetError("no echo here: install one")
        outputs = job.litert_outputs(job.reference)
        say("measured")
        return {
            "ok": True,
            "reference": job.reference,
            "data": {**job.data_info, "n": len(job.images)},
            "machine": {"cpu": "echo"},
            "config": {},
            "method": {},
            "models": {job.reference: {"n": len(outputs), "argmax": np.bincount(outputs.argmax(1)).tolist()}},
        }

    kind.parse_target, kind.measure = parse, measure
    kind.table = lambda entry: (["model", "images"], [[n, str(m["n"])] for n, m in entry["models"].items()])
    kind.heading = lambda entry: f"an echo of {entry['machine']['cpu']}"
    kind.notes = lambda entry: [f"echo of {entry['reference']}"]
    kind.summary = lambda entry: [[entry["target"], "echo", n, str(m["n"])] for n, m in entry["models"].items()]
    kind.verdict = lambda entry: f"echoed {len(entry['models'])} model(s)"
    return kind


@pytest.fixture
def echo(monkeypatch):
    kind = echo_kind()
    monkeypatch.setitem(sys.modules, "echo_kind", kind)
    monkeypatch.setitem(targets.KINDS, "echo:", "echo_kind")
    return kind


def test_specs_go_to_their_kind(echo):
    assert parse_target("ssh://pi:2222").kind == "ssh"
    assert parse_target("echo:a").url == "echo:a"
    with pytest.raises(ValueError, match="expected echo:NAME"):
        parse_target("echo:")
    with pytest.raises(ValueError, match=r"expected ssh://\[USER@\]HOST\[:PORT\]"):
        parse_target("gopher://pi")


def test_local_targets_run_after_the_host_in_order_and_failures_become_entries(echo, exported_run):
    results, _ = bench_run(exported_run, FAST, on=["echo:b", "echo:broken", "echo:a"], write=False)
    names = [t["target"] for t in results["targets"]]
    assert names == ["host", "echo:b", "echo:broken", "echo:a"]
    assert echo.calls == ["echo:b", "echo:broken", "echo:a"]
    assert results["ok"] is False  # one target gave no result
    broken = results["targets"][2]
    assert broken["error"] == "no echo here: install one" and broken["kind"] == "echo" and broken["models"] == {}
    host = results["targets"][0]
    # the kind reused the host's LiteRT outputs: same argmax counts as the host's accuracy run saw
    echoed = results["targets"][1]["models"]["float32"]
    assert sum(echoed["argmax"]) == host["models"]["float32"]["n"]
    assert results["targets"][1]["verdict"] == "echoed 1 model(s)"
    assert "no result (no echo here" in broken["verdict"]


def test_reports_dispatch_to_the_kind(echo, exported_run):
    results, _ = bench_run(exported_run, FAST, on=["echo:a"], write=False)
    table, markdown = format_table(results), format_markdown(results)
    for text in (table, markdown):
        assert "echo of float32" in text and "echoed 1 model(s)" in text
        assert "echo:a" in text and "an echo of echo" in text and "host" in text
    summary_rows = echo.summary(results["targets"][1])
    assert len(summary_rows[0]) <= len(SUMMARY_HEADER)


def test_no_host_computes_litert_outputs_itself(echo, exported_run):
    results, _ = bench_run(exported_run, FAST, on=["echo:a"], host=False, write=False)
    assert [t["target"] for t in results["targets"]] == ["echo:a"]
    assert results["ok"] is True
    n = results["targets"][0]["data"]["n"]
    assert sum(results["targets"][0]["models"]["float32"]["argmax"]) == n
