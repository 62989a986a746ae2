"""Reading whole numbers: Hoda digits composed into numbers, read back with `lenet_edge.reading`.

    python benchmarks/read_numbers.py [--data ../shared/data/hoda] [--run benchmarks/runs/lenet5] [--split test]

Each number is 4-11 digits drawn from one Hoda split at their scanned size
(Hoda's raw records keep each digit's size at 200 dpi: ۰ is about 12 px tall,
the others about 30 px), centred on a common middle line, in two layouts:

- spaced: gaps of 15-60% of the mean width of the two neighbours;
- tight: gaps of -1 to 2 px, so many neighbours' strokes touch;

then scaled by 0.8-2.5x (bilinear), written dark on light for half of them,
with Gaussian noise and a few specks of ink. Every number goes through the
polarity step of `load_image` and `reading.read_array` (the photo front end,
segmentation) with the run's int8 model. Reported per layout and per length: exact-number accuracy, digit
accuracy (digits matched by longest common subsequence, over the true
digits), the share of numbers whose digit count came out wrong, and images
refused; plus the time to read one 11-digit number end to end.

The segmentation was developed on synthetic numbers and on numbers composed
from Hoda's TRAIN digits (`--split train`), the line model's choices (how its
training digits are drawn, when it overrules, its margin) on numbers of the
run's VALIDATION digits (`--split val`: the part of the train file no model of
the run was trained on); both print their tables and write no file.
The test split is only ever used here, to write benchmarks/NUMBERS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_HODA, HERE, ROOT, machine_line, percent, portable
from PIL import Image

sys.path.insert(0, str(ROOT))

from lenet_edge.data.cdb import read_cdb  # noqa: E402
from lenet_edge.data.preprocess import preprocess_many, to_white_on_black  # noqa: E402
from lenet_edge.data.sources import train_val_split  # noqa: E402
from lenet_edge.fileio import atomic_write_text  # noqa: E402
from lenet_edge.inference import resolve_model  # noqa: E402
from lenet_edge.line_model import NOISE_SIGMA, on_paper  # noqa: E402
from lenet_edge.machine import loadavg, machine_info  # noqa: E402
from lenet_edge.manifest import artifact_path, read_manifest  # noqa: E402
from lenet_edge.reading import (  # noqa: E402
    MIXED_KEY,
    MIXED_LINE_KEY,
    MIXED_VERIFIER_KEY,
    READ_HEIGHT,
    Classifier,
    LineReader,
    LineReading,
    read_array,
    resolve_line_model,
    resolve_verifier,
)
from lenet_edge.segment import SegmentConfig  # noqa: E402
from lenet_edge.verifier import CLASSES as VERIFIER_CLASSES  # noqa: E402

LAYOUTS = ("spaced", "tight")
LENGTHS = tuple(range(4, 12))
SCALE = (0.8, 2.5)
MARGIN = 12  # px of paper around the number before scaling
TIMED_NUMBERS = 50  # different 11-digit numbers timed per layout and scale
TIMED_SCALES = (1.0, 2.5, 5.0)  # as scanned (Hoda: 200 dpi), the largest scale read above, and a 1,000 dpi scan
TIMING_ROUNDS = 6  # reads of each


def compose(digits: list[np.ndarray], layout: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Raw binary digits (ink 255) side by side on a common middle line -> a white-on-black line, unscaled."""
    widths = [d.shape[1] for d in digits]
    if layout == "spaced":
        gaps = [round(rng.uniform(0.15, 0.6) * (a + b) / 2) for a, b in zip(widths[:-1], widths[1:], strict=True)]
    else:
        gaps = list(rng.integers(-1, 3, size=len(digits) - 1))
    height = max(d.shape[0] for d in digits) + 2 * MARGIN
    width = sum(widths) + sum(gaps) + 2 * MARGIN
    line = np.zeros((height, width), np.uint8)
    x = MARGIN
    for i, d in enumerate(digits):
        top = (height - d.shape[0]) // 2  # the common middle line
        cell = line[top : top + d.shape[0], x : x + d.shape[1]]
        np.maximum(cell, d, out=cell)  # strokes that meet merge, as on paper
        x += d.shape[1] + (gaps[i] if i < len(gaps) else 0)
    return line, rng.uniform(*SCALE)


