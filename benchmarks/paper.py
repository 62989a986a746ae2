"""Digits photographed on paper: the old front end against the new one, per condition.

    python benchmarks/paper.py [--run DIR] [--data ../shared/data/hoda] [--n 1000]

Renders Hoda *test* digits onto paper, as a phone photo of a notebook or a
form shows them, in each condition below: ink (blue, black or red) on
off-white paper with a margin of 3-5x the digit, then the camera (slight
rotation and perspective, blur, sensor noise, JPEG quality 50-90), written as
JPEG files. Each file is read as `predict` reads it (`load_image`), then
preprocessed two ways: the old front end (`preprocess` on the whole image,
the baseline) and the new one (`frontend.digit_image`), and classified by
the run's int8 model. Also times the front end on a 1-megapixel photo.

Rewrites benchmarks/PAPER.md. The front end's constants were chosen on Hoda
*train* digits rendered the same way (`--split train`, written to
benchmarks/runs/paper_train.md); the test digits are only measured. Without
--run, uses benchmarks/runs/lenet5 (trained by hoda.py) or trains it.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_HODA, HERE, hoda_runs, machine_line, percent, portable, run
from PIL import Image

from lenet_edge.fileio import atomic_write_text

INKS = {"black": (35, 35, 45), "blue": (30, 55, 165), "red": (185, 35, 40)}
RULE_COLOURS = {"light blue": (150, 190, 230), "grey": (120, 120, 120), "dark": (60, 60, 70)}
CONDITIONS = {
    "plain": dict(ink="black"),
    "blue ink": dict(ink="blue"),
    "red ink": dict(ink="red"),
    "ruled, light blue, between lines": dict(rules="light blue", cross=False),
    "ruled, light blue, crossing the digit": dict(rules="light blue", cross=True),
    "ruled, dark, dense, crossing": dict(rules="dark", cross=True, dense=True),
    "squared paper (grey grid)": dict(rules="grey", grid=True, cross=True),
    "lighting gradient (30-55% darker)": dict(gradient=True),
    "vignette": dict(vignette=True),
    "gradient + ruled crossing": dict(gradient=True, rules="light blue", cross=True),
    "form box": dict(box=True),
    "comb field": dict(comb=True),
    "heavy camera (blur, noise, JPEG 50)": dict(heavy=True),
}


def render(digit: np.ndarray, condition: dict, rng: np.random.Generator) -> bytes:
    """One Hoda digit (binary, white on black) as a JPEG photo of it written on paper."""
    import cv2

    side = rng.uniform(45, 90)  # the digit's longer side in the photo, px
    scale = side / max(digit.shape)
    dh, dw = max(1, round(digit.shape[0] * scale)), max(1, round(digit.shape[1] * scale))
    alpha = cv2.resize(digit.astype(np.float32) / 255, (dw, dh), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.4 * scale / 2 + 0.3)
    margin = rng.uniform(3, 5)
    H, W = round(side * margin * rng.uniform(0.85, 1.15)), round(side * margin * rng.uniform(0.85, 1.15))
    top = int(np.clip((H - dh) / 2 + rng.uniform(-0.08, 0.08) * H, 0, H - dh))
    left = int(np.clip((W - dw) / 2 + rng.uniform(-0.08, 0.08) * W, 0, W - dw))
    paper = np.array([rng.uniform(215, 245)] * 3) + rng.uniform(-6, 6, 3)
    page = np.ones((H, W, 3), np.float32) * paper
    digit_box = (left, top, dw, dh)
    if "rules" in condition:
        _rules(page, digit_box, condition, rng)
    if condition.get("box"):
        _box(page, digit_box, rng)
    if condition.get("comb"):
        _comb(page, digit_box, rng)
    ink = np.array(INKS[condition.get("ink") or str(rng.choice(["black", "blue"]))], np.float32)
    ink = ink * rng.uniform(0.85, 1.1)
    region = page[top : top + dh, left : left + dw]
    region[:] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
    if condition.get("gradient"):
        page *= _gradient(H, W, rng)[..., None]
    if condition.get("vignette"):
        page *= _vignette(H, W, rng)[..., None]
    return _camera(np.clip(page, 0, 255), rng, heavy=condition.get("heavy", False))


def _rules(page, digit_box, condition, rng) -> None:
    import cv2

    H, W, _ = page.shape
    left, top, dw, dh = digit_box
    colour = RULE_COLOURS[condition["rules"]]
    spacing = dh * (rng.uniform(0.45, 0.7) if condition.get("dense") else rng.uniform(1.15, 1.5))
    if condition["cross"]:
        anchor = top + rng.uniform(0.25, 0.75) * dh  # one line through the digit
    else:
        anchor = top + dh + rng.uniform(0.03, 0.1) * dh  # the digit sits on a line, below the next one
        spacing = max(spacing, dh * 1.25)
    thickness = int(rng.integers(1, 3))
    y = anchor - spacing * math.ceil(anchor / spacing)
    while y < H:
        cv2.line(page, (0, round(y)), (W - 1, round(y)), colour, thickness)
        y += spacing
    if condition.get("grid"):
        x = left + rng.uniform(0, dw) - spacing * math.ceil(W / spacing)
        while x < W:
            if x >= 0:
                cv2.line(page, (round(x), 0), (round(x), H - 1), colour, thickness)
            x += spacing


def _box(page, digit_box, rng) -> None:
    import cv2

    left, top, dw, dh = digit_box
    pad = rng.uniform(0.0, 0.4, 4) * max(dw, dh)
    colour = tuple(float(c) for c in rng.choice([(40, 40, 40), (90, 90, 90), (70, 90, 160)]))
    x0, y0 = round(left - pad[0] - 2), round(top - pad[1] - 2)
    x1, y1 = round(left + dw + pad[2] + 2), round(top + dh + pad[3] + 2)
    cv2.rectangle(page, (x0, y0), (x1, y1), colour, int(rng.integers(1, 4)))


def _comb(page, digit_box, rng) -> None:
    """A comb field: a baseline with ticks, the digit in one cell, empty cells beside it."""
    import cv2

    H, W, _ = page.shape
    left, top, dw, dh = digit_box
    cell = max(dw, dh) * rng.uniform(1.2, 1.6)
    base = round(top + dh + rng.uniform(0.05, 0.2) * dh)
    tick = cell * rng.uniform(0.25, 0.5)
    thickness = int(rng.integers(1, 3))
    colour = (60, 60, 60)
    start = left + dw / 2 - cell / 2 - cell * rng.integers(1, 3)
    end = start + cell * rng.integers(3, 6)
    cv2.line(page, (round(start), base), (round(end), base), colour, thickness)
    x = start
    while x <= end + 1:
        cv2.line(page, (round(x), base), (round(x), round(base - tick)), colour, thickness)
        x += cell


def _gradient(H, W, rng) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    t = (xx - W / 2) * math.cos(angle) + (yy - H / 2) * math.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1)
    return 1 - rng.uniform(0.3, 0.55) * t


def _vignette(H, W, rng) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2
    return 1 - rng.uniform(0.3, 0.5) * r2 / 2


def _camera(page: np.ndarray, rng, heavy: bool) -> bytes:
    """Rotation and perspective, blur, noise and JPEG, as a phone adds them."""
    import cv2

    H, W, _ = page.shape
    tilt = 0.06 if heavy else 0.03
    src = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    dst = src + rng.uniform(-tilt, tilt, (4, 2)).astype(np.float32) * np.float32([W, H])
    warp = cv2.getPerspectiveTransform(src, dst)
    rotate = cv2.getRotationMatrix2D((W / 2, H / 2), rng.uniform(-8, 8) if heavy else rng.uniform(-5, 5), 1.0)
    warp = np.vstack([rotate, [0, 0, 1]]) @ warp
    border = tuple(float(v) for v in page[0, 0])
    page = cv2.warpPerspective(page, warp, (W, H), borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    page = cv2.GaussianBlur(page, (0, 0), rng.uniform(1.2, 2.0) if heavy else rng.uniform(0.3, 1.2))
    page = page + rng.normal(0, rng.uniform(8, 12) if heavy else rng.uniform(2, 6), page.shape)
    buffer = io.BytesIO()
    quality = 50 if heavy else int(rng.integers(50, 91))
    Image.fromarray(np.clip(np.rint(page), 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def evaluate(model: Path, digits, labels, n: int, seed: int, workdir: Path) -> dict:
    """Top-1 of the old and the new front end per condition, on `n` digits each (the same digits everywhere)."""
    from lenet_edge.data.folders import load_image
    from lenet_edge.data.frontend import digit_image
    from lenet_edge.data.preprocess import preprocess
    from lenet_edge.runtimes import predict_tflite

    model_bytes = model.read_bytes()
    pick = np.random.default_rng(seed).choice(len(labels), n, replace=False)
    results = {}
    for index, (name, condition) in enumerate(CONDITIONS.items()):
        rng = np.random.default_rng([seed, index])
        old, new = [], []
        for k in pick:
            path = workdir / f"{index}_{k}.jpg"
            path.write_bytes(render(digits[k], condition, rng))
            image = load_image(path)
            old.append(preprocess(image))
            new.append(digit_image(image, strict=False))
            path.unlink()
        truth = labels[pick]
        old_top1 = float((predict_tflite(model_bytes, np.stack(old)).argmax(1) == truth).mean())
        new_top1 = float((predict_tflite(model_bytes, np.stack(new)).argmax(1) == truth).mean())
        results[name] = {"old": old_top1, "new": new_top1}
        print(f"{name:<40} old {percent(old_top1):>7}  new {percent(new_top1):>7}", flush=True)
    return results


def clean_accuracy(model: Path, digits, labels) -> float:
    """Top-1 of the model on the split's own records (the dataset's arrays: no paper, no camera)."""
    from lenet_edge.data.preprocess import preprocess_many
    from lenet_edge.runtimes import predict_tflite

    return float((predict_tflite(model.read_bytes(), preprocess_many(digits)).argmax(1) == labels).mean())


def megapixel_ms(digits, seed: int, repeats: int = 60) -> dict:
    """Median wall ms of the front end (clean_page + find_digit + preprocess) on 1-megapixel photos."""
    import cv2

    from lenet_edge.data.folders import load_image
    from lenet_edge.data.frontend import digit_image

    rng = np.random.default_rng(seed)
    images = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(5):
            path = Path(tmp) / f"{i}.jpg"
            path.write_bytes(render(digits[i], CONDITIONS["ruled, light blue, crossing the digit"], rng))
            image = load_image(path)
            images.append(cv2.resize(image, (1155, 866), interpolation=cv2.INTER_CUBIC))  # 1.0 MP, 4:3
    from lenet_edge.data.preprocess import preprocess

    times, old_times = [], []
    for r in range(repeats):  # interleaved with the old front end, so both see the same machine load
        image = images[r % len(images)]
        started = time.perf_counter()
        digit_image(image, strict=False)
        times.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        preprocess(image)
        old_times.append(1000 * (time.perf_counter() - started))
    return {
        "median_ms": statistics.median(times),
        "old_median_ms": statistics.median(old_times),
        "shape": list(images[0].shape),
        "repeats": repeats,
    }


def machine() -> str:
    """The shared machine line (CPU with family/model, instruction sets, cores) and the image libraries' versions."""
    import cv2

    from lenet_edge.machine import loadavg, machine_info

    versions = {"numpy": np.__version__, "OpenCV": cv2.__version__}
    return machine_line({"machine": machine_info(loadavg(), versions)}, versions)


