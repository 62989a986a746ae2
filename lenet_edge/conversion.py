"""Export: a trained run's Keras models -> float32 and full-integer int8 TFLite, verified.

`export_run(run_dir)` is the stage's entry point:

1. read the run's manifest and load the float model (and the QAT model for int8);
2. convert: float32 always; int8 from the QAT model; optionally int8 by
   post-training quantization (PTQ) of the float model, to measure what QAT buys;
3. verify every int8 model is integer-only with int8 input and output;
4. check parity of the int8 model with the QAT Keras model on the validation split;
5. write the files atomically, record them (sha256, size, quantization
   parameters) in the manifest, and rewrite the manifest last.

Nothing is written until every model has converted, verified and passed
parity, so a failed export leaves the run directory as it was.

Conversion is byte-deterministic: the same weights, calibration sample and
library versions give an identical `.tflite` (the converter embeds the
TensorFlow version and a hash of the model, nothing time- or path-dependent).
For a QAT model the scales come from the fake-quant ranges learned in training
and the calibration sample does not change a byte; it matters for PTQ only.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .carray import C_NAME, c_array
from .compat import tf, tfmot, versions
from .config import AUTO, ExportConfig
from .data.preprocess import to_model_input
from .errors import ModelError
from .fileio import sha256_bytes, sha256_file, staged_files, sweep_temporaries
from .firmware import MICRO_DIR, MICRO_FILES, micro_files
from .harness import output_agreement
from .manifest import (
    artifact_path,
    manifest_path,
    read_manifest,
    record_artifact,
    remove_stale_artifacts,
    stage_manifest,
)
from .model import NUM_CLASSES, build_lenet5, load_float, load_qat
from .runtimes import SCORES_BATCH, TensorSpec, contract_problems, open_model, predict_tflite
from .runtimes.litert import ModelSource, inspect_tflite, io_quantization, label, xnnpack_delegation
from .tasks import MEDIAPIPE_FILE
from .web import FOLDER_FILES, WEB_DIR

FLOAT32_FILE = "lenet5_float32.tflite"
INT8_FILE = "lenet5_int8.tflite"
INT8_PTQ_FILE = "lenet5_int8_ptq.tflite"
MIXED_FILE = "lenet5_mixed.tflite"
TEACHER_FILE = "teacher_float32.tflite"
VERIFIER_FILE = "verifier_int8.tflite"
VERIFIER_MIXED_FILE = "verifier_mixed.tflite"
LINE_FILE = "line_int8.tflite"
LINE_MIXED_FILE = "line_mixed.tflite"
VERIFIER_TFLM_PIECES = 200  # validation pieces the int8 verifier is also run on in TensorFlow Lite Micro
VERIFIER_TFLM_STEPS = 1  # largest difference, in int8 output steps, allowed between TFLM and LiteRT's reference


# --- conversion -------------------------------------------------------------------------------


def convert_float(model) -> bytes:
    """Convert a float Keras model to a float32 TFLite flatbuffer."""
    return _convert(tf.lite.TFLiteConverter.from_keras_model(model))


def convert_int8(qat_model, representative: np.ndarray) -> bytes:
    """Convert a quantization-aware (QAT) Keras model to full-integer int8 TFLite, int8 input and output.

    Args:
        qat_model: a model wrapped by `model.quantize_aware` (fake-quant on weights and activations).
        representative: uint8 `(N, 28, 28)` white-on-black images. For a QAT model
            the converter takes every range from the fake-quant nodes and this
            sample changes nothing (checked); the converter still requires one.

    Returns:
        The `.tflite` bytes; byte-identical for the same weights and library versions.
    """
    if not _is_quantize_aware(qat_model):
        raise ValueError("qat_model must be a quantization-aware model (model.quantize_aware); got a float model")
    return _convert_full_integer(qat_model, representative, io_type=tf.int8)


def convert_ptq(float_model, representative: np.ndarray) -> bytes:
    """Full-integer int8 TFLite of a float model by post-training quantization, int8 input and output.

    The activation ranges are calibrated on `representative` (uint8 `(N, 28, 28)`
    images); comparing this model with `convert_int8`'s measures what QAT buys.
    """
    if _is_quantize_aware(float_model):
        raise ValueError("float_model must be a float model; got a quantization-aware one (use convert_int8)")
    return _convert_full_integer(float_model, representative, io_type=tf.int8)


def _convert_full_integer(model, representative: np.ndarray, io_type) -> bytes:
    """Integer-only conversion (TFLITE_BUILTINS_INT8: an op without an int8 kernel fails the conversion)."""
    samples = to_model_input(representative)
    if len(samples) == 0:
        raise ValueError("representative must hold at least one image")

    def representative_dataset():
        for i in range(len(samples)):
            yield [samples[i : i + 1]]  # (1, 28, 28, 1) float32

    return _integer_only(tf.lite.TFLiteConverter.from_keras_model(model), representative_dataset, io_type)


def _integer_only(converter, representative_dataset, io_type) -> bytes:
    """`converter`'s model, int8 throughout, `io_type` in and out, ranges from `representative_dataset`."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    return _convert(converter)


def _convert(converter) -> bytes:
    with warnings.catch_warnings():
        # Printed for every int8-I/O conversion; the input range comes from the model itself.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return bytes(converter.convert())


def _is_quantize_aware(model) -> bool:
    return any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) for layer in model.layers)


# --- inspection and verification ----------------------------------------------------------------


def verify_int8(model: ModelSource, classes: int = NUM_CLASSES) -> dict[str, Any]:
    """Check that a model is full-integer int8, as a microcontroller or XNNPACK's int8 path needs it.

    Checks: one input and one output, both int8 with a per-tensor scale > 0; input
    shape (1, 28, 28, 1) and output (1, `classes`: 10, or the verifier's 2); no DEQUANTIZE and no QUANTIZE from or
    to float; every tensor an op reads or writes is int8, except constant int32
    ones (biases, reshape shapes). A QUANTIZE from int8 to int8 is an integer
    requantization (the QAT `lenet5-classic` model has one after each conv's
    tanh, whose int8 kernel has a fixed output scale); it is allowed and counted.

    Returns:
        `{"ops": {op name: count}, "nodes", "requantize_ops", "quantization": io_quantization}`.

    Raises:
        ModelError: one line naming the model and up to three problems found.
    """
    info = inspect_tflite(model)
    problems = _int8_problems(info, classes)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelError(f"{label(model)} is not a full-integer int8 model: " + "; ".join(problems[:3]) + more)
    dtype = {t["index"]: t["dtype"] for t in info["tensors"]}
    return {
        "ops": dict(sorted(Counter(op["op"] for op in info["ops"]).items())),
        "nodes": len(info["ops"]),
        "requantize_ops": sum(op["op"] == "QUANTIZE" and dtype[op["inputs"][0]] == "int8" for op in info["ops"]),
        "quantization": io_quantization(info),
    }


