"""``cutout``: prep's uint8 batches with a random square of each image painted over.

Cutout (DeVries and Taylor, 2017) hides a patch of every training image, so that the
model cannot lean on one small region. Doing it in the collate function works on the
whole batch at once and stays in uint8, which keeps what crosses from the loader's
worker processes small. Each square is painted in its image's mean colour, which
normalisation then turns into roughly zero.

Randomness comes from torch's global generator, which prep seeds in every loader worker
(and, for ``--workers 0``, at the start of every epoch), so ``--seed`` repeats it.
"""

from __future__ import annotations

import torch

from prep import Batch, uint8_channels_last_collate

SIDE_FRACTION = 0.25  # the square's side, as a fraction of the image's shorter side


def cutout_collate(samples) -> Batch:
    """Collate like ``uint8-channels-last``, then paint one square per image."""
    batch = uint8_channels_last_collate(samples)
    images = batch.inputs
    if images.numel() == 0:
        return batch
    n, height, width, _ = images.shape
    side = max(1, int(min(height, width) * SIDE_FRACTION))
    # Centres anywhere in the image; squares are clipped at the border, as in the paper.
    cy = torch.randint(0, height, (n,))
    cx = torch.randint(0, width, (n,))
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = (
        (rows >= (cy - side // 2).view(n, 1, 1)) & (rows < (cy + side - side // 2).view(n, 1, 1))
        & (cols >= (cx - side // 2).view(n, 1, 1)) & (cols < (cx + side - side // 2).view(n, 1, 1))
    )
    mean_colour = images.float().mean(dim=(1, 2)).round().to(torch.uint8)  # N x 3
    painted = torch.where(inside.unsqueeze(-1), mean_colour.view(n, 1, 1, 3), images)
    return Batch(painted, batch.targets, batch.skipped)