def render_md(results: dict, timing: dict, clean: float, n: int, split: str, model: Path, load: str) -> str:
    lines = [
        "# Digits photographed on paper",
        "",
        f"Regenerated by `python benchmarks/paper.py` (do not edit by hand). {n} Hoda {split} digits per condition "
        "(the same digits in each), rendered as phone photos of handwriting on paper (see the script: ink on "
        "off-white paper, margin 3-5x the digit, rotation up to 5 deg, perspective, blur, noise, JPEG 50-90), read "
        f"with `load_image` and classified by `{portable(str(model))}`. Old: `preprocess` on the whole photo "
        "(bounding box of every pixel > 64). New: `frontend.digit_image`. The front end was tuned on train "
        "digits only; the test digits are never tuned on.",
        "",
        machine(),
        "",
        f"The same model on the clean Hoda {split} records (the dataset's own arrays): {percent(clean)}.",
        "",
        "| condition | old front end | new front end |",
        "|---|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {percent(r['old'])} | {percent(r['new'])} |")
    worst = min(results, key=lambda k: results[k]["new"])
    lines += [
        "",
        f"Worst condition with the new front end: {worst}, {percent(results[worst]['new'])}. "
        f"Plain paper vs clean records: {100 * (results['plain']['new'] - clean):+.2f} pp.",
        "",
        f"Front end cost: median {timing['median_ms']:.1f} ms per 1-megapixel photo "
        f"({timing['shape'][1]}x{timing['shape'][0]} grayscale, {timing['repeats']} runs, OpenCV with its default "
        f"threads; shrunk to 0.25 MP first), against {timing['old_median_ms']:.1f} ms for the old front end "
        f"(`preprocess` alone), measured interleaved; load average {load} (1, 5, 15 min) on a machine "
        "shared with other work.",
        "",
    ]
    return "\n".join(lines)


