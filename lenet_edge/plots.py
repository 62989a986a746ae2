"""Figures written as artifacts: one size, one headless backend, written atomically.

Also `save_explain`, the sheet `predict --explain` writes (drawn with Pillow).
matplotlib is imported lazily (only writers need it) and through its
object-oriented `Figure` API, so no pyplot state and no display is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .fileio import atomic_path

if TYPE_CHECKING:
    from .data.frontend import Stages

FIGSIZE_IN = (9, 6)
DPI = 100  # 900 x 600 px


def figure(figsize: tuple[float, float] = FIGSIZE_IN):
    """A new matplotlib Figure, detached from pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=DPI)


def save_png(fig, target: str | Path) -> Path:
    """Write `fig` as a PNG at `target`, atomically."""
    target = Path(target)
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return target


def training_curves(history: dict[str, list[dict]], target: str | Path) -> Path:
    """Loss and accuracy per epoch: the teacher (if any), float pretraining, then QAT; train and validation.

    Args:
        history: {"teacher": [rows], "float": [rows], "qat": [rows]} as `train` records them; each row
            has epoch, loss, accuracy, val_loss, val_accuracy.
        target: PNG path.
    """
    fig = figure()
    loss_ax, acc_ax = fig.subplots(1, 2)
    offset = 0
    for stage, colour in (("teacher", "tab:green"), ("float", "tab:blue"), ("qat", "tab:orange")):
        rows = history.get(stage, [])
        if not rows:
            continue
        epochs = [offset + row["epoch"] for row in rows]
        for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(epochs, [row[key] for row in rows], "--", color=colour, label=f"{stage} train")
            ax.plot(epochs, [row[f"val_{key}"] for row in rows], "-o", ms=3, color=colour, label=f"{stage} val")
        offset += len(rows)
    loss_ax.set_yscale("log")
    loss_ax.set_title("loss (log scale)")
    acc_ax.set_title("top-1 accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch (each stage continues after the one before)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, target)


def save_explain(stages: Stages, target: str | Path) -> None:
    """`predict --explain`'s PNG: the front end's stages side by side.

    Flattened, binarized (rules removed in red), kept, final 28x28.

    Dropped ink (specks, other marks) shows grey in the "kept" panel.
    """
    from PIL import Image, ImageDraw

    side = 224  # px per panel
    page, kept = stages.page, stages.digit.kept
    binarized = np.stack([page.ink * 255] * 3, axis=-1).astype(np.uint8)
    binarized[page.removed] = (220, 40, 40)
    chosen = np.where(kept, 255, np.where(page.ink, 90, 0)).astype(np.uint8)
    panels = [("flattened", page.flattened), ("binarized", binarized), ("kept", chosen), ("final 28x28", stages.final)]
    sheet = Image.new("RGB", (side * len(panels), side + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (title, pixels) in enumerate(panels):
        panel = Image.fromarray(pixels).convert("RGB")
        panel.thumbnail((side, side), Image.Resampling.NEAREST if pixels.shape[0] <= side else Image.Resampling.BOX)
        if max(panel.size) < side:  # small images (the 28x28) are enlarged, pixels kept square
            factor = side / max(panel.size)
            size = (max(1, round(panel.width * factor)), max(1, round(panel.height * factor)))
            panel = panel.resize(size, Image.Resampling.NEAREST)
        sheet.paste(panel, (k * side + (side - panel.width) // 2, 20 + (side - panel.height) // 2))
        draw.text((k * side + 4, 4), title, fill="black")
    with atomic_path(target, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
