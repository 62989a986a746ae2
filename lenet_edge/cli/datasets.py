"""`lenet-edge data`: what a dataset holds, a preview sheet, the Hoda download."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from . import (
    DATA_HELP,
    Group,
    ProgressBars,
    cache_dir,
    echo,
    main,
    status,
)

# --- data ------------------------------------------------------------------------------


@main.group(cls=Group)
def data():
    """Inspect datasets and download Hoda."""


@data.command("info")
@click.option("--data", "source", default="synthetic", show_default=True, help=DATA_HELP)
def data_info(source):
    """Counts per class per split, image sizes, and where the data was read from.

    \b
    Examples:
      lenet-edge data info --data synthetic
      lenet-edge data info --data "../shared/data/hoda"
      lenet-edge data info --data "Test 20000.cdb"
    """
    import time

    from ..data import load_dataset

    started = time.perf_counter()
    with ProgressBars("preprocessing") as bar:
        dataset = load_dataset(source, cache_dir=cache_dir(), progress=status, advance=bar)
    seconds = time.perf_counter() - started
    echo(f"source:   {dataset.source} ({dataset.kind})")
    if dataset.location:
        echo(f"location: {dataset.location}")
    for name, sha in dataset.files.items():
        echo(f"file:     {name}  sha256 {sha[:16]}...")
    echo(f"loaded in {seconds:.2f} s" + (" (from cache)" if dataset.from_cache else ""))
    echo("")
    echo(f"{'split':<10}{'total':>8}" + "".join(f"{d:>7}" for d in range(10)))
    for name, split in dataset.splits.items():
        counts = [int((split.labels == d).sum()) for d in range(10)]
        echo(f"{name:<10}{len(split):>8,}" + "".join(f"{c:>7,}" for c in counts))
    echo("")
    echo("raw image size (h x w): min / median / max")
    for name, split in dataset.splits.items():
        h, w = split.raw_shapes[:, 0], split.raw_shapes[:, 1]
        echo(
            f"{name:<10}{h.min()}x{w.min()} / {int(np.median(h))}x{int(np.median(w))} / {h.max()}x{w.max()}"
            if len(h)
            else f"{name:<10}-"
        )


@data.command("preview")
@click.option("--data", "source", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--split", default="train", show_default=True, help="Which split to sample.")
@click.option("--per-class", default=10, show_default=True, type=click.IntRange(1, 100), help="Samples per digit.")
@click.option("--seed", default=0, show_default=True, type=int, help="Which samples to show.")
@click.option("--scale", default=3, show_default=True, type=click.IntRange(1, 16), help="Pixels per image pixel.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@click.option(
    "--numbers",
    type=click.IntRange(1, 200),
    default=None,
    help="Instead: this many synthetic handwritten numbers (4-11 digits), one per row, as `read` sees them.",
)
def data_preview(source, split, per_class, seed, scale, output, numbers):
    """A PNG grid of preprocessed samples: one row per digit ۰-۹ (or, with --numbers, whole numbers).

    \b
    Examples:
      lenet-edge data preview --data synthetic -o synthetic.png
      lenet-edge data preview --data ../shared/data/hoda --split test -o hoda.png
      lenet-edge data preview --numbers 8 -o numbers.png
    """
    from ..data import load_dataset
    from ..data.preview import number_sheet, sample_grid

    if numbers is not None:
        from ..data.synthetic import generate_numbers

        generated = generate_numbers(numbers, seed)
        echo(f"wrote {number_sheet(generated.images, output, scale=scale)}: " + " ".join(generated.texts))
        return

    with ProgressBars("preprocessing") as bar:
        dataset = load_dataset(source, cache_dir=cache_dir(), progress=status, advance=bar)
    path = sample_grid(dataset.split(split), output, per_class=per_class, seed=seed, scale=scale)
    echo(f"wrote {path}")


@data.command("download")
@click.argument("name", type=click.Choice(["hoda"]))
@click.option("--force", is_flag=True, help="Download again even if a verified copy is in the cache.")
def data_download(name, force):
    """Download a dataset into the cache (the only command that uses the network).

    Hoda's three files come from their public GitHub mirror; each is fully
    parsed, its record count checked (and its sha256 where known) before it
    is moved into the cache.

    \b
    Example:
      lenet-edge data download hoda
      lenet-edge train --data hoda
    """
    from ..data.download import download_hoda

    with ProgressBars("download") as bars:
        paths = download_hoda(
            cache_dir() / "hoda", force=force, progress=lambda name, done, total: bars(done, total, name)
        )
    for path in paths:
        echo(f"ok: {path}")
