"""`bench --on browser`: the run's models in LiteRT.js in headless Chromium, beside the host's figures.

The browser runs the same files on the same images, so its accuracy and its
raw outputs must be the host LiteRT's; its latency is measured like the
host's (interleaved rounds). Without Chromium it is an error entry and the
command exits 1 with the host's results still written.
"""

import json

import numpy as np
from click.testing import CliRunner
from conftest import copy_run

from lenet_edge.benchmark import bench_run
from lenet_edge.cli import main
from lenet_edge.config import BenchConfig, BrowserConfig
from lenet_edge.report import SUMMARY_HEADER
from lenet_edge.targets import parse_target

FAST = BenchConfig(runs=60, warmup=5, batch_sizes=(1,), throughput_seconds=0.05, load_repeats=1, micro=False)


def test_spec():
    assert parse_target("browser").url == "browser" and parse_target("browser").local
    for bad in ("browser:firefox", "browsers"):
        try:
            parse_target(bad)
        except ValueError as exc:
            assert "browser" in str(exc)
        else:
            raise AssertionError(bad)


def test_browser_gives_the_host_litert_answers(exported_run, chromium, tmp_path):
    run = copy_run(exported_run, tmp_path / "run")
    results, written = bench_run(run, FAST, on=["browser"])
    host, browser = results["targets"]
    assert browser["target"] == "browser" and browser["kind"] == "browser" and browser["ok"], browser
    assert results["ok"] is True
    assert browser["machine"]["browser"]["timer"]["cross_origin_isolated"] is True
    assert browser["machine"]["versions"]["litertjs"].count(".") == 2
    for name in ("float32", "int8"):
        m, h = browser["models"][name], host["models"][name]
        assert m["runtime"] == "litert.js" and m["n"] == h["n"] == browser["data"]["n"]
        assert m["litert"]["agreement"] == 1.0 and m["litert"]["identical_outputs"] == 1.0, m["litert"]
        assert m["accuracy"] == h["accuracy"] and m["confusion"] == h["confusion"]
        assert m["sha256"] == h["sha256"] and m["has_metadata"] is True
        assert len(m["latency_samples_ns"]) == FAST.runs and 0 < m["latency_us"]["p50"] <= m["latency_us"]["p99"]
        assert m["invoke_us"]["p50"] <= m["latency_us"]["p50"]
    assert browser["models"]["int8"]["input"] == {**host["models"]["int8"]["input"], "shape": [1, 28, 28, 1]}
    assert browser["models"]["int8"]["ratios_to_reference"]["p50_latency"] > 0
    assert browser["data"]["sha256"] == host["data"]["sha256"]
    saved = json.loads(written["bench.json"].read_text())
    assert [t["target"] for t in saved["targets"]] == ["host", "browser"]
    markdown = written["bench.md"].read_text()
    assert "## browser" in markdown and "LiteRT.js" in markdown and "LiteRT agree %" in markdown
    assert "- browser: in LiteRT.js int8 reads" in markdown
    summary = [line for line in markdown.splitlines() if line.startswith("| browser |")]
    assert summary and all(line.count("|") == len(SUMMARY_HEADER) + 1 for line in summary)
    assert np.isfinite(browser["models"]["int8"]["latency_us"]["p90"])


def test_no_chromium_is_an_entry_and_exit_1(exported_run, tmp_path):
    run = copy_run(exported_run, tmp_path / "run")
    args = ["bench", "--dir", str(run), "--on", "browser", "--chromium", str(tmp_path / "no-chromium")]
    args += ["--runs", "20", "--warmup", "2", "--batch-sizes", "1", "--no-micro"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "no result from browser" in result.output
    saved = json.loads((run / "bench.json").read_text())
    host, browser = saved["targets"]
    assert host["ok"] and host["models"]["int8"]["accuracy"] > 0  # the host was measured and written
    assert "no Chromium executable there" in browser["error"] and "apt-get install chromium" in browser["error"]
    assert BrowserConfig().timeout > 0