def _int8_problems(info: Mapping, classes: int = NUM_CLASSES) -> list[str]:
    specs = {
        side: [TensorSpec(e["name"], e["dtype"], tuple(e["shape"]), e["scale"], e["zero_point"]) for e in info[side]]
        for side in ("inputs", "outputs")
    }
    problems = contract_problems(specs["inputs"], specs["outputs"], classes)  # the contract every stage checks
    return problems + _integer_only_problems(info)


def _integer_only_problems(info: Mapping) -> list[str]:
    """What keeps a graph (`inspect_tflite`) from being integer-only: float input or output, float ops."""
    problems = []
    for side in ("inputs", "outputs"):
        problems += [
            f"{side[:-1]} {e['name']!r} is {e['dtype']}, not int8" for e in info[side][:1] if e["dtype"] != "int8"
        ]
    tensors = {t["index"]: t for t in info["tensors"]}
    produced = {t for op in info["ops"] for t in op["outputs"]}
    graph_inputs = {entry["index"] for entry in info["inputs"]}
    for op in info["ops"]:
        name, in_types = op["op"], [tensors[t]["dtype"] for t in op["inputs"]]
        out_types = [tensors[t]["dtype"] for t in op["outputs"]]
        if name == "DEQUANTIZE":
            problems.append(f"op {op['index']} DEQUANTIZE ({'/'.join(in_types)} -> {'/'.join(out_types)})")
            continue
        if name == "QUANTIZE" and "float32" in in_types + out_types:
            problems.append(f"op {op['index']} QUANTIZE ({'/'.join(in_types)} -> {'/'.join(out_types)})")
            continue
        for t in op["inputs"] + op["outputs"]:
            dtype = tensors[t]["dtype"]
            # int32 only as a constant: a bias (scale = input scale x weight scale) or a shape.
            constant = t not in produced and t not in graph_inputs
            if dtype != "int8" and not (dtype == "int32" and constant):
                kind = "constant" if constant else "activation"
                problems.append(f"op {op['index']} {name} has {dtype} {kind} {tensors[t]['name']!r}")
                break
    return problems


# --- numerics ----------------------------------------------------------------------------------


def predict_keras(model, images: np.ndarray, batch_size: int = SCORES_BATCH) -> np.ndarray:
    """Float `(N, classes)` outputs of a Keras model (float or QAT) on uint8 `(N, 28, 28)` images."""
    x = to_model_input(images)
    outputs = [model(x[i : i + batch_size], training=False).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, int(model.output_shape[-1])), np.float32)


def parity(
    model_bytes: ModelSource, keras_model, images: np.ndarray, labels: np.ndarray, classes: int = NUM_CLASSES
) -> dict[str, Any]:
    """Compare a TFLite model with the Keras model it came from on the same images.

    Returns:
        `n`, `top1_tflite`, `top1_keras` (accuracies against `labels`), `agreement`
        (fraction of identical top-1 predictions), `disagreements` (count) and
        `max_abs_diff` (largest output difference, in the TFLite output's units).
    """
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
    if len(labels) == 0:
        raise ValueError("parity needs at least one image")
    tflite_scores = predict_tflite(model_bytes, images, classes=classes)
    keras_scores = predict_keras(keras_model, images)
    pred_tflite, pred_keras = tflite_scores.argmax(1), keras_scores.argmax(1)
    return {
        "n": int(len(labels)),
        "top1_tflite": float(np.mean(pred_tflite == labels)),
        "top1_keras": float(np.mean(pred_keras == labels)),
        "agreement": float(np.mean(pred_tflite == pred_keras)),
        "disagreements": int(np.sum(pred_tflite != pred_keras)),
        "max_abs_diff": float(np.max(np.abs(tflite_scores - keras_scores))),
    }


# --- the stage ---------------------------------------------------------------------------------

_NO_QAT_HINT = (
    "it was trained with --qat-epochs 0; re-run `lenet-edge train` with --qat-epochs 1 or more, "
    "or export with --ptq (post-training quantization of the float model) instead of --int8"
)


