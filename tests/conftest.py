"""Shared fixtures: where the real Hoda data lives, and quiet TensorFlow; and a stand-in line model."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet_edge.line_model import BLANK, CLASSES, STRIDE, log_softmax

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HODA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "hoda"


@pytest.fixture
def hoda_dir() -> Path:
    """The real Hoda dataset beside the project, or a skip saying why it is missing."""
    if not (HODA_DIR / "Test 20000.cdb").is_file():
        pytest.skip("Hoda dataset not found at ../shared/data/hoda (licence: not redistributable)")
    return HODA_DIR


def make_patterns(n_per_class: int, seed: int):
    """Tiny learnable 'digits': class k is a bright bar at an angle and place set by k, plus noise.

    Returns (images uint8 (N, 28, 28) white on black, labels int64), shuffled.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[0:28, 0:28]
    for k in range(10):
        angle = np.pi * k / 10
        for _ in range(n_per_class):
            cx, cy = 14 + rng.normal(0, 1), 14 + rng.normal(0, 1)
            d = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
            along = np.abs((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle))
            img = ((d < 1.5 + (k % 3)) & (along < 6 + k % 4)) * 255.0
            img += rng.normal(0, 10, img.shape)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(k)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.array(labels, np.int64)[order]


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    """A small .npz dataset in the Keras mnist.npz layout (30 train / 10 test per class)."""
    import numpy as np

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    x_train, y_train = make_patterns(30, seed=1)
    x_test, y_test = make_patterns(10, seed=2)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


# The recipe of the shared tiny run (test_reproducible repeats it through the command line). Its piece verifier and
# line model train for one float and one QAT epoch too: at their defaults (6 + 2, 8 + 2) they took most of its time.
TINY_RUN = dict(
    epochs=1,
    qat_epochs=1,
    batch_size=32,
    val_fraction=0.2,
    verifier_epochs=1,
    verifier_qat_epochs=1,
    line_model=True,
    line_epochs=1,
    line_qat_epochs=1,
)

# A tiny run through the Python API in a new process: `train` of a recipe (unless null; a re-export of a copy has
# none), then `export_run`.
RUN_API = """
import json, sys
from lenet_edge.conversion import export_run
from lenet_edge.training import TrainConfig, train
run_dir, recipe, export = sys.argv[1], *map(json.loads, sys.argv[2:])
if recipe is not None:
    train(TrainConfig(**recipe), run_dir, log=print)
export_run(run_dir, **export, progress=print)
"""

# Its twin: `lenet-edge train` then `lenet-edge export` in one new process (one TensorFlow import, not two).
RUN_COMMANDS = """
import json, sys
from lenet_edge.cli import main
for args in json.loads(sys.argv[1]):
    code = main(args, prog_name="lenet-edge", standalone_mode=False)
    if code:
        sys.exit(code)
"""


