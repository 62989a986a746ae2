"""The Python API: a fast import, and the notebook example of the package docstring, run on tiny data."""

import inspect
import re
import subprocess
import sys

import numpy as np
from PIL import Image

import lenet_edge

SOURCE_LINE = re.compile(r'^source, run_dir = "[^"]*", "[^"]*"(  #.*)?$', re.MULTILINE)
# The example's training, shortened for 300 tiny images: one epoch of each stage, and no piece verifier (`read`'s
# tests train one); the verifier's 6 + 2 epochs and its export took half the test's time.
SHORTER = ("epochs=10, qat_epochs=2,", "epochs=1, qat_epochs=1, verifier=False,")


def notebook_example() -> str:
    """The example in `lenet_edge.__doc__` (the README's), dedented."""
    lines = lenet_edge.__doc__.split("    import lenet_edge as le", 1)[1].split("\n\n`", 1)[0]
    return inspect.cleandoc("import lenet_edge as le" + lines)


def test_import_is_fast_and_loads_no_tensorflow():
    code = "import sys, lenet_edge; print(sorted(m for m in ('tensorflow', 'numpy', 'PIL') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_notebook_example_runs(tiny_npz, tmp_path, monkeypatch, capsys):
    example = notebook_example()
    assert len(example.splitlines()) <= 12 and SOURCE_LINE.search(example), example
    monkeypatch.chdir(tmp_path)
    with np.load(tiny_npz) as data:
        Image.fromarray(255 - data["x_test"][0]).save("my_digit.png")  # dark ink on white, like a scan
    assert SHORTER[0] in example, example
    code = SOURCE_LINE.sub(f"source, run_dir = {str(tiny_npz)!r}, 'runs/notebook'", example).replace(*SHORTER)
    exec(compile(code, "notebook_example", "exec"), {})

    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "{'train': 300, 'test': 100}"
    assert "'float32': " in printed[-2] and "'int8': " in printed[-2]
    assert "'path': 'my_digit.png', 'digit': " in printed[-1]
    assert {p.name for p in (tmp_path / "runs/notebook").iterdir()} >= {
        "manifest.json",
        "lenet5_float32.tflite",
        "lenet5_int8.tflite",
        "bench.json",
        "bench.md",
    }


def test_stage_functions_survive_importing_the_stage_modules():
    import lenet_edge.benchmark  # noqa: F401  (importing a submodule binds it on the package)
    import lenet_edge.conversion  # noqa: F401
    import lenet_edge.inference  # noqa: F401
    import lenet_edge.training  # noqa: F401

    for stage in ("train", "export", "bench", "predict"):
        function = getattr(lenet_edge, stage)
        assert inspect.isfunction(function) and function.__doc__
        assert "run_dir" in inspect.signature(function).parameters
    assert lenet_edge.TrainConfig(epochs=2).epochs == 2 and lenet_edge.BenchConfig().runs == 2000
    assert lenet_edge.ExportConfig(int8=True).min_agreement == 0.998
    assert set(lenet_edge.__all__) <= set(dir(lenet_edge)) | {
        "BenchConfig",
        "ExportConfig",
        "TrainConfig",
        "build_lenet5",
        "load_dataset",
    }