def export_run(
    run_dir: str | os.PathLike,
    config: ExportConfig | None = None,
    *,
    splits: Mapping | None = None,
    progress: Callable[[str], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Export a trained run to TFLite and record the files in its manifest.

    Always writes `lenet5_float32.tflite`. With `int8`, `lenet5_int8.tflite`
    from the QAT model; with `ptq`, `lenet5_int8_ptq.tflite` from the float model;
    with `teacher` (the default) and a run that has one, `teacher_float32.tflite`,
    the distillation teacher, which `bench` lists as a reference row;
    with `c_array` (needs `int8`), `lenet5_int8.h` / `lenet5_int8.cc`; with `micro`
    (needs `int8`), the TensorFlow Lite Micro folder `micro/` (see `firmware`).

    Export owns these files: what an earlier export wrote and this one does
    not (a PTQ model, the C files, micro/) leaves the manifest and the directory, once
    the new files and manifest are in place.

    Args:
        run_dir: a run directory written by `train` (holds `manifest.json`).
        config: what to write and check (`ExportConfig`); or pass its fields as
            keywords (`int8=True, min_agreement=0.99`), which also override a given config.
        splits: the run's data as `load_splits` returns it (needs "train" and "val");
            loaded from the manifest when None.
        progress: called with a short message before each step.

    Returns:
        The summary `format_summary` prints: per file its bytes, ratio to
        float32, validation accuracy, quantization, XNNPACK partitions, parity.

    Raises:
        ValueError: a setting out of range (see `ExportConfig`).
        ModelError: no manifest or model (says what to run), an int8 model that
            is not integer-only, or parity below `min_agreement` (with the numbers).
    """
    config = dataclasses.replace(config, **settings) if config is not None else ExportConfig(**settings)
    say = progress or (lambda message: None)
    run_dir = Path(run_dir)

    # 1. The run: its manifest, models and data. Fail before any slow step.
    manifest = read_manifest(run_dir)
    sweep_temporaries(run_dir)  # what an interrupted earlier export or train left
    arch = manifest.get("config", {}).get("arch")
    if arch is None:
        raise ModelError(f"{manifest_path(run_dir)}: the manifest has no config.arch")
    train_hint = f"run `lenet-edge train --dir {run_dir}` first"
    float_keras = artifact_path(run_dir, manifest, "float_keras", train_hint)
    qat_weights = artifact_path(run_dir, manifest, "qat_weights", _NO_QAT_HINT) if config.int8 else None
    has_teacher = config.teacher and "teacher_keras" in manifest.get("artifacts", {})
    teacher_keras = artifact_path(run_dir, manifest, "teacher_keras") if has_teacher else None
    has_verifier = config.int8 and "verifier_qat_weights" in manifest.get("artifacts", {})
    verifier_weights = artifact_path(run_dir, manifest, "verifier_qat_weights") if has_verifier else None
    has_line = config.int8 and "line_qat_weights" in manifest.get("artifacts", {})
    line_weights = _line_member_weights(run_dir, manifest) if has_line else None
    if splits is None:
        from .data import load_run_splits  # the data layer pulls in PIL and the dataset readers; only needed here

        splits = load_run_splits(manifest)[1]
    for split in ("train", "val"):
        if split not in splits:
            raise ModelError(f"{manifest_path(run_dir)}: the run's data has no {split!r} split")
    train, val = splits["train"], splits["val"]
    if config.web:
        from .web import node_modules

        node_modules()  # LiteRT.js installed (`npm ci`), checked before the slow steps

    say(f"loading the {arch} models")
    float_model = load_float(float_keras)
    qat_model = load_qat(qat_weights, arch) if config.int8 else None

    rng = np.random.default_rng(config.calibration_seed)
    size = min(config.calibration_size, len(train.images))
    calibration_idx = rng.choice(len(train.images), size=size, replace=False)
    calibration = train.images[calibration_idx]  # (n, 28, 28) uint8
    calibration_record = {
        "split": "train",
        "size": int(len(calibration_idx)),
        "seed": int(config.calibration_seed),
        "indices_sha256": sha256_bytes(calibration_idx.astype("<i8").tobytes()),
    }

    # 2-4. Convert, verify, check numerics; everything in memory until it all passed.
    results: dict[str, dict[str, Any]] = {}  # manifest key -> the file's bytes and what we learned about it

    card = _card_maker(run_dir, manifest, config, qat_weights or float_keras)
    say("converting the float model to float32 TFLite")
    results["float32_tflite"] = _checked(FLOAT32_FILE, convert_float(float_model), float_model, val, say, card=card)
    if config.int8:
        say("converting the QAT model to full-integer int8 TFLite")
        data = convert_int8(qat_model, calibration)
        results["int8_tflite"] = _checked(
            INT8_FILE, data, qat_model, val, say, int8=True, min_agreement=config.min_agreement, card=card
        )
    if config.mixed:
        results["mixed_tflite"] = _mixed(qat_model, arch, config, results, val, say, card)
    if config.ptq:
        say(f"converting the float model to int8 by post-training quantization ({len(calibration)} images)")
        data = convert_ptq(float_model, calibration)
        # PTQ is the baseline QAT is measured against: its parity with the float model is reported, not enforced.
        results["int8_ptq_tflite"] = _checked(INT8_PTQ_FILE, data, float_model, val, say, int8=True, card=card)
    mediapipe = None
    if config.mediapipe:
        say("converting the QAT model for MediaPipe's ImageClassifier (uint8 RGB in, probabilities out)")
        mediapipe = _mediapipe_variant(qat_model, results["int8_tflite"]["data"], card, val, say)
    mixed_layers = results["mixed_tflite"]["float_layers"] if config.mixed else None
    if verifier_weights is not None:
        results.update(_verifier(verifier_weights, run_dir, manifest, splits, config, say, mixed_layers))
    if line_weights is not None:
        results.update(_line_models(line_weights, run_dir, manifest, splits, config, say, mixed_layers))
    if teacher_keras is not None:
        say("converting the distillation teacher to float32 TFLite (a reference for bench)")
        teacher = load_float(teacher_keras)
        results["teacher_tflite"] = _checked(TEACHER_FILE, convert_float(teacher), teacher, val, say)
    files: dict[str, tuple[bytes, dict]] = {  # manifest key -> (bytes, extras recorded with the artifact)
        key: (r["data"], {k: r[k] for k in _ARTIFACT_KEYS if r.get(k) is not None or k == "xnnpack_partitions"})
        for key, r in results.items()
    }
    if config.c_array:
        int8_result = results["int8_tflite"]
        header, source = c_array(int8_result["data"], C_NAME, quant=int8_result["quantization"])
        extras = {"array": C_NAME, "model": "int8_tflite"}
        files["c_header"] = (header.encode(), extras)
        files["c_source"] = (source.encode(), extras)
    if mediapipe is not None:
        files["int8_mediapipe_tflite"] = (
            mediapipe["data"],
            {"metadata": mediapipe["metadata"], "model": "int8_tflite"},
        )
    if config.web:
        from .web import web_files

        say(f"writing the web page into {WEB_DIR}/ (LiteRT.js)")
        for name, source in web_files(results["int8_tflite"]["data"]).items():
            content = source if isinstance(source, bytes) else source.read_bytes()
            files[f"{WEB_DIR}/{name}"] = (content, {"model": "int8_tflite"} if name.endswith(".tflite") else {})
    micro = None
    if config.micro:
        say("running the int8 model in TensorFlow Lite Micro for the micro/ folder")
        int8_result = results["int8_tflite"]
        try:
            texts, micro = micro_files(int8_result["data"], int8_result["quantization"], config.micro_arena_margin)
        except ModelError as exc:
            raise ModelError(f"{INT8_FILE}: {exc}") from None
        files.update({key: (text.encode(), {"model": "int8_tflite"}) for key, text in texts.items()})

    # 5. Write the files and the manifest, all renamed into place together (the manifest last).
    say(f"writing to {run_dir}")
    old_manifest = copy.deepcopy(manifest)
    artifacts = manifest.setdefault("artifacts", {})
    for key in EXPORT_FILES:
        artifacts.pop(key, None)  # export owns these entries: only what it writes now stays
    for folder, wanted in ((MICRO_DIR, micro is not None), (WEB_DIR, config.web)):
        if wanted:
            (run_dir / folder).mkdir(exist_ok=True)  # its files are staged in run_dir and renamed into it
    with staged_files(run_dir) as stage:
        for key, (data, extras) in files.items():
            staged = stage(EXPORT_FILES[key])
            staged.write_bytes(data)
            record_artifact(manifest, key, staged, name=EXPORT_FILES[key], **extras)
        manifest["export"] = {
            "versions": versions(),
            "config": dataclasses.asdict(config),
            "calibration": calibration_record,
            "parity_split": "val",
            **({"micro": micro} if micro is not None else {}),
            **({"mediapipe": mediapipe["check"]} if mediapipe is not None else {}),
            "models": {
                key: {k: v for k, v in r.items() if k not in ("file", "data", *_ARTIFACT_KEYS)}
                for key, r in results.items()
            },
        }
        stage_manifest(stage, manifest)
    remove_stale_artifacts(run_dir, old_manifest, manifest)

    float_size = len(results["float32_tflite"]["data"])
    return {
        "run_dir": str(run_dir),
        "arch": arch,
        "calibration": calibration_record,
        "files": [
            {
                "key": key,
                "file": result["file"],
                "bytes": len(result["data"]),
                "ratio_to_float32": len(result["data"]) / float_size,
                "val_accuracy": result["parity"]["top1_tflite"],
                "quantization": result.get("quantization"),
                "xnnpack_partitions": result["xnnpack_partitions"],
                "parity": result["parity"],
                **{k: result[k] for k in ("float_layers", "precision", "auto") if k in result},
            }
            for key, result in results.items()
        ],
        "c_files": [EXPORT_FILES[key] for key in ("c_header", "c_source") if key in files],
        "micro": None if micro is None else {**micro, "dir": MICRO_DIR},
        "mediapipe": None if mediapipe is None else {**mediapipe["check"], "file": MEDIAPIPE_FILE},
        "web": WEB_DIR if config.web else None,
        "metadata": {key: r["metadata"] for key, r in results.items() if r["metadata"]},
    }


# manifest key -> file name of everything export writes (and so owns: an export replaces all of them)
EXPORT_FILES = {
    "float32_tflite": FLOAT32_FILE,
    "int8_tflite": INT8_FILE,
    "int8_ptq_tflite": INT8_PTQ_FILE,
    "mixed_tflite": MIXED_FILE,
    "teacher_tflite": TEACHER_FILE,
    "verifier_int8_tflite": VERIFIER_FILE,
    "verifier_mixed_tflite": VERIFIER_MIXED_FILE,
    "line_int8_tflite": LINE_FILE,
    "line_mixed_tflite": LINE_MIXED_FILE,
    "c_header": f"{C_NAME}.h",
    "c_source": f"{C_NAME}.cc",
    **{key: f"{MICRO_DIR}/{name}" for key, name in MICRO_FILES.items()},
    "int8_mediapipe_tflite": MEDIAPIPE_FILE,
    **{f"{WEB_DIR}/{name}": f"{WEB_DIR}/{name}" for name in FOLDER_FILES},
}

# Recorded with the artifact itself (`record_artifact` extras); the rest goes to the manifest's `export` section.
_ARTIFACT_KEYS = ("quantization", "ops", "xnnpack_partitions", "metadata")


def _mixed(qat_model, arch: str, config: ExportConfig, results: dict, val, say, card) -> dict[str, Any]:
    """lenet5_mixed.tflite: its float layers chosen (on this CPU, for "auto") or given, converted, verified."""
    from . import mixed

    if config.float_layers == AUTO:
        baselines = {name: results[f"{name}_tflite"]["data"] for name in ("float32", "int8")}
        layers, data, timing = mixed.fastest_split(
            qat_model, arch, baselines, val.images, rounds=config.mixed_rounds, say=say
        )
    else:
        layers, timing = config.float_layers, None
        say(f"converting the QAT model with {', '.join(layers)} in float32 to {MIXED_FILE}")
        data = mixed.convert_mixed(mixed.mixed_model(qat_model, build_lenet5(arch), layers))
    check = _float_then_int8(MIXED_FILE, data, float_layers=layers)
    result = _checked(MIXED_FILE, data, qat_model, val, say, min_agreement=config.min_agreement, card=card)
    result.update(float_layers=list(layers), precision=check["precision"], auto=timing)
    return result


def _verifier(
    weights: Path, run_dir: Path, manifest: dict, splits: Mapping, config: ExportConfig, say, mixed_layers=None
) -> dict[str, dict[str, Any]]:
    """verifier_int8.tflite (and with `mixed_layers`, verifier_mixed.tflite): the QAT piece verifier, verified
    like the digit model. Returns manifest key -> result.

    Its validation pieces are composed again from the validation split exactly as `train` made them
    (same lines, same seed); each model must agree with the QAT Keras model on `min_agreement` of
    them. The int8 one must also give TensorFlow Lite Micro's interpreter the same int8 outputs as
    LiteRT's built-in kernels on the first `VERIFIER_TFLM_PIECES`, within `VERIFIER_TFLM_STEPS` (so
    `read` could run on a microcontroller). The mixed one has as many float32 layers as the digit
    model's mixed model (`mixed.same_depth`): `read` pairs it with that model, on CPUs where int8 loses.
    As for the line model (`_line_models`), a file an earlier export converted from the same `sources`
    (the weights, the TensorFlow version, the float layers) is kept as it is, with its recorded checks.
    """
    from .verifier import build_verifier

    sources = {"weights_sha256": sha256_file(weights), "tensorflow": tf.__version__}
    mixed_as = (mixed_layers, build_verifier)
    return _kept_or_converted("verifier", weights, sources, mixed_as, run_dir, manifest, splits, config, say)


def _verifier_converted(
    todo: dict, weights: Path, manifest: dict, splits: Mapping, config: ExportConfig, say, sources: dict
) -> dict[str, dict[str, Any]]:
    """`_verifier`'s files in `todo` (manifest key -> (file, float layers or None)), converted and verified."""
    from . import mixed
    from .runtimes.micro import MicroModel
    from .verifier import CLASSES, build_verifier, load_verifier_qat, training_pieces

    record = manifest.get("verifier", {})
    lines = record.get("data", {}).get("lines", {})
    seed = manifest.get("config", {}).get("seed", 0)
    say("composing the verifier's validation pieces again")
    pieces, labels = training_pieces(splits["val"].images, splits["val"].labels, int(lines.get("val", 4)), seed + 1)
    model = load_verifier_qat(weights)
    results = {}
    for key, (file, layers) in todo.items():
        if layers is None:
            say(f"converting the QAT piece verifier to full-integer int8 TFLite ({file})")
            data = _convert_full_integer(model, pieces[: config.calibration_size], io_type=tf.int8)
            say(f"verifying {file} is integer-only")
            try:
                verification = verify_int8(data, classes=CLASSES)
            except ModelError as exc:
                raise ModelError(f"{file}: {exc}") from None
            agreement = _verifier_parity(file, data, model, pieces, labels, config, say)
            say(f"running {file} in TensorFlow Lite Micro on {VERIFIER_TFLM_PIECES} pieces")
            sample = pieces[:VERIFIER_TFLM_PIECES]
            try:
                micro = MicroModel(data, classes=CLASSES).raw_all(sample)
            except ModelError as exc:
                raise ModelError(f"{file}: {exc}") from None
            reference = open_model(data, xnnpack=False, classes=CLASSES).raw_all(sample)
            tflm = output_agreement(micro, reference)
            # TFLM's kernels may round a requantization differently from LiteRT's built-in ones: one int8 step
            if tflm["max_abs_diff"] > VERIFIER_TFLM_STEPS:
                raise ModelError(
                    f"{file}: TensorFlow Lite Micro's int8 outputs differ from LiteRT's built-in kernels' by up "
                    f"to {tflm['max_abs_diff']:.0f} steps on {len(sample)} pieces (at most {VERIFIER_TFLM_STEPS} "
                    "allowed)"
                )
            extras = {
                "quantization": verification["quantization"],
                "requantize_ops": verification["requantize_ops"],
                "ops": verification["ops"],
                "parity": agreement,
                "tflm": {"pieces": int(len(sample)), **tflm},
            }
        else:
            say(f"converting the QAT piece verifier with {', '.join(layers)} in float32 to {file}")
            data = mixed.convert_mixed(mixed.mixed_model(model, build_verifier(), layers))
            check = _float_then_int8(file, data)
            extras = {
                "parity": _verifier_parity(file, data, model, pieces, labels, config, say),
                "float_layers": list(layers),
                "precision": check["precision"],
            }
        results[key] = {
            "file": file,
            "data": data,
            "metadata": None,
            **extras,
            "sources": _with_float_layers(sources, layers),
            **_delegation(data),
        }
    return results


def _line_member_weights(run_dir: Path, manifest: dict) -> list[tuple[Path, float]]:
    """`(QAT weights, dropout)` of each member of the run's line model (a run from before members: one)."""
    from .line_model import member_keys

    rates = manifest.get("line_model", {}).get("config", {}).get("dropout", [0.0])
    return [(artifact_path(run_dir, manifest, member_keys(k)[1]), float(rate)) for k, rate in enumerate(rates)]


def _line_models(
    members: list[tuple[Path, float]],
    run_dir: Path,
    manifest: dict,
    splits: Mapping,
    config: ExportConfig,
    say,
    mixed_layers=None,
) -> dict[str, dict[str, Any]]:
    """line_int8.tflite (and with `mixed_layers`, line_mixed.tflite): the QAT line model, stored with input width
    `STORED_WIDTH`, verified. Returns manifest key -> result.

    A line model of several members is one file: the members side by side on the same strip, one output
    each, so that each keeps its own int8 scale (`reading.LineReader` reads them together with
    `line_model.read_line`; one output of their concatenated logits, on one scale, read 0.2% of the
    validation numbers otherwise than the Keras members). line_int8.tflite is full-integer int8; in
    line_mixed.tflite each member has as many leading float32 layers as the digit model's mixed model
    (`mixed.same_depth`: the first convolutions, on one input channel, where int8 loses on x86), the rest
    int8 with QAT's ranges: `read` pairs it with that model. Its validation numbers are composed again
    from the validation split exactly as `train` made them; each file must read the same digits as the
    Keras graph it is converted from on `min_agreement` of them: the QAT members, or for the mixed one the
    members with their float layers not fake-quantized (its agreement with the QAT members is recorded
    too, `agreement_with_qat`). The parity's `top1_*` are the shares of numbers each reads exactly
    (`line_model.read_line`).

    The conversions and their checks took half of exporting the tests' tiny run, and give the same bytes for
    the same weights: a file an earlier export converted from the same `sources` (the members' weights, the
    TensorFlow version, the float layers) is kept as it is, with its recorded parity, when exporting again
    (say with --micro).
    """
    from .line_model import STORED_WIDTH, build_line_model

    sources = {
        "weights_sha256": [sha256_file(weights) for weights, _ in members],
        "dropout": [dropout for _, dropout in members],
        "tensorflow": tf.__version__,
        "stored_width": STORED_WIDTH,
    }
    mixed_as = (mixed_layers, build_line_model)
    return _kept_or_converted("line", members, sources, mixed_as, run_dir, manifest, splits, config, say)


def _kept_or_converted(
    model: str, source, sources: dict, mixed_as: tuple, run_dir: Path, manifest: dict, splits, config, say
) -> dict[str, dict[str, Any]]:
    """The int8 file of `model` ("verifier" or "line", converted from `source`: its weights, or the line model's
    members) and, with `mixed_as` = (the digit model's float layers, the model's architecture builder) not
    (None, ...), its mixed file with as many float32 layers (`mixed.same_depth`). Each that an earlier export
    converted from the same `sources` (`_converted_before`) is kept, its recorded parity checked again against
    `config`; the rest are converted and checked. Returns manifest key -> result."""
    converted, check = {
        "verifier": (_verifier_converted, _check_verifier_agreement),
        "line": (_line_converted, _check_line_agreement),
    }[model]
    mixed_layers, architecture = mixed_as
    wanted = {f"{model}_int8_tflite": (EXPORT_FILES[f"{model}_int8_tflite"], None)}  # key -> (file, float layers)
    if mixed_layers is not None:
        from . import mixed

        layers = mixed.same_depth(mixed_layers, architecture())
        wanted[f"{model}_mixed_tflite"] = (EXPORT_FILES[f"{model}_mixed_tflite"], layers)
    results = {}
    for key, (file, layers) in wanted.items():
        kept = _converted_before(run_dir, manifest, key, _with_float_layers(sources, layers))
        if kept is not None:
            say(f"keeping {file}: converted by an earlier export from the same weights")
            check(file, kept["parity"], config)
            results[key] = kept
    todo = {key: wanted[key] for key in wanted if key not in results}
    if todo:
        results.update(converted(todo, source, manifest, splits, config, say, sources))
    return {key: results[key] for key in wanted}


def _with_float_layers(sources: dict, layers) -> dict:
    """What a file is converted from: the weights' `sources`, and a mixed one's float layers."""
    return sources if layers is None else {**sources, "float_layers": list(layers)}


def _line_converted(
    todo: dict,
    members: list[tuple[Path, float]],
    manifest: dict,
    splits: Mapping,
    config: ExportConfig,
    say,
    sources: dict,
) -> dict[str, dict[str, Any]]:
    """`_line_models`' files in `todo` (manifest key -> (file, float layers or None)), converted and verified."""
    from . import mixed
    from .line_model import (
        FRAME,
        STORED_WIDTH,
        batch,
        build_line_model,
        load_line_qat,
        member_logp,
        read_line,
        validation_lines,
    )
    from .reading import LineReader

    made = manifest.get("line_model", {}).get("data", {})
    seed = manifest.get("config", {}).get("seed", 0)
    say("composing the line model's validation numbers again")
    count = int(made.get("lines", {}).get("val", 8))
    strips, digits = validation_lines(splits["val"], count, seed, bool(made.get("written_heights")))
    qat = [load_line_qat(weights, dropout) for weights, dropout in members]
    truth = [d.tolist() for d in digits]

    def read_keras(models) -> list[list[int]]:  # the members together, as `read` combines them
        read = []
        for strip in strips:
            side_by_side = np.concatenate([m(batch([strip]), training=False).numpy()[0, 0] for m in models], axis=-1)
            read.append([d for d, *_ in read_line(member_logp(side_by_side))])
        return read

    read_qat = read_keras(qat)

    def representative_dataset():  # QAT's ranges come from training: these only satisfy the converter
        for strip in strips[: config.calibration_size]:
            x = np.zeros((1, FRAME, STORED_WIDTH, 1), np.float32)  # (1, 40, 256, 1)
            width = min(STORED_WIDTH, strip.shape[1])
            x[0, :, :width, 0] = strip[:, :width] / 255.0
            yield [x]

    results = {}
    for key, (file, layers) in todo.items():
        if layers is None:
            say(f"converting the QAT line model ({len(qat)} member(s)) to full-integer int8 TFLite ({file})")
            data = _integer_only(_line_converter(qat), representative_dataset, tf.int8)
            info = inspect_tflite(data)
            problems = _integer_only_problems(info)
            if problems:
                raise ModelError(f"{file} is not a full-integer int8 model: " + "; ".join(problems[:3]))
            source = read_qat
            extras = {
                "quantization": {
                    **io_quantization(info),
                    "outputs": [{k: entry[k] for k in ("scale", "zero_point", "dtype")} for entry in info["outputs"]],
                },
                "ops": dict(sorted(Counter(op["op"] for op in info["ops"]).items())),
            }
        else:
            say(f"converting the QAT line model with {', '.join(layers)} in float32, the rest int8 ({file})")
            models = [
                mixed.mixed_model(m, build_line_model(dropout), layers)
                for m, (_, dropout) in zip(qat, members, strict=True)
            ]
            data = mixed.mixed_converted(_line_converter(models))
            check = _float_then_int8(file, data, members=len(models))
            # its float layers compute without QAT's fake quantization: checked against that Keras graph, the
            # one it was converted from (the QAT members' agreement recorded beside it)
            source = read_keras(models)
            extras = {"float_layers": list(layers), "precision": check["precision"]}
        say(f"comparing {file} with the Keras line model on {len(strips)} validation numbers")
        reader = LineReader(data)
        read_tflite = [[d for d, *_ in read_line(reader(strip))] for strip in strips]
        agreement = {
            "n": len(truth),
            "top1_tflite": _share(read_tflite, truth),
            "top1_keras": _share(source, truth),
            "agreement": _share(read_tflite, source),
            "disagreements": int(sum(a != b for a, b in zip(read_tflite, source, strict=True))),
            **({} if source is read_qat else {"agreement_with_qat": _share(read_tflite, read_qat)}),
        }
        _check_line_agreement(file, agreement, config)
        results[key] = {
            "file": file,
            "data": data,
            "metadata": None,
            **extras,
            "parity": agreement,
            "sources": _with_float_layers(sources, layers),
            **_delegation(data),
        }
    return results


def _share(read: list, other: list) -> float:
    """The share of readings in `read` equal to `other`'s, in turn."""
    return float(np.mean([a == b for a, b in zip(read, other, strict=True)]))


def _line_converter(models: list) -> tf.lite.TFLiteConverter:
    """A converter of the line model's `models` side by side (one output each), its input `STORED_WIDTH` wide:
    a fixed width in the file (every runtime can load it as it is), which LiteRT resizes to each number's."""
    from .line_model import FRAME, STORED_WIDTH

    def logits(x):  # one (B, 1, W/2, 11) output per member
        return tuple(m(x, training=False) for m in models) if len(models) > 1 else models[0](x, training=False)

    holder = tf.Module()
    holder.models = models  # keeps every member's variables alive for the converter
    call = tf.function(logits)
    spec = tf.TensorSpec((1, FRAME, STORED_WIDTH, 1), tf.float32, name="line")
    return tf.lite.TFLiteConverter.from_concrete_functions([call.get_concrete_function(spec)], holder)


def _check_line_agreement(file: str, agreement: dict, config: ExportConfig) -> None:
    if agreement["agreement"] < config.min_agreement:
        raise ModelError(
            f"{file}: reads {agreement['agreement']:.4f} of {agreement['n']} validation numbers as the Keras "
            f"line model does, below the required {config.min_agreement}"
        )


def _converted_before(run_dir: Path, manifest: dict, key: str, sources: dict) -> dict[str, Any] | None:
    """Model `key` as the run's last export wrote and checked it, if converted from the same `sources` and
    unchanged since; else None. The result `export` would record, its bytes read back from the file."""
    record = manifest.get("export", {}).get("models", {}).get(key)
    entry = manifest.get("artifacts", {}).get(key)
    if not record or not entry or record.get("sources") != sources:
        return None
    path = run_dir / entry["path"]
    data = path.read_bytes() if path.is_file() else b""
    if sha256_bytes(data) != entry["sha256"]:
        return None
    return {"file": entry["path"], "data": data, **{k: entry.get(k) for k in _ARTIFACT_KEYS}, **record}


def _float_then_int8(file: str, data: bytes, members: int = 1, float_layers=None) -> dict[str, Any]:
    """`mixed.verify_mixed` of a model about to be written as `file` (with `float_layers`, `mixed.verify_prefix`:
    those layers float32), its error naming the file."""
    from . import mixed

    try:
        return mixed.verify_mixed(data, members) if float_layers is None else mixed.verify_prefix(data, float_layers)
    except ModelError as exc:
        raise ModelError(f"{file}: {exc}") from None


def _verifier_parity(name: str, data: bytes, model, pieces, labels, config: ExportConfig, say) -> dict[str, Any]:
    from .verifier import CLASSES

    say(f"comparing {name} with the Keras verifier on {len(labels)} validation pieces")
    agreement = parity(data, model, pieces, labels, classes=CLASSES)
    _check_verifier_agreement(name, agreement, config)
    return agreement


def _check_verifier_agreement(name: str, agreement: dict, config: ExportConfig) -> None:
    if agreement["agreement"] < config.min_agreement:
        raise ModelError(
            f"{name}: agrees with the Keras verifier on {agreement['agreement']:.4f} of {agreement['n']} "
            f"validation pieces, below the required {config.min_agreement}"
        )


def _delegation(data: bytes) -> dict[str, Any]:
    delegation = xnnpack_delegation(data)
    return {"xnnpack_partitions": delegation["partitions"] or None, "xnnpack": delegation}


def _card_maker(run_dir: Path, manifest: dict, config: ExportConfig, weights: Path):
    """key -> the ModelCard of that model of the run (metadata's model-level words)."""
    from .metadata import model_card

    weights_sha256 = sha256_file(weights)
    return lambda key: model_card(
        manifest, key, author=config.author, license=config.license, weights_sha256=weights_sha256
    )


def _described(key: str, bare: bytes, card, val, say, outputs=None) -> dict:
    """The converted model with its TFLite metadata, after checking it gives the same raw outputs as without.

    `outputs(model, images)`: the model's raw outputs (default: LiteRT's built-in kernels through `open_model`).
    """
    from .metadata import with_metadata

    data, record = with_metadata(bare, key, card(key))
    say(f"checking {EXPORT_FILES[key]}'s metadata leaves its {len(val.labels)} validation outputs unchanged")
    run = outputs or (lambda model, images: open_model(model, xnnpack=False).raw_all(images))
    before, after = (run(m, val.images) for m in (bare, data))
    if not np.array_equal(before, after):
        raise ModelError(f"{EXPORT_FILES[key]}: adding the metadata changed the model's outputs; nothing was written")
    return {"data": data, "metadata": {**record, "identical_outputs_checked_on": int(len(val.labels))}}


def _mediapipe_variant(qat_model, int8: bytes, card, val, say) -> dict:
    """lenet5_int8_mediapipe.tflite, checked: the int8 graph unchanged inside, its probabilities the int8 model's."""
    from .inference import softmax
    from .tasks import check_body, convert_mediapipe, variant_outputs

    variant = convert_mediapipe(qat_model)
    described = _described("int8_mediapipe_tflite", variant, card, val, say, outputs=variant_outputs)
    data = described["data"]
    body = check_body(data, int8)
    probabilities = variant_outputs(data, val.images)
    int8_raw = open_model(int8, xnnpack=False).raw_all(val.images)
    expected = softmax(open_model(int8, xnnpack=False).logits(int8_raw))
    same = probabilities.argmax(1) == int8_raw.argmax(1)
    difference = float(np.abs(probabilities - expected).max()) if len(expected) else 0.0
    if not same.all() or difference > 1e-5:
        raise ModelError(
            f"{MEDIAPIPE_FILE}: its top-1 differs from lenet5_int8.tflite's on {int((~same).sum())} of "
            f"{len(same)} validation images (largest probability difference {difference:.3g}); nothing was written"
        )
    check = {
        **body,
        "validation_images": int(len(same)),
        "top1_agreement_with_int8": float(same.mean()),
        "max_probability_difference": difference,
    }
    return {"data": data, "metadata": described["metadata"], "check": check}


def _checked(file, data, keras_model, val, say, *, int8=False, min_agreement=None, card=None) -> dict[str, Any]:
    """Embed the metadata (`card`: `_card_maker`'s), verify (int8), compare with `keras_model` on the
    validation split, and read XNNPACK's partitioning. Without `card` the file gets no metadata."""
    described = {"data": data, "metadata": None}
    if card is not None:
        key = next(key for key, name in EXPORT_FILES.items() if name == file)
        described = _described(key, data, card, val, say)
    data = described["data"]
    result: dict[str, Any] = {"file": file, "data": data, "metadata": described["metadata"]}
    if int8:
        say(f"verifying {file} is integer-only")
        try:
            verification = verify_int8(data)
        except ModelError as exc:
            raise ModelError(f"{file}: {exc}") from None
        result.update(quantization=verification["quantization"], requantize_ops=verification["requantize_ops"])
    result["ops"] = dict(sorted(Counter(op["op"] for op in inspect_tflite(data)["ops"]).items()))
    say(f"comparing {file} with the Keras model on {len(val.labels)} validation images")
    agreement = parity(data, keras_model, val.images, val.labels)
    if min_agreement is not None and agreement["agreement"] < min_agreement:
        raise ModelError(
            f"{file}: agrees with the Keras model on {agreement['agreement']:.4f} of {agreement['n']} validation "
            f"images ({agreement['disagreements']} differ; accuracy {agreement['top1_tflite']:.4f} TFLite vs "
            f"{agreement['top1_keras']:.4f} Keras), below the required {min_agreement}"
        )
    result["parity"] = agreement
    result.update(_delegation(data))
    return result


def format_summary(summary: Mapping) -> str:
    """The short table the CLI prints, plus how a device quantizes its input and reads the scores."""
    header = f"{'file':<24} {'bytes':>9} {'vs float32':>10} {'val acc':>8} {'XNNPACK partitions':>18}"
    lines = [header, "-" * len(header)]
    for f in summary["files"]:
        partitions = "-" if f["xnnpack_partitions"] is None else str(f["xnnpack_partitions"])
        lines.append(
            f"{f['file']:<24} {f['bytes']:>9,} {f['ratio_to_float32']:>10.2f} "
            f"{100 * f['val_accuracy']:>7.2f}% {partitions:>18}"
        )
    if summary.get("c_files"):
        lines.append(f"C array for TFLite Micro: {', '.join(summary['c_files'])}")
    micro = summary.get("micro")
    if micro:
        sample = micro["sample"]
        lines.append(
            f"TFLite Micro project in {micro['dir']}/: tensor arena {micro['arena_min_bytes']:,} bytes minimum, "
            f"kTensorArenaSize {micro['arena_bytes']:,}; flash {micro['flash_bytes']:,} bytes; "
            f"{micro['macs_total']:,} MACs per image; sample {sample['digit']} read as {sample['predicted']}"
        )
    by_key = {f["key"]: f for f in summary["files"]}
    mixed = by_key.get("mixed_tflite")
    if mixed is not None:
        lines.append(_mixed_line(mixed))
    verifier = by_key.get("verifier_mixed_tflite")
    if verifier is not None:
        lines.append(
            f"{verifier['file']}: the piece verifier with {', '.join(verifier['float_layers'])} in float32, "
            f"the rest int8; `lenet-edge read --model {summary['run_dir']}/{mixed['file']}` cuts with it"
        )
    line = by_key.get("line_int8_tflite")
    if line is not None:
        p = line["parity"]
        lines.append(
            f"{line['file']}: the line model `read` checks its cuts with; it reads {100 * p['top1_tflite']:.2f}% of "
            f"{p['n']:,} validation numbers exactly (its 'val acc'), and the same digits as the QAT Keras model "
            f"on {100 * p['agreement']:.2f}%"
        )
    if "line_mixed_tflite" in by_key:
        lines.append(_line_mixed_line(by_key["line_mixed_tflite"], f"{summary['run_dir']}/{mixed['file']}"))
    metadata = next(iter(summary.get("metadata", {}).values()), None)
    if metadata:
        lines.append(
            f"TFLite metadata in every model: {metadata['name'].split(' (')[0]}, version {metadata['version']}, "
            f"author {metadata['author']}; labels 0-9 and ۰-۹ ({', '.join(metadata['associated_files'])})"
        )
    if summary.get("mediapipe"):
        m = summary["mediapipe"]
        lines.append(
            f"MediaPipe ImageClassifier model: {m['file']} (uint8 RGB in, probabilities out; the int8 graph "
            f"unchanged inside, {m['tensors_compared']} tensors compared; same top-1 as int8 on "
            f"{100 * m['top1_agreement_with_int8']:.2f}% of {m['validation_images']} validation images)"
        )
    if summary.get("web"):
        lines.append(
            f"Web page in {summary['web']}/ (LiteRT.js, the int8 model): "
            f"`lenet-edge serve-web {summary['run_dir']}` and open the address it prints"
        )
    int8 = by_key.get("int8_tflite")
    if int8 is not None:
        p, q = int8["parity"], int8["quantization"]
        lines += [
            "",
            f"{int8['file']} agrees with the QAT Keras model on {100 * p['agreement']:.2f}% "
            f"of {p['n']} validation images",
            f"int8 input:  q = round(pixel / 255 / {q['input']['scale']:.9g}) + ({q['input']['zero_point']}), "
            "pixel 0-255, white digit on black, 28x28",
            f"int8 output: score = {q['output']['scale']:.9g} * (q - ({q['output']['zero_point']})), "
            "logits for the digits 0-9",
        ]
    return "\n".join(lines) + "\n"


def _line_mixed_line(entry: Mapping, mixed_model: str) -> str:
    """What line_mixed.tflite is, what reads with it (`mixed_model`), and how it reads the validation numbers."""
    p = entry["parity"]
    return (
        f"{entry['file']}: the line model with {', '.join(entry['float_layers'])} in float32 in each member, the "
        f"rest int8; `lenet-edge read --model {mixed_model}` reads with it; it reads {100 * p['top1_tflite']:.2f}% "
        f"of the validation numbers exactly, and the same digits as its Keras graph on {100 * p['agreement']:.2f}% "
        f"(as the QAT one, whose fake quantization its float layers leave out, on {100 * p['agreement_with_qat']:.2f}%)"
    )


def _mixed_line(entry: Mapping) -> str:
    """How the mixed model computes, and (auto) what it was chosen among on this CPU."""
    ops = entry["precision"]
    at = next(i for i, r in enumerate(ops) if r["op"] == "QUANTIZE")
    before, after = (" ".join(r["op"] for r in part) for part in (ops[:at], ops[at + 1 :]))
    line = f"{entry['file']}: {', '.join(entry['float_layers'])} in float32 ({before}), QUANTIZE, int8 ({after})"
    auto = entry.get("auto")
    if auto:
        p50 = ", ".join(f"{name} {us:.1f}" for name, us in auto["p50_us"].items())
        line += f"; fastest on this CPU of the candidates timed (p50 µs: {p50})"
    return line