class Build:
    """A tiny run made in a child process where a collected test needs it (`start_builds`), and awaited where one
    first does. The tests that need one run last (`pytest_collection_modifyitems`), so the shared run trains and
    exports while the others run: most of either is on one core (TensorFlow's import and tracing, the converter,
    Python), and the other core was idle. A build `after` another starts once that one's run is there, and so does
    not slow it down; with `copy` it exports a copy of that run again."""

    def __init__(self, folder: Path, code: str, *args: str, after: "Build | None" = None, copy: bool = False):
        self.run_dir, self.log, self.process = folder / "run", folder / "output.txt", None
        self.after, self.copy = after, copy
        self.argv = [sys.executable, "-c", code, *args]
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "LENET_EDGE_CACHE": str(folder / "cache")}
        self.needed = False  # some collected test uses it

    def start(self) -> None:
        if self.process is None:
            if self.after is not None:
                source = self.after.wait()
                if self.copy:
                    copy_run(source, self.run_dir)
            with self.log.open("w") as log:  # a file, not a pipe: nothing waits on a reader
                self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> Path:
        """The run's folder, once the process has finished; the test fails with its output if it did not succeed."""
        self.start()
        code = self.process.wait(timeout=600)
        if code != 0 or not (self.run_dir / "lenet5_int8.tflite").is_file():
            pytest.fail(f"the tiny run in {self.run_dir} failed (exit {code}):\n{self.log.read_text()}")
        return self.run_dir

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:  # a session that never needed it
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def builds(tmp_path_factory, tiny_npz: Path) -> dict[str, Build]:
    """The tiny runs made in child processes, by the name of the fixture that returns each."""
    flags = {key: key.replace("_", "-") for key in TINY_RUN}
    recipe = [
        (f"--{flags[k]}" if v else f"--no-{flags[k]}") if isinstance(v, bool) else f"--{flags[k]}={v}"
        for k, v in TINY_RUN.items()
    ]
    api, cli = tmp_path_factory.mktemp("tiny-exported-run"), tmp_path_factory.mktemp("reproduced")
    commands = [
        ["train", "--data", str(tiny_npz), "--dir", str(cli / "run"), *recipe],
        ["export", "--dir", str(cli / "run"), "--int8", "--min-agreement", "0"],
    ]
    exported = {"int8": True, "min_agreement": 0.0}
    run = Build(api, RUN_API, str(api / "run"), json.dumps({**TINY_RUN, "data": str(tiny_npz)}), json.dumps(exported))
    again = {
        "variants_run": {"mediapipe": True, "web": litertjs_installed()},  # --web where LiteRT.js is installed
        "micro_run": {"micro": True},
    }
    made = {"exported_run": run, "twin": Build(cli, RUN_COMMANDS, json.dumps(commands), after=run)}
    for name, options in again.items():
        folder, options = tmp_path_factory.mktemp(name), {**exported, **options}
        made[name] = Build(folder, RUN_API, str(folder / "run"), "null", json.dumps(options), after=run, copy=True)
    yield made
    for build in made.values():
        build.stop()


@pytest.fixture(scope="session", autouse=True)
def start_builds(request, builds: dict[str, Build]) -> None:
    needed = {name for item in request.session.items for name in item.fixturenames}
    for name, build in builds.items():
        build.needed = name in needed
        if build.needed and build.after is None:  # the others: see `exported_run`
            build.start()


def pytest_collection_modifyitems(items: list) -> None:
    """The tests of the tiny runs made in child processes (`Build`) go last, each group in its order: those that
    name one as a fixture and those marked `shared_run`, which ask for one lazily (a test that waits for a run early
    leaves a core idle while the run is made)."""
    items.sort(
        key=lambda item: (
            "exported_run" in item.fixturenames
            or "twin" in item.fixturenames
            or item.get_closest_marker("shared_run") is not None
        )
    )


@pytest.fixture(scope="session")
def exported_run(builds: dict[str, Build]) -> Path:
    """A run trained for one float and one QAT epoch on `tiny_npz` (`TINY_RUN`), exported to float32 + int8.

    Made once per test run, through the Python API in a child process (`Build`); the builds `after` it start once it
    is there. Tests that change a run work on a copy (`copy_run`).
    """
    run = builds["exported_run"].wait()
    for build in builds.values():
        if build.needed and build.after is builds["exported_run"]:
            build.start()
    return run


@pytest.fixture(scope="session")
def variants_run(builds: dict[str, Build], exported_run: Path) -> Path:
    """A copy of `exported_run` exported again with --mediapipe and, when LiteRT.js is installed (`npm ci`), --web."""
    return builds["variants_run"].wait()


@pytest.fixture(scope="session")
def micro_run(builds: dict[str, Build], exported_run: Path) -> Path:
    """A copy of `exported_run` exported again with --micro."""
    return builds["micro_run"].wait()


@pytest.fixture(scope="session")
def twin(builds: dict[str, Build]) -> Path:
    """The same recipe as `exported_run`, through the command line in another process (test_reproducible)."""
    return builds["twin"].wait()


