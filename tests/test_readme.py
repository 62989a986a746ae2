"""The README's commands: every `lenet-edge ...` it shows parses against the real CLI.

The pipeline itself (train -> export -> bench -> predict) runs end to end in
test_api.py, test_predict.py and test_bad_input.py; this keeps the documented
spelling of every command and option from drifting away from the code.
"""

import re
import shlex

import click
import pytest
from conftest import PROJECT_ROOT

from lenet_edge.cli import main

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def documented_commands() -> list[str]:
    """Every `lenet-edge ...` command line in the README's code blocks."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S)
    commands = []
    for line in "\n".join(blocks).splitlines():
        for part in re.split(r"&&|\|", line.split(" #")[0]):
            part = part.strip()
            if part.startswith("lenet-edge ") and "..." not in part and "[" not in part:
                commands.append(part.split(">")[0].strip())
    return sorted(set(commands))


def parse(command: str) -> click.Context:
    """Parse a command line as the CLI would, without running it; raise click's error if it is wrong."""
    args = shlex.split(command)[1:]
    command, name = main, "lenet-edge"
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name, *args = args
        command = command.get_command(None, name)
        if command is None:
            raise click.UsageError(f"no such command: {name}")
    return command.make_context(name, args)


def test_the_readme_shows_the_whole_pipeline():
    commands = documented_commands()
    for stage in ("train", "export --int8", "bench", "predict", "data info", "data preview", "data download hoda"):
        assert any(c.startswith(f"lenet-edge {stage}") for c in commands), stage


@pytest.mark.parametrize("command", documented_commands())
def test_documented_command_parses(command):
    if command.split()[1:2] == ["--version"]:
        return  # an eager option: parsing it exits, as it should
    parse(command)


def test_parse_catches_a_wrong_option():
    with pytest.raises(click.UsageError):
        parse("lenet-edge export --int9")
