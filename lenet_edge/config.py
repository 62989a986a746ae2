"""The training recipe, importable without TensorFlow (the command line takes its defaults from it)."""

from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURES = ("lenet5", "lenet5-classic")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (recorded in the manifest)."""

    data: str = "synthetic"
    arch: str = "lenet5"
    epochs: int = 16  # float pretraining epochs; the best on validation is kept
    qat_epochs: int = 3  # quantization-aware fine-tuning epochs
    batch_size: int = 128
    lr: float = 3e-3  # peak Adam rate, cosine-decayed to ~0 over the float epochs
    qat_lr: float = 1e-4  # QAT starts from a trained model: small steps keep it there
    seed: int = 0
    val_fraction: float = 0.1
    augment: bool = True  # small rotation, scale, shift and stroke-width change
    label_smoothing: float = 0.1  # targets 1 - e + e/10 for the true digit, e/10 for the others

    def __post_init__(self):
        checks = [
            (self.arch in ARCHITECTURES, f"arch must be one of {', '.join(ARCHITECTURES)}"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.qat_epochs >= 0, "qat_epochs must be 0 or more"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0 and self.qat_lr > 0, "learning rates must be positive"),
            (0 < self.val_fraction < 1, "val_fraction must be in (0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
