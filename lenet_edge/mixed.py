"""Mixed precision: the first layers in float32, the rest int8, from the QAT model's own weights and ranges.

Which layers win in int8 depends on the CPU (benchmarks/INT8_LAYERS.md): the
first convolution, with one input channel, loses to float on every x86 CPU
measured, and on some the second does too, while the dense layers win in int8
everywhere. `export --mixed` writes `lenet5_mixed.tflite`: the leading layers
in float32, a QUANTIZE op, then int8 to the output.

How it is built (`mixed_model`): the float architecture, its layers after the
float ones annotated with tfmot's default 8-bit quantize config and the ones
before left alone, then `quantize_apply`; tfmot then gives the last float layer
an output quantizer, the range where the graph turns int8. Every weight and
every learned range is copied from the trained QAT model, layer by layer, so
the int8 part has the scales of `lenet5_int8.tflite` and the float part the
QAT model's float kernels. The TFLite converter turns that into float ops, one
QUANTIZE, and int8 ops. No recalibration: the ranges are QAT's.

Only a float *prefix* can be built so: the converter keeps a layer float only
when no fake-quant range precedes it (a float layer between int8 ones is
quantized anyway), so `float_layers` must be the first k weighted layers (`c1`,
`c1,c3`, ...); the pools and flatten between them stay float with them.

`--mixed auto` (`fastest_split`) converts each prefix candidate and times it
against the others interleaved on this CPU, and keeps the fastest: the choice
is made for the CPU export runs on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .compat import keras, tf, tfmot
from .errors import ModelError
from .model import build_lenet5
from .runtimes.litert import (
    WEIGHTED_OPS,
    ModelSource,
    inspect_tflite,
    label,
    load_interpreter,
    op_details,
    op_precisions,
)


def weighted_layers(arch: str | keras.Model) -> list[str]:
    """The layers of `arch` (a name, or a float model) that carry weights (conv and dense), in graph order:
    what can be float or int8."""
    model = build_lenet5(arch) if isinstance(arch, str) else arch
    return [layer.name for layer in model.layers if layer.weights]


def same_depth(float_layers: Sequence[str], model: keras.Model) -> tuple[str, ...]:
    """As many of `model`'s leading weighted layers as `float_layers` has (at least one left int8).

    The piece verifier's mixed model takes the digit model's float depth: the same first convolution
    on one input channel, the layer int8 loses on x86, and the same choice of how far float goes.
    """
    order = weighted_layers(model)
    return tuple(order[: min(len(float_layers), len(order) - 1)])


def mixed_model(qat_model: keras.Model, float_model: keras.Model, float_layers: Sequence[str]) -> keras.Model:
    """A QAT graph with `float_layers` (a prefix, see `config.parse_float_layers`) and what lies between them in float.

    `float_model` is a freshly built float model of `qat_model`'s architecture (`build_lenet5(arch)`, or
    `verifier.build_verifier()`); weights and learned ranges are copied from `qat_model` (a trained
    `model.quantize_aware` model).
    """
    names = [layer.name for layer in float_model.layers]
    last = names.index(float_layers[-1])
    keep_float = set(names[: last + 1])
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    def clone(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        return fresh if layer.name in keep_float else annotate(fresh)

    annotated = keras.models.clone_model(float_model, clone_function=clone)
    with tfmot.quantization.keras.quantize_scope():
        model = tfmot.quantization.keras.quantize_apply(annotated)
    _copy_trained(qat_model, model)
    return model


def _copy_trained(source: keras.Model, target: keras.Model) -> None:
    """Set every variable of `target` from the variable of the same layer and role in `source`.

    Layers are matched by the name of the layer they wrap (`quant_c3` wraps `c3`); within a layer, by the
    variable's own name (`kernel`, `post_activation_min`, ...). The float prefix's last layer has an output
    range in `target` only; it is that layer's output range in `source` (`post_activation_min/max`).
    """
    trained = {_role(layer, w): w for layer in source.layers for w in layer.weights}
    for layer in target.layers:
        for w in layer.weights:
            key = _role(layer, w)
            if key[1] == "optimizer_step":
                continue  # a step counter, not a trained value
            if key not in trained:
                raise ModelError(f"the QAT model has no trained value for {w.name} of layer {layer.name}")
            w.assign(trained[key])


def _role(layer, weight) -> tuple[str, str]:
    wrapped = getattr(layer, "layer", layer)  # QuantizeWrapper -> the layer inside
    return wrapped.name, weight.name.split("/")[-1].split(":")[0]


def convert_mixed(model: keras.Model) -> bytes:
    """float32 input, the float prefix, QUANTIZE, int8 layers, int8 output: the converter reads QAT's ranges."""
    return mixed_converted(tf.lite.TFLiteConverter.from_keras_model(model))


