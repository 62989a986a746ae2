"""The data layer: source resolution, preprocessing invariants, splits, the cache, real Hoda."""

import numpy as np
import pytest

from lenet_edge.data import load_dataset, load_splits, train_val_split
from lenet_edge.data.preprocess import CANVAS, is_dark_on_light, preprocess, preprocess_many, to_white_on_black
from lenet_edge.errors import DataError


def centre_of_mass(image):
    mass = image.astype(float)
    rows, cols = np.indices(image.shape)
    return (rows * mass).sum() / mass.sum(), (cols * mass).sum() / mass.sum()


@pytest.mark.parametrize("shape", [(3, 3), (62, 62), (10, 40), (50, 7), (1, 1)])
def test_preprocess_invariants(shape):
    rng = np.random.default_rng(sum(shape))
    image = np.zeros((100, 100), np.uint8)
    ink = (rng.random(shape) > 0.3) * 255
    ink[0, 0] = ink[-1, -1] = 255  # the ink box is exactly `shape`
    image[10 : 10 + shape[0], 20 : 20 + shape[1]] = ink
    out = preprocess(image)
    assert out.shape == (CANVAS, CANVAS) and out.dtype == np.uint8
    rows, cols = np.nonzero(out > 64)
    # the longer side of the ink box becomes 20 px (Lanczos may spill or trim one faint pixel)
    assert abs(max(np.ptp(rows), np.ptp(cols)) + 1 - 20) <= 1
    r, c = centre_of_mass(out)
    assert abs(r - 13.5) <= 0.5 and abs(c - 13.5) <= 0.5
    assert out[0].max() == out[-1].max() == out[:, 0].max() == out[:, -1].max() == 0  # a black border


def test_preprocess_keeps_polarity_and_handles_blank():
    assert preprocess(np.zeros((30, 30), np.uint8)).max() == 0
    ink_on_paper = np.full((40, 30), 250, np.uint8)
    ink_on_paper[10:30, 12:18] = 10
    assert is_dark_on_light(ink_on_paper)
    white_on_black = to_white_on_black(ink_on_paper)
    assert not is_dark_on_light(white_on_black)
    out = preprocess(white_on_black)
    assert out[14, 14] > 200 and out[0, 0] == 0
    with pytest.raises(ValueError, match="2-D"):
        preprocess(np.zeros((2, 2, 3), np.uint8))
    assert preprocess_many([]).shape == (0, 28, 28)


def test_stratified_split_is_seeded_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), 50)
    train_idx, val_idx = train_val_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(train_idx, val_idx)) == 0 and len(train_idx) + len(val_idx) == 500
    assert np.bincount(labels[val_idx]).tolist() == [10] * 10
    assert np.array_equal(val_idx, train_val_split(labels, 0.2, seed=3)[1])
    assert not np.array_equal(val_idx, train_val_split(labels, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(labels, 1.0, seed=0)


def test_npz_source_and_cache(tiny_npz, tmp_path):
    first = load_dataset(str(tiny_npz), cache_dir=tmp_path)
    assert not first.from_cache and first.kind == "npz"
    assert {name: len(s) for name, s in first.splits.items()} == {"train": 300, "test": 100}
    second = load_dataset(str(tiny_npz), cache_dir=tmp_path)
    assert second.from_cache
    for name in first.splits:
        assert np.array_equal(first.splits[name].images, second.splits[name].images)
        assert np.array_equal(first.splits[name].labels, second.splits[name].labels)
    # a damaged cache entry is rebuilt, never trusted
    for entry in (tmp_path / "datasets").iterdir():
        entry.write_bytes(b"garbage")
    assert not load_dataset(str(tiny_npz), cache_dir=tmp_path).from_cache


def test_val_is_carved_from_train_and_test_is_untouched(tiny_npz):
    dataset, splits = load_splits(str(tiny_npz), 0.1, seed=0)
    assert len(splits["train"]) + len(splits["val"]) == len(dataset.splits["train"])
    assert splits["test"] is dataset.splits["test"]


@pytest.mark.parametrize(
    "source, message",
    [
        ("no/such/dir", "no such file or directory"),
        ("hoda", "lenet-edge data download hoda"),
        ("synthetic:3", "at least 10"),
    ],
)
def test_bad_sources_name_the_problem(source, message, tmp_path):
    with pytest.raises(DataError, match=message):
        load_dataset(source, cache_dir=tmp_path)


def test_unknown_file_type_and_missing_split(tmp_path, tiny_npz):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt: not a dataset"):
        load_dataset(str(tmp_path / "notes.txt"))
    with pytest.raises(DataError, match="no 'remaining' split"):
        load_dataset(str(tiny_npz)).split("remaining")


def test_real_hoda_counts_and_the_cache_gives_them_back(hoda_dir, tmp_path):
    dataset = load_dataset(str(hoda_dir), cache_dir=tmp_path)
    assert {name: len(s) for name, s in dataset.splits.items()} == {"train": 60_000, "test": 20_000}
    for split in dataset.splits.values():
        assert np.bincount(split.labels).tolist() == [len(split) // 10] * 10
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (28, 28)
        # white ink on black, centred: the border is background, the centre has ink on average
        assert split.images[:, 0, :].mean() < 1 and split.images[:, :, 0].mean() < 1
        mean = split.images.mean(axis=0)
        assert abs(centre_of_mass(mean)[0] - 13.5) < 0.5 and abs(centre_of_mass(mean)[1] - 13.5) < 0.5
    assert set(dataset.files) == {"Train 60000.cdb", "Test 20000.cdb"}
    again = load_dataset(str(hoda_dir), cache_dir=tmp_path)  # its speed is measured in benchmarks/
    assert again.from_cache and np.array_equal(again.splits["test"].images, dataset.splits["test"].images)


def test_preprocessing_reports_progress_once_per_image_in_total(tiny_npz):
    seen = []
    dataset = load_dataset(str(tiny_npz), advance=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (400, 400) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(dataset.split("train")) + len(dataset.split("test")) == 400
    steps = []
    preprocess_many([np.zeros((5, 5), np.uint8)] * 2500, progress=steps.append)
    assert sum(steps) == 2500 and len(steps) == 3
    assert load_dataset("synthetic:20:10").location == ""
