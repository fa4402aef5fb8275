"""Collate functions, registered by name; also a built-in plugin.

* ``uint8-channels-last``: images stacked as an ``N x H x W x 3`` uint8 tensor (a quarter
  of the bytes of float32, which is what crosses from worker processes and to the GPU),
  targets as an int64 tensor. ``to_device_normalized`` then converts to float and
  normalises on the device, giving ``N x 3 x H x W`` in channels_last memory format.
* ``segmentation``: images as above, masks stacked as ``N x H x W`` int64.
* ``multilabel``: images as above, multi-hot targets stacked as ``N x tags`` float32.
* ``targets-as-list``: images stacked, targets kept as a list, for variable-size targets
  such as boxes.

Every built-in drops ``CorruptSample`` entries and lists them in ``Batch.skipped``. They are
registered by ``prep.data.collate_plugin``, which imports this module (and torch) only
when a collate function is first looked up.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, NamedTuple, Sequence

import torch

from prep.data.datasets import CorruptSample


class Batch(NamedTuple):
    inputs: torch.Tensor
    targets: Any
    skipped: tuple[CorruptSample, ...] = ()


def check_batch(batch: Any, origin: str) -> None:
    """Raise ``PluginError`` naming ``origin`` unless ``batch`` is a ``Batch`` whose inputs
    are a tensor (what the engine normalises on the device)."""
    if not isinstance(getattr(batch, "inputs", None), torch.Tensor) or not hasattr(batch, "targets"):
        from prep.errors import PluginError

        raise PluginError(
            f"The {origin} returned {type(batch).__name__}; the engine needs a prep.Batch "
            f"(inputs: a uint8 N x H x W x 3 tensor, targets)."
        )


def _split_good(samples: Sequence[Any]) -> tuple[list[Any], tuple[CorruptSample, ...]]:
    good = [s for s in samples if not isinstance(s, CorruptSample)]
    return good, tuple(s for s in samples if isinstance(s, CorruptSample))


def _stack_images(good: list[Any]) -> torch.Tensor:
    if not good:
        return torch.empty((0, 0, 0, 3), dtype=torch.uint8)
    return stack(s[0] for s in good)


def stack(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, into shared memory when called in a loader worker: the batch then
    goes to the training process as it is, instead of being copied there once more (as
    torch's own default collate does)."""
    tensors = list(tensors)
    out = None
    if torch.utils.data.get_worker_info() is not None and tensors:
        first = tensors[0]
        storage = first._typed_storage()._new_shared(sum(t.numel() for t in tensors), device=first.device)
        out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def uint8_channels_last_collate(samples: Sequence[Any]) -> Batch:
    """(image uint8 HxWx3, int target) samples -> Batch(N x H x W x 3 uint8, N int64)."""
    good, skipped = _split_good(samples)
    targets = torch.tensor([int(s[1]) for s in good], dtype=torch.int64)
    return Batch(_stack_images(good), targets, skipped)


def multilabel_collate(samples: Sequence[Any]) -> Batch:
    """(image uint8 HxWx3, float multi-hot vector) samples -> Batch(N x H x W x 3 uint8, N x tags float32)."""
    good, skipped = _split_good(samples)
    targets = stack(s[1].float() for s in good) if good else torch.empty((0, 0), dtype=torch.float32)
    return Batch(_stack_images(good), targets, skipped)


def segmentation_collate(samples: Sequence[Any]) -> Batch:
    """(image uint8 HxWx3, mask HxW) samples -> Batch(N x H x W x 3 uint8, N x H x W int64)."""
    good, skipped = _split_good(samples)
    masks = stack(s[1].long() for s in good) if good else torch.empty((0, 0, 0), dtype=torch.int64)
    return Batch(_stack_images(good), masks, skipped)


def targets_as_list_collate(samples: Sequence[Any]) -> Batch:
    """Images stacked; targets left as a list (boxes, keypoints, captions ...)."""
    good, skipped = _split_good(samples)
    return Batch(_stack_images(good), [s[1] for s in good], skipped)


def to_device_normalized(images: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``N x H x W x 3`` -> normalised float ``N x 3 x H x W`` on ``device``.

    The permute is free: an NHWC buffer viewed as NCHW is exactly the channels_last
    memory format, which convolutions on GPUs prefer.
    """
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype)
    mean_t, std_t = _scaled_constants(tuple(mean), tuple(std), x.device, dtype)
    return x.sub_(mean_t).div_(std_t)


@functools.lru_cache(maxsize=16)
def _scaled_constants(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation constants times 255, on ``device``, made once: copying a new tensor
    from the host to a GPU at every batch makes the host wait for the GPU each time."""
    mean_t = torch.tensor(mean, device=device, dtype=dtype).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=device, dtype=dtype).view(1, 3, 1, 1) * 255
    return mean_t, std_t
