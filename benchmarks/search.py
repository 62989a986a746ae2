"""Choose the `best` recipe's settings on validation splits carved from Hoda's training file alone.

    python benchmarks/search.py [--data ../shared/data/hoda]

Every run trains on `Train 60000.cdb` and nothing else: the test file is never
opened, so the runs have no test split and no test figure exists to look at
(each run's manifest is checked for that). The validation split is the one
`train` carves from train (10%, stratified, drawn by the seed), and a seed is
a fold: seeds 1 and 2 hold out other images than seed 0.

The stages run in order; each ranks its candidates and hands its winner on:

1. augment: the LeNet-5 alone (16 epochs, today's `fast` schedule) with today's
   light augmentation, then with elastic distortion of two strengths, then
   elastic with a stronger affine part;
2. schedule: the winning augmentation with 32 epochs instead of 16 (for the record:
   what a longer schedule buys without a teacher; stage 5 sets the length);
3. teacher: the two teacher architectures (15 epochs, the winning augmentation),
   each followed by a student distilled from it (T 4, alpha 0.7, 16 epochs);
4. distill: students of the winning teacher (reused, not retrained) at
   temperature 2 and 4 and alpha 0.5 and 0.9;
5. length: the winning student settings with 32 and 48 float epochs;
6. folds: the candidate `best` (everything from 1-5, the teacher trained afresh
   in each fold) against `fast` on seeds 1 and 2; with seed 0 (stages 1 and 5)
   that is three folds, 18,000 validation digits;
7. patience: stage 5 chose its length on fold 0 alone, where every length was
   within a few errors of the others; its longest length (48 epochs, within
   the 30-minute budget on RESULTS.md's machine) is asked again on folds 1
   and 2, a teacher trained afresh in each, against the candidate `best` of
   stage 6 over the same three folds. These runs skip the piece verifier: it
   is trained after the digit model and does not change it;
8. qat: the chosen `best` trained again in each fold (`qat-base-fold{k}`), then
   its QAT stage alone trained again from that run's float model and teacher
   (`train --float-from`) four ways: as before (a control: QAT alone sees its
   batches in another order), on the training images as they are (no
   augmentation), for 6 epochs instead of 3, and both. The five rank together
   over the three folds; a variant replaces the recipe's QAT only if it ranks
   first (the control ranking first changes nothing).

Ranking rule, fixed before any run: fewest validation errors of the model
that is exported (the QAT model; the teacher's own for stage 3), summed over
the folds compared; a tie goes to the lower validation loss (mean
cross-entropy of the true digit). Each finished run is appended to
benchmarks/SEARCH.jsonl (validation figures, wall times, load average while it
ran); a run already there is not repeated, so an interrupted search resumes.
benchmarks/SEARCH.md is rewritten from it. Run artifacts go to
benchmarks/runs/search/ (git-ignored: they derive from Hoda).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from common import DEFAULT_HODA, HERE, LoadSampler, cpu_line, portable

from lenet_edge.fileio import atomic_write_text

TRAIN_FILE = "Train 60000.cdb"
LOG = HERE / "SEARCH.jsonl"
REPORT = HERE / "SEARCH.md"
RUNS = HERE / "runs" / "search"

FAST = {"epochs": 16}  # today's recipe (TrainConfig's defaults); named so the tables show its epochs
LIGHT = {}  # today's augmentation: rotation 10, scale 0.1, shift 2, shear 0.1, stroke 0.25
AUGMENTS = {
    "light": LIGHT,
    "elastic20": {"elastic_alpha": 20.0, "elastic_sigma": 4.0},
    "elastic34": {"elastic_alpha": 34.0, "elastic_sigma": 4.0},
    "elastic34-affine15": {"elastic_alpha": 34.0, "elastic_sigma": 4.0, "rotation": 15.0, "scale": 0.15, "shear": 0.15},
}
TEACHER = {"teacher": True, "teacher_epochs": 15}
LENGTHS = (32, 48)  # the distilled student's float epochs stage 5 tries beside 16
QAT_VARIANTS = {  # stage 8: QAT alone, trained again from the same float model
    "same": {},
    "clean": {"qat_augment": False},
    "qat6": {"qat_epochs": 6},
    "clean-qat6": {"qat_augment": False, "qat_epochs": 6},
}
REUSED = {"float_from": "float model", "teacher_from": "teacher"}  # run directories a run reuses (the log: relative)


def worker(spec: dict) -> None:
    """Train one candidate in this (fresh) process: `spec` = {"dir", "data", "cache", "config": TrainConfig fields}."""
    from lenet_edge.config import recipe_config
    from lenet_edge.training import train

    config = recipe_config("fast", **spec["config"])
    train(config, spec["dir"], force=True, cache_dir=Path(spec["cache"]), log=lambda line: print(line, flush=True))


class Search:
    def __init__(self, data: Path):
        self.train_file = data / TRAIN_FILE
        if not self.train_file.is_file():
            sys.exit(f"{data}: no '{TRAIN_FILE}' there; pass --data DIR")
        RUNS.mkdir(parents=True, exist_ok=True)
        self.done = {}
        if LOG.exists():
            for line in LOG.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                self.done[entry["name"]] = entry

    def run(self, stage: str, name: str, config: dict) -> dict:
        """Train candidate `name` (unless the log has it) and return its log entry."""
        if name in self.done:
            return self.done[name]
        run_dir = RUNS / name
        spec = {"dir": str(run_dir), "cache": str(RUNS / "cache"), "config": {"data": str(self.train_file), **config}}
        print(f"[{stage}] {name}: {json.dumps(config)}", flush=True)
        started = time.perf_counter()
        with LoadSampler() as load, open(RUNS / f"{name}.log", "w", encoding="utf-8") as out:
            done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=out, stderr=out)
        if done.returncode != 0:
            sys.exit(f"{name}: training failed ({done.returncode}); see {RUNS / f'{name}.log'}")
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        if "test" in manifest["data"]["split_sizes"] or any(
            "test_accuracy" in m for m in manifest["metrics"].values()
        ):  # the search must never see a test figure
            sys.exit(f"{name}: the run has a test split; the search must train on {TRAIN_FILE} alone")
        val_n = manifest["data"]["split_sizes"]["val"]
        entry = {
            "stage": stage,
            "name": name,
            "config": {k: portable(v) if k in REUSED else v for k, v in config.items()},
            "seed": manifest["config"]["seed"],
            "val_n": val_n,
            "val": {
                model: {
                    "errors": round((1 - m["val_accuracy"]) * val_n),
                    "accuracy": m["val_accuracy"],
                    "loss": m["val_loss"],
                    "best_epoch": m["best_epoch"],
                }
                for model, m in manifest["metrics"].items()
            },
            "epoch_s": {
                model: round(statistics.median(row["seconds"] for row in rows), 1)
                for model, rows in manifest["history"].items()
                if rows
            },
            "machine": cpu_line(),
            "wall_s": round(time.perf_counter() - started, 1),
            "train_wall_s": manifest["wall_time_s"],
            "loadavg": load.summary(),
        }
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
        self.done[name] = entry
        print(f"    -> {describe(entry)}", flush=True)
        return entry


def score(entries: list[dict], model: str = "qat") -> tuple:
    """The ranking key: (validation errors, validation loss) summed over `entries` (one per fold)."""
    return (sum(e["val"][model]["errors"] for e in entries), sum(e["val"][model]["loss"] for e in entries))


def pick(candidates: dict[str, list[dict]], model: str = "qat") -> str:
    """The name whose entries rank first by `score`."""
    return min(candidates, key=lambda name: score(candidates[name], model))


def totals(scores: dict[str, tuple]) -> str:
    """`score`s by candidate name, as a sentence."""
    return "; ".join(f"{name} {errors} errors, {loss:.4f}" for name, (errors, loss) in scores.items())


def describe(entry: dict) -> str:
    figures = entry["val"].items()
    return ", ".join(f"{m} val {v['accuracy']:.2%} ({v['errors']} errors, loss {v['loss']:.4f})" for m, v in figures)


def search(s: Search) -> dict:
    """Run the stages; return {stage: (candidate names, winner)} and the chosen settings."""
    chosen, stages = {}, {}

    # 1. augmentation, LeNet-5 alone, today's schedule
    runs = {f"augment-{a}": [s.run("augment", f"augment-{a}", {**FAST, **o})] for a, o in AUGMENTS.items()}
    stages["augment"] = (list(runs), pick(runs))
    augment = AUGMENTS[stages["augment"][1].removeprefix("augment-")]

    # 2. a longer schedule without a teacher
    runs = {stages["augment"][1]: runs[stages["augment"][1]]}
    runs["schedule-32"] = [s.run("schedule", "schedule-32", {**augment, "epochs": 32})]
    stages["schedule"] = (list(runs), pick(runs))

    # 3. teachers (each run also distils a 16-epoch student from its teacher)
    runs = {
        f"teacher-{arch}": [s.run("teacher", f"teacher-{arch}", {**augment, **TEACHER, "teacher_arch": arch, **FAST})]
        for arch in ("wide", "deep")
    }
    stages["teacher"] = (list(runs), pick(runs, model="teacher"))
    teacher_run = stages["teacher"][1]
    teacher = {**TEACHER, "teacher_arch": runs[teacher_run][0]["config"]["teacher_arch"]}
    reuse = {**teacher, "teacher_from": str(RUNS / teacher_run)}  # the log records it relative to the project

    # 4. temperature and alpha, the teacher reused (its run is the T 4, alpha 0.7 point)
    runs = {teacher_run: runs[teacher_run]}
    for t in (2.0, 4.0):
        for a in (0.5, 0.9):
            name = f"distill-t{t:g}-a{a:g}"
            runs[name] = [s.run("distill", name, {**augment, **reuse, **FAST, "temperature": t, "distill_alpha": a})]
    stages["distill"] = (list(runs), pick(runs))
    winner = runs[stages["distill"][1]][0]["config"]
    soft = {"temperature": winner.get("temperature", 4.0), "distill_alpha": winner.get("distill_alpha", 0.7)}

    # 5. schedule length of the distilled student
    runs = {stages["distill"][1]: runs[stages["distill"][1]]}
    for epochs in LENGTHS:
        runs[f"length-{epochs}"] = [s.run("length", f"length-{epochs}", {**augment, **reuse, **soft, "epochs": epochs})]
    stages["length"] = (list(runs), pick(runs))
    epochs = runs[stages["length"][1]][0]["config"].get("epochs", 16)
    best = {**augment, **teacher, **soft, "epochs": epochs}
    chosen["best"] = best

    # 6. the candidate `best` (teacher trained in each fold) against `fast`, over three folds
    folds = {
        "fast": [s.done["augment-light"]] + [s.run("folds", f"fold{k}-fast", {**FAST, "seed": k}) for k in (1, 2)],
        "best": [s.done[stages["length"][1]]] + [s.run("folds", f"fold{k}-best", {**best, "seed": k}) for k in (1, 2)],
    }
    stages["folds"] = (list(folds), pick(folds))
    chosen["folds"] = {name: score(entries) for name, entries in folds.items()}

    # 7. stage 5's longest length again, on the folds stage 5 did not see
    longest = LENGTHS[-1]
    if epochs != longest:
        patient = {**best, "epochs": longest}
        runs = {
            "best": folds["best"],
            f"best-{longest}": [s.done[f"length-{longest}"]]
            + [s.run("patience", f"fold{k}-best-{longest}", {**patient, "seed": k, "verifier": False}) for k in (1, 2)],
        }
        stages["patience"] = (list(runs), pick(runs))
        chosen["patience"] = {name: score(entries) for name, entries in runs.items()}
        if stages["patience"][1] != "best":
            chosen["best"] = patient

    # 8. QAT trained again from each fold's float model of the chosen `best`
    best = chosen["best"]
    runs = {"best": [], **{variant: [] for variant in QAT_VARIANTS}}
    for k in (0, 1, 2):
        base = f"qat-base-fold{k}"
        runs["best"].append(s.run("qat", base, {**best, "seed": k, "verifier": False}))
        reuse = {"float_from": str(RUNS / base), "teacher_from": str(RUNS / base)}
        for variant, settings in QAT_VARIANTS.items():
            config = {**best, **settings, "seed": k, "verifier": False, **reuse}
            runs[variant].append(s.run("qat", f"qat-{variant}-fold{k}", config))
    stages["qat"] = (list(runs), pick(runs))
    chosen["qat"] = {name: score(entries) for name, entries in runs.items()}
    if stages["qat"][1] not in ("best", "same"):
        chosen["best"] = {**best, **QAT_VARIANTS[stages["qat"][1]]}
    return {"stages": stages, "chosen": chosen, "folds": folds}


def recipe_check(chosen: dict) -> str:
    """Whether lenet_edge/config.py's `RECIPES["best"]` holds the `chosen` settings and `fast`'s for the rest."""
    from lenet_edge.config import RECIPES

    best, fast = asdict(RECIPES["best"]), asdict(RECIPES["fast"])
    expected = {**fast, **chosen, "recipe": "best"}
    wrong = [f"{k} {best[k]!r} (chosen: {expected[k]!r})" for k in best if best[k] != expected[k]]
    if wrong:
        return '**lenet_edge/config.py `RECIPES["best"]` does not hold them:** ' + ", ".join(wrong) + "."
    named = {
        "qat_epochs": "qat_epochs {}",
        "teacher_lr": "teacher_lr {:g}",
        "rotation": "the light affine augmentation",
    }
    kept = [text.format(best[k]) for k, text in named.items() if k not in chosen]  # `fast`'s, not chosen here
    return (
        'lenet_edge/config.py `RECIPES["best"]` holds exactly these, and `fast`\'s values for every other setting'
        + (f" (so also {', '.join(kept)})" if kept else "")
        + ": checked when this file was written, and by tests/test_recipes.py."
    )


def render(s: Search, outcome: dict | None) -> str:
    entries = list(s.done.values())
    machines: dict[str, list[str]] = {}  # machine -> the stages run there, in order
    for e in entries:
        stages = machines.setdefault(e["machine"], [])
        if e["stage"] not in stages:
            stages.append(e["stage"])
    lines = [
        "# Recipe search: validation only",
        "",
        "Regenerated by `python benchmarks/search.py` (do not edit by hand). Every run trains on Hoda's "
        f"`{TRAIN_FILE}` alone: the test file is never opened, so no test figure exists in any run. "
        "Validation = the 10% of train that `lenet-edge train` holds out (stratified; the seed draws it, so "
        "seeds 0, 1, 2 are three folds). Errors and loss are the exported (QAT) model's on validation; loss = "
        "mean cross-entropy of the true digit. Ranking: fewest errors summed over the folds compared, ties to "
        "the lower loss. Times are wall seconds on a machine shared with other jobs (load average while the "
        "run went on: mean / max).",
        "",
        "Machines (compare times within one only):",
        "",
        *(f"- {', '.join(stages)}: {machine}." for machine, stages in machines.items()),
        "",
        "| stage | run | seed | settings (beyond `fast`) | teacher val | float val | QAT val | QAT errors | "
        "QAT loss | s/epoch (teacher, float) | wall | load |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        v = e["val"]
        settings = ", ".join(f"{k} {v_}" for k, v_ in e["config"].items() if k not in ("seed", *REUSED))
        for key, what in REUSED.items():
            if key in e["config"]:
                settings += f", {what} from {Path(e['config'][key]).name}"
        teacher = f"{v['teacher']['accuracy']:.2%}" if "teacher" in v else ""
        per_epoch = ", ".join(f"{e['epoch_s'][m]:.0f}" for m in ("teacher", "float") if m in e["epoch_s"])
        lines.append(
            f"| {e['stage']} | {e['name']} | {e['seed']} | {settings or '(fast)'} | {teacher} | "
            f"{v['float']['accuracy']:.2%} | {v['qat']['accuracy']:.2%} | {v['qat']['errors']} / {e['val_n']:,} | "
            f"{v['qat']['loss']:.4f} | {per_epoch} | {e['wall_s']:.0f} s | "
            f"{e['loadavg']['mean']:.1f} / {e['loadavg']['max']:.1f} |"
        )
    if outcome:
        lines += ["", "## Decisions", ""]
        for stage, (names, winner) in outcome["stages"].items():
            lines.append(f"- {stage}: {', '.join(names)} -> **{winner}**")
        folds = outcome["chosen"]["folds"]
        lines += [
            "",
            "Three folds (seed 0, 1, 2), QAT validation errors / summed loss: " + totals(folds),
        ]
        if "patience" in outcome["chosen"]:
            lines += ["", "Patience, the same three folds: " + totals(outcome["chosen"]["patience"])]
        lines += ["", "QAT again, the same three folds: " + totals(outcome["chosen"]["qat"])]
        lines += [
            "",
            "The `best` recipe's settings: `" + json.dumps(outcome["chosen"]["best"], sort_keys=True) + "`.",
            "",
            recipe_check(outcome["chosen"]["best"]),
        ]
    return portable("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_HODA, help="Hoda directory (its Train 60000.cdb)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one run, in a fresh process
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    s = Search(args.data)
    try:
        outcome = search(s)
    finally:
        atomic_write_text(REPORT, render(s, None))
    atomic_write_text(REPORT, render(s, outcome))
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
