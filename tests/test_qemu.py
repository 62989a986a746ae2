"""`bench --on qemu:cortex-m4`: the int8 model as Cortex-M firmware, built against TFLM and run in QEMU.

One session fixture builds the Cortex-M4 CMSIS-NN firmware for the shared
tiny run (the TFLM library into a session cache, so it compiles once) and runs
its test digits in QEMU: every digit's int8 outputs must be LiteRT's and
TFLM-in-Python's. The failures (no tree, no CMSIS-NN, no toolchain, no QEMU,
a compile error, a hang) are one-line entries, the host still measured.
Without the toolchain, QEMU or a TFLM tree (`../shared/tflm`, or
`$TFLM_DIR`) the firmware tests skip; with CI=true they fail.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PROJECT_ROOT, copy_run, needs

from lenet_edge.benchmark import bench_run
from lenet_edge.cli import main
from lenet_edge.config import BenchConfig, QemuConfig
from lenet_edge.report import SUMMARY_HEADER
from lenet_edge.targets import parse_target

FAST = BenchConfig(runs=20, warmup=2, batch_sizes=(1,), throughput_seconds=0.02, load_repeats=1, micro=False)
TREE = Path(os.environ.get("TFLM_DIR") or PROJECT_ROOT.parent / "shared" / "tflm")
INSTALL = "`apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm`"


def test_spec():
    m4 = parse_target("qemu:cortex-m4")
    assert (m4.url, m4.core, m4.kernels, m4.kind, m4.local) == ("qemu:cortex-m4", "cortex-m4", "cmsis-nn", "qemu", True)
    assert parse_target("qemu:cortex-m4/cmsis-nn").url == "qemu:cortex-m4"  # the default, named once
    ref = parse_target("qemu:cortex-m7/reference")
    assert (ref.url, ref.core, ref.kernels) == ("qemu:cortex-m7/reference", "cortex-m7", "reference")
    for bad in ("qemu:cortex-m99", "qemu:cortex-m4/fast", "qemu:", "qemu"):
        with pytest.raises(ValueError, match="qemu:CORE"):
            parse_target(bad)


@pytest.fixture(scope="session")
def firmware_cache(tmp_path_factory) -> Path:
    """The TFLM library cache: the first firmware build compiles the library, the others link."""
    from lenet_edge.errors import LenetEdgeError
    from lenet_edge.mcu.build import check_tree, find_toolchain

    try:
        find_toolchain()
        toolchain = True
    except LenetEdgeError:
        toolchain = False
    needs("the arm-none-eabi toolchain with newlib", toolchain, f"{INSTALL} (.ci/run installs it)")
    needs("qemu-system-arm", shutil.which("qemu-system-arm") is not None, f"{INSTALL} (.ci/run installs it)")
    try:
        check_tree(TREE, "cmsis-nn")
        tree = True
    except LenetEdgeError:
        tree = False
    needs(f"a TensorFlow Lite Micro tree at {TREE}", tree, "set TFLM_DIR to one (../shared/tflm in CI)")
    # The user's library cache: its entries are named by a hash of the tree, compiler, flags and sources, so a
    # stale one is never used; a fresh machine compiles once (minutes), later runs only link (seconds).
    from lenet_edge.qemu import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def m4_bench(exported_run, firmware_cache, tmp_path_factory):
    """bench on the host and on qemu:cortex-m4 (CMSIS-NN), build trees kept: (run dir, results, written, builds)."""
    run = copy_run(exported_run, tmp_path_factory.mktemp("qemu") / "run")
    builds = tmp_path_factory.mktemp("builds")
    options = {"qemu": QemuConfig(tflm=str(TREE), cache_dir=str(firmware_cache), keep_build=str(builds))}
    results, written = bench_run(run, FAST, on=["qemu:cortex-m4"], target_options=options)
    return run, results, written, builds


def test_m4_firmware_classifies_every_digit_as_litert(m4_bench):
    run, results, written, builds = m4_bench
    host, m4 = results["targets"]
    assert m4["target"] == "qemu:cortex-m4" and m4["kind"] == "qemu" and m4["ok"], m4.get("error")
    assert list(m4["models"]) == ["int8"]  # the firmware runs int8 models only
    m, h = m4["models"]["int8"], host["models"]["int8"]
    assert m["n"] == h["n"] == m4["data"]["n"] and m4["data"]["sha256"] == host["data"]["sha256"]
    # every digit's 10 int8 outputs are TFLM-in-Python's; LiteRT (XNNPACK) rounds some a step apart, same digit
    assert m["tflm"] == {"agreement": 1.0, "disagreements": 0, "identical_outputs": 1.0, "max_abs_diff": 0.0}
    assert m["litert"]["agreement"] == 1.0 and m["litert"]["disagreements"] == 0
    assert m["accuracy"] == h["accuracy"] and m["confusion"] == h["confusion"]

    image = m["image"]
    parts = ("flash_model_bytes", "flash_tflm_bytes", "flash_application_bytes")
    assert image["flash_bytes"] == sum(image[part] for part in parts)
    model_bytes = (run / "lenet5_int8.tflite").stat().st_size
    assert model_bytes <= image["flash_model_bytes"] < model_bytes + 64  # the array, padded to its alignment
    assert image["flash_tflm_bytes"] > 0 and image["flash_application_bytes"] > 0
    assert 0 < m["arena_used_bytes"] <= m["arena_size_bytes"] <= image["arena_bytes"] <= image["bss_bytes"]
    assert image["ram_bytes"] == image["data_bytes"] + image["bss_bytes"] + m["heap_used_bytes"] + m["stack_peak_bytes"]
    assert 0 < m["stack_peak_bytes"] < image["stack_reserved_bytes"]
    counts = m["instructions"]
    assert 0 < counts["min"] <= counts["p50"] <= counts["max"] and counts["resolution"] > 0
    assert m["build"]["library_sources"] > 0 and m["build"]["library_build_s"] > 0
    elf = builds / "cortex-m4-cmsis-nn-int8" / "app.elf"
    assert elf.is_file() and (elf.parent / "app.map").is_file()
    assert not any(p.name.endswith((".elf", ".bin", ".o")) for p in run.iterdir())  # only results in the run

    saved = json.loads(written["bench.json"].read_text())
    assert [t["target"] for t in saved["targets"]] == ["host", "qemu:cortex-m4"]
    markdown = written["bench.md"].read_text()
    assert "## qemu:cortex-m4" in markdown and "instructions/digit" in markdown and "mps2-an386" in markdown
    assert f"| int8 | cmsis-nn | {image['flash_bytes'] / 1024:.1f} |" in markdown
    assert "- qemu:cortex-m4: int8 on cortex-m4 (cmsis-nn)" in markdown and "fits an STM32L4-class" in markdown
    summary = [line for line in markdown.splitlines() if line.startswith("| qemu:cortex-m4 |")]
    assert summary and all(line.count("|") == len(SUMMARY_HEADER) + 1 for line in summary)


def test_a_second_build_links_the_cached_library(m4_bench, firmware_cache, exported_run, tmp_path):
    from lenet_edge.mcu.build import CORES, build_library, find_toolchain

    methods = _model_methods(exported_run)
    library = build_library(TREE, CORES["cortex-m4"], "cmsis-nn", methods, firmware_cache, find_toolchain())
    assert library.cached and library.archive.is_file()


def test_a_hung_firmware_is_a_timeout(m4_bench, tmp_path):
    from lenet_edge.mcu.build import CORES
    from lenet_edge.qemu import RunError, run_firmware

    _, _, _, builds = m4_bench
    elf = tmp_path / "app.elf"
    shutil.copy(builds / "cortex-m4-cmsis-nn-int8" / "app.elf", elf)
    digits = np.zeros((100_000, 784), np.int8)  # far more than a fraction of a second runs
    with pytest.raises(RunError, match=r"did not finish in 0 s \(hung\?\)"):
        run_firmware(shutil.which("qemu-system-arm"), CORES["cortex-m4"], elf, digits, timeout=0.3)


def _model_methods(run: Path) -> list[str]:
    from lenet_edge.runtimes.micro import TFLM_OPS, read_model

    _, info = read_model(run / "lenet5_int8.tflite")
    return [TFLM_OPS[op] for op in dict.fromkeys(op["op"] for op in info["ops"])]


def test_a_compile_error_is_one_line(m4_bench, firmware_cache, exported_run, tmp_path):
    from lenet_edge.mcu.build import CORES, BuildError, build_firmware, build_library, find_toolchain

    tools = find_toolchain()
    methods = _model_methods(exported_run)
    library = build_library(TREE, CORES["cortex-m4"], "cmsis-nn", methods, firmware_cache, tools)
    files = {"micro_ops.h": "#error this resolver is broken\n", "bench_settings.h": "#pragma once\n"}
    with pytest.raises(BuildError, match=r"^compiling bench_main\.cc failed: .*") as info:
        build_firmware(tmp_path / "b", TREE, CORES["cortex-m4"], "cmsis-nn", library, tools, files)
    assert "\n" not in str(info.value)


def test_a_hard_fault_is_one_line(m4_bench, firmware_cache, exported_run, tmp_path):
    """A firmware that writes to an unmapped address at start-up: the fault handler's line, not a hang."""
    from lenet_edge.mcu.build import CORES, build_firmware, build_library, find_toolchain
    from lenet_edge.qemu import RunError, run_firmware

    _, _, _, builds = m4_bench
    built = builds / "cortex-m4-cmsis-nn-int8"
    files = {name: (built / name).read_text() for name in ("lenet5_int8.h", "lenet5_int8.cc", "micro_ops.h",
                                                           "bench_settings.h")}  # fmt: skip
    files["fault.cc"] = "static int faulted = (*reinterpret_cast<volatile int*>(0xFFFFFFF0u) = 1);\n"
    tools = find_toolchain()
    library = build_library(TREE, CORES["cortex-m4"], "cmsis-nn", _model_methods(exported_run), firmware_cache, tools)
    elf = build_firmware(tmp_path / "b", TREE, CORES["cortex-m4"], "cmsis-nn", library, tools, files)
    with pytest.raises(RunError, match=r"^the firmware stopped on a fault in qemu-system-arm -M mps2-an386: .*FAULT"):
        run_firmware(shutil.which("qemu-system-arm"), CORES["cortex-m4"], elf, np.zeros((1, 784), np.int8), 60)


