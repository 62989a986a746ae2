"""Why LiteRT: the same trained model in LiteRT, ONNX Runtime and OpenVINO, measured side by side.

    pip install -e ".[peers]"        # tf2onnx, onnx, onnxruntime, openvino, nncf
    python benchmarks/peers.py [--run benchmarks/runs/lenet5] [--runs 3000] [--warmup 300]

From a trained run (as benchmarks/hoda.py leaves it: the float Keras model and
the LiteRT float32, int8 QAT and int8 PTQ files):

1. convert the float Keras model to ONNX with tf2onnx and check its logits
   against Keras on the validation split;
2. quantize it with ONNX Runtime's `quantize_static` (QDQ and QOperator,
   per-channel, MinMax) and, read by OpenVINO, with NNCF, all calibrated on
   the very images the run's own `export --ptq` used (the seeded train-split
   sample its manifest records); check each against its float source;
3. load every model in one process behind the bench's model interface
   (benchmarks/peer_runtimes.py) and time them all with lenet_edge.benchmark's
   harness: accuracy and flips on the whole test split, interleaved rotated
   single-image rounds after warm-up, per-round ratios, batch throughput;
4. rewrite benchmarks/PEERS.md.

Converted models go to benchmarks/runs/peers/ (git-ignored: they derive from Hoda).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
from common import HERE, portable
from peer_runtimes import FLOAT_IO, OrtModel, OvModel

# Everything taken from lenet_edge, in one place: the bench's harness (timing, statistics, comparison),
# the run's data, and the project's one TensorFlow/Keras import with its safe model loader.
from lenet_edge import harness
from lenet_edge.benchmark import compare_to_reference
from lenet_edge.config import BenchConfig
from lenet_edge.data import load_run_splits
from lenet_edge.fileio import atomic_write_text, sha256_bytes
from lenet_edge.machine import cpu_identity, isa_line, loadavg
from lenet_edge.quiet import native_stderr_captured
from lenet_edge.runtimes import open_model
from lenet_edge.runtimes.base import input_levels

with native_stderr_captured():  # TensorFlow's start-up INFO lines go to fd 2 before its logging exists
    from lenet_edge.compat import tf, versions
    from lenet_edge.model import load_float

PEERS = ("tf2onnx", "onnx", "onnxruntime", "openvino", "nncf")
LEVELS = input_levels(FLOAT_IO[0][0])  # pixel value -> float32 v/255, the float models' input
REFERENCE = "LiteRT float32"
QDQ = "ONNX Runtime | int8 QDQ S8S8 per-channel"
FLOAT_TOLERANCE = 1e-4  # max |logit difference| allowed between a float conversion and Keras (float32 round-off)
LITERT_FILES = {"float32": "float32_tflite", "int8 QAT": "int8_tflite", "int8 PTQ": "int8_ptq_tflite"}


# --------------------------------------------------------------------------- converting


def calibration_images(manifest: dict, train: np.ndarray) -> np.ndarray:
    """The train-split sample `export` calibrated on: same seed, same size, same draw (checked by hash)."""
    record = manifest["export"]["calibration"]
    rng = np.random.default_rng(record["seed"])
    idx = rng.choice(len(train), size=min(record["size"], len(train)), replace=False)
    if sha256_bytes(idx.astype("<i8").tobytes()) != record["indices_sha256"]:
        sys.exit("error: the calibration indices differ from the ones export recorded (different train split?)")
    return train[idx]  # (n, 28, 28) uint8


def to_onnx(keras_path: Path, target: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Write the float Keras model as ONNX (opset 17); return the Keras model's logits function."""
    import tf2onnx

    model = load_float(keras_path)
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(target))
    return lambda images: model.predict(LEVELS[images][..., None], batch_size=500, verbose=0)


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over the calibration images, 100 at a time."""

    def __init__(self, images: np.ndarray, input_name: str):
        self.batches = [{input_name: LEVELS[images[i : i + 100]][..., None]} for i in range(0, len(images), 100)]
        self.next = 0

    def get_next(self):
        self.next += 1
        return self.batches[self.next - 1] if self.next <= len(self.batches) else None

    def rewind(self):
        self.next = 0


def ort_int8(float_path: Path, target: Path, calibration: np.ndarray, fmt: str) -> None:
    """Static int8 by ONNX Runtime's documented recipe: pre-process, then `quantize_static` (MinMax, per-channel).

    QDQ uses signed 8-bit activations and weights (S8S8, ORT's default); QOperator
    uses unsigned activations (U8S8), the form ORT recommends for QOperator on
    x86-64: with S8S8 it warns of bad performance on x64 and runs on slower kernels.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = float_path.with_name(float_path.stem + "_prepared.onnx")
    # ONNX shape inference + ORT's basic graph fusions; the symbolic shape pass is skipped: it needs sympy,
    # which the extra does not pull in.
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(target),
        _Calibration(calibration, "image"),
        quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QInt8 if fmt == "QDQ" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def openvino_models(float_onnx: Path, work: Path, calibration: np.ndarray) -> tuple[Path, Path]:
    """OpenVINO IR of the ONNX float model (weights kept float32) and its NNCF int8 quantization."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(float_onnx))
    model.reshape({0: [1, 28, 28, 1]})  # NNCF calibrates one image at a time; the bench reshapes as it needs
    float_xml, int8_xml = work / "lenet5_float32.xml", work / "lenet5_int8_nncf.xml"
    ov.save_model(model, str(float_xml), compress_to_fp16=False)  # the default would halve the weights to fp16
    dataset = nncf.Dataset([LEVELS[image][None, ..., None] for image in calibration])
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration))
    ov.save_model(quantized, str(int8_xml), compress_to_fp16=False)
    return float_xml, int8_xml


def parity(logits: np.ndarray, source: np.ndarray) -> dict:
    """Agreement of the argmax and the largest |logit difference| against the source model's logits."""
    return {
        "agreement": float((logits.argmax(-1) == source.argmax(-1)).mean()),
        "max_abs_diff": float(np.abs(logits - source).max()),
    }


def verify(peers: dict, keras: np.ndarray, images: np.ndarray) -> dict:
    """Each peer's agreement and max logit difference against its float source; a float one must match Keras."""
    (ort_float, _), (ov_float, _) = peers["ONNX Runtime | float32"], peers["OpenVINO | float32"]
    onnx_logits, ov_logits = ort_float.scores(images), ov_float.scores(images)
    checks = {
        "ONNX float32": {"how": "tf2onnx `from_keras`, opset 17", "source": "Keras", **parity(onnx_logits, keras)},
        "OpenVINO float32": {"how": "`read_model` of the ONNX file", "source": "Keras", **parity(ov_logits, keras)},
    }
    for name, check in checks.items():
        if check["max_abs_diff"] > FLOAT_TOLERANCE:
            sys.exit(f"error: {name} differs from Keras by {check['max_abs_diff']:.2e} > {FLOAT_TOLERANCE:g}")
    sources = {"ONNX": ("ONNX float32", onnx_logits), "OpenVINO": ("OpenVINO float32", ov_logits)}
    how = {
        "QDQ": "`quant_pre_process`, `quantize_static` QDQ S8S8 MinMax",
        "QOperator": "`quant_pre_process`, `quantize_static` QOperator U8S8 MinMax",
        "NNCF": "`nncf.quantize` (defaults) of the OpenVINO float32 IR",
    }
    for name, (model, _) in peers.items():
        if name in ("ONNX Runtime | float32", "OpenVINO | float32"):
            continue
        label, source = sources[name.split(" ")[0]]
        made = next((text for key, text in how.items() if key in name), "no INFERENCE_PRECISION_HINT")
        checks[name.replace(" | ", " ")] = {"how": made, "source": label, **parity(model.scores(images), source)}
    return checks


def litert_checks(manifest: dict) -> dict:
    """The parity `export` measured for the LiteRT files (same validation split), from the run's manifest."""
    checks = {}
    for label, key in LITERT_FILES.items():
        parity_ = manifest["export"]["models"][key]["parity"]
        source = "Keras QAT model" if key == "int8_tflite" else "Keras"
        checks[f"LiteRT {label}"] = {"how": "`lenet-edge export`", "source": source, **parity_}
    return checks


def size_bytes(path: Path) -> int:
    """File size; an OpenVINO IR counts its .xml and .bin."""
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


def convert_all(keras_path: Path, work: Path, calibration: np.ndarray) -> tuple[Callable, dict]:
    """Every peer model, converted into `work` and loaded: name -> (bench model, file); and Keras's logits."""
    work.mkdir(parents=True, exist_ok=True)
    float_onnx = work / "lenet5_float32.onnx"
    keras_logits = to_onnx(keras_path, float_onnx)
    qdq_onnx, qop_onnx = work / "lenet5_int8_qdq.onnx", work / "lenet5_int8_qop.onnx"
    ort_int8(float_onnx, qdq_onnx, calibration, "QDQ")
    ort_int8(float_onnx, qop_onnx, calibration, "QOperator")
    ov_float, ov_int8 = openvino_models(float_onnx, work, calibration)
    peers = {
        "ONNX Runtime | float32": (OrtModel(float_onnx), float_onnx),
        QDQ: (OrtModel(qdq_onnx), qdq_onnx),
        "ONNX Runtime | int8 QOperator U8S8 per-channel": (OrtModel(qop_onnx), qop_onnx),
        "OpenVINO | float32": (OvModel(ov_float), ov_float),
        "OpenVINO | float32 file, default hint": (OvModel(ov_float, precision=None), ov_float),
        "OpenVINO + NNCF | int8": (OvModel(ov_int8), ov_int8),
    }
    return keras_logits, peers


# --------------------------------------------------------------------------- measuring


def measure(models: dict, sizes: dict, images: np.ndarray, labels: np.ndarray, config: BenchConfig) -> dict:
    """Accuracy, flips, latency, ratio and throughput of every model, timed together by the bench's harness."""
    failed: dict[str, str] = {}
    preds = harness.predictions(models, images, config.accuracy_batch, failed)
    harness.timed_rounds(models, images, config.warmup, record=False, failed=failed)
    samples = harness.timed_rounds(models, images, config.runs, record=True, failed=failed)
    throughput = harness.throughput(
        models, images, config.batch_sizes, config.throughput_seconds, config.throughput_chunks, failed
    )
    if failed:
        sys.exit("error: " + "; ".join(f"{name}: {why}" for name, why in failed.items()))
    rows = {}
    for name in models:
        rows[name] = {
            "size_bytes": sizes[name],
            **harness.accuracy_stats(preds[name], labels),
            "latency_us": harness.stats_us(samples[name][:, 0]),
            "invoke_us": harness.stats_us(samples[name][:, 1]),  # the runtime's call alone
            "throughput_ips": throughput[name],
        }
    compare_to_reference(rows, preds, samples, REFERENCE)  # flips, and ratios taken round by round, as bench does
    return rows


def machine() -> dict:
    """The CPU (model, family/model numbers, the ISA extensions that matter to int8/bf16 kernels) and load."""
    return {**cpu_identity(), "loadavg": loadavg()}


def peer_versions() -> dict:
    return {**versions(), **{p: metadata.version(p) for p in PEERS}}


# --------------------------------------------------------------------------- report


def render(rows: dict, checks: dict, notes: dict, info: dict) -> str:
    v, config = info["versions"], info["config"]
    batch = config.batch_sizes[-1]
    lines = [
        "# Why LiteRT: the same model in ONNX Runtime and OpenVINO",
        "",
        'Regenerated by `python benchmarks/peers.py` (needs `pip install -e ".[peers]"`; do not edit by hand). '
        f"One trained LeNet-5 ({info['run']}), every runtime on one thread, all models loaded in one process and "
        "timed by lenet_edge.benchmark's harness: one image end to end (uint8 -> model input by one 256-entry "
        f"table lookup -> run -> argmax), {config.warmup} warm-up + {config.runs:,} timed rounds, every round "
        "runs each model once in an order rotated every round; `x LiteRT f32` is the median over rounds of the "
        "per-round ratio. Accuracy and flips (predictions that differ from LiteRT float32's) on all "
        f"{info['n_test']:,} Hoda test digits; batch-{batch} throughput is the median of "
        f"{config.throughput_chunks} interleaved chunks.",
        "",
        f"| runtime | precision | KB | top-1 % | flips vs LiteRT f32 | p50 µs | p90 µs | run p50 µs "
        f"| x LiteRT f32 | batch-{batch} img/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    hint = f"default hint ({notes['ov_default_precision']})"
    for name, r in rows.items():
        runtime, precision = name.split(" ", 1) if name.startswith("LiteRT") else name.split(" | ")
        precision = precision.replace("default hint", hint)
        lines.append(
            f"| {runtime} | {precision} | {r['size_bytes'] / 1024:.0f} | {100 * r['accuracy']:.2f} | {r['flips']} "
            f"| {r['latency_us']['p50']:.1f} | {r['latency_us']['p90']:.1f} | {r['invoke_us']['p50']:.1f} "
            f"| {r['ratios_to_reference']['p50_latency']:.2f} | {r['throughput_ips'][str(batch)]:,.0f} |"
        )
    m = info["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']} ({isa_line(m)}); load average {m['loadavg']} at the start, "
        f"{info['loadavg_end']} at the end. Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "`run p50` is the runtime's call alone (LiteRT `invoke()`, ORT `run_with_iobinding`, OpenVINO "
        "`infer()`); the rest of the end-to-end time is the input lookup, the copy in and the argmax.",
        "",
        "## How each model was made and checked",
        "",
        f"Calibration for every int8 model: the {info['calibration']} train-split images the run's own "
        "`export --ptq` used (seeded draw, checked against the manifest's hash); never test images. Checked on "
        f"the {info['n_val']:,} validation digits: argmax agreement and max |logit difference| against the "
        f"float source; a float conversion must stay within {FLOAT_TOLERANCE:g} of Keras.",
        "",
        "| model | made by | checked against | agreement | max abs logit diff |",
        "|---|---|---|---:|---:|",
    ]
    for name, c in checks.items():
        agreement, diff = f"{100 * c['agreement']:.2f}%", f"{c['max_abs_diff']:.2e}"
        lines.append(f"| {name.replace('default hint', hint)} | {c['how']} | {c['source']} | {agreement} | {diff} |")
    lines += [
        "",
        "## How each runtime was driven",
        "",
        "- Every model is a `lenet_edge.runtimes.ModelHandle`, the handle `lenet-edge bench` times: the image goes "
        "through the same 256-entry table to the model's input and is copied once into the runtime's input "
        "buffer; only the runtime's own calls differ.",
        "- LiteRT: the bench's own handle, unchanged: `Interpreter(num_threads=1)` with "
        "XNNPACK (the default delegate), `set_tensor` / `invoke` / `get_tensor`; the int8 models "
        "take int8 input, so their table maps each pixel straight to it.",
        "- ONNX Runtime: `InferenceSession` on the CPU provider, `intra_op_num_threads=1`, sequential, "
        "default graph optimizations; input and output bound once by IOBinding to numpy buffers, the input "
        "copied into the bound buffer, `run_with_iobinding()`; batch size changes rebind the buffers "
        "(the ONNX graph keeps tf2onnx's dynamic batch).",
        '- OpenVINO: the IR read by `Core.read_model`, reshaped to a static batch, `compile_model("CPU")` with '
        "`INFERENCE_NUM_THREADS=1`, `NUM_STREAMS=1`, `PERFORMANCE_HINT=LATENCY` and, unless the row says "
        "otherwise, `INFERENCE_PRECISION_HINT=f32`; one infer request, the input copied into its own input "
        "tensor, `infer()` without arguments; a batch size change reshapes and compiles again.",
        "",
        "## Notes",
        "",
        f"- ORT int8 QDQ with graph optimizations off (`ORT_DISABLE_ALL`, the QDQ graph run op by op in float "
        f"around QuantizeLinear/DequantizeLinear): top-1 {100 * notes['qdq_unoptimized']['accuracy']:.2f}%, "
        f"{notes['qdq_unoptimized']['flips']} flips vs LiteRT float32 (optimized: "
        f"{notes['qdq_optimized_flips']}). A gap between the two is the integer kernels' doing.",
        f"- OpenVINO's CPU plugin defaults to `INFERENCE_PRECISION_HINT={notes['ov_default_precision']}` on this "
        "CPU (it has avx512_bf16): a float32 model compiled with default properties runs in that precision. The "
        "`float32 file, default hint` row shows what that costs and changes; the `float32` row forces f32.",
        "- ORT's QOperator form is quantized with unsigned activations (U8S8), as ORT's documentation "
        "recommends for it on x86-64; with signed activations `quantize_static` warns of bad performance on "
        "x64, and that model runs on slower kernels.",
        "- The figures first quoted in issue #15 came from an AVX2-only CPU without VNNI (and an earlier "
        "training run). This CPU has AVX-512 VNNI, which the int8 kernels use where present, so int8/float "
        "ratios and ORT's QDQ flips (61 there, put down to u8s8 overflow without VNNI) differ by machine.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=HERE / "runs" / "lenet5", help="a trained and exported run")
    parser.add_argument("--data", help="the run's dataset (default: the source its manifest records)")
    parser.add_argument("--runs", type=int, default=3000, help="timed single-image rounds")
    parser.add_argument("--warmup", type=int, default=300, help="untimed rounds before them")
    parser.add_argument("--work", type=Path, default=HERE / "runs" / "peers", help="where converted models go")
    parser.add_argument("--out", type=Path, default=HERE / "PEERS.md")
    args = parser.parse_args()
    missing = [p for p in PEERS if not _installed(p)]
    if missing:
        sys.exit(f'error: {", ".join(missing)} not installed; run: pip install -e ".[peers]"')
    manifest_file = args.run / "manifest.json"
    if not manifest_file.is_file():
        sys.exit(f"error: {manifest_file}: no such file; train and export a run first (python benchmarks/hoda.py)")
    manifest = json.loads(manifest_file.read_text())
    artifacts = manifest["artifacts"]
    if "export" not in manifest or any(key not in artifacts for key in LITERT_FILES.values()):
        sys.exit(f"error: {manifest_file}: the run needs `lenet-edge export --int8 --ptq` first")
    try:
        config = BenchConfig(threads=1, runs=args.runs, warmup=args.warmup, batch_sizes=(32,))
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    recipe = manifest["config"]  # the run is described by its recipe, not by a path on this machine
    run = f"`{recipe['arch']}`, {recipe['epochs']} float + {recipe['qat_epochs']} QAT epochs"
    info = {"run": run, "config": config, "machine": machine()}

    print("loading the run's data", flush=True)
    _, splits = load_run_splits(manifest, args.data, cache_dir=HERE / "runs" / "cache")
    test, val = splits["test"], splits["val"]
    calibration = calibration_images(manifest, splits["train"].images)
    info.update(n_test=len(test.images), n_val=len(val.images), calibration=len(calibration))

    print("converting", flush=True)
    keras_logits, peers = convert_all(args.run / artifacts["float_keras"]["path"], args.work, calibration)
    ov_default = peers["OpenVINO | float32 file, default hint"][0]
    litert = {f"LiteRT {label}": args.run / artifacts[key]["path"] for label, key in LITERT_FILES.items()}

    print("checking", flush=True)
    checks = {**litert_checks(manifest), **verify(peers, keras_logits(val.images), val.images)}

    print(f"measuring {len(litert) + len(peers)} models on {len(test.images):,} test images", flush=True)
    models = {name: open_model(path, threads=config.threads, xnnpack=True) for name, path in litert.items()}
    models.update({name: model for name, (model, _) in peers.items()})
    sizes = {name: path.stat().st_size for name, path in litert.items()}
    sizes.update({name: size_bytes(path) for name, (_, path) in peers.items()})
    rows = measure(models, sizes, test.images, test.labels.astype(np.int64), config)

    unoptimized = OrtModel(peers[QDQ][1], optimize=False).predict_all(test.images, config.accuracy_batch)
    reference = models[REFERENCE].predict_all(test.images, config.accuracy_batch)
    notes = {
        "qdq_unoptimized": {
            "accuracy": float((unoptimized == test.labels).mean()),
            "flips": int((unoptimized != reference).sum()),
        },
        "qdq_optimized_flips": rows[QDQ]["flips"],
        "ov_default_precision": ov_default.precision,
    }
    info.update(versions=peer_versions(), loadavg_end=loadavg())
    atomic_write_text(args.out, portable(render(rows, checks, notes, info)))
    print(args.out.read_text())


def _installed(package: str) -> bool:
    try:
        metadata.version(package)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main()
