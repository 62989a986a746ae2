"""Tests for loading image files and folders of class folders.

Every fixture image is drawn here: a bright or dark vertical bar (the "ink") on
the opposite background, saved in one of Pillow's formats and modes, so the
test knows where ink must end up after polarity normalisation.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lenet_edge.data import folders
from lenet_edge.data.folders import load_image, load_image_folder
from lenet_edge.errors import DataError

H, W = 20, 16
INK = (slice(4, 16), slice(6, 10))  # a 12x4 bar in the middle


def digit(dark_on_light: bool, paper: int = 235, ink: int = 15) -> np.ndarray:
    """An 8-bit grayscale bar, dark on light or light on dark."""
    if not dark_on_light:
        paper, ink = 255 - paper, 255 - ink
    image = np.full((H, W), paper, np.uint8)
    image[INK] = ink
    return image


def save(path: Path, kind: str, dark_on_light: bool = True) -> Path:
    """Write the bar in one of several formats/modes; return the path."""
    gray = digit(dark_on_light)
    if kind == "png8":
        Image.fromarray(gray).save(path, "PNG")
    elif kind == "png16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path, "PNG")  # opens as I;16
    elif kind == "pgm16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path, "PPM")  # opens as I
    elif kind == "jpeg":
        Image.fromarray(gray).save(path, "JPEG", quality=95)
    elif kind == "jpeg_rgb":
        Image.fromarray(np.stack([gray, gray, gray // 2], -1)).save(path, "JPEG", quality=95)
    elif kind == "bmp":
        Image.fromarray(np.stack([gray] * 3, -1)).save(path, "BMP")
    elif kind == "gif":
        Image.fromarray(gray).convert("P").save(path, "GIF")
    elif kind == "palette":
        Image.fromarray(gray).quantize(4).save(path, "PNG")
    elif kind == "bilevel":
        Image.fromarray(gray).convert("1", dither=Image.Dither.NONE).save(path, "PNG")
    elif kind == "tiff_f":
        Image.fromarray(gray.astype(np.float32) / 255).save(path, "TIFF")
    elif kind == "tiff_i":
        Image.fromarray(gray.astype(np.int32) * 257).save(path, "TIFF")
    elif kind == "rgba_transparent_paper":
        # Paper fully transparent with black RGB underneath: only compositing
        # onto white (not dropping alpha) shows the ink against paper.
        rgba = np.zeros((H, W, 4), np.uint8)
        rgba[INK] = (0, 0, 0, 255) if dark_on_light else (255, 255, 255, 255)
        if not dark_on_light:
            rgba[..., 3] = 255  # an opaque white-on-black image
        Image.fromarray(rgba, "RGBA").save(path, "PNG")
    elif kind == "la":
        la = np.zeros((H, W, 2), np.uint8)
        la[INK] = (0, 255)
        Image.fromarray(la, "LA").save(path, "PNG")
    elif kind == "palette_transparent":
        index = np.zeros((H, W), np.uint8)  # 0: transparent black paper; 1: opaque black ink
        index[INK] = 1
        image = Image.fromarray(index, "P")
        image.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
        image.save(path, "PNG", transparency=0)
    else:
        raise AssertionError(kind)
    return path


def assert_white_on_black(image: np.ndarray) -> None:
    assert image.dtype == np.uint8 and image.shape == (H, W) and image.flags.writeable
    ink = np.zeros((H, W), bool)
    ink[INK] = True
    assert image[ink].mean() > 200, image
    assert image[~ink].mean() < 50, image


KINDS = [
    "png8", "png16", "pgm16", "jpeg", "jpeg_rgb", "bmp", "gif", "palette", "bilevel", "tiff_f", "tiff_i",
]  # fmt: skip


@pytest.mark.parametrize("dark_on_light", [True, False], ids=["dark-on-light", "light-on-dark"])
@pytest.mark.parametrize("kind", KINDS)
def test_load_image_normalises_polarity_in_every_format(tmp_path, kind, dark_on_light):
    assert_white_on_black(load_image(save(tmp_path / f"x.{kind}", kind, dark_on_light)))


@pytest.mark.parametrize("kind", ["rgba_transparent_paper", "la", "palette_transparent"])
def test_transparency_is_paper(tmp_path, kind):
    assert_white_on_black(load_image(save(tmp_path / "t.png", kind)))


def test_opaque_rgba_light_on_dark_is_kept(tmp_path):
    assert_white_on_black(load_image(save(tmp_path / "t.png", "rgba_transparent_paper", dark_on_light=False)))


def test_sixteen_bit_is_scaled_by_its_range_not_clipped(tmp_path):
    values = np.zeros((H, W), np.uint16)
    values[INK] = 257 * 128  # mid-grey ink on black paper
    values[0, 0] = 1000  # clipping would make this 255
    Image.fromarray(values).save(tmp_path / "s.png")
    image = load_image(tmp_path / "s.png")
    assert image[INK].tolist() == np.full((12, 4), 128).tolist()
    assert image[0, 0] == 4  # 1000 / 257 = 3.9


def test_exif_orientation_is_applied(tmp_path):
    pil = Image.fromarray(digit(True)[:, :10])  # 20x10, taller than wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the upright image is 10 tall, 20 wide
    pil.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg").shape == (10, 20)


assert_data_error = assert_one_line_error


def test_bad_image_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert_data_error(lambda: load_image(tmp_path / "empty.png"), tmp_path / "empty.png", "empty file")
    (tmp_path / "notes.txt").write_text("not an image\n")
    assert_data_error(lambda: load_image(tmp_path / "notes.txt"), tmp_path / "notes.txt", "not an image file")
    raw = save(tmp_path / "ok.jpg", "jpeg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    assert_data_error(lambda: load_image(tmp_path / "cut.jpg"), tmp_path / "cut.jpg", "truncated")
    garbled = raw[:200] + bytes(range(256)) * 4
    (tmp_path / "garbled.jpg").write_bytes(garbled)
    assert_data_error(lambda: load_image(tmp_path / "garbled.jpg"), tmp_path / "garbled.jpg", "corrupt")
    assert_data_error(lambda: load_image(tmp_path / "missing.png"), tmp_path / "missing.png", "cannot read")
    assert_data_error(lambda: load_image(tmp_path), tmp_path, "directory")


@pytest.mark.parametrize("limit", [200, 100], ids=["warning-zone", "error-zone"])
def test_decompression_bomb_is_an_error(tmp_path, monkeypatch, limit):
    # 320 px: above the limit (Pillow warns) or above twice the limit (Pillow raises).
    path = save(tmp_path / "bomb.png", "png8")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_data_error(lambda: load_image(path), path, "decompression bomb")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert warnings.filters == filters

    root = make_tree(tmp_path / "tree", {"train": {f"class_{c}": ["a.png"] for c in range(10)}})
    assert_data_error(lambda: load_image_folder(root), root / "train" / "class_0" / "a.png", "decompression bomb")
    assert warnings.filters == filters


def test_bomb_check_holds_without_the_warning_filter(tmp_path, monkeypatch):
    # Even if something else resets the process-wide filters, the size check stands.
    path = save(tmp_path / "bomb.png", "png8")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_data_error(lambda: folders._load_image(path), path, "decompression bomb")


# --- Folders -----------------------------------------------------------------------


def make_tree(root: Path, tree: dict, kind: str = "png8", dark_on_light: bool = True) -> Path:
    """Create folders from a nested dict; a list holds file names (images unless noted)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in tree.items():
        if isinstance(content, dict):
            make_tree(root / name, content, kind, dark_on_light)
            continue
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for file in content:
            if file.endswith((".txt", ".ini", ".db")) or file.startswith("."):
                (folder / file).write_text("junk\n")
            else:
                save(folder / file, kind, dark_on_light)
    return root