# The `best` recipe's path on the tiny data: a teacher, elastic distortion, distillation, QAT (no piece verifier:
# the shared tiny run has one; the recipes leave it as it is).
TINY_DISTILLED = dict(epochs=1, qat_epochs=1, teacher_epochs=1, batch_size=32, val_fraction=0.2, seed=5, verifier=False)


@pytest.fixture(scope="session")
def distilled_run(tmp_path_factory, tiny_npz: Path) -> Path:
    """A tiny run of the `best` recipe's stages (teacher, elastic, distillation, QAT), trained once per test run."""
    from lenet_edge.config import recipe_config
    from lenet_edge.training import train

    run_dir = tmp_path_factory.mktemp("tiny-distilled-run")
    train(recipe_config("best", **TINY_DISTILLED, data=str(tiny_npz)), run_dir, log=lambda _: None)
    return run_dir


def default_sigint() -> None:
    """`preexec_fn` for a child that tests send Ctrl-C: Python installs its SIGINT handler only when
    SIGINT is not ignored at start, and a test runner started in the background passes SIG_IGN down."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


def snapshot(tmp: Path, watch: tuple[str, ...]) -> dict[str, bytes | None]:
    """Relative path -> bytes (None for a directory) of everything under the watched directories."""
    state: dict[str, bytes | None] = {}
    for name in watch:
        root = tmp / name
        if root.exists():
            state[name] = None
            for path in sorted(root.rglob("*")):
                state[str(path.relative_to(tmp))] = None if path.is_dir() else path.read_bytes()
    return state


def assert_one_line_error(call, path: Path, expected: str, *, regex: bool = False) -> str:
    """`call()` must raise DataError: one line, naming `path`, containing `expected` (a regex if `regex`)."""
    import re

    from lenet_edge.errors import DataError

    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message, message
    assert re.search(expected, message) if regex else expected in message, message
    return message


def needs(what: str, found: bool, how: str) -> None:
    """Skip (saying `how` to get `what`) when it is missing; on CI (CI=true), fail instead."""
    if found:
        return
    message = f"{what} not found: {how}"
    pytest.fail(f"CI: {message}") if os.environ.get("CI") == "true" else pytest.skip(message)


def litertjs_installed() -> bool:
    from lenet_edge.errors import ModelError
    from lenet_edge.web import node_modules

    try:
        node_modules()
    except ModelError:
        return False
    return True


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session's browser tests (skips without it, fails on CI)."""
    from lenet_edge.chromium import BrowserError, Chromium, find_chromium

    try:
        find_chromium()
        found = True
    except BrowserError:
        found = False
    needs("Chromium", found, "`apt-get install chromium` (.ci/run installs it)")
    needs("LiteRT.js", litertjs_installed(), "`npm ci --prefix lenet_edge/web` (.ci/run runs it)")
    with Chromium() as browser:
        yield browser


def frames(*classes, sure=8.0):
    """(T, 11) log-probabilities whose most likely class at frame t is classes[t] (by `sure` nats)."""
    logits = np.zeros((len(classes), CLASSES))
    logits[np.arange(len(classes)), classes] = sure
    return log_softmax(logits)


class Line:
    """A stand-in line model reading `digits` along the strip, `sure` nats above the rest at their frames."""

    def __init__(self, digits, sure=8.0):
        self.digits, self.sure, self.calls = digits, sure, 0

    def __call__(self, pixels):
        self.calls += 1
        classes = [BLANK] * (pixels.shape[1] // STRIDE)
        ink = np.flatnonzero((pixels > 64).any(axis=0)) // STRIDE
        for k, d in enumerate(self.digits):  # spread over the ink's frames
            classes[ink[0] + (k + 1) * (ink[-1] - ink[0]) // (len(self.digits) + 1)] = d
        return frames(*classes, sure=self.sure)