def render(line: np.ndarray, scale: float, dark_on_light: bool, rng: np.random.Generator) -> np.ndarray:
    """Scale, add specks and noise (`line_model.on_paper`, as the line model's training lines get), and choose
    the polarity: the image a user would hand over."""
    h, w = line.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = on_paper(np.asarray(Image.fromarray(line).resize(size, Image.Resampling.BILINEAR)), rng)
    return 255 - image if dark_on_light else image


def lcs(a: str, b: str) -> int:
    """Length of the longest common subsequence of two digit strings."""
    row = [0] * (len(b) + 1)
    for ca in a:
        prev = 0
        for j, cb in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if ca == cb else max(row[j + 1], row[j])
    return row[-1]


def alone(images: list[np.ndarray], labels: np.ndarray, classify, batch: int = 1024) -> np.ndarray:
    """(N,) bool: each digit read right on its own, preprocessed as the dataset is (bench's top-1 on the split)."""
    right = []
    for start in range(0, len(images), batch):
        digits = preprocess_many(images[start : start + batch])
        right.append(classify(digits).argmax(axis=1) == labels[start : start + batch])
    return np.concatenate(right)


def evaluate(
    images: list[np.ndarray],
    labels: np.ndarray,
    classify,
    per_cell: int,
    seed: int,
    verify=None,
    config=None,
    right_alone: np.ndarray | None = None,
    line_model=None,
    segmented: list | None = None,
) -> list[tuple]:
    """Read `per_cell` numbers per (layout, length); return the per-number outcomes (the same numbers per seed).

    `verify` and `line_model` are the piece verifier and the line model to read with (None: without).
    Each outcome is (layout, length, truth, text read, refused, every digit read right on its own): the last
    is the ceiling a perfect segmentation would reach with this digit model (`alone`; None without it).
    `segmented`, if given, gets whether the segmentation ran, per number (as `rows`): it does not where the
    line model is sure beyond overruling.
    """
    rng = np.random.default_rng(seed)
    rows = []
    asked = [0]  # calls of the digit model so far

    def counted(images):
        asked[0] += 1
        return classify(images)

    for layout in LAYOUTS:
        for length in LENGTHS:
            for _ in range(per_cell):
                idx = rng.integers(0, len(images), size=length)
                truth = "".join(str(labels[i]) for i in idx)
                line, scale = compose([images[i] for i in idx], layout, rng)
                image = render(line, scale, bool(rng.integers(0, 2)), rng)
                before = asked[0]
                result = read_array(to_white_on_black(image), counted, config=config, verify=verify, line=line_model)
                if segmented is not None:
                    segmented.append(asked[0] > before)
                text = result.get("text", "")
                ceiling = None if right_alone is None else bool(right_alone[idx].all())
                rows.append((layout, length, truth, text, "error" in result, ceiling))
    return rows