def classes(names=("class_{}",), files=("a.png",)) -> dict:
    return {pattern.format(c): list(files) for c in range(10) for pattern in names}


def test_kaggle_layout(tmp_path):
    root = make_tree(tmp_path / "persian", {"Train": classes(files=["b.png", "a.png", "c.png"]), "Test": classes()})
    data = load_image_folder(root)
    assert list(data) == ["train", "test"]
    images, labels = data["train"]
    assert labels.dtype == np.int64
    assert labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert len(images) == 30
    for image in images:
        assert_white_on_black(image)
    assert data["test"][1].tolist() == list(range(10))


def test_files_are_in_sorted_order(tmp_path):
    root = make_tree(tmp_path / "r", {"train": classes()})
    folder = root / "train" / "class_4"
    for name, width in [("b.png", 5), ("c.png", 6), ("a.png", 7)]:
        Image.fromarray(np.zeros((3, width), np.uint8)).save(folder / name)
    images, labels = load_image_folder(root)["train"]
    widths = [im.shape[1] for im, label in zip(images, labels, strict=True) if label == 4]
    assert widths == [7, 5, 6]  # a.png, b.png, c.png


@pytest.mark.parametrize("train, test", [("TRAIN", "test"), ("train", "TEST"), ("Training", "Testing")])
def test_split_names_in_any_case_and_digit_class_names(tmp_path, train, test):
    root = make_tree(tmp_path / "r", {train: classes(names=("{}",)), test: classes(names=("Class_{}",))})
    data = load_image_folder(root)
    assert sorted(data) == ["test", "train"]
    assert data["train"][1].tolist() == list(range(10))


@pytest.mark.parametrize(
    "name, split", [("digits", "train"), ("Train", "train"), ("Test", "test"), ("TESTING", "test"), ("val", "train")]
)
def test_directory_of_class_folders_is_one_split(tmp_path, name, split):
    root = make_tree(tmp_path / name, classes(), kind="jpeg", dark_on_light=False)
    data = load_image_folder(root)
    assert list(data) == [split]
    assert data[split][1].tolist() == list(range(10))


