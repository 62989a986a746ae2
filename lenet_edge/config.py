"""The stages' settings as frozen dataclasses, importable without TensorFlow or LiteRT.

The command line takes every default from these (one name per option:
`--min-agreement` is `ExportConfig.min_agreement`), and each stage records
the resolved config in its output.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

ARCHITECTURES = ("lenet5", "lenet5-classic")
TEACHER_ARCHITECTURES = ("wide", "deep")  # model.build_teacher
# The layers with weights, in graph order, of both architectures (as model.build_lenet5 names them; tested):
# each can compute in float32 or int8 in a mixed-precision export.
WEIGHTED_LAYERS = ("c1", "c3", "c5", "f6", "logits")
AUTO = "auto"  # float_layers: time each float-prefix candidate on this CPU and keep the fastest


def parse_float_layers(value: str) -> str | tuple[str, ...]:
    """`--float-layers`: "auto", or comma-separated layer names that are the first k weighted layers (k >= 1).

    Only a float *prefix* can be built from a QAT model: the TFLite converter keeps a layer float only before
    the first quantized one (see `mixed`), and at least one layer must stay int8.

    Raises:
        ValueError: an unknown layer or layers that are not such a prefix, with the allowed forms.
    """
    if value.strip() == AUTO:
        return AUTO
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [n for n in names if n not in WEIGHTED_LAYERS]
    if unknown or not names:
        raise ValueError(
            f"unknown layer {', '.join(unknown) or repr(value)}: the weighted layers are {', '.join(WEIGHTED_LAYERS)}"
        )
    if names != WEIGHTED_LAYERS[: len(names)] or len(names) == len(WEIGHTED_LAYERS):
        forms = " | ".join(",".join(WEIGHTED_LAYERS[:k]) for k in range(1, len(WEIGHTED_LAYERS)))
        raise ValueError(
            f"{value!r}: the float layers must be the first k weighted layers with one or more left int8 ({forms}); "
            "the converter keeps a layer float only before the first quantized one"
        )
    return names


@dataclass(frozen=True)
class LineConfig:
    """The line model's recipe (`line_model.train_line_model`): its epochs are the run's (`TrainConfig.line_epochs`
    and `line_qat_epochs`, these by default), the rest the same for every run that trains one."""

    lines: int = 100_000  # numbers composed of training digits, at most 2 per digit (Hoda's 54,000: 100,000)
    epochs: int = 8  # float epochs; the one reading most validation numbers exactly is kept (train --line-epochs)
    qat_epochs: int = 2  # (train --line-qat-epochs)
    batch_size: int = 64
    lr: float = 2e-3  # peak Adam rate, cosine-decayed over the float epochs
    qat_lr: float = 1e-4
    # One member per entry, each trained alone with this dropout rate (line_model.build_line_model); `read` takes
    # the mean of their log-probabilities. Two members, without and with dropout, err on different numbers: on
    # numbers of Hoda validation digits (benchmarks/read_numbers.py --split val) the pair left 22 spaced numbers
    # wrong, the first alone 29, the second alone 28 (line model alone: 38, 48, 51); at twice the training time.
    # A third (dropout 0.1, the one rate tried) again: 4 sets of validation numbers (--more-seeds 1 2 3), int8,
    # the two members left 110 of 4,800 spaced and 214 of 4,800 tight numbers wrong, the three 99 and 204.
    dropout: tuple[float, ...] = (0.0, 0.25, 0.1)


@dataclass(frozen=True)
class VerifierConfig:
    """The piece verifier's recipe (`verifier.train_verifier`): its epochs are the run's
    (`TrainConfig.verifier_epochs` and `verifier_qat_epochs`, these by default), the rest the same for every run."""

    # Lines of training digits composed into pieces, at most 1 per 8 digits (Hoda's 54,000: 6,750 lines). More than
    # the 2,500 first used: exact numbers of Hoda train digits read 96.6% / 87.6% (spaced / tight), not 96.3% / 86.8%.
    lines: int = 10_000
    epochs: int = 6  # float epochs; the best on validation pieces is kept (train --verifier-epochs)
    qat_epochs: int = 2  # (train --verifier-qat-epochs)
    batch_size: int = 256
    lr: float = 2e-3  # peak Adam rate, cosine-decayed over the float epochs
    qat_lr: float = 1e-4
    label_smoothing: float = 0.05  # keeps log P(one) finite for the dynamic programme's sums


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (recorded in the manifest).

    The defaults are the `fast` recipe; `recipe_config("best")` starts from `RECIPES["best"]`.
    """

    recipe: str = "fast"  # the named recipe these values started from (see RECIPES); explicit options override it
    data: str = "synthetic"
    arch: str = "lenet5"
    epochs: int = 16  # float pretraining epochs; the best on validation is kept
    qat_epochs: int = 3  # quantization-aware fine-tuning epochs
    batch_size: int = 128
    lr: float = 3e-3  # peak Adam rate, cosine-decayed to ~0 over the float epochs
    qat_lr: float = 1e-4  # QAT starts from a trained model: small steps keep it there
    qat_augment: bool = True  # QAT's batches augmented as the float epochs' are; False: the training images as they are
    seed: int = 0
    val_fraction: float = 0.1
    label_smoothing: float = 0.1  # targets 1 - e + e/10 for the true digit, e/10 for the others
    # Augmentation (augment.py), drawn afresh for every batch.
    augment: bool = True
    rotation: float = 10.0  # degrees, uniform in ±rotation
    scale: float = 0.1  # uniform in 1 ± scale
    shift: float = 2.0  # px, each axis uniform in ±shift
    shear: float = 0.1  # shear factor, uniform in ±shear
    stroke: float = 0.25  # share of images whose stroke is made 1 px thicker (3/5 of them) or thinner (2/5)
    elastic_alpha: float = 0.0  # elastic distortion strength (Simard et al. 2003's alpha); 0: none
    elastic_sigma: float = 4.0  # smoothness of the elastic field: Gaussian std in px (Simard: 4)
    # Distillation (distill.py): a larger CNN trained first; the LeNet-5 then learns its soft targets.
    teacher: bool = False
    teacher_arch: str = "wide"  # model.build_teacher
    teacher_from: str | None = None  # a run directory whose teacher to reuse (same data and split), not train one
    float_from: str | None = None  # a run directory whose float LeNet-5 to reuse (same data, split and arch): QAT only
    teacher_epochs: int = 12  # the teacher's epochs (cosine schedule, the best on validation kept)
    teacher_lr: float = 2e-3  # the teacher's peak Adam rate
    temperature: float = 4.0  # softens both models' logits in the distillation term (Hinton et al. 2015)
    distill_alpha: float = 0.7  # weight of the distillation term; 1 - alpha goes to the (smoothed) true labels
    # The piece verifier `read` cuts touching digits with (verifier.py), trained after the lenet5 digit model.
    verifier: bool = True
    verifier_epochs: int = VerifierConfig.epochs  # its float epochs (the rest of its recipe is VerifierConfig's)
    verifier_qat_epochs: int = VerifierConfig.qat_epochs
    # The line model whose reading of a whole number may overrule the segmentation's (line_model.py), trained last
    # when asked for (`train --line-model`): on Hoda it takes several times as long as everything before it.
    line_model: bool = False
    line_epochs: int = LineConfig.epochs  # its float epochs (the rest of its recipe is LineConfig's)
    line_qat_epochs: int = LineConfig.qat_epochs

    def __post_init__(self):
        checks = [
            (self.recipe in RECIPE_NAMES, f"recipe must be one of {', '.join(RECIPE_NAMES)}"),
            (self.arch in ARCHITECTURES, f"arch must be one of {', '.join(ARCHITECTURES)}"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.qat_epochs >= 0, "qat_epochs must be 0 or more"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0 and self.qat_lr > 0 and self.teacher_lr > 0, "learning rates must be positive"),
            (0 < self.val_fraction < 1, "val_fraction must be in (0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.rotation <= 45, "rotation must be in [0, 45] degrees"),
            (0 <= self.scale < 0.5, "scale must be in [0, 0.5)"),
            (0 <= self.shift <= 8, "shift must be in [0, 8] px"),
            (0 <= self.shear <= 0.5, "shear must be in [0, 0.5]"),
            (0 <= self.stroke <= 1, "stroke must be a share in [0, 1]"),
            (0 <= self.elastic_alpha <= 100, "elastic_alpha must be in [0, 100]"),
            (0.5 <= self.elastic_sigma <= 10, "elastic_sigma must be in [0.5, 10] px"),
            (
                self.teacher_arch in TEACHER_ARCHITECTURES,
                f"teacher_arch must be one of {', '.join(TEACHER_ARCHITECTURES)}",
            ),
            (self.teacher_from is None or self.teacher, "teacher_from needs teacher=True"),
            (
                self.float_from is None or not self.teacher or self.teacher_from is not None,
                "float_from with a teacher needs teacher_from (the run whose teacher the float model learnt from)",
            ),
            (self.float_from is None or self.qat_epochs >= 1, "float_from needs qat_epochs >= 1 (it trains only QAT)"),
            (self.teacher_epochs >= 1, "teacher_epochs must be at least 1"),
            (self.temperature > 0, "temperature must be positive"),
            (0 <= self.distill_alpha <= 1, "distill_alpha must be in [0, 1]"),
            (self.verifier_epochs >= 1, "verifier_epochs must be at least 1"),
            (
                self.verifier_qat_epochs >= 1,
                "verifier_qat_epochs must be at least 1 (export converts the QAT verifier)",
            ),
            (self.line_epochs >= 1, "line_epochs must be at least 1"),
            (self.line_qat_epochs >= 1, "line_qat_epochs must be at least 1 (export converts the QAT line model)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


RECIPE_NAMES = ("fast", "best")
# Chosen on validation splits carved from Hoda's train set only (benchmarks/search.py, benchmarks/SEARCH.md).
RECIPES = {
    "fast": TrainConfig(),
    # benchmarks/SEARCH.md's decisions: elastic alpha 20 (sigma 4), a "deep" teacher for 15 epochs, distilled at
    # T 4 and alpha 0.7 (the defaults won); 48 student epochs (patience stage: 36 validation errors over three
    # folds, 16 epochs 40); QAT for 6 epochs on the training images as they are (QAT stage: 35 errors over three
    # folds, as many as 3 augmented epochs, at a lower loss).
    "best": TrainConfig(
        recipe="best",
        elastic_alpha=20.0,
        teacher=True,
        teacher_arch="deep",
        teacher_epochs=15,
        epochs=48,
        qat_epochs=6,
        qat_augment=False,
    ),
}


def recipe_config(name: str = "fast", **overrides) -> TrainConfig:
    """The named recipe's `TrainConfig`, with `overrides` (explicit options) replacing its values.

    Raises:
        ValueError: an unknown recipe, an unknown field, or a value out of range.
    """
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}; got {name!r}")
    unknown = sorted(set(overrides) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"not TrainConfig fields: {', '.join(unknown)}")
    return replace(RECIPES[name], **overrides)


@dataclass(frozen=True)
class ExportConfig:
    """What `export` writes and how it checks it (recorded in the manifest's export section)."""

    int8: bool = False  # lenet5_int8.tflite from the QAT model
    ptq: bool = False  # lenet5_int8_ptq.tflite: post-training int8 of the float model, QAT's baseline
    teacher: bool = True  # teacher_float32.tflite when the run has a distillation teacher (bench's reference row)
    c_array: bool = False  # lenet5_int8.h/.cc for TensorFlow Lite Micro (needs int8)
    micro: bool = False  # micro/: a TensorFlow Lite Micro project folder for the int8 model (needs int8)
    # kTensorArenaSize = the minimum measured here x (1 + margin), rounded up to 16 bytes: optimized kernels
    # (CMSIS-NN) ask for scratch buffers the reference kernels measured here do not.
    micro_arena_margin: float = 0.25
    # lenet5_mixed.tflite (needs int8): the first layers float32, the rest int8, from the QAT model. float_layers:
    # "auto" (each float-prefix candidate timed on this CPU, the fastest kept) or the first k weighted layers.
    mixed: bool = False
    float_layers: str | tuple[str, ...] = "auto"
    mixed_rounds: int = 2000  # interleaved timing rounds per candidate for float_layers="auto"
    mediapipe: bool = False  # lenet5_int8_mediapipe.tflite: the int8 body, uint8 RGB in (MediaPipe's form; needs int8)
    web: bool = False  # web/: a static page running the int8 model in LiteRT.js (needs int8)
    author: str = "lenet-edge"  # the models' metadata: who made them
    license: str | None = None  # the models' metadata: their terms; None: from the training data (Hoda's licence)
    calibration_size: int = 500  # training images that calibrate int8 ranges (PTQ; QAT's come from training)
    calibration_seed: int = 0
    min_agreement: float = 0.998  # least share of validation where int8 and the Keras QAT model agree

    def __post_init__(self):
        if not isinstance(self.calibration_size, int) or self.calibration_size < 1:
            raise ValueError(f"calibration_size must be a positive number of images; got {self.calibration_size!r}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be a fraction in [0, 1]; got {self.min_agreement!r}")
        if self.c_array and not self.int8:
            raise ValueError("c_array=True needs int8=True: the C array holds the QAT int8 model")
        if self.micro and not self.int8:
            raise ValueError("micro=True needs int8=True: the TFLM folder holds the QAT int8 model")
        if self.mixed and not self.int8:
            raise ValueError("mixed=True needs int8=True: the mixed model is cut from the QAT model")
        if self.float_layers != AUTO:
            if not isinstance(self.float_layers, tuple):
                raise ValueError(f"float_layers must be 'auto' or a tuple of layer names; got {self.float_layers!r}")
            parse_float_layers(",".join(self.float_layers))  # raises for a set the converter cannot build
        if not isinstance(self.mixed_rounds, int) or self.mixed_rounds < 10:
            raise ValueError(f"mixed_rounds must be an integer >= 10; got {self.mixed_rounds!r}")
        for name in ("mediapipe", "web"):
            if getattr(self, name) and not self.int8:
                raise ValueError(f"{name}=True needs int8=True: it holds the QAT int8 model")
        if not self.author.strip() or (self.license is not None and not self.license.strip()):
            raise ValueError("author and license must be non-empty text (license None: from the training data)")
        if not 0.0 <= self.micro_arena_margin <= 10.0:
            raise ValueError(f"micro_arena_margin must be a fraction in [0, 10]; got {self.micro_arena_margin!r}")


DEFAULT_SPLIT = "test"  # what bench measures accuracy on: the split training never saw
READ_MIN_CONFIDENCE = 0.3  # read: a mark the model is less sure of than this is not taken for a digit


@dataclass(frozen=True)
class BenchConfig:
    """How `bench` measures (recorded in bench.json)."""

    threads: int = 1  # interpreter threads (LiteRT's own default is 1 as well)
    runs: int = 2000  # timed single-image rounds; each round runs every model once
    warmup: int = 200  # untimed rounds before the timed ones, interleaved the same way
    batch_sizes: tuple[int, ...] = (1, 32)  # throughput is measured at each
    xnnpack: bool = True  # False: BUILTIN_WITHOUT_DEFAULT_DELEGATES (LiteRT's built-in kernels only)
    accuracy_batch: int = 256  # batch used to compute accuracy over the split
    throughput_seconds: float = 2.0  # target timed seconds per model and batch size
    throughput_chunks: int = 5  # the throughput is the median over this many interleaved chunks
    load_repeats: int = 5  # fresh loads timed per model for load_ms
    micro: bool = True  # also run every model in TensorFlow Lite Micro (arena, flash, MACs, agreement with LiteRT)
    # TFLM's reference kernels take ~0.5-2 ms an image here, 10-100x LiteRT: fewer timed rounds keep bench short.
    # Accuracy still covers the whole split.
    micro_runs: int = 300
    micro_warmup: int = 20

    def __post_init__(self):
        for name in ("threads", "runs", "accuracy_batch", "throughput_chunks", "load_repeats", "micro_runs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {getattr(self, name)!r}")
        for name in ("warmup", "micro_warmup"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {getattr(self, name)!r}")
        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be a non-empty tuple of integers >= 1; got {self.batch_sizes!r}")
        if not self.throughput_seconds > 0:
            raise ValueError(f"throughput_seconds must be > 0; got {self.throughput_seconds!r}")


@dataclass(frozen=True)
class BrowserConfig:
    """How `bench --on browser` runs headless Chromium (recorded with its target)."""

    chromium: str | None = None  # the browser executable; None: chromium (or chromium-browser, google-chrome) on PATH
    timeout: float = 900.0  # seconds for the whole browser run: start, load, accuracy, timing

    def __post_init__(self):
        if self.chromium is not None and not str(self.chromium).strip():
            raise ValueError("chromium must be a path or None")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {self.timeout!r}")


@dataclass(frozen=True)
class QemuConfig:
    """How `bench --on qemu:CORE` builds and runs the firmware (recorded with its target)."""

    tflm: str | None = None  # the TensorFlow Lite Micro source tree; None: no tree (the target says so)
    keep_build: str | None = None  # keep each firmware's build tree under this directory; None: a temporary one
    cache_dir: str | None = None  # where compiled TFLM libraries are kept; None: the user cache directory
    sample: int | None = None  # digits run on the firmware (a seeded sample); None: the whole split
    timeout: float = 1800.0  # seconds one firmware may run in QEMU before it counts as hung
    jobs: int = 2  # parallel compiler processes

    def __post_init__(self):
        if self.sample is not None and (not isinstance(self.sample, int) or self.sample < 1):
            raise ValueError(f"sample must be an integer >= 1 or None; got {self.sample!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {self.timeout!r}")
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1; got {self.jobs!r}")


@dataclass(frozen=True)
class ServeConfig:
    """Where `serve-web` serves a run's page."""

    host: str = "127.0.0.1"  # loopback: only this machine; 0.0.0.0 lets a phone on the network open it
    port: int = 8000

    def __post_init__(self):
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535; got {self.port!r}")


@dataclass(frozen=True)
class RemoteConfig:
    """How `bench --on ssh://...` reaches a device and what it sends (recorded with each target)."""

    ssh_config: str | None = None  # `ssh -F FILE`; None: OpenSSH's own (~/.ssh/config, found via passwd, not $HOME)
    python: str = "python3"  # the target's interpreter: python3 on its PATH, or a path (a venv's, typically)
    sample: int | None = None  # send a seeded sample of this many images (slow links); None: the whole split
    sample_seed: int = 0
    connect_timeout: int = 10  # seconds: ssh's ConnectTimeout, so a dead host fails fast
    timeout: float = 900.0  # seconds for one target's whole session: send, benchmark, result

    def __post_init__(self):
        if not self.python or any(c in self.python for c in "\n\0"):
            raise ValueError(f"python must be a command or path on the target; got {self.python!r}")
        if self.sample is not None and (not isinstance(self.sample, int) or self.sample < 1):
            raise ValueError(f"sample must be a number of images >= 1 or None; got {self.sample!r}")
        if not isinstance(self.connect_timeout, int) or self.connect_timeout < 1:
            raise ValueError(f"connect_timeout must be whole seconds >= 1; got {self.connect_timeout!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {self.timeout!r}")
