"""TensorFlow Lite Micro: the int8 model in TFLM's own interpreter, bench's TFLM section, and export --micro.

Everything runs the real `tflite-micro` interpreter on the shared tiny run
(`exported_run`): TFLM against LiteRT output by output, the minimum arena
checked byte by byte around its value, the micro/ folder read back (array,
resolver, arena constant, sample digit) and run in TFLM at the folder's own
arena size.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT_ROOT, TINY_RUN, copy_run, make_patterns, needs

from lenet_edge.benchmark import bench_micro, bench_run
from lenet_edge.carray import parse_c_array
from lenet_edge.config import BenchConfig, ExportConfig
from lenet_edge.conversion import export_run
from lenet_edge.errors import ModelError
from lenet_edge.firmware import (
    MICRO_DIR,
    MICRO_FILES,
    SAMPLE_DIGIT,
    kernel_stems,
    micro_files,
    resolver_header,
    resolver_ops,
)
from lenet_edge.harness import output_agreement
from lenet_edge.manifest import read_manifest
from lenet_edge.runtimes import open_model
from lenet_edge.runtimes.litert import inspect_tflite
from lenet_edge.runtimes.micro import ARENA_FLOOR, TFLM_OPS, _interpreter, macs, min_arena_bytes

FAST = BenchConfig(
    runs=20, warmup=2, batch_sizes=(1,), throughput_seconds=0.02, throughput_chunks=2, load_repeats=1, micro_runs=20
)
HODA_RUN = PROJECT_ROOT / "benchmarks" / "runs" / "lenet5"  # what `python benchmarks/hoda.py` trains


@pytest.fixture(scope="module")
def images():
    return make_patterns(6, seed=3)  # 60 images, labels


@pytest.fixture(scope="module")
def int8(exported_run) -> Path:
    return exported_run / "lenet5_int8.tflite"


@pytest.fixture(scope="module")
def gelu_model(tmp_path_factory) -> Path:
    """A float classifier that keeps the model contract but ends in GELU, an op TFLM has no kernel for."""
    from lenet_edge.compat import keras, tf

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "gelu")])
    path = tmp_path_factory.mktemp("gelu") / "gelu.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    assert "GELU" in [op["op"] for op in inspect_tflite(path)["ops"]]
    return path


# --- the runtime -------------------------------------------------------------------------------


def test_tflm_gives_litert_answers_on_tiny_data(int8, images):
    x, _ = images
    tflm, litert = open_model(int8, "tflm"), open_model(int8, "litert", xnnpack=False)
    assert tflm.max_batch == 1 and tflm.describe()["input"] == litert.describe()["input"]
    raw_tflm, raw_litert = tflm.raw_all(x), litert.raw_all(x)
    assert raw_tflm.dtype == np.int8 and raw_tflm.shape == (len(x), 10)
    np.testing.assert_array_equal(raw_tflm.argmax(1), raw_litert.argmax(1))
    # For this ReLU model LiteRT's built-in kernels and TFLM's do the same integer arithmetic, within one step.
    assert np.abs(raw_tflm.astype(int) - raw_litert.astype(int)).max() <= 1


def test_min_arena_is_exact_and_allocation_is_monotonic_around_it(int8):
    data = int8.read_bytes()
    minimum = min_arena_bytes(int8)
    assert ARENA_FLOOR < minimum < 1 << 20
    # Bisection assumes allocation succeeds at every size above one that does: check it byte by byte nearby.
    for size in range(minimum - 24, minimum + 25):
        assert (_interpreter(data, size)[0] is not None) == (size >= minimum), size
    model = open_model(int8, "tflm", arena_size=minimum)  # and it runs at exactly that size
    assert model.predict(np.zeros((1, 28, 28), np.uint8)).shape == (1,)


def test_macs_per_layer_match_the_keras_layers(exported_run, int8):
    from lenet_edge.compat import keras
    from lenet_edge.model import load_float

    expected = []
    for layer in load_float(exported_run / "lenet5_float.keras").layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            expected.append(h * w * c_out * kh * kw * c_in)
        elif isinstance(layer, keras.layers.Dense):
            expected.append(layer.kernel.shape[0] * layer.kernel.shape[1])
    layers = macs(inspect_tflite(int8))
    assert [layer["macs"] for layer in layers if layer["macs"]] == expected
    assert {layer["op"] for layer in layers if layer["macs"]} == {"CONV_2D", "FULLY_CONNECTED"}


# --- bad input: one line naming the cause --------------------------------------------------------


def test_an_op_tflm_lacks_is_named(gelu_model, int8):
    with pytest.raises(ModelError) as info:
        open_model(gelu_model, "tflm")
    assert str(info.value) == f"{gelu_model}: TensorFlow Lite Micro has no kernel for op GELU"
    with pytest.raises(ModelError, match="^TensorFlow Lite Micro has no kernel for op GELU$"):
        resolver_header(["RESHAPE", "FULLY_CONNECTED", "GELU"])
    with pytest.raises(ModelError, match="no kernel for op GELU"):
        micro_files(gelu_model.read_bytes(), {}, 0.25)


def test_corrupt_empty_and_missing_models(int8, tmp_path):
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(int8.read_bytes()[: int8.stat().st_size // 2])
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all " * 20)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    cases = [(truncated, "not a loadable TFLite model"), (garbage, "not a loadable TFLite model")]
    cases += [(empty, "empty file"), (tmp_path / "missing.tflite", "no such file")]
    for path, expected in cases:
        with pytest.raises(ModelError) as info:
            open_model(path, "tflm")
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: ") and expected in message, message


def test_an_arena_too_small_says_what_it_needs(int8):
    minimum = min_arena_bytes(int8)
    with pytest.raises(ModelError) as info:
        open_model(int8, "tflm", arena_size=minimum - 1)
    assert str(info.value) == (
        f"{int8}: a {minimum - 1}-byte tensor arena is too small; TFLM needs at least {minimum} bytes"
    )
    with pytest.raises(ValueError, match=f"arena_size must be an integer >= {ARENA_FLOOR} bytes; got 100"):
        open_model(int8, "tflm", arena_size=100)  # smaller arenas crash TFLM's interpreter: never tried


# --- bench -------------------------------------------------------------------------------------


def test_bench_adds_a_tflm_section(exported_run, tmp_path):
    run = copy_run(exported_run, tmp_path / "run")
    results, written = bench_run(run, FAST)
    section = results["tflm"]
    assert section["ok"] and section["config"]["runs"] == FAST.micro_runs
    assert "not microcontroller speed" in section["method"]["timing"]
    for name in ("float32", "int8"):
        entry, litert = section["models"][name], results["models"][name]
        assert entry["runtime"] == "tflm" and entry["n"] == litert["n"]
        assert entry["min_arena_bytes"] == min_arena_bytes(run / f"lenet5_{name}.tflite")
        assert entry["flash_bytes"] == (run / f"lenet5_{name}.tflite").stat().st_size
        assert entry["macs_total"] == sum(layer["macs"] for layer in entry["macs"]) > 0
        assert entry["litert"]["agreement"] == 1.0 and entry["litert"]["disagreements"] == 0
        assert entry["litert_builtin"]["agreement"] == 1.0 and entry["litert_reference"]["agreement"] == 1.0
        assert entry["accuracy"] == litert["accuracy"]
    assert section["models"]["int8"]["ratios_to_reference"]["p50_latency"] > 0  # int8 / float32, in TFLM
    assert section["models"]["int8"]["macs_total"] == section["models"]["float32"]["macs_total"]
    md = (run / "bench.md").read_text(encoding="utf-8")
    assert "## TensorFlow Lite Micro" in md and "not microcontroller speed" in md
    assert f"| {section['models']['int8']['min_arena_bytes']:,} |" in md
    assert "built-in agree %" in md and "ref-kernel agree %" in md
    assert "latency_tflm.png" in written and (run / "latency_tflm.png").stat().st_size > 0

    results, _ = bench_run(run, dataclasses.replace(FAST, micro=False), write=False)
    assert "tflm" not in results


def test_bench_compares_tflm_with_litert_as_run_and_with_its_builtin_and_reference_kernels(int8, images):
    x, labels = images
    raw_tflm = open_model(int8, "tflm").raw_all(x)
    builtin = open_model(int8, "litert", xnnpack=False).raw_all(x)
    stand_in = np.zeros_like(builtin)  # what LiteRT "ran": must be compared as given, not recomputed
    section = bench_micro({"int8": int8}, x, labels, FAST, {"int8": stand_in}, reference="int8")
    entry = section["models"]["int8"]
    assert FAST.xnnpack and entry["litert"] == output_agreement(raw_tflm, stand_in)
    assert entry["litert_builtin"] == output_agreement(raw_tflm, builtin)
    assert entry["litert_builtin"]["agreement"] == 1.0 and entry["litert_builtin"]["max_abs_diff"] <= 1
    assert "XNNPACK" in section["method"]["litert_builtin"]
    reference = open_model(int8, "litert", xnnpack=False, reference=True).raw_all(x)  # BUILTIN_REF
    assert entry["litert_reference"] == output_agreement(raw_tflm, reference)
    assert entry["litert_reference"]["agreement"] == 1.0 and entry["litert_reference"]["max_abs_diff"] <= 2
    assert "BUILTIN_REF" in section["method"]["litert_reference"]
    with pytest.raises(ValueError, match="without XNNPACK"):
        open_model(int8, "litert", xnnpack=True, reference=True)

    # without XNNPACK, LiteRT's outputs are the built-in kernels' already: taken as they are
    plain = dataclasses.replace(FAST, xnnpack=False)
    section = bench_micro({"int8": int8}, x, labels, plain, {"int8": stand_in}, reference="int8")
    assert section["models"]["int8"]["litert_builtin"] == section["models"]["int8"]["litert"]


def test_bench_keeps_a_model_tflm_cannot_run_as_an_error_entry(int8, gelu_model, images):
    x, labels = images
    models = {"int8": int8, "gelu": gelu_model}
    section = bench_micro(models, x, labels, FAST, {}, reference="int8")
    assert section["models"]["gelu"] == {
        "error": f"ModelError: {gelu_model}: TensorFlow Lite Micro has no kernel for op GELU"
    }
    assert section["models"]["int8"]["accuracy"] >= 0 and section["models"]["int8"]["litert"] is None


# --- export --micro ----------------------------------------------------------------------------


def _constant(text: str, name: str) -> int:
    return int(re.search(rf"constexpr int {name} = (-?\d+);", text).group(1))


def _sample_image(folder: Path) -> np.ndarray:
    """The (28, 28) uint8 digit embedded in sample_digit.h."""
    text = (folder / "sample_digit.h").read_text(encoding="utf-8")
    pixels = re.search(r"kSampleDigit\[784\] = \{([^}]*)\}", text).group(1)
    return np.array([int(v) for v in pixels.replace("\n", " ").split(",") if v.strip()], np.uint8).reshape(28, 28)


def test_micro_folder_is_the_model_and_runs_at_its_arena(micro_run, images):
    folder = micro_run / MICRO_DIR
    manifest = read_manifest(micro_run)
    model_bytes = (micro_run / "lenet5_int8.tflite").read_bytes()
    for key, name in MICRO_FILES.items():
        assert manifest["artifacts"][key]["path"] == f"{MICRO_DIR}/{name}" and (folder / name).is_file()

    source = (folder / "lenet5_int8.cc").read_text()
    assert parse_c_array(source) == model_bytes and "alignas(16)" in source

    graph_ops = [op["op"] for op in inspect_tflite(model_bytes)["ops"]]
    resolver = (folder / "micro_ops.h").read_text()
    assert resolver_ops(resolver) == list(dict.fromkeys(graph_ops))  # each op once, nothing else
    assert "MicroMutableOpResolver<kNumOps>" in resolver and _constant(resolver, "kNumOps") == len(set(graph_ops))

    settings = (folder / "model_settings.h").read_text(encoding="utf-8")
    minimum, arena = _constant(settings, "kTensorArenaMinimum"), _constant(settings, "kTensorArenaSize")
    assert minimum == min_arena_bytes(model_bytes) and arena >= minimum and arena % 16 == 0
    assert "۰" in settings and '"7 ۷"' in settings and "q = pixel - 128" in settings
    assert manifest["export"]["micro"]["arena_bytes"] == arena

    tflm = open_model(model_bytes, "tflm", arena_size=arena)
    litert = open_model(model_bytes, "litert")
    image = _sample_image(folder)[None]
    assert _constant((folder / "sample_digit.h").read_text(encoding="utf-8"), "kSampleDigitLabel") == SAMPLE_DIGIT
    predicted = int(tflm.predict(image)[0])
    assert predicted == int(litert.predict(image)[0]) == manifest["export"]["micro"]["sample"]["predicted"]
    x, _ = images
    np.testing.assert_array_equal(tflm.predict_all(x), litert.predict_all(x))


def test_export_without_micro_removes_the_folder(micro_run, tmp_path):
    run = copy_run(micro_run, tmp_path / "run")
    export_run(run, ExportConfig(int8=True, min_agreement=0.0))
    assert not (run / MICRO_DIR).exists()
    assert not any(key.startswith("micro") for key in read_manifest(run)["artifacts"])
    assert "micro" not in read_manifest(run)["export"]


def test_micro_needs_int8():
    with pytest.raises(ValueError, match="micro=True needs int8=True"):
        ExportConfig(micro=True)


def test_lenet5_classic_goes_the_same_way(tiny_npz, tmp_path, images):
    """tanh + AVERAGE_POOL_2D (and int8 requantizing QUANTIZE ops) through TFLM, the resolver and the folder."""
    from lenet_edge.training import TrainConfig, train

    run = tmp_path / "classic"
    digits_only = {**TINY_RUN, "verifier": False, "line_model": False}  # the digit model is what this is about
    train(TrainConfig(**digits_only, data=str(tiny_npz), arch="lenet5-classic"), run, log=lambda _: None)
    export_run(run, ExportConfig(int8=True, micro=True, min_agreement=0.0))
    ops = resolver_ops((run / MICRO_DIR / "micro_ops.h").read_text())
    assert {"AVERAGE_POOL_2D", "TANH", "CONV_2D", "FULLY_CONNECTED"} <= set(ops)
    x, _ = images
    tflm = open_model(run / "lenet5_int8.tflite", "tflm")
    litert = open_model(run / "lenet5_int8.tflite", "litert", xnnpack=False)
    # Not always equal: TFLM's requantization (convolution outputs, the int8 -> int8 QUANTIZE after each TANH)
    # rounds some values one step away from LiteRT's, and each int8 TANH multiplies a one-step input difference
    # by its input/output scale ratio (~8-13 here); on Hoda that flips 32 of 20,000 argmaxes. (TANH and
    # AVERAGE_POOL_2D map equal inputs to equal outputs.) Most predictions still agree:
    assert np.mean(tflm.predict_all(x) == litert.predict_all(x)) >= 0.9
    assert read_manifest(run)["export"]["micro"]["arena_min_bytes"] == min_arena_bytes(run / "lenet5_int8.tflite")


def test_every_resolver_method_follows_tflm_naming():
    """`AddConv2D` for CONV_2D: the op's words in CamelCase, with TFLM's few spellings (Nd, V2, LSTM, CumSum)."""
    for op, method in TFLM_OPS.items():
        assert method.startswith("Add") and method[3:].lower() == op.replace("_", "").lower()


def test_the_hoda_model_reads_the_sample_correctly():
    """The default Hoda run (`python benchmarks/hoda.py` trains it) reads the embedded digit as a 7."""
    int8 = HODA_RUN / "lenet5_int8.tflite"
    if not int8.is_file():
        pytest.skip(f"no Hoda run at {HODA_RUN.relative_to(PROJECT_ROOT)} (python benchmarks/hoda.py trains one)")
    info = inspect_tflite(int8)
    quant = {side: info[f"{side}s"][0] for side in ("input", "output")}
    _, figures = micro_files(int8.read_bytes(), quant, 0.25)
    assert figures["sample"]["predicted"] == SAMPLE_DIGIT


def test_the_folder_headers_compile_and_quantize_like_the_runtimes(micro_run, tmp_path):
    """model_settings.h, sample_digit.h and the array compile as C++11; PixelToInput gives the runtimes' int8 input.

    main.cc and micro_ops.h need a TensorFlow Lite Micro source tree, which this project does not carry.
    """
    import subprocess

    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH")
    folder = micro_run / MICRO_DIR
    program = tmp_path / "check.cc"
    program.write_text(
        '#include <cstdio>\n#include "lenet5_int8.h"\n#include "model_settings.h"\n#include "sample_digit.h"\n'
        "int main() {\n"
        '  std::printf("%u %d %d\\n", lenet5_int8_len, kTensorArenaSize, kSampleDigitLabel);\n'
        '  for (int i = 0; i < kInputSize; ++i) std::printf("%d ", PixelToInput(kSampleDigit[i]));\n'
        '  for (int p = 0; p < 256; ++p) std::printf("%d ", PixelToInput(static_cast<uint8_t>(p)));\n'
        "  return 0;\n}\n"
    )
    binary = tmp_path / "check"
    build = [compiler, "-std=c++11", "-Wall", "-Wextra", "-Werror", f"-I{folder}", str(program)]
    subprocess.run([*build, str(folder / "lenet5_int8.cc"), "-o", str(binary)], check=True, capture_output=True)
    first, values = subprocess.run([binary], check=True, capture_output=True, text=True).stdout.split("\n", 1)
    length, arena, label = map(int, first.split())
    model_bytes = (micro_run / "lenet5_int8.tflite").read_bytes()
    assert length == len(model_bytes) and arena == read_manifest(micro_run)["export"]["micro"]["arena_bytes"]
    assert label == SAMPLE_DIGIT
    q = np.array(values.split(), dtype=np.int64)
    handle = open_model(model_bytes, "tflm", arena_size=arena)
    np.testing.assert_array_equal(q[:784], handle.to_input(_sample_image(folder)[None]).reshape(-1))
    np.testing.assert_array_equal(q[784:], handle.levels)


# --- the folder's Makefile ---------------------------------------------------------------------

TFLM_TREE = Path(os.environ.get("TFLM_DIR") or PROJECT_ROOT.parent / "shared" / "tflm")


def _make(folder: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "-C", str(folder), f"TFLM_DIR={TFLM_TREE}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _needs_make_and_tree() -> None:
    needs("make", shutil.which("make") is not None, "apt-get install make")
    tree = (TFLM_TREE / "tensorflow/lite/micro/micro_interpreter.h").is_file()
    needs(f"a TensorFlow Lite Micro tree at {TFLM_TREE}", tree, "set TFLM_DIR to one (../shared/tflm in CI)")


def test_the_makefile_compiles_only_the_graphs_kernels(micro_run):
    """`make list`: TFLM's core, the kernels of the graph's ops (CMSIS-NN's or the reference ones), nothing else."""
    _needs_make_and_tree()
    folder = micro_run / MICRO_DIR
    ops = list(dict.fromkeys(op["op"] for op in inspect_tflite(micro_run / "lenet5_int8.tflite")["ops"]))
    stems = kernel_stems(ops)
    assert stems == ["conv", "pooling", "reshape", "fully_connected"]  # the LeNet-5 graph: CONV_2D, MAX_POOL_2D, ...
    lists = {}
    for kernels in ("cmsis-nn", "reference"):
        done = _make(folder, "list", f"KERNELS={kernels}")
        assert done.returncode == 0, done.stderr
        lists[kernels] = [Path(p).relative_to(TFLM_TREE).as_posix() for p in done.stdout.split()]
    cmsis, reference = lists["cmsis-nn"], lists["reference"]
    kernel_files = {p.rsplit("/", 1)[-1][:-3] for p in cmsis if "/micro/kernels/" in p and p.endswith(".cc")}
    assert {"conv", "pooling", "reshape", "fully_connected"} <= kernel_files
    assert not kernel_files & {"softmax", "add", "mul", "depthwise_conv", "svdf", "transpose_conv"}
    assert "tensorflow/lite/micro/kernels/cmsis_nn/conv.cc" in cmsis
    assert any(p.endswith("arm_convolve_s8.c") for p in cmsis)
    assert "reference_kernels/conv.cc" in reference and not any("cmsis_nn" in p for p in reference)
    assert "tensorflow/lite/micro/micro_interpreter.cc" in cmsis and not any(p.endswith("_test.cc") for p in cmsis)
    done = _make(folder, "list", "CORE=cortex-m99")
    assert done.returncode != 0 and "CORE must be one of cortex-m3, cortex-m4, cortex-m7" in done.stderr


@pytest.mark.slow
def test_the_makefile_builds_and_runs_the_sample_in_qemu(micro_run, tmp_path):
    """`make run`: main.cc built against the tree for a Cortex-M4 (CMSIS-NN) reads the sample digit in QEMU."""
    _needs_make_and_tree()
    needs("arm-none-eabi-gcc", shutil.which("arm-none-eabi-gcc") is not None, "apt-get install gcc-arm-none-eabi")
    needs("qemu-system-arm", shutil.which("qemu-system-arm") is not None, "apt-get install qemu-system-arm")
    folder = shutil.copytree(micro_run / MICRO_DIR, tmp_path / "micro")
    done = _make(folder, "-j2", "run", timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"digit {SAMPLE_DIGIT} ۷ (expected {SAMPLE_DIGIT} ۷)" in done.stdout
    assert "arena used" in done.stdout