def alignment(truth: str, read: str) -> list[tuple[str, str]]:
    """A least-edit alignment of two digit strings: (true, read) pairs, "" for a digit missing or extra."""
    n, m = len(truth), len(read)
    cost = np.zeros((n + 1, m + 1), np.int64)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1, cost[i - 1, j - 1] + (truth[i - 1] != read[j - 1]))
    pairs, i, j = [], n, m
    while i or j:
        if i and j and cost[i, j] == cost[i - 1, j - 1] + (truth[i - 1] != read[j - 1]):
            pairs.append((truth[i - 1], read[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            pairs.append((truth[i - 1], ""))
            i -= 1
        else:
            pairs.append(("", read[j - 1]))
            j -= 1
    return pairs[::-1]


def confusion(rows, layout: str) -> dict:
    """The errors of the numbers read wrongly (not refused): digits missing (merged into a neighbour or
    dropped), extra (a digit split in two, or a speck), and read as another digit."""
    missing, extra, swapped = {}, {}, {}
    for lay, _, truth, text, refused, _ in rows:
        if lay != layout or refused or truth == text:
            continue
        for t, r in alignment(truth, text):
            if t and not r:
                missing[t] = missing.get(t, 0) + 1
            elif r and not t:
                extra[r] = extra.get(r, 0) + 1
            elif t != r:
                swapped[(t, r)] = swapped.get((t, r), 0) + 1
    return {"missing": missing, "extra": extra, "swapped": swapped}


def confusion_lines(rows) -> list[str]:
    persian = "۰۱۲۳۴۵۶۷۸۹"
    lines = [
        "| layout | digit | missing (merged or dropped) | extra (split, or a speck read) | read as another digit |",
        "|---|---|---:|---:|---:|",
    ]
    tops = []
    for layout in LAYOUTS:
        c = confusion(rows, layout)
        for d in "0123456789":
            wrong = sum(v for (t, _), v in c["swapped"].items() if t == d)
            lines.append(
                f"| {layout} | {persian[int(d)]} ({d}) | {c['missing'].get(d, 0)} | {c['extra'].get(d, 0)} | {wrong} |"
            )
        common = sorted(c["swapped"].items(), key=lambda kv: -kv[1])[:6]
        tops.append(f"- {layout}: " + (", ".join(f"{t} read as {r}: {v}" for (t, r), v in common) or "none"))
    return [*lines, "", "Most frequent digit-for-digit errors (true digit read as another):", "", *tops]


def summarise(rows, key) -> list[tuple]:
    groups: dict = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    out = []
    for name, members in groups.items():
        n = len(members)
        exact = sum(t == p for _, _, t, p, *_ in members) / n
        digits = sum(lcs(t, p) for _, _, t, p, *_ in members) / sum(len(t) for _, _, t, *_ in members)
        count = sum(len(t) != len(p) for _, _, t, p, *_ in members) / n
        refused = sum(e for *_, e, _ in members) / n
        ceiling = sum(c for *_, c in members) / n if members[0][-1] is not None else None
        out.append((name, n, exact, digits, count, refused, ceiling))
    return out


class Timed:
    """A classifier that adds the nanoseconds spent inside it to `spent`."""

    def __init__(self, classify):
        self.classify, self.spent = classify, 0

    def __call__(self, images):
        start = time.perf_counter_ns()
        try:
            return self.classify(images)
        finally:
            self.spent += time.perf_counter_ns() - start


def time_numbers(images, labels, pairs: dict, seed: int) -> dict:
    """How long reading one 11-digit number takes with each set of models (`pairs`: name -> (digit classifier,
    verifier, line model or None)): `TIMED_NUMBERS` different numbers per layout and scale (`TIMED_SCALES`), each
    read `TIMING_ROUNDS` times, every number and set interleaved in each round. Returns (set name, layout and
    scale) -> (p50 ms, p90 ms, median image shape, median pieces classified over the numbers that were segmented,
    p50 ms inside the models' calls, how many of the numbers were segmented: not those the line model alone read)."""
    rng = np.random.default_rng(seed)
    cases = {}
    for layout in LAYOUTS:
        lines = []
        for _ in range(TIMED_NUMBERS):
            idx = rng.integers(0, len(images), size=11)
            lines.append(compose([images[i] for i in idx], layout, rng)[0])
        for scale in TIMED_SCALES:
            cases[f"{layout}, {scale}x"] = [to_white_on_black(render(line, scale, True, rng)) for line in lines]
    runs = [(pair, name, k) for name in cases for k in range(TIMED_NUMBERS) for pair in pairs]
    pieces = dict.fromkeys(runs, 0)
    for pair, name, k in runs:  # how many pieces the interpreter calls classify in all; also the warm-up

        def counting(images, key=(pair, name, k), classify=pairs[pair][0]):
            pieces[key] += len(images)
            return classify(images)

        read_array(cases[name][k], counting, verify=pairs[pair][1], line=pairs[pair][2])
    timed = {pair: tuple(None if m is None else Timed(m) for m in models) for pair, models in pairs.items()}
    samples = {key: [] for key in runs}
    models = {key: [] for key in runs}
    for _ in range(TIMING_ROUNDS):
        for pair, name, k in runs:
            classify, verify, line = timed[pair]
            for m in timed[pair]:
                if m is not None:
                    m.spent = 0
            start = time.perf_counter_ns()
            read_array(cases[name][k], classify, verify=verify, line=line)
            samples[pair, name, k].append(time.perf_counter_ns() - start)
            models[pair, name, k].append(sum(m.spent for m in timed[pair] if m is not None))
    out = {}
    for pair in pairs:
        for name, numbers in cases.items():
            keys = [(pair, name, k) for k in range(TIMED_NUMBERS)]
            reads = np.concatenate([samples[key] for key in keys]) / 1e6
            shape = tuple(int(np.median([image.shape[i] for image in numbers])) for i in (0, 1))
            cut = [pieces[key] for key in keys if pieces[key]]  # numbers the digit model was asked about
            out[pair, name] = (
                np.percentile(reads, 50),
                np.percentile(reads, 90),
                shape,
                int(np.median(cut)) if cut else 0,
                np.percentile(np.concatenate([models[key] for key in keys]), 50) / 1e6,
                len(cut),
            )
    return out


@contextlib.contextmanager
def always_segmenting():
    """`read_array` with the segmentation always run: no line model reading is taken as sure beyond overruling."""
    sure = LineReading.beyond_overruling
    LineReading.beyond_overruling = property(lambda self: False)
    try:
        yield
    finally:
        LineReading.beyond_overruling = sure


VERIFIER_MODE = "with the piece verifier"
LINE_MODE = "with the piece verifier and the line model"
MIXED_MODE = "with the piece verifier and the line model, mixed models"
READ_MODES = (LINE_MODE, MIXED_MODE)  # as `lenet-edge read` reads, with the int8 and with the mixed models


def model_pairs(run: Path) -> dict[str, tuple[Classifier, Classifier, LineReader]]:
    """The run's digit model, piece verifier and line model, kept loaded: "int8" (`export --int8`), and "mixed"
    when the run also has `export --mixed`'s pair (float32 first layers where int8 loses on the CPU it was
    exported on), read with its line model (`line_mixed.tflite`, the same float layers; a run exported before it
    existed: the int8 one), as `lenet-edge read` reads."""
    manifest = read_manifest(run)
    models = {"int8": resolve_model(None, run)}
    if MIXED_VERIFIER_KEY in manifest.get("artifacts", {}):
        models["mixed"] = artifact_path(run, manifest, MIXED_KEY)
    pairs = {}
    for kind, model in models.items():
        verifier, line = resolve_verifier(model), resolve_line_model(model)
        if verifier is None or line is None:
            sys.exit(f"{run}: no piece verifier or line model; train it with --line-model, then export --int8")
        pairs[kind] = (
            Classifier(model.read_bytes()),
            Classifier(verifier.read_bytes(), classes=VERIFIER_CLASSES),
            LineReader(line.read_bytes()),
        )
    return pairs


def mixed_layers(run: Path) -> str:
    """The float32 layers of the run's mixed verifier, as export recorded them ("c1 and c3")."""
    return " and ".join(read_manifest(run)["export"]["models"][MIXED_VERIFIER_KEY]["float_layers"])


def mixed_line(run: Path) -> str:
    """The line model the mixed models read with: `line_mixed.tflite` where `export --mixed` wrote it."""
    if MIXED_LINE_KEY in read_manifest(run).get("artifacts", {}):
        return "`line_mixed.tflite`"
    return "the int8 line model (exported before `line_mixed.tflite` existed)"


def line_members(run: Path) -> str:
    """How many members the run's line model has, in words ("three members")."""
    count = len(read_manifest(run)["line_model"]["config"].get("dropout", [0.0]))
    return {1: "one member", 2: "two members", 3: "three members"}.get(count, f"{count} members")


def machine() -> str:
    """The shared machine line (CPU with family/model, instruction sets, cores, versions)."""
    import ai_edge_litert
    import PIL
    import scipy

    versions = {
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "Pillow": PIL.__version__,
        "ai-edge-litert": getattr(ai_edge_litert, "__version__", "?"),
    }
    return machine_line({"machine": machine_info(loadavg(), versions)}, versions)


def line_alone(rows: list[tuple], segmented: list[bool]) -> list[tuple[str, float]]:
    """Per layout, the share of numbers the line model read alone (sure beyond overruling: no segmentation)."""
    alone = [(row[0], not cut) for row, cut in zip(rows, segmented, strict=True)]
    return [(layout, float(np.mean([a for lay, a in alone if lay == layout]))) for layout in LAYOUTS]


def spread(sets: dict[int, dict[str, list]]) -> list[tuple]:
    """Per set of models and layout: each set of numbers' figures (seed -> mode -> rows), then all sets'."""
    stats = []
    for mode in next(iter(sets.values())):
        models = "mixed" if mode == MIXED_MODE else "int8"
        groups = {f"seed {seed}": by_mode[mode] for seed, by_mode in sets.items()}
        if len(sets) > 1:
            groups[f"all {len(sets)} sets"] = [row for rows in groups.values() for row in rows]
        figures = {
            name: {layout: rest for layout, *rest in summarise(rows, lambda r: r[0])} for name, rows in groups.items()
        }
        stats += [(f"{layout}, {models}, {name}", *figures[name][layout]) for layout in LAYOUTS for name in groups]
    return stats


def table(title: str, stats: list[tuple]) -> list[str]:
    lines = [
        f"| {title} | numbers | exact number | digits | wrong digit count | refused | every digit right alone |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, exact, digits, count, refused, ceiling in stats:
        cells = [str(n), f"**{percent(exact)}**", percent(digits), percent(count), percent(refused)]
        cells.append("-" if ceiling is None else percent(ceiling))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_HODA, help="Hoda directory (.cdb files)")
    parser.add_argument(
        "--run",
        type=Path,
        default=HERE / "runs" / "lenet5",
        help="a run trained on Hoda with the default recipe and --line-model, exported with --int8 --mixed",
    )
    parser.add_argument(
        "--split",
        choices=["test", "train", "val"],
        default="test",
        help="train: Hoda's train file; val: the run's validation digits in it (both for tuning only)",
    )
    parser.add_argument("--per-cell", type=int, default=150, help="numbers per layout and length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--more-seeds",
        type=int,
        nargs="*",
        default=[1],
        metavar="SEED",
        help="other sets of numbers of the same kind, read as `read` reads, to show how far one set's figures "
        "are from another's (default: 1; none: --more-seeds)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="(--split train or val) a SegmentConfig field to try, e.g. --set piece_cost=0.5",
    )
    parser.add_argument("--no-timing", action="store_true", help="(--split train or val) skip the latency runs")
    parser.add_argument(
        "--no-before", action="store_true", help="(--split train or val) skip reading with the digit model alone"
    )
    parser.add_argument("--out", type=Path, default=HERE / "NUMBERS.md")
    args = parser.parse_args()
    name = {"test": "Test 20000.cdb", "train": "Train 60000.cdb", "val": "Train 60000.cdb"}[args.split]
    if not (args.data / name).is_file():
        sys.exit(f"{args.data}: no '{name}' there; pass --data DIR")
    tuning = args.split != "test"
    if args.set and not tuning:
        sys.exit("--set is for tuning on --split train or val; the test numbers are read with the defaults only")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in {f.name for f in dataclasses.fields(SegmentConfig)}:
            sys.exit(f"--set {item}: no SegmentConfig field {key!r}")
        overrides[key] = type(getattr(SegmentConfig(), key))(value)
    config = SegmentConfig(**overrides)
    pairs = model_pairs(args.run)
    classify, verify, line = pairs["int8"]
    cdb = read_cdb(args.data / name)
    images, labels = cdb.images, np.asarray(cdb.labels)
    if args.split == "val":  # the digits `lenet-edge train` held out of this run's training (same carve-out)
        data = read_manifest(args.run)["data"]
        held_out = train_val_split(labels, data["val_fraction"], data["split_seed"])[1]
        images, labels = [images[i] for i in held_out], labels[held_out]
    load_start = open("/proc/loadavg").read().split()[0]
    modes = {
        "digit model alone": (classify, None, None),
        VERIFIER_MODE: (classify, verify, None),
        LINE_MODE: (classify, verify, line),
    }
    if args.no_before and tuning:
        del modes["digit model alone"]
    if "mixed" in pairs:
        modes[MIXED_MODE] = pairs["mixed"]
    right_alone = alone(images, labels, classify)
    rows, seconds, timing = {}, {}, {}
    segmented: list[bool] = []  # with the line model: whether the segmentation ran, per number
    for mode, (c, v, lm) in modes.items():
        started = time.perf_counter()
        asked = segmented if mode == LINE_MODE else None
        rows[mode] = evaluate(images, labels, c, args.per_cell, args.seed, v, config, right_alone, lm, asked)
        seconds[mode] = time.perf_counter() - started
    # the shortcut's check: the same numbers read with the segmentation always run (the line model never taken
    # as sure beyond overruling), per set of models with the line model: how many readings come out the same
    same = {}
    for mode in (LINE_MODE, MIXED_MODE):
        if mode in modes:
            c, v, lm = modes[mode]
            with always_segmenting():
                again = evaluate(images, labels, c, args.per_cell, args.seed, v, config, right_alone, lm)
            same[mode] = sum(a[3:5] == b[3:5] for a, b in zip(rows[mode], again, strict=True))
    sets = {args.seed: {mode: rows[mode] for mode in READ_MODES if mode in modes}}  # seed -> mode -> rows
    for seed in dict.fromkeys(s for s in args.more_seeds if s != args.seed):
        sets[seed] = {}
        for mode in sets[args.seed]:
            c, v, lm = modes[mode]
            sets[seed][mode] = evaluate(images, labels, c, args.per_cell, seed, v, config, right_alone, lm)
    if not (args.no_timing and tuning):
        timing = time_numbers(images, labels, pairs, args.seed + 1)
    load_end = open("/proc/loadavg").read().split()[0]
    after = rows[LINE_MODE]
    by_layout = {mode: summarise(r, lambda r: r[0]) for mode, r in rows.items()}
    by_length = summarise(after, lambda r: (r[0], r[1]))
    compared = [(f"{layout}, {mode}", *rest) for mode, stats in by_layout.items() for layout, *rest in stats]
    if tuning:
        print(f"config: {overrides or 'defaults'}; load {load_start} -> {load_end}")
        for line in table("layout", compared):
            print(line)
        for line in table("layout, length", [(f"{a} {b}", *rest) for (a, b), *rest in by_length]):
            print(line)
        for line in confusion_lines(after):
            print(line)
        for layout, share in line_alone(after, segmented):
            print(f"{layout}: read by the line model alone (segmentation not run) {percent(share)}")
        for mode, count in same.items():
            print(f"{mode}: {count:,} of {len(after):,} numbers read the same with the segmentation always run")
        if len(sets) > 1:
            for line in table("layout, models, set", spread(sets)):
                print(line)
        for (pair, name), (p50, p90, shape, n, model, cut) in timing.items():
            times = f"p50 {p50:.2f} ms (models {model:.2f}), p90 {p90:.2f}"
            print(f"{pair}, {name} {shape}, {cut} segmented, {n} pieces: {times}")
        return
    n = len(after)
    lines = [
        "# Reading whole numbers: Hoda test digits composed into numbers",
        "",
        "Regenerated by `python benchmarks/read_numbers.py` (do not edit by hand). "
        f"{n:,} numbers of 4-11 digits ({args.per_cell} per layout and length), composed from the digits of "
        "Hoda's test set at their scanned size on a common middle line: *spaced* (gaps of 15-60% of a digit's "
        "width) or *tight* (gaps of -1 to 2 px: many strokes touch); scaled 0.8-2.5x, half of them dark on light, "
        f"Gaussian noise (sigma {NOISE_SIGMA:.0f} grey levels) and up to three specks each. Read by "
        "`lenet_edge.reading.read_array` (the photo front end, which takes these for clean images, and with the "
        f"line model shrinks those whose writing is taller than {READ_HEIGHT} px to that height; "
        "segmentation; then the int8 QAT digit model of the Hoda run) after the polarity step of `load_image`, "
        "three times: with the digit model alone; with the run's int8 piece verifier (`verifier_int8.tflite`, "
        "P(exactly one digit | piece)) choosing the cuts; and with the verifier and the run's int8 line model "
        f"(`line_int8.tflite`, {line_members(args.run)}: of each member's reading and the reading of their "
        "log-probabilities averaged at every frame, the one most likely to all of them; it reads the whole "
        "number at once and replaces the segmentation's reading when it finds its own much more likely, and where "
        "it is sure enough of its own to overrule any other, the number is read without segmenting), as "
        "`lenet-edge read` reads a run trained with `--line-model` by default"
        + (
            "; and a fourth time with the run's mixed models (`export --mixed`: `lenet5_mixed.tflite`, "
            f"`verifier_mixed.tflite` and {mixed_line(args.run)}, {mixed_layers(args.run)} in float32 and the rest "
            "int8, as `lenet-edge read --model RUN/lenet5_mixed.tflite` reads), which read "
            f"{sum(a[3] == b[3] for a, b in zip(after, rows[MIXED_MODE], strict=True)):,} of the {n:,} numbers "
            "exactly as the int8 models do."
            if MIXED_MODE in rows
            else "."
        ),
        "",
        "**What was tuned on what.** The verifier is trained by `lenet-edge train` on pieces of lines composed "
        "from the run's *training* digits only (its epochs chosen on pieces of the run's validation digits). "
        "The segmentation's thresholds with the verifier (`SegmentConfig.sure_one`, `piece_cost`, "
        "`verified_min_piece`, `refine_cuts`, `ruled_out`, and for broken digits `attach_gap`, `fragment_cost`, "
        "`join_gap` and `join_spacing`), and `speck_reach` (with or without it: how near a digit's ink a speck "
        "is taken as a piece of that digit's broken stroke) were chosen on "
        "numbers composed from Hoda's *train* set (`--split train --set ...`). The line model is trained by "
        "`lenet-edge train` on numbers of the run's training digits (its epoch chosen on numbers of its validation "
        "digits). Six choices about it were made on these benchmark numbers composed from the run's *validation* "
        "digits (`--split val`), which no model of the run was trained on: drawing each training digit at its "
        "height as written (rather than at 70-100% of the line's), letting it overrule a reading of as many digits "
        "as its own (not only of another number), `line_margin`, the log-likelihood by which its reading must "
        "beat the segmentation's, its two members (`LineConfig.dropout`: a second one trained with dropout, "
        "their log-probabilities averaged), and a third member (dropout 0.1, the one rate tried: on four sets of "
        "numbers, seeds 0-3, int8 models, the first two members left 110 spaced and 214 tight numbers of 4,800 "
        "wrong, all three 99 and 204), and its reading: the likeliest of the members' readings (`read_line`), "
        "not only the reading of their frame-wise mean, which still weighs it against the segmentation's "
        "(int8 models: 99 spaced numbers wrong as before, tight 194 instead of 204). `READ_HEIGHT`, the height "
        "tall writing is read at, was chosen on them too (48 px read 9,316 of 9,600 numbers exactly, full size "
        "9,311, 40 px 9,306: seeds 0 and 1, "
        "int8 and mixed models; without the line model, where the segmentation's cuts alone decide, 48 px lost, "
        "4,471 against 4,479 of 4,800 with the verifier, so it is not done there). The test numbers below were "
        "read with the defaults only, to write this file.",
        "",
        machine(),
        "",
        f"Load average (1 min): {load_start} at the start, {load_end} at the end. Reading all {n:,} "
        "numbers took " + ", ".join(f"{seconds[mode]:.1f} s {mode}" for mode in modes) + ".",
        "",
        "*exact number*: every digit right and none missing or extra. *digits*: true digits read, matched by "
        "longest common subsequence. *wrong digit count*: numbers read with too few or too many digits. "
        "*refused*: images answered with an error (counted as wrong). *every digit right alone*: the numbers "
        "each of whose digits the digit model reads right when it is classified on its own, preprocessed as the "
        f"Hoda test set is (the model's top-1 there: {percent(right_alone.mean())} of {len(right_alone):,} "
        "digits): what a perfect segmentation would read exactly with this model, the ceiling of `read`'s "
        "exact-number accuracy (about top-1 to the power of the length).",
        "",
        "## Before and after: the digit model alone, with the piece verifier, and with the line model too",
        "",
        *table("layout", compared),
        "",
        "With the line model, `read` reads the number whole first. Where the line model's own reading has more "
        f"than 1 / (1 + e^-{SegmentConfig().line_margin:g}) of the probability, every other reading is less likely "
        "by more than the margin, so its reading would overrule whatever the segmentation read (or be the same "
        "digits): the segmentation is not run. That was the case for "
        + " and ".join(f"{percent(share)} of the {layout}" for layout, share in line_alone(after, segmented))
        + " numbers here. Read again with the segmentation always run, "
        + " and ".join(
            f"{count:,} of the {n:,} numbers ({'mixed' if mode == MIXED_MODE else 'int8'} models)"
            for mode, count in same.items()
        )
        + " came out the same (digits or refusal); a digit's box and confidence are then the line model's.",
        "",
        *(
            [
                "## Other sets of numbers of the same kind",
                "",
                "How far one set of numbers' figures are from another's: the same layouts and lengths drawn with "
                "other seeds (`--more-seeds`) from the same test digits, read as `lenet-edge read` reads (with the "
                "piece verifier and the line model). At 97% exact, a set of 1,200 numbers has a standard error of "
                "about 0.5 points.",
                "",
                *table("layout, models, set", spread(sets)),
                "",
            ]
            if len(sets) > 1
            else []
        ),
        "## With the piece verifier and the line model, by length",
        "",
        *table("layout, length", [(f"{a}, {b} digits", *rest) for (a, b), *rest in by_length]),
        "",
        "## The remaining errors, per digit (with the piece verifier and the line model)",
        "",
        "Over the numbers read wrongly (refused ones left out), each aligned to the truth by least edits: "
        "a *missing* digit was merged into a neighbour (or dropped), an *extra* one is a digit split in two "
        "(or a speck read as a digit), and the rest were read as another digit.",
        "",
        *confusion_lines(after),
        "",
        "## Time to read one 11-digit number",
        "",
        "End to end from the grayscale array, as `lenet-edge read` reads: the front end's clean-image test and "
        "ink mask, the shrinking of tall writing (the 2.5x and 5x numbers), the connected components, the number's "
        "strip and one call of the line model with the "
        "likelihood of its reading; then, unless that settles it, the segmentation (cut candidates, "
        "preprocessing of every candidate piece: each group whole, and each piece a group not surely one digit "
        "might be cut into; two batched calls each of the digit model and of the verifier) and, where the two "
        "read the number otherwise, the segmentation's likelihood; in kept LiteRT interpreters (XNNPACK, one "
        "thread), the record. "
        f"{TIMED_NUMBERS} different numbers of 11 test digits per layout and scale, each read {TIMING_ROUNDS} "
        "times after a warm-up read, every number and set of models interleaved; p50 and p90 over all those "
        "reads. *Segmented*: of the numbers, those the line model alone did not settle; the pieces classified "
        "(median over those) say how much cutting a number took: a long run of touching digits takes many "
        "more than 11. The last column is the time inside the three models' "
        "calls (padding the batch, the interpreters, the softmax), the rest is Python and NumPy around them. "
        "On a CPU where int8 is slower than float32 (`lenet-edge bench`'s `p50 x` above 1), the int8 calls take "
        "most of it, and the mixed models, float32 where int8 loses, are the ones to read with. The load "
        "average above says how busy the machine was.",
        "",
        "| models | number | image (h x w px, median) | segmented | pieces classified (median) | p50 | p90 "
        "| inside the models' calls (p50) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *(
            f"| {pair} | {name} | {shape[0]} x {shape[1]} | {cut} of {TIMED_NUMBERS} | {n} | {p50:.2f} ms "
            f"| {p90:.2f} ms | {model:.2f} ms |"
            for (pair, name), (p50, p90, shape, n, model, cut) in timing.items()
        ),
    ]
    atomic_write_text(args.out, portable("\n".join(lines) + "\n"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