def mixed_converted(converter: tf.lite.TFLiteConverter) -> bytes:
    """`convert_mixed` with a converter of the model(s) made already (several side by side: one output each)."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_output_type = tf.int8  # the int8 model's output, argmax on the raw scores
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return bytes(converter.convert())


def precision(model: ModelSource) -> list[dict[str, Any]]:
    """Each op and the type it computes in: `[{index, op, precision}]`, "float32", "int8" or "float32->int8"."""
    interpreter = load_interpreter(model)
    ops = [op for op in op_details(interpreter) if op["op_name"] != "DELEGATE"]
    kinds = op_precisions(interpreter, ops)
    return [{"index": int(op["index"]), "op": op["op_name"], "precision": k} for op, k in zip(ops, kinds, strict=True)]


def verify_mixed(model: ModelSource, members: int = 1) -> dict[str, Any]:
    """Check a mixed model: float32 input, float ops, exactly one QUANTIZE to int8, then int8 ops, int8 output.

    A model of several `members` side by side on one input (the line model's) has a QUANTIZE and an int8
    output per member: float ops before the first QUANTIZE, int8 ops after it but the other QUANTIZEs.

    Returns:
        `{"precision": precision(model), "float_ops", "int8_ops"}` (counts).

    Raises:
        ModelError: one line naming the model and what is out of place.
    """
    info = inspect_tflite(model)
    rows = precision(model)
    problems = []
    if info["inputs"][0]["dtype"] != "float32":
        problems.append(f"input is {info['inputs'][0]['dtype']}, not float32")
    problems += [f"output is {out['dtype']}, not int8" for out in info["outputs"] if out["dtype"] != "int8"]
    switches = [r for r in rows if "->" in r["precision"]]
    if [(r["op"], r["precision"]) for r in switches] != [("QUANTIZE", "float32->int8")] * members:
        problems.append(
            f"expected {members} QUANTIZE float32->int8, found "
            + (", ".join(f"{r['op']} {r['precision']}" for r in switches) or "none")
        )
    else:
        at = rows.index(switches[0])
        before, after = rows[:at], [r for r in rows[at + 1 :] if r not in switches]
        if not before or any(r["precision"] != "float32" for r in before):
            problems.append("the ops before the QUANTIZE are not all float32")
        if not after or any(r["precision"] != "int8" for r in after):
            problems.append("the ops after the QUANTIZE are not all int8")
    if problems:
        raise ModelError(f"{label(model)} is not a float-then-int8 model: " + "; ".join(problems))
    return {
        "precision": rows,
        "float_ops": sum(r["precision"] == "float32" for r in rows),
        "int8_ops": sum(r["precision"] == "int8" for r in rows),
    }


def verify_prefix(model: ModelSource, float_layers: Sequence[str]) -> dict[str, Any]:
    """`verify_mixed`, and the float part computes exactly `float_layers` (their weighted ops in float32).

    The converter can quantize a layer asked to stay float: in lenet5-classic, past `c1`, the average
    pooling after a TANH takes a range and turns int8, and what follows with it.

    Raises:
        ModelError: not float-then-int8, or fewer layers in float32 than asked (naming the ones quantized).
    """
    check = verify_mixed(model)
    kept = sum(r["precision"] == "float32" and r["op"] in WEIGHTED_OPS for r in check["precision"])
    if kept != len(float_layers):
        raise ModelError(
            f"{label(model)}: {', '.join(float_layers[kept:])} asked to stay float32 but the converter quantized "
            f"{'it' if len(float_layers) - kept == 1 else 'them'}: not a float prefix this graph can have"
        )
    return check


def fastest_split(
    qat_model: keras.Model,
    arch: str,
    baselines: dict[str, bytes],
    images: np.ndarray,
    *,
    rounds: int = 2000,
    warmup: int = 200,
    say: Callable[[str], None] = lambda message: None,
) -> tuple[tuple[str, ...], bytes, dict[str, Any]]:
    """Convert every float-prefix candidate, time them with `baselines` on this CPU, keep the fastest candidate.

    Args:
        qat_model: the trained QAT model.
        arch: its architecture.
        baselines: name -> .tflite bytes timed alongside (float32 and int8), for the record.
        images: (N, 28, 28) uint8 images the timing cycles through.
        rounds, warmup: interleaved timing rounds (one thread, XNNPACK), as bench times.

    Returns:
        The chosen float layers, that candidate's bytes, and the record: `{"chosen", "p50_us": {name: µs},
        "skipped": {name: why}, "rounds", "machine"}` (a candidate's name is its float layers joined by "+";
        skipped: candidates the converter could not keep float as asked (`verify_prefix`), never timed;
        machine: the CPU it was chosen on and the load average).
    """
    from .harness import timed_rounds
    from .machine import cpu_identity, loadavg
    from .runtimes import open_model

    order = weighted_layers(arch)
    candidates, skipped = {}, {}
    for k in range(1, len(order)):
        say(f"converting the candidate with {', '.join(order[:k])} in float32")
        name, data = "+".join(order[:k]), convert_mixed(mixed_model(qat_model, build_lenet5(arch), order[:k]))
        try:
            verify_prefix(data, order[:k])
        except ModelError as exc:
            skipped[name] = str(exc)
            say(f"left out: {exc}")
            continue
        candidates[name] = data
    if not candidates:
        raise ModelError(f"no float prefix of {arch} converts to a float-then-int8 model")
    models = {**baselines, **candidates}
    handles = {name: open_model(data, "litert", threads=1) for name, data in models.items()}
    failed: dict[str, str] = {}
    load_start = loadavg()
    say(f"timing {len(candidates)} mixed candidates against {', '.join(baselines)} on this CPU")
    timed_rounds(handles, images, warmup, record=False, failed=failed)
    samples = timed_rounds(handles, images, rounds, record=True, failed=failed)
    if failed:
        raise ModelError(f"timing the mixed candidates failed: {'; '.join(f'{n}: {e}' for n, e in failed.items())}")
    p50 = {name: round(float(np.median(s[:, 0])) / 1e3, 3) for name, s in samples.items()}
    chosen = min(candidates, key=p50.get)
    record = {
        "chosen": chosen,
        "p50_us": p50,
        "skipped": skipped,
        "rounds": rounds,
        "machine": {**cpu_identity(), "loadavg_1m_start": load_start, "loadavg_1m_end": loadavg()},
    }
    return tuple(chosen.split("+")), candidates[chosen], record
