"""The command line: help and version, exit codes, one-line errors without tracebacks."""

import click
import pytest
from click.testing import CliRunner

from lenet_edge import __version__
from lenet_edge.cli import main


def all_commands(group=main, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def run(*args, **kwargs):
    return CliRunner().invoke(main, list(args), **kwargs)


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", list(all_commands()), ids=" ".join)
def test_every_command_has_help_with_examples(command):
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    if not isinstance(main.get_command(None, command[0]), click.Group) or len(command) > 1:
        assert "lenet-edge " in result.output.split("Options:")[0]  # an example in the help text


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--arch", "vgg"], "'vgg' is not one of"),
        (["train", "--epochs", "-1"], "-1 is not in the range"),
        (["train", "--line-qat-epochs", "0"], "0 is not in the range"),  # export converts the QAT line model
        (["train", "--verifier-qat-epochs", "0"], "0 is not in the range"),  # and the QAT piece verifier
        (["train", "--val-fraction", "1.5"], "--val-fraction"),
        (["train", "--val-fraction", "0"], "--val-fraction"),
        (["data", "download", "mnist"], "'mnist' is not"),
    ],
)
def test_bad_usage_exits_2_with_a_message(args, fragment):
    result = run(*args)
    assert result.exit_code == 2
    assert fragment in result.output


def test_bad_data_is_one_line_exit_1(tmp_path):
    result = run("data", "info", "--data", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'missing'}: no such file or directory (and not a known source name: synthetic, hoda)"
    ]
    assert "Traceback" not in result.output


def test_data_info_and_preview(tiny_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_EDGE_CACHE", str(tmp_path / "cache"))
    result = run("data", "info", "--data", str(tiny_npz))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split()[:2] == ["train", "300"] for line in lines)
    assert any(line.split()[:2] == ["test", "100"] for line in lines)
    assert "from cache" in run("data", "info", "--data", str(tiny_npz)).output

    from PIL import Image

    out = tmp_path / "grid.png"
    result = run("data", "preview", "--data", str(tiny_npz), "--per-class", "4", "--scale", "2", "-o", str(out))
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == ((4 * 30 + 2) * 2, (10 * 30 + 2) * 2)
