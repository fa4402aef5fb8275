"""Predicting masks for whole images, at their own size.

Each image is decoded as in training, resized to the training size (the evaluation
pipeline), predicted, and its class probabilities are resized back to the image's own size
before the threshold (binary) or the largest probability (multiclass) picks each pixel's
class; so the masks line up with the original images, whatever their size.

``tta="flip"`` averages the probabilities of the image and of its mirror image.
``tile=SIZE`` instead predicts the image at its own resolution, window by window (``SIZE``
pixels square, ``overlap`` pixels shared between neighbours, probabilities averaged where
they overlap): for images much larger than the training size, with a model trained on
crops at the images' own scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prep.errors import UsageError
from prep.inference.tta import check_tta
from prep.layout import SEGMENTATION

if TYPE_CHECKING:
    from prep.inference.predict import PredictRequest


@dataclass(frozen=True)
class MaskOptions:
    """How to predict: ``threshold`` (binary, on the foreground probability), ``tta``
    (``none`` or ``flip``), ``tile`` (window side, or None for whole resized images) and
    ``overlap`` (pixels shared by neighbouring windows)."""

    threshold: float = 0.5
    tta: str = "none"
    tile: int | None = None
    overlap: int = 64

    def check(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise UsageError(f"--threshold must be between 0 and 1, not {self.threshold}")
        check_tta(self.tta)
        if self.tile is not None and not 0 <= self.overlap < self.tile:
            raise UsageError(f"--overlap must be at least 0 and less than --tile ({self.tile}), not {self.overlap}")


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``N x K x H x W`` class probabilities: the foreground's for one logit, softmax for more."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(dim=1)


def classes_of(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Each pixel's class index (``N x H x W``) from ``probabilities``."""
    if probs.shape[1] == 1:
        return (probs[:, 0] > threshold).long()
    return probs.argmax(dim=1)


def _logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    outputs = model(images)
    return (outputs["out"] if isinstance(outputs, dict) else outputs).float()


