"""`lenet-edge predict` and `read`: image files in, digits and numbers out."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import READ_MIN_CONFIDENCE
from . import (
    DIR_OPTION,
    IMAGES_ARGUMENT,
    JSON_OPTION,
    MODEL_OPTION,
    QUIET_OPTION,
    ProgressBars,
    echo_records,
    main,
)

# --- predict ---------------------------------------------------------------------------------


@main.command()
@IMAGES_ARGUMENT
@DIR_OPTION
@MODEL_OPTION
@click.option(
    "--top-k",
    type=click.IntRange(1, 10),
    default=3,
    show_default=True,
    help="Digits ranked per image: the prediction and its runners-up.",
)
@JSON_OPTION
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Images per interpreter call."
)
@click.option(
    "--explain",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write per image DIR/NAME.png: the photo front end's stages (flattened, binarized, kept, final 28x28).",
)
@QUIET_OPTION
def predict(images, run_dir, model_path, top_k, as_json, batch_size, explain, quiet):
    """Read the handwritten digit in image files (photos or scans, any size, either polarity).

    IMAGES are files or directories (searched recursively). Each image goes
    through the preprocessing the model was trained with; a photo of paper is
    first cleaned (lighting flattened, ruled lines and boxes removed, the
    digit's ink kept). A file that cannot be read, shows no digit or several
    is reported and the others still run; the command then exits 1.

    \b
    Examples:
      lenet-edge predict digit.png
      lenet-edge predict scans/ --dir runs/hoda --top-k 2
      lenet-edge predict photo.jpg --model lenet5_float32.tflite --json
      lenet-edge predict photos/ --explain why/
    """

    from ..inference import predict as run_predict
    from ..inference import resolve_model

    model = resolve_model(model_path, run_dir, log=lambda message: click.echo(message, err=True))
    with ProgressBars("predicting", shown=not quiet) as bar:
        results = run_predict(images, model, top_k=top_k, batch_size=batch_size, progress=bar, explain=explain)

    def line(r: dict, width: int) -> str:
        others = ", ".join(f"{d} {100 * p:.1f}%" for d, p in r["top_k"][1:])
        return f"{r['path']:<{width}}  {r['persian']} {r['digit']}  {100 * r['confidence']:5.1f}%" + (
            f"   ({others})" if others else ""
        )

    echo_records(results, as_json, line, "images could not be read")


# --- read ------------------------------------------------------------------------------------


@main.command("read")
@IMAGES_ARGUMENT
@DIR_OPTION
@MODEL_OPTION
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    default=READ_MIN_CONFIDENCE,
    show_default=True,
    help="A mark read as a digit with less confidence than this makes the image 'not digits'.",
)
@click.option(
    "--verifier/--no-verifier",
    default=True,
    show_default=True,
    help="Cut touching digits with the run's piece verifier (verifier_int8.tflite beside the model; "
    "verifier_mixed.tflite beside lenet5_mixed.tflite), if it has one.",
)
@click.option(
    "--line-model/--no-line-model",
    default=True,
    show_default=True,
    help="Let the run's line model (line_int8.tflite beside the model; line_mixed.tflite beside "
    "lenet5_mixed.tflite), if it has one, check the cuts: it reads "
    "the whole number at once, and where it finds its own reading of it much more likely, its reading wins "
    "(where it is sure enough that no other reading could win, the cuts are not even made).",
)
@JSON_OPTION
@QUIET_OPTION
def read_numbers(images, run_dir, model_path, min_confidence, verifier, line_model, as_json, quiet):
    """Read whole handwritten numbers (postal codes, phone numbers, amounts) in image files.

    IMAGES are files or directories (searched recursively), one number per
    image, either polarity, any size up to 40 megapixels. The digits are found
    (touching ones split, broken ones joined, specks dropped, the small ۰ kept)
    and each goes through the preprocessing the model was trained with. An
    image without a number is reported and the others still run; the command
    then exits 1.

    \b
    Examples:
      lenet-edge read phone.png
      lenet-edge read forms/ --dir runs/hoda --json
    """

    from ..inference import resolve_model
    from ..reading import read as run_read

    say = lambda message: click.echo(message, err=True)  # noqa: E731
    model = resolve_model(model_path, run_dir, log=say)
    with ProgressBars("reading", shown=not quiet) as bar:
        results = run_read(
            images,
            model,
            min_confidence=min_confidence,
            verifier=verifier,
            line_model=line_model,
            progress=bar,
            log=say,
        )
    echo_records(
        results,
        as_json,
        lambda r, width: f"{r['path']:<{width}}  {r['persian']}  {r['text']}  {100 * r['confidence']:5.1f}%",
        "images gave no number",
    )
