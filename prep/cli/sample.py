"""``prep sample``: write a synthetic Kaggle-shaped dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from prep.cli import output


def sample_command(
    folder: Path = typer.Argument(..., help="Where to write the dataset."),
    n: int = typer.Option(200, "--n", help="Images per class (classification), cars (segmentation, 4 views each) or tagged images (multilabel)."),
    seed: int = typer.Option(0, "--seed", help="The same seed writes the same files."),
    kind: str = typer.Option("classification", "--kind", help="classification (dogs-vs-cats) | segmentation (Carvana) | multilabel (Planet: train-jpg/ and train_v2.csv)."),
) -> None:
    """Write a synthetic dataset shaped like a Kaggle download (dogs-vs-cats, Carvana or Planet)."""
    from prep.split.sample import write_sample

    written = write_sample(folder, n=n, seed=seed, kind=kind, progress=output.RichProgress())
    output.info(f"Wrote {written} files to {folder}")