def test_mixed_formats_and_junk_are_handled(tmp_path):
    root = make_tree(tmp_path / "r", {"train": classes()})
    folder = root / "train" / "class_2"
    for kind in ["png16", "jpeg_rgb", "bmp", "palette_transparent", "rgba_transparent_paper"]:
        save(folder / f"{kind}.img", kind)
    for junk in [".DS_Store", "Thumbs.db", "desktop.ini", "._a.png"]:
        (folder / junk).write_bytes(b"\x00junk")
    (root / "train" / "__MACOSX").mkdir()
    (root / ".hidden").mkdir()
    images, labels = load_image_folder(root)["train"]
    assert (labels == 2).sum() == 6
    for image in images:
        assert_white_on_black(image)


def test_folder_errors(tmp_path):
    def expect(tree: dict, culprit: str, fragment: str, root_name: str = "r") -> None:
        root = make_tree(tmp_path / f"case{len(list(tmp_path.iterdir()))}" / root_name, tree)
        assert_data_error(lambda: load_image_folder(root), root / culprit if culprit else root, fragment)

    expect({}, "", "no class folders")
    expect({"train": {}}, "train", "no class folders")
    expect({"train": {**classes(), "class_7": [".hidden"]}}, "train/class_7", "class folder has no images")
    without_7 = {k: v for k, v in classes().items() if k != "class_7"}
    expect({"train": classes(), "test": without_7}, "test", "no folder for class 7")
    expect(without_7 | {"class_12": ["a.png"]}, "class_12", "class number outside 0-9")
    expect(classes() | {"foo": ["a.png"]}, "foo", "unknown folder name")
    expect({"foo": ["a.png"]}, "foo", "unknown folder name")
    expect({"train": classes() | {"3": ["a.png"]}}, "train/class_3", "a second folder for class 3")
    expect({"train": classes(), "Train": classes()}, "train", "a second folder for the 'train' split")
    expect({"train": classes(), "val": classes()}, "val", "unknown folder beside the split folders")
    expect(classes() | {"train": classes()}, "", "mixes class folders")
    with_text = {"train": classes(), "test": classes() | {"class_1": ["a.png", "readme.txt"]}}
    expect(with_text, "test/class_1/readme.txt", "not an image file")
    expect({"train": classes() | {"class_0": {"nested": ["a.png"]}}}, "train/class_0/nested", "unexpected folder")

    root = make_tree(tmp_path / "loose", {"train": classes()})
    (root / "labels.csv").write_text("a,b\n")
    assert_data_error(lambda: load_image_folder(root), root / "labels.csv", "unexpected file")
    assert_data_error(lambda: load_image_folder(root / "labels.csv"), root / "labels.csv", "not a directory")


def test_first_bad_file_in_order_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "_BATCH", 4)  # errors in different batches
    root = make_tree(tmp_path / "r", {"train": classes(files=["a.png", "b.png"])})
    (root / "train" / "class_9" / "z.png").write_bytes(b"bad")
    (root / "train" / "class_3" / "c.png").write_bytes(b"")
    assert_data_error(lambda: load_image_folder(root), root / "train" / "class_3" / "c.png", "empty file")


# --- Fuzzing: whatever the bytes, only DataError escapes ---------------------------


def _seed_images() -> list[bytes]:
    seeds = []
    gray = digit(True)
    for fmt, pil in [
        ("PNG", Image.fromarray(gray)),
        ("PNG", Image.fromarray(gray.astype(np.uint16) * 257)),
        ("JPEG", Image.fromarray(gray)),
        ("BMP", Image.fromarray(gray)),
        ("GIF", Image.fromarray(gray).convert("P")),
        ("TIFF", Image.fromarray(gray)),
        ("WEBP", Image.fromarray(gray)),
        ("PPM", Image.fromarray(gray)),
    ]:
        buffer = io.BytesIO()
        pil.save(buffer, fmt)
        seeds.append(buffer.getvalue())
    return seeds


SEEDS = _seed_images()


@st.composite
def damaged_image(draw) -> bytes:
    kind = draw(st.sampled_from(["noise", "magic_then_noise", "mutate", "truncate"]))
    if kind == "noise":
        return draw(st.binary(max_size=300))
    base = bytearray(draw(st.sampled_from(SEEDS)))
    if kind == "magic_then_noise":
        return bytes(base[: draw(st.integers(2, 40))]) + draw(st.binary(max_size=300))
    if kind == "mutate":
        for _ in range(draw(st.integers(1, 8))):
            base[draw(st.integers(0, len(base) - 1))] = draw(st.integers(0, 255))
        return bytes(base)
    return bytes(base[: draw(st.integers(0, len(base) - 1))])


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_images")


def check_only_data_error(folder: Path, raw: bytes) -> None:
    path = folder / "fuzz.img"
    path.write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some damage it tolerates
        try:
            image = load_image(path)
        except DataError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
    assert image.dtype == np.uint8 and image.ndim == 2 and image.size > 0


@settings(max_examples=600, deadline=None)
@given(raw=damaged_image())
def test_fuzz_only_data_error_escapes(fuzz_dir, raw):
    check_only_data_error(fuzz_dir, raw)


@pytest.mark.slow
@settings(max_examples=20000, deadline=None)
@given(raw=damaged_image())
def test_fuzz_only_data_error_escapes_heavy(fuzz_dir, raw):
    check_only_data_error(fuzz_dir, raw)
