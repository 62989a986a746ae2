"""benchmarks/search.py's decisions, replayed from its log without training anything.

SEARCH.jsonl holds every run's validation figures; the stages and the ranking
rule turn them into the `best` recipe. Replaying the log must give the
decisions SEARCH.md records, and the patience stage must take the longer
schedule only when it makes fewer validation errors over the three folds.
"""

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import search  # noqa: E402


class Replayed(search.Search):
    """A search whose every run is read from the log (a run missing there fails the test, never trains)."""

    def __init__(self, entries: dict):
        self.done = entries

    def run(self, stage: str, name: str, config: dict) -> dict:
        assert name in self.done, f"{name} ({stage}) is not in SEARCH.jsonl"
        return self.done[name]


def logged() -> dict:
    lines = (ROOT / "benchmarks" / "SEARCH.jsonl").read_text(encoding="utf-8").splitlines()
    return {entry["name"]: entry for entry in map(json.loads, lines)}


def with_patience(entries: dict, errors: tuple[int, int], loss: float) -> dict:
    """`entries` with the patience stage's two runs: the folds' `best` runs' figures but these QAT errors."""
    changed = copy.deepcopy(entries)
    for fold, count in zip((1, 2), errors, strict=True):
        run = changed[f"fold{fold}-best-48"] = copy.deepcopy(entries[f"fold{fold}-best"])
        run["val"]["qat"].update(errors=count, loss=loss)
    return changed


def test_replaying_the_log_gives_the_decisions_search_md_records():
    s = Replayed(logged())
    outcome = search.search(s)
    report = (ROOT / "benchmarks" / "SEARCH.md").read_text(encoding="utf-8")
    decisions = report.partition("## Decisions")[2]
    assert decisions and search.render(s, outcome).partition("## Decisions")[2] == decisions
    assert "patience" in outcome["stages"]


def test_patience_takes_the_longer_schedule_only_on_fewer_errors():
    entries = logged()
    best = sum(entries[name]["val"]["qat"]["errors"] for name in ("teacher-deep", "fold1-best", "fold2-best"))
    fewer = best - entries["length-48"]["val"]["qat"]["errors"] - 1  # folds 1 and 2: one error short of a tie
    chosen = search.search(Replayed(with_patience(entries, (fewer // 2, fewer - fewer // 2), 0.5)))["chosen"]
    assert chosen["best"]["epochs"] == 48 and chosen["patience"]["best-48"][0] == best - 1
    # as many errors as 16 epochs and a higher loss: the tie goes to the lower loss, so 16 epochs stay
    outcome = search.search(Replayed(with_patience(entries, (fewer // 2, fewer - fewer // 2 + 1), 0.5)))
    assert outcome["chosen"]["best"]["epochs"] == 16 and outcome["stages"]["patience"][1] == "best"
    assert outcome["chosen"]["patience"]["best-48"][0] == best


def with_qat(entries: dict, errors: dict[str, int]) -> dict:
    """`entries` with stage 8's runs: the folds' `best` figures, each candidate's QAT errors per fold from `errors`."""
    changed = copy.deepcopy(entries)
    folds = ("length-48", "fold1-best-48", "fold2-best-48")
    for candidate, count in errors.items():
        for k, fold in enumerate(folds):
            name = f"qat-base-fold{k}" if candidate == "best" else f"qat-{candidate}-fold{k}"
            run = changed[name] = copy.deepcopy(entries[fold])
            run["val"]["qat"].update(errors=count, loss=0.1)
    return changed


def test_qat_stage_takes_a_variant_only_when_it_ranks_first():
    entries = logged()
    even = dict.fromkeys(("best", "same", "clean", "qat6", "clean-qat6"), 10)
    recipe = search.search(Replayed(with_qat(entries, {**even, "best": 9})))["chosen"]["best"]
    assert "qat_augment" not in recipe and "qat_epochs" not in recipe
    outcome = search.search(Replayed(with_qat(entries, {**even, "clean-qat6": 9})))
    assert outcome["stages"]["qat"][1] == "clean-qat6" and outcome["chosen"]["qat"]["clean-qat6"][0] == 27
    assert outcome["chosen"]["best"]["qat_augment"] is False and outcome["chosen"]["best"]["qat_epochs"] == 6
    # the control ranking first is QAT trained again as before: the recipe stays as it is
    outcome = search.search(Replayed(with_qat(entries, {**even, "same": 9})))
    assert outcome["stages"]["qat"][1] == "same" and outcome["chosen"]["best"] == recipe
    # a tie in errors and loss goes to the first candidate, the recipe as it is
    outcome = search.search(Replayed(with_qat(entries, even)))
    assert outcome["stages"]["qat"][1] == "best" and outcome["chosen"]["best"] == recipe
