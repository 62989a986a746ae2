"""Sample grids: a picture of what a split looks like after preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_path

GAP = 2  # px of mid-grey between cells, so black backgrounds don't merge


def sample_grid(split, output: str | Path, *, per_class: int = 10, seed: int = 0, scale: int = 3) -> Path:
    """Write a PNG with one row per digit 0-9 and `per_class` random samples in each.

    A digit with fewer samples leaves the rest of its row empty (grey).
    """
    rng = np.random.default_rng(seed)
    cell = 28 + GAP
    grid = np.full((10 * cell + GAP, per_class * cell + GAP), 96, np.uint8)
    for digit in range(10):
        members = np.flatnonzero(split.labels == digit)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        for col, index in enumerate(chosen):
            top, left = GAP + digit * cell, GAP + col * cell
            grid[top : top + 28, left : left + 28] = split.images[index]
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    output = Path(output)
    with atomic_path(output, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
    return output


def number_sheet(images: list[np.ndarray], output: str | Path, *, scale: int = 2) -> Path:
    """Write a PNG with one number image per row (left-aligned, grey between and around them)."""
    width = max(image.shape[1] for image in images) + 2 * GAP
    height = sum(image.shape[0] + GAP for image in images) + GAP
    sheet = np.full((height, width), 96, np.uint8)
    top = GAP
    for image in images:
        sheet[top : top + image.shape[0], GAP : GAP + image.shape[1]] = image
        top += image.shape[0] + GAP
    picture = Image.fromarray(sheet).resize((width * scale, height * scale), Image.Resampling.NEAREST)
    output = Path(output)
    with atomic_path(output, suffix=".png") as tmp:
        picture.save(tmp, format="PNG")
    return output
