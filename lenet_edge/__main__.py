"""`python -m lenet_edge` is the `lenet-edge` command."""

from .cli import main

main(prog_name="lenet-edge")