def _bench_cli(run: Path, *extra: str):
    args = ["bench", "--dir", str(run), "--runs", "20", "--warmup", "2", "--batch-sizes", "1", "--no-micro", *extra]
    return CliRunner().invoke(main, args)


def test_missing_tree_cmsis_nn_and_qemu_are_entries_and_exit_1(exported_run, tmp_path, monkeypatch):
    run = copy_run(exported_run, tmp_path / "run")
    no_cmsis = tmp_path / "tree"
    (no_cmsis / "tensorflow/lite/micro").mkdir(parents=True)
    (no_cmsis / "tensorflow/lite/micro/micro_interpreter.h").write_text("// a tree without CMSIS-NN\n")
    monkeypatch.delenv("TFLM_DIR", raising=False)
    on = ["--on", "qemu:cortex-m4", "--on", "qemu:cortex-m7"]
    result = _bench_cli(run, *on, "--tflm", str(no_cmsis))
    assert result.exit_code == 1, result.output
    assert "no result from qemu:cortex-m4, qemu:cortex-m7" in result.output
    host, m4, m7 = json.loads((run / "bench.json").read_text())["targets"]
    assert host["ok"] and host["models"]["int8"]["accuracy"] > 0  # the host is still measured and written
    if shutil.which("arm-none-eabi-gcc"):
        assert m4["error"] == m7["error"] and "no CMSIS-NN" in m4["error"] and str(no_cmsis) in m4["error"]
        result = _bench_cli(run, "--on", "qemu:cortex-m4", "--no-host")  # no --tflm, no $TFLM_DIR
        error = json.loads((run / "bench.json").read_text())["targets"][0]["error"]
        assert result.exit_code == 1 and error.startswith("no TensorFlow Lite Micro tree: give --tflm DIR")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no toolchain, no QEMU
    _bench_cli(run, "--on", "qemu:cortex-m4", "--tflm", str(TREE), "--no-host")
    error = json.loads((run / "bench.json").read_text())["targets"][0]["error"]
    assert error.startswith("no arm-none-eabi-gcc") and "apt-get install gcc-arm-none-eabi" in error
    assert not [p for p in run.iterdir() if p.name.startswith("lenet-edge-firmware")]


def test_no_qemu_is_an_entry(exported_run, firmware_cache, tmp_path, monkeypatch):
    import lenet_edge.qemu as qemu

    real = shutil.which
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None if name == "qemu-system-arm" else real(name))
    run = copy_run(exported_run, tmp_path / "run")
    options = {"qemu": QemuConfig(tflm=str(TREE), cache_dir=str(firmware_cache))}
    results, _ = bench_run(run, FAST, on=["qemu:cortex-m4"], host=False, target_options=options, write=False)
    assert results["ok"] is False
    assert results["targets"][0]["error"] == "no qemu-system-arm on PATH: apt-get install qemu-system-arm"
