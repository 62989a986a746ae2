"""Regenerate the README's figures from the built-in synthetic data (no third-party data).

    python benchmarks/figures.py

- figures/synthetic.png: 10 samples of each digit from `--data synthetic`, preprocessed
  (the same picture `lenet-edge data preview --data synthetic` draws);
- figures/preprocessing.png: raw generator output (top row, 64x64) and the same images
  after preprocessing (bottom row, 28x28), one digit each.

Hoda's picture is not committed (its licence forbids redistribution); the README gives
the one command that draws it from a local copy.
"""

from __future__ import annotations

import numpy as np
from common import HERE
from PIL import Image

from lenet_edge.data import load_dataset
from lenet_edge.data.preprocess import preprocess
from lenet_edge.data.preview import sample_grid
from lenet_edge.data.synthetic import generate
from lenet_edge.fileio import atomic_path

GAP, GREY = 4, 96


def preprocessing_figure(target, seed: int = 3) -> None:
    raw, labels = generate(100, seed)
    picks = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    cell = 128  # both rows are drawn at 128 px a cell: raw 64 px x2, preprocessed 28 px scaled to 128
    canvas = np.full((2 * cell + 3 * GAP, 10 * cell + 11 * GAP), GREY, np.uint8)
    for col, index in enumerate(picks):
        left = GAP + col * (cell + GAP)
        before = Image.fromarray(raw[index]).resize((cell, cell), Image.Resampling.NEAREST)
        after = Image.fromarray(preprocess(raw[index])).resize((cell, cell), Image.Resampling.NEAREST)
        canvas[GAP : GAP + cell, left : left + cell] = np.asarray(before)
        canvas[2 * GAP + cell : 2 * GAP + 2 * cell, left : left + cell] = np.asarray(after)
    with atomic_path(target) as tmp:
        Image.fromarray(canvas).save(tmp)


def main() -> None:
    out = HERE / "figures"
    out.mkdir(exist_ok=True)
    dataset = load_dataset("synthetic:2000:200")
    sample_grid(dataset.split("train"), out / "synthetic.png", per_class=10, seed=0, scale=3)
    preprocessing_figure(out / "preprocessing.png")
    print(f"wrote {out / 'synthetic.png'}, {out / 'preprocessing.png'}")


if __name__ == "__main__":
    main()