def find_run(args, data: Path) -> Path:
    if args.run:
        return Path(args.run)
    runs_dir, log = hoda_runs(data, "paper.log")
    run_dir = runs_dir / "lenet5"
    if not (run_dir / "lenet5_int8.tflite").is_file():
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))
        run(["train", "--data", str(data), "--dir", str(run_dir), "--force"], env, log)
        run(["export", "--dir", str(run_dir), "--int8"], env, log)
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="run directory with lenet5_int8.tflite (default: benchmarks/runs/lenet5)")
    parser.add_argument("--data", default=str(DEFAULT_HODA), help="Hoda folder with the .cdb files")
    parser.add_argument("--n", type=int, default=1000, help="digits per condition")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="train: for tuning only")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from lenet_edge.data.cdb import read_cdb

    data = Path(args.data)
    run_dir = find_run(args, data)
    model = run_dir / "lenet5_int8.tflite"
    cdb = read_cdb(data / ("Test 20000.cdb" if args.split == "test" else "Train 60000.cdb"))
    clean = clean_accuracy(model, cdb.images, np.asarray(cdb.labels))
    with tempfile.TemporaryDirectory() as tmp:
        results = evaluate(model, cdb.images, np.asarray(cdb.labels), args.n, args.seed, Path(tmp))
    load = Path("/proc/loadavg").read_text().split()[:3]
    timing = megapixel_ms(cdb.images, args.seed)
    print(f"front end: median {timing['median_ms']:.1f} ms per 1 MP photo (load {' '.join(load)})")
    text = render_md(results, timing, clean, args.n, args.split, model, " ".join(load))
    target = HERE / "PAPER.md" if args.split == "test" else HERE / "runs" / "paper_train.md"
    target.parent.mkdir(exist_ok=True)
    atomic_write_text(target, text)
    print(f"wrote {portable(str(target))}")


if __name__ == "__main__":
    main()