def predict_probabilities(model: torch.nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """The model's probabilities for normalised ``images``, averaged with those of their
    mirror images for ``tta="flip"``."""
    probs = probabilities(_logits(model, images))
    if tta == "flip":
        mirrored = probabilities(_logits(model, images.flip(-1))).flip(-1)
        probs = (probs + mirrored) / 2
    return probs


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def predict_tiled(model: torch.nn.Module, image: torch.Tensor, tile: int, overlap: int, tta: str = "none", batch_size: int = 8) -> torch.Tensor:
    """Probabilities ``1 x K x H x W`` for one normalised image ``1 x 3 x H x W`` of any
    size, window by window; an image smaller than a window is padded (edges replicated)."""
    _, _, height, width = image.shape
    padded = F.pad(image, (0, max(tile - width, 0), 0, max(tile - height, 0)), mode="replicate") if height < tile or width < tile else image
    full_h, full_w = padded.shape[-2:]
    stride = tile - overlap
    windows = [(y, x) for y in _starts(full_h, tile, stride) for x in _starts(full_w, tile, stride)]
    total: torch.Tensor | None = None
    weight = torch.zeros((1, 1, full_h, full_w), device=image.device)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        batch = torch.cat([padded[..., y : y + tile, x : x + tile] for y, x in chunk])
        probs = predict_probabilities(model, batch, tta)
        if total is None:
            total = torch.zeros((1, probs.shape[1], full_h, full_w), device=image.device)
        for (y, x), window in zip(chunk, probs):
            total[..., y : y + tile, x : x + tile] += window
            weight[..., y : y + tile, x : x + tile] += 1
    assert total is not None
    return (total / weight)[..., :height, :width]


def _upright_size(decoded) -> tuple[int, int]:
    """The image's own (height, width), upright: its header's, turned as its pixels (which
    may be decoded at reduced scale) were turned by the EXIF orientation."""
    pixels, height, width = decoded.pixels, decoded.height, decoded.width
    if (pixels.shape[0] > pixels.shape[1]) != (height > width) and pixels.shape[0] != pixels.shape[1]:
        height, width = width, height
    return height, width


def predict_masks(
    model: torch.nn.Module, files: Sequence[Path], *, image_size: int, mean, std, transform: Callable[..., Any],
    device: torch.device, options: MaskOptions = MaskOptions(), batch_size: int = 8,
    on_skip: Callable[[Path, str], None] = lambda path, reason: None, advance: Callable[[int], None] = lambda n: None,
) -> Iterator[tuple[Path, np.ndarray]]:
    """``(file, class indices H x W)`` for each readable image, at the image's own size.

    Args:
        transform: the evaluation pipeline (``transform(image=...)["image"]``), resizing to
            the training size.
        on_skip: called with each unreadable file and the reason; the others go on.
    """
    from prep.data.collate import to_device_normalized
    from prep.images.decode import ImageDecodeError, decode_image, load_rgb, shrink_to_side

    options.check()
    model.eval()
    with torch.no_grad():
        if options.tile is not None:
            for path in files:
                try:
                    pixels = load_rgb(path)
                except ImageDecodeError as exc:
                    on_skip(path, str(exc))
                    advance(1)
                    continue
                image = to_device_normalized(torch.from_numpy(np.require(pixels, requirements="W")).unsqueeze(0), mean, std, device)
                probs = predict_tiled(model, image, options.tile, options.overlap, options.tta, batch_size)
                yield path, classes_of(probs, options.threshold)[0].cpu().numpy()
                advance(1)
            return
        for first in range(0, len(files), batch_size):
            chunk, inputs, sizes = [], [], []
            for path in files[first : first + batch_size]:
                try:
                    decoded = decode_image(path, image_size)
                except ImageDecodeError as exc:
                    on_skip(path, str(exc))
                    continue
                sizes.append(_upright_size(decoded))
                # Brought to the side training's validation decoded at (the eval pipeline
                # resizes to image_size x image_size).
                pixels = shrink_to_side(decoded.pixels, image_size)
                inputs.append(torch.from_numpy(np.ascontiguousarray(transform(image=pixels)["image"])))
                chunk.append(path)
            if chunk:
                probs = predict_probabilities(model, to_device_normalized(torch.stack(inputs), mean, std, device), options.tta)
                for path, one, size in zip(chunk, probs, sizes):
                    full = F.interpolate(one.unsqueeze(0), size=size, mode="bilinear", align_corners=False)
                    yield path, classes_of(full, options.threshold)[0].cpu().numpy()
            advance(len(files[first : first + batch_size]))


def write_predicted_masks(request: "PredictRequest") -> dict[str, Any]:
    """The segmentation task's ``predict``: masks at each image's own size, as PNG files under
    the folder ``options.out`` (default ``masks/``, mirroring the folders the user named), or
    with ``kaggle_submission`` Kaggle's ``img,rle_mask`` CSV at ``options.out`` (default
    ``submission.csv``). Everything the options ask is checked before the model is loaded.

    Raises:
        TargetExistsError: a mask file, or the submission, exists already (nothing is written).
        UsageError: bad options, or a submission from a model that is not binary.
    """
    from prep.inference.predict import refuse_existing
    from prep.masks.class_table import parse_class_table
    from prep.masks.overlay import class_colours
    from prep.masks.write import SUBMISSION_NEEDS_BINARY, mask_destinations, write_mask, write_submission

    options, state, checkpoint = request.options, request.state, request.checkpoint
    mask_options = MaskOptions(0.5 if options.threshold is None else options.threshold, options.tta, options.tile, options.overlap)
    mask_options.check()
    out = options.out or Path("submission.csv" if options.kaggle_submission else "masks")
    classes = state["classes"]
    binary = len(classes) == 2
    if options.kaggle_submission:
        refuse_existing(out)
        if not binary:
            raise UsageError(SUBMISSION_NEEDS_BINARY)
    table = parse_class_table(state["class_table"], f"{checkpoint}'s class table") if state.get("class_table") else None
    ids = list(table.ids) if table is not None else list(range(len(classes)))
    colours = class_colours(len(classes), table.colours if table is not None else None)
    destinations = {} if options.kaggle_submission else mask_destinations(request.files, request.inputs, out)
    with request.progress.task("Predicting masks", len(request.files)) as advance:
        masks = predict_masks(
            request.model, request.files, image_size=state["options"]["image_size"], mean=state["mean"], std=state["std"],
            transform=request.eval_transform(SEGMENTATION), device=request.device, options=mask_options,
            batch_size=options.batch_size, on_skip=lambda path, reason: request.skipped.append((str(path), reason)), advance=advance,
        )
        if options.kaggle_submission:
            written = write_submission(out, masks, binary, options.rle_order)
        else:
            written = 0
            for file, indices in masks:
                write_mask(destinations[file], np.asarray(indices), ids, colours)
                written += 1
    return request.report(written, "rows of run-length-encoded masks" if options.kaggle_submission else "masks", out)
