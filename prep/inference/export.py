"""``export_checkpoint``: a trained model as one file that runs without prep.

The exported model takes float32 images ``N x 3 x H x W`` with values in [0, 1] (what
torchvision's ``ToTensor`` or ``pil_to_tensor(...) / 255`` give) and returns logits
(classification: ``N x classes``; segmentation: ``N x K x H x W`` at the input's size, one
logit for a binary model, from torchvision's models their ``out``); the run's normalisation
is built in, so a user cannot forget it or use the wrong constants. Every export is run
once more after it is written, at the training size and at another size, and compared with
the checkpoint's own model (ONNX when onnxruntime is installed).
The class names travel with the file: inside it for TorchScript (``classes.json`` extra
file) and ONNX (metadata ``classes``), and in ``<file>.classes.json`` beside it.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

from prep.errors import PrepError

FORMATS = ("torchscript", "onnx")


class ExportError(PrepError):
    """The model cannot be exported in the requested format here."""


def _with_normalization(model, mean: list[float], std: list[float]):
    import torch

    class NormalizedModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            outputs = self.model((images - self.mean) / self.std)
            # torchvision's segmentation models return a dict; the export returns the logits.
            return outputs["out"] if isinstance(outputs, dict) else outputs

    return NormalizedModel().eval()


def export_checkpoint(checkpoint: Path, format: str, out: Path | None = None, *, image_size: int | None = None) -> dict[str, Any]:
    """Write the checkpoint's model as TorchScript or ONNX.

    Args:
        checkpoint: a ``best.pt`` or ``last.pt`` written by ``prep train``.
        format: ``torchscript`` or ``onnx``.
        out: the file to write (default: beside the checkpoint, ``.torchscript.pt`` or
            ``.onnx``); an existing file is never replaced.
        image_size: the example input's side (default: the training image size). The
            batch size, height and width stay dynamic.

    Returns:
        What was written: ``path``, ``format``, ``classes``, ``input``.

    Raises:
        ExportError: unknown format, ``onnx``/``onnxscript`` not installed, or the
            output exists. CheckpointError: an unusable checkpoint.
    """
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if checkpoint.is_dir():
        from prep.engine.run_folder import is_cross_validation

        if is_cross_validation(checkpoint):
            # An ensemble in one graph would run K models per call; a kernel can average K exports as well.
            raise ExportError(
                f"{checkpoint} is a cross-validation: prep export writes one model; export each fold's best.pt "
                f"({checkpoint / 'fold-0' / 'best.pt'}, ...) and average their outputs, as prep predict does"
            )
        raise ExportError(f"{checkpoint} is a folder; prep export takes a checkpoint file, such as {checkpoint / 'best.pt'}")
    out = out or checkpoint.with_suffix(".torchscript.pt" if format == "torchscript" else ".onnx")
    if out.exists():
        raise ExportError(f"{out} already exists; choose another --out or move it away")
    if format == "onnx":
        try:
            import onnx  # noqa: F401 - torch's exporter needs both
            import onnxscript  # noqa: F401
        except ImportError:
            raise ExportError("--format onnx needs the onnx and onnxscript packages: pip install 'prep[export]'") from None
    import torch

    from prep.util.files import atomic_write_bytes
    from prep.inference.checkpoints import load_model

    model, state = load_model(checkpoint, "cpu")
    wrapped = _with_normalization(model, state["mean"], state["std"])
    size = image_size or state["options"]["image_size"]
    example = torch.rand(2, 3, size, size)
    any_size = _takes_other_sizes(wrapped, size)
    classes_json = json.dumps(state["classes"])
    # Written beside ``out`` and renamed, so that ``out`` is whole or absent.
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if format == "torchscript":
            # torch marks TorchScript deprecated in favour of torch.export; it is still what
            # most C++ and mobile runtimes load, and the user asked for it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                # A model's asserts on its input size become constants of the trace; the
                # check below runs the file on two inputs, which is what the warning asks.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.jit.save(torch.jit.trace(wrapped, example), str(tmp), _extra_files={"classes.json": classes_json})
        else:
            batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height", min=16), torch.export.Dim("width", min=16)
            shapes = {0: batch, 2: height, 3: width} if any_size else {0: batch}
            # torch's exporter narrates its steps with print(): not on stdout, which is the
            # command's result, and not on the terminal, where the command's own line says
            # what was written (a failure still raises with its reason).
            with contextlib.redirect_stdout(io.StringIO()):
                program = torch.onnx.export(
                    wrapped, (example,), dynamo=True, input_names=["images"], output_names=["logits"], dynamic_shapes={"images": shapes},
                )
            program.model.metadata_props["classes"] = classes_json
            program.save(str(tmp))
        tmp.replace(out)
    except ExportError:
        raise
    except Exception as exc:  # the exporter's or the tracer's refusal of an operation
        arch = state["options"].get("arch") or "this model"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ExportError(f"{arch} cannot be exported to {format}: {type(exc).__name__}: {reason}") from None
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_bytes(out.with_name(out.name + ".classes.json"), classes_json.encode("utf-8"))
    checked = _check_export(out, format, wrapped, size, any_size)
    return {
        "path": str(out), "format": format, "classes": state["classes"],
        "input": f"float32 N x 3 x {'H x W' if any_size else f'{size} x {size}'} in [0, 1]",
        "checked": checked,
    }


def _takes_other_sizes(wrapped, size: int) -> bool:
    """Whether the model runs on images of another size than it was trained at: a ViT's
    patch grid is fixed when it is built, so its export takes that size only."""
    import torch

    try:
        with torch.no_grad():
            wrapped(torch.rand(1, 3, size + 24, max(size - 40, 32)))
    except Exception:
        return False
    return True


def _check_export(path: Path, format: str, wrapped, size: int, any_size: bool = True) -> str:
    """Run the written file on two inputs (the training size, and another shape, or another
    batch for a model of one size) and compare with the checkpoint's model; say what was
    checked.

    Raises:
        ExportError: the outputs differ (the file is kept, for a bug report).
    """
    import torch

    inputs = [torch.rand(2, 3, size, size), torch.rand(1, 3, size + 24, max(size - 40, 32)) if any_size else torch.rand(3, 3, size, size)]
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # see export_checkpoint
            loaded = torch.jit.load(str(path))
        run = lambda x: loaded(x)  # noqa: E731
    else:
        try:
            import onnxruntime
        except ImportError:
            return "not run: onnxruntime is not installed"
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run = lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])  # noqa: E731
    with torch.no_grad():
        for x in inputs:
            expected, got = wrapped(x), run(x)
            if tuple(got.shape) != tuple(expected.shape) or not torch.allclose(got, expected, rtol=1e-3, atol=1e-3):
                difference = (got - expected).abs().max().item() if got.shape == expected.shape else f"shape {tuple(got.shape)} instead of {tuple(expected.shape)}"
                raise ExportError(f"{path} does not reproduce the checkpoint's outputs on a {tuple(x.shape)} input (largest difference {difference})")
    return f"outputs match the checkpoint's on {' and '.join(str(tuple(x.shape)) for x in inputs)} inputs"
