"""benchmarks/peers.py and its `peers` extra, without the peers' packages.

The script compares LiteRT with ONNX Runtime and OpenVINO, whose packages come
only with `pip install -e ".[peers]"`; the default install never pulls them in.
Without them the script says so in one line; with them, a run directory that is
not there is one line too. (The conversions and timings themselves run only
with the extra, in the script.)
"""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "peers.py"
PEERS = ("tf2onnx", "onnx", "onnxruntime", "openvino", "nncf")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_peers_are_an_extra_only():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    default = " ".join(project["dependencies"])
    extra = " ".join(project["optional-dependencies"]["peers"])
    for package in PEERS:
        assert package not in default
        assert f"{package}>=" in extra


def test_missing_extra_or_run_is_one_line(tmp_path):
    result = _run("--run", str(tmp_path / "absent"))  # also: the script imports without the extra
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    installed = {dist.metadata["Name"].lower() for dist in metadata.distributions()}
    missing = [p for p in PEERS if p not in installed]
    if missing:
        assert lines[0] == f'error: {", ".join(missing)} not installed; run: pip install -e ".[peers]"'
    else:
        assert f"{tmp_path / 'absent' / 'manifest.json'}: no such file" in lines[0]
