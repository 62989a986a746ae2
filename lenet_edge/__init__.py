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

`train`, `export`, `bench` and `predict` are also the stages' modules
(`from lenet_edge.export import export_run`); calling one runs its stage.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .bench import BenchConfig
    from .data import load_dataset
    from .model import build_lenet5
    from .train import TrainConfig, TrainResult

__all__ = ["BenchConfig", "TrainConfig", "bench", "build_lenet5", "export", "load_dataset", "predict", "train"]

# Imported on first access, so that `import lenet_edge` does not load TensorFlow.
_LAZY = {
    "load_dataset": "lenet_edge.data",
    "build_lenet5": "lenet_edge.model",
    "TrainConfig": "lenet_edge.train",
    "BenchConfig": "lenet_edge.bench",
}


def _train(
    config: TrainConfig | None = None,
    run_dir: str | Path = "export",
    *,
    force: bool = False,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> TrainResult:
    """Train LeNet-5 in float, then fine-tune it with QAT; write the run into `run_dir`.

    Args:
        config: the recipe; or leave it out and pass its fields as keywords
            (`data="synthetic", epochs=12, ...`), which also override a given config.
        run_dir: where the models and manifest.json go.
        force: replace a run already in `run_dir`.
        cache_dir: dataset cache (None: no cache; "hoda" needs the one it was downloaded into).
        log: where progress lines go.

    Returns:
        The run: `.run_dir`, `.manifest`, `.metrics`.
    """
    from .train import TrainConfig
    from .train import train as train_run

    config = dataclasses.replace(config, **settings) if config is not None else TrainConfig(**settings)
    return train_run(config, run_dir, force=force, cache_dir=cache_dir, log=log)


def _export(
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
        **options: `ptq`, `c_array`, `calibration_size`, `calibration_seed`,
            `agreement_min`, as `lenet_edge.export.export_run` takes them.

    Returns:
        The summary: per file its bytes, validation accuracy, quantization, parity.
    """
    from .data import load_run_splits
    from .export import export_run
    from .manifest import read_manifest

    _, splits = load_run_splits(read_manifest(run_dir), cache_dir=cache_dir, progress=log)
    return export_run(run_dir, int8=int8, splits=splits, progress=log, **options)


def _bench(
    run_dir: str | Path = "export",
    *,
    models: dict[str, str | Path] | None = None,
    data: str | None = None,
    split: str = "test",
    config: BenchConfig | None = None,
    write: bool = True,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
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

    Returns:
        The results dict (`results["models"][name]["accuracy"]`, `["latency_us"]["p50"]`, ...).
    """
    from .bench import BenchConfig, bench_models, write_results
    from .data import load_run_splits
    from .errors import DataError
    from .manifest import exported_models, manifest_path, read_manifest

    manifest = read_manifest(run_dir) if models is None or manifest_path(run_dir).exists() else {}
    paths = {name: Path(p) for name, p in models.items()} if models else exported_models(run_dir, manifest)
    dataset, splits = load_run_splits(manifest, data, cache_dir=cache_dir, progress=log)
    if split not in splits:
        raise DataError(f"{dataset.location or dataset.source}: no '{split}' split (it has: {', '.join(splits)})")
    config = dataclasses.replace(config, **settings) if config is not None else BenchConfig(**settings)
    results = bench_models(
        paths, splits[split].images, splits[split].labels, config,
        reference="float32" if "float32" in paths else next(iter(paths)),
        data_info={"source": dataset.source, "split": split, "n": len(splits[split])},
        progress=log,
    )
    if write:
        write_results(results, Path(run_dir))
    return results


def _predict(*args: Any, **kwargs: Any) -> list[dict]:
    from .predict import predict

    return predict(*args, **kwargs)


_predict.__doc__ = "See `lenet_edge.predict.predict`."

# Stage name -> what calling `lenet_edge.<stage>(...)` runs.
_STAGES: dict[str, Callable[..., Any]] = {"train": _train, "export": _export, "bench": _bench, "predict": _predict}


class _Stage(types.ModuleType):
    """A stage's module that can also be called: `lenet_edge.export(run_dir)` runs the stage.

    The package's functions `train`, `export`, `bench` and `predict` share their
    names with the stages' modules, and importing a submodule binds it on the
    package, over any function of that name. Making the module callable keeps
    both meanings: `lenet_edge.export(...)` and `from lenet_edge.export import export_run`.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _STAGES[self.__name__.rpartition(".")[2]](*args, **kwargs)


class _Package(types.ModuleType):
    """This package's module type: makes each stage module callable when it is bound here."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _STAGES and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            import inspect

            value.__class__ = _Stage
            api = _STAGES[name]
            if api is _predict:  # its own module holds the documented function
                api = value.predict
            value.__signature__ = inspect.signature(api)  # what notebooks show for `lenet_edge.export(`
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name in _STAGES:
            return importlib.import_module(f"{__name__}.{name}")  # binds it through __setattr__
        if name in _LAZY:
            return getattr(importlib.import_module(_LAZY[name]), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(__all__))


sys.modules[__name__].__class__ = _Package
