"""Datasets: every source becomes (N, 28, 28) uint8 white-on-black images and 0-9 labels.

`load_dataset(source)` is the one entry point every command uses; see
`sources` for the source strings it understands and `preprocess` for the
input contract every image goes through.
"""

from .preprocess import CONTRACT as PREPROCESSING
from .sources import Dataset, Split, load_dataset, load_run_splits, load_splits, split_of_cdb, train_val_split

__all__ = [
    "PREPROCESSING",
    "Dataset",
    "Split",
    "load_dataset",
    "load_run_splits",
    "load_splits",
    "split_of_cdb",
    "synthetic_version",
    "train_val_split",
]


def synthetic_version() -> int:
    """Version of the synthetic generator's output (part of cache keys and manifests)."""
    from .synthetic import SYNTHETIC_VERSION

    return SYNTHETIC_VERSION
