"""The synthetic Persian digit generator: deterministic, balanced, in the preprocessing contract."""

import numpy as np
import pytest

from lenet_edge.data.preprocess import preprocess_many
from lenet_edge.data.synthetic import CANVAS, SYNTHETIC_VERSION, generate, synthetic_splits


def test_same_seed_is_bit_identical():
    images_a, labels_a = generate(60, seed=7)
    images_b, labels_b = generate(60, seed=7)
    assert np.array_equal(images_a, images_b)
    assert np.array_equal(labels_a, labels_b)


def test_different_seeds_differ():
    images_a, labels_a = generate(60, seed=1)
    images_b, labels_b = generate(60, seed=2)
    assert not np.array_equal(images_a, images_b)
    assert not np.array_equal(labels_a, labels_b)


@pytest.mark.parametrize("n", [0, 1, 10, 37, 200])
def test_labels_are_balanced_and_shuffled(n):
    _, labels = generate(n, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (n,)
    counts = np.bincount(labels, minlength=10)
    assert counts.max() - counts.min() <= (1 if n % 10 else 0)
    assert counts.sum() == n
    if n >= 100:
        assert not np.all(np.diff(labels) >= 0), "labels should be shuffled, not sorted"


def test_raw_images_are_binary_white_on_black():
    images, _ = generate(50, seed=3)
    assert isinstance(images, np.ndarray)
    assert images.dtype == np.uint8 and images.shape == (50, CANVAS, CANVAS)
    assert set(np.unique(images)) <= {0, 255}
    ink = (images > 0).reshape(50, -1).mean(axis=1)
    assert np.all(ink > 0), "every sample has ink"
    assert np.all(ink < 0.5), "ink is the minority (white on black, not inverted)"
    # the border stays background, so the digit is never cut by the canvas
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert border.max() == 0


def test_preprocessed_output_is_in_the_model_frame():
    images, _ = generate(30, seed=4)
    frames = preprocess_many(images)
    assert frames.dtype == np.uint8 and frames.shape == (30, 28, 28)
    assert np.all(frames.reshape(30, -1).max(axis=1) == 255)


def test_splits_are_independent_and_sized():
    splits = synthetic_splits(n_train=40, n_test=20, seed=5)
    assert set(splits) == {"train", "test"}
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    assert train_x.shape == (40, CANVAS, CANVAS) and train_y.shape == (40,)
    assert test_x.shape == (20, CANVAS, CANVAS) and test_y.shape == (20,)
    assert not np.array_equal(train_x[:20], test_x)
    again = synthetic_splits(n_train=40, n_test=20, seed=5)
    assert np.array_equal(again["train"][0], train_x) and np.array_equal(again["test"][0], test_x)


def test_version_is_a_positive_int():
    assert isinstance(SYNTHETIC_VERSION, int) and SYNTHETIC_VERSION >= 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": -1, "seed": 0}, "n"),
        ({"n": 2.5, "seed": 0}, "n"),
        ({"n": True, "seed": 0}, "n"),
        ({"n": 10, "seed": -3}, "seed"),
        ({"n": 10, "seed": "0"}, "seed"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"n_train": -1}, "n_train"), ({"n_test": -5}, "n_test"), ({"seed": -1}, "seed")],
)
def test_splits_reject_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthetic_splits(**kwargs)
