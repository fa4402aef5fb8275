"""``prep export``: a checkpoint as TorchScript or ONNX, normalisation included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prep.cli import output


def export_command(
    checkpoint: Path = typer.Argument(..., help="A best.pt or last.pt from a run folder."),
    format: str = typer.Option(..., "--format", help="torchscript | onnx (onnx needs: pip install 'prep\\[export]')."),
    out: Optional[Path] = typer.Option(None, "--out", help="The file to write (default: beside the checkpoint)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=16, help="The example input's side (default: the training size)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a model that runs without prep: float images in [0, 1] in, logits out."""
    from prep.inference.export import export_checkpoint

    written = export_checkpoint(checkpoint, format, out, image_size=image_size)
    if as_json:
        output.stdout.print_json(json.dumps(written))
    else:
        output.stdout.print(f"{written['format']}: {written['path']} (input {written['input']}; classes {', '.join(written['classes'])})")
