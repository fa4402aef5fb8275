"""The models of the ``unet`` trainer: a U-Net decoder on torchvision encoders, and
torchvision's own segmentation models made safe for any input.

Every model takes normalised images ``N x 3 x H x W`` of any size (sides need not be
multiples of 32) and returns logits at the input's size: a tensor ``N x K x H x W`` (U-Net)
or torchvision's dict with ``out`` (and ``aux``). ``K`` is 1 for a binary segmentation
(one sigmoid logit) and the number of classes otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DECODER_CHANNELS = (256, 128, 64, 32, 16)
STRIDE = 32


def _conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    """Upsample by 2, join the encoder's features of that scale, two 3x3 convolutions."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv(in_channels + skip_channels, out_channels), _conv(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class Decoder(nn.Module):
    """The U-Net's new part (the "head" for discriminative learning rates): decoder blocks
    from stride 32 back to the input's scale, each joining the encoder's features of its
    stride where there are some, and a 3x3 convolution to the logits.

    ``encoder_strides`` are the strides of ``encoder_channels``' features, halving from one
    to the next and ending at 32: torchvision's ResNets and timm's CNNs give 2 to 32, a
    ConvNeXt 4 to 32 (its block at stride 2 then has no skip)."""

    def __init__(self, encoder_channels: list[int], outputs: int, encoder_strides: tuple[int, ...] = (2, 4, 8, 16, 32)) -> None:
        super().__init__()
        skip_of = dict(zip(encoder_strides, encoder_channels))
        block_strides = [STRIDE >> (i + 1) for i in range(len(DECODER_CHANNELS))]  # 16, 8, 4, 2, 1
        skips = [skip_of.get(stride, 0) for stride in block_strides]
        ins = [encoder_channels[-1], *DECODER_CHANNELS[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, DECODER_CHANNELS))
        self.logits = nn.Conv2d(DECODER_CHANNELS[-1], outputs, 3, padding=1)
        self.skip_at = [encoder_strides.index(s) if s in skip_of else None for s in block_strides]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, at in zip(self.blocks, self.skip_at):
            x = block(x, features[at] if at is not None else None)
        return self.logits(x)


def _encoder_stages(name: str, network: nn.Module) -> tuple[list[nn.Module], list[int]]:
    if name.startswith("resnet"):
        stem = nn.Sequential(network.conv1, network.bn1, network.relu)
        stages = [stem, nn.Sequential(network.maxpool, network.layer1), network.layer2, network.layer3, network.layer4]
        widths = [64] + [layer[-1].conv3.out_channels if hasattr(layer[-1], "conv3") else layer[-1].conv2.out_channels
                         for layer in (network.layer1, network.layer2, network.layer3, network.layer4)]
        return stages, widths
    features = network.features
    bounds = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 18))
    stages = [nn.Sequential(*features[a:b]) for a, b in bounds]
    widths = [stage[-1].out_channels for stage in stages]
    return stages, widths


class UNet(nn.Module):
    """U-Net with a torchvision encoder (``encoder``, the whole torchvision model, so that
    its state dict is torchvision's and ImageNet or classification weights load into it).

    The input is padded (replicating its edges) to a multiple of 32 and the logits cropped
    back, so any size works.
    """

    def __init__(self, encoder_name: str, encoder: nn.Module, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        # The classifier is not used; dropping it keeps unused parameters out of DDP.
        if hasattr(encoder, "fc"):
            encoder.fc = nn.Identity()
        if hasattr(encoder, "classifier"):
            encoder.classifier = nn.Identity()
        stages, widths = _encoder_stages(encoder_name, encoder)
        self.stages = stages  # a plain list: views into encoder, not registered twice
        self.decoder = Decoder(widths, outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        # Always padded, also by 0: a branch on the size would be frozen into exports.
        x = F.pad(images, (0, (-width) % STRIDE, 0, (-height) % STRIDE), mode="replicate")
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return self.decoder(features)[..., :height, :width]


class TimmUNet(nn.Module):
    """U-Net on a timm encoder built with ``features_only`` (``prep_trainers.timm_models.encoder``):
    its feature maps at ``strides`` (halving, ending at 32) feed the same decoder as ``UNet``'s.
    Padded and cropped like ``UNet``, so any size works."""

    def __init__(self, encoder: nn.Module, channels: list[int], strides: list[int], outputs: int) -> None:
        super().__init__()
        if strides[-1] != STRIDE:
            raise ValueError(f"the encoder's deepest features are at stride {strides[-1]}, not {STRIDE}")
        self.encoder = encoder
        self.decoder = Decoder(channels, outputs, tuple(strides))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        x = F.pad(images, (0, (-width) % STRIDE, 0, (-height) % STRIDE), mode="replicate")
        return self.decoder(self.encoder(x))[..., :height, :width]


class BatchNormForAnyBatch(nn.BatchNorm2d):
    """BatchNorm that uses its running statistics when a training batch has one value per
    channel (a batch of one image after global pooling), where BatchNorm would fail."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() // x.shape[1] <= 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def make_batch_of_one_safe(model: nn.Module) -> nn.Module:
    """Replace the BatchNorm after each global pooling (DeepLabV3's ASPP pooling branch) with
    ``BatchNormForAnyBatch``, keeping its parameters."""
    from torchvision.models.segmentation.deeplabv3 import ASPPPooling

    for module in model.modules():
        if isinstance(module, ASPPPooling):
            for index, child in enumerate(module):
                if isinstance(child, nn.BatchNorm2d) and not isinstance(child, BatchNormForAnyBatch):
                    safe = BatchNormForAnyBatch(child.num_features, child.eps, child.momentum)
                    safe.load_state_dict(child.state_dict())
                    module[index] = safe
    return model
