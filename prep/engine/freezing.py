"""Fine-tuning in two phases: only the new head learns at first, then the whole model.

With ``freeze_backbone_epochs = K`` the backbone's weights take no gradient during the
first K epochs, so a randomly initialised head cannot wreck pretrained features with its
first, large gradients; from epoch K on everything trains, the backbone at its own
(discriminative) learning rate. As in fastai's ``fine_tune``, normalisation layers keep
learning while the rest is frozen: their statistics must follow the new data anyway.

Whether the backbone is frozen follows from the epoch alone, so a resumed run is frozen
exactly when the uninterrupted run would have been.
"""

from __future__ import annotations

import torch

from prep.errors import UsageError

_NORM_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)


class BackboneFreezer:
    """Freezes and unfreezes the backbone of ``model`` (everything but ``head`` and norms)."""

    def __init__(self, model: torch.nn.Module, head: torch.nn.Module | None, epochs: int) -> None:
        if epochs and head is None:
            raise UsageError("--freeze-backbone needs a trainer that says which part of its model is the new head")
        self.epochs = epochs
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        self.backbone = [
            param
            for module in model.modules()
            if not isinstance(module, _NORM_LAYERS)
            for param in module.parameters(recurse=False)
            if id(param) not in head_ids and param.requires_grad
        ]
        self.frozen = False

    def apply(self, epoch: int) -> bool:
        """Freeze or unfreeze for ``epoch`` (counted from 0).

        Returns:
            True when the state changed (a DDP or compiled wrapper must then be rebuilt).
        """
        frozen = epoch < self.epochs
        if frozen == self.frozen:
            return False
        for param in self.backbone:
            param.requires_grad_(not frozen)
        self.frozen = frozen
        return True


def keep_norm_statistics(model: torch.nn.Module, head: torch.nn.Module | None) -> int:
    """Put every BatchNorm layer outside ``head`` in eval mode, after ``model.train()``.

    Pretrained BatchNorm statistics describe ImageNet's millions of images; re-estimating
    them from the small, augmented batches of a small dataset makes the validation
    features drift from those the head was fitted on, and validation accuracy swings
    from epoch to epoch. With the statistics kept (as Keras' fine-tuning guide advises),
    each layer still learns its scale and shift.

    Returns:
        How many layers were put in eval mode.
    """
    in_head = {id(module) for module in head.modules()} if head is not None else set()
    kept = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and id(module) not in in_head:
            module.eval()
            kept += 1
    return kept
