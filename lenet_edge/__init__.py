"""lenet-edge: a handwritten Persian digit recognizer for edge devices.

LeNet-5 trained with quantization-aware training, exported to a full-integer
int8 TFLite model, and benchmarked against the float model in LiteRT.

The pipeline from Python (a notebook, say); `import lenet_edge` is instant,
TensorFlow loads at the first call that needs it:

    import lenet_edge as le

    source, run_dir = "synthetic:3000:500", "runs/notebook"  # or a .npz/.cdb file, an image folder
    data = le.load_dataset(source)
    print({name: len(split) for name, split in data.splits.items()})
    run = le.train(data=source, epochs=10, qat_epochs=2, run_dir=run_dir, force=True)
    le.export(run_dir, int8=True)
    results = le.bench(run_dir, runs=500, warmup=50, throughput_seconds=0.5)
    print({name: m["accuracy"] for name, m in results["models"].items()})
    print(le.predict(["my_digit.png"], run_dir=run_dir))

`le.train(recipe="best", data=...)` starts from the `best` recipe instead (a distilled
teacher and elastic augmentation; keywords still override it).
`le.read(images, run_dir=...)` reads whole numbers (one per image) with the same model.
`train`, `export`, `bench` and `predict` are also the stages' modules
(`from lenet_edge.conversion import export_run`); calling one runs its stage.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .config import BenchConfig, ExportConfig, RemoteConfig, TrainConfig
    from .data import load_dataset
    from .model import build_lenet5
    from .training import TrainResult

__all__ = [
    "BenchConfig",
    "ExportConfig",
    "TrainConfig",
    "bench",
    "build_lenet5",
    "export",
    "load_dataset",
    "predict",
    "read",
    "train",
]

# Imported on first access, so that `import lenet_edge` does not load TensorFlow.
_LAZY = {
    "load_dataset": "lenet_edge.data",
    "build_lenet5": "lenet_edge.model",
    "TrainConfig": "lenet_edge.config",
    "BenchConfig": "lenet_edge.config",
    "ExportConfig": "lenet_edge.config",
}


def train(
    config: TrainConfig | None = None,
    run_dir: str | Path = "export",
    *,
    recipe: str = "fast",
    force: bool = False,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> TrainResult:
    """Train LeNet-5 in float, then fine-tune it with QAT; write the run into `run_dir`.

    Args:
        config: the settings; or leave it out and pass its fields as keywords
            (`data="synthetic", epochs=12, ...`), which also override a given config.
        recipe: without `config`, the named recipe the keywords start from: "fast" or
            "best" (elastic augmentation and a distilled teacher).
        run_dir: where the models and manifest.json go.
        force: replace a run already in `run_dir`.
        cache_dir: dataset cache (None: no cache; "hoda" needs the one it was downloaded into).
        log: where progress lines go.

    Returns:
        The run: `.run_dir`, `.manifest`, `.metrics`.
    """
    from .config import recipe_config
    from .training import train as train_run

    config = dataclasses.replace(config, **settings) if config is not None else recipe_config(recipe, **settings)
    return train_run(config, run_dir, force=force, cache_dir=cache_dir, log=log)


def export(
    run_dir: str | Path = "export",
    int8: bool = True,
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    **options: Any,
) -> dict:
    """Convert a trained run to float32 TFLite and (with `int8`) verified full-integer int8.

    Args:
        run_dir: a run written by `train`.
        int8: also write the int8 model from the QAT model.
        cache_dir: dataset cache, for the run's data (calibration and parity).
        log: where progress lines go.
        **options: the other `ExportConfig` fields (`ptq`, `c_array`, `micro`, `micro_arena_margin`,
            `mixed`, `float_layers`, `mixed_rounds`, `calibration_size`, `calibration_seed`, `min_agreement`).

    Returns:
        The summary: per file its bytes, validation accuracy, quantization, parity.
    """
    from .config import ExportConfig
    from .conversion import export_run
    from .data import load_run_splits
    from .manifest import read_manifest

    config = ExportConfig(int8=int8, **options)  # a bad option fails before the data loads
    _, splits = load_run_splits(read_manifest(run_dir), cache_dir=cache_dir, progress=log)
    return export_run(run_dir, config, splits=splits, progress=log)


def bench(
    run_dir: str | Path = "export",
    *,
    models: dict[str, str | Path] | None = None,
    data: str | None = None,
    split: str = "test",
    config: BenchConfig | None = None,
    write: bool = True,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    on: tuple[str, ...] | list[str] = (),
    host: bool = True,
    remote: RemoteConfig | None = None,
    **settings: Any,
) -> dict:
    """Accuracy, latency and throughput of the run's exported models, as `lenet-edge bench` measures them.

    Args:
        run_dir: the run; its models are benchmarked unless `models` is given.
        models: name -> .tflite path, instead of the run's models.
        data: a dataset source instead of the run's own.
        split: which split to measure accuracy on ("test", "val", "train", ...).
        config: what to run; or pass its fields as keywords (`runs=500, threads=2`),
            which also override a given config.
        write: write bench.json, bench.md and the plots into `run_dir`.
        cache_dir: dataset cache.
        log: where progress lines go.
        on: devices to measure on too, `ssh://[user@]host[:port]` each (see `lenet_edge.remote`).
        host: measure on this machine as well (the first of `results["targets"]`).
        remote: how to reach and run on the devices (`lenet_edge.config.RemoteConfig`: ssh config,
            Python, sample, timeout).

    Returns:
        The results dict (`results["models"][name]["accuracy"]`, `["latency_us"]["p50"]`, ...;
        `results["targets"]`: each target's results and verdict, host first).
    """
    from .benchmark import bench_run
    from .config import BenchConfig
    from .data import load_run_splits

    config = dataclasses.replace(config, **settings) if config is not None else BenchConfig(**settings)
    results, _ = bench_run(
        run_dir,
        config,
        models=models,
        source=data,
        split=split,
        write=write,
        load_splits=lambda manifest, source: load_run_splits(manifest, source, cache_dir=cache_dir, progress=log),
        progress=log,
        on=on,
        host=host,
        remote=remote,
    )
    return results


def predict(
    paths, model_path=None, run_dir: str | Path = "export", top_k: int = 3, batch_size: int = 256, **kwargs: Any
) -> list[dict]:
    """Read handwritten digits from image files or directories; see `lenet_edge.inference.predict`."""
    from .inference import predict as predict_images

    return predict_images(paths, model_path, run_dir, top_k, batch_size, **kwargs)


def read(paths, model_path=None, run_dir: str | Path = "export", **kwargs: Any) -> list[dict]:
    """Read whole handwritten numbers from image files or directories; see `lenet_edge.reading.read`.

    `model` is accepted as another name for `model_path`.
    """
    from .reading import read as read_images

    if "model" in kwargs:
        model_path = kwargs.pop("model")
    return read_images(paths, model_path, run_dir, **kwargs)


def __getattr__(name: str) -> Any:
    """Classes and functions that need TensorFlow or numpy load on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
