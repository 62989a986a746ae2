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
