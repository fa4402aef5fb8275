"""The ``unet`` trainer: semantic segmentation with Dice loss, on the shared engine.

``--arch`` takes a U-Net on a torchvision encoder (``unet-resnet34``, the default, a common
choice for Carvana-style data; ``unet-resnet18``, ``unet-resnet50``, ``unet-mobilenet_v2``) or one of
torchvision's segmentation models: ``deeplabv3_resnet50``, ``deeplabv3_mobilenet_v3_large``,
``lraspp_mobilenet_v3_large`` and ``fcn_resnet50`` (the first, second and fourth with their
auxiliary head, whose loss counts half). ``--weights imagenet`` starts the encoder from
torchvision's ImageNet weights; ``PATH`` loads a file saved from this model, or from its
encoder (a torchvision ResNet or MobileNetV2 classifier, or a resnet-finetune checkpoint);
``none`` trains from scratch. ``unet-timm:NAME`` puts the U-Net on any of timm's CNN encoders
(``features_only``; ``prep_trainers.timm_models``), whose ``--weights`` also take a
``.safetensors`` file or a timm/Hugging Face cache folder. A binary dataset (two classes) gets one logit, others one
per class. torch is imported only when a model is built.
"""

from __future__ import annotations

from pathlib import Path

from prep import ModelRequest, TrainConfig, Trainer, hookimpl
from prep_trainers import timm_models

UNET_ARCHS = tuple(f"unet-{name}" for name in ("resnet34", "resnet18", "resnet50", "mobilenet_v2"))
TIMM_PREFIX = "unet-" + timm_models.PREFIX
TORCHVISION_ARCHS = ("deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50")
# torchvision's segmentation models and the encoder whose ImageNet weights they start from.
_BACKBONES = {
    "deeplabv3_resnet50": "resnet50", "fcn_resnet50": "resnet50",
    "deeplabv3_mobilenet_v3_large": "mobilenet_v3_large", "lraspp_mobilenet_v3_large": "mobilenet_v3_large",
}


def outputs_for(classes: tuple[str, ...]) -> int:
    """One logit for two classes (binary), else one per class."""
    return 1 if len(classes) == 2 else len(classes)


class UNetTrainer(Trainer):
    """Segmentation: a U-Net on a torchvision encoder, or torchvision's DeepLabV3, LR-ASPP and FCN."""

    task = "segmentation"
    architectures = UNET_ARCHS + TORCHVISION_ARCHS
    default_arch = "unet-resnet34"
    recipes = ("default",)
    # Segmentation learns from many small steps: 84 brain slices at 64 a batch were 20
    # steps in ten epochs, too few for a class of 1% of the pixels (bench_segment.py --part brain).
    default_batch_size = 16

    def choose_arch(self, requested: str | None) -> str | None:
        if requested is not None and requested.startswith(TIMM_PREFIX):
            return TIMM_PREFIX + timm_models.check_name(requested.removeprefix(TIMM_PREFIX), "--arch unet-timm:")
        return super().choose_arch(requested)

    def pretrained_normalization(self, request: ModelRequest):
        arch = request.arch or self.default_arch
        if arch.startswith(TIMM_PREFIX):
            return timm_models.normalization(arch.removeprefix(TIMM_PREFIX), request.weights)
        return None

    def find_architectures(self, pattern: str) -> list[dict]:
        # timm's CNNs: transformers of a fixed input size give no halving feature maps.
        own = super().find_architectures(pattern)
        timm_archs = timm_models.find_architectures(pattern, prefix=TIMM_PREFIX)
        return own + [a for a in timm_archs if not timm_models.pretrained_config(a["arch"].removeprefix(TIMM_PREFIX), "none").get("fixed_input_size")]

    def describe(self) -> dict:
        return {**super().describe(), "more_architectures": "unet-timm:NAME, a U-Net on any of timm's CNN encoders"}

    def build_model(self, request: ModelRequest):
        arch = request.arch or self.default_arch
        if arch.startswith(TIMM_PREFIX):
            return _timm_unet(arch.removeprefix(TIMM_PREFIX), request)
        if arch in UNET_ARCHS:
            return _unet(arch.removeprefix("unet-"), request)
        return _torchvision_segmentation(arch, request)

    def recipe(self, name: str, request: ModelRequest) -> TrainConfig:
        """AdamW at 1e-3 with a short warmup and cosine decay, ten epochs (without
        ``--epochs``, at least 200 steps, up to 60 epochs); a pretrained encoder learns at a
        tenth of the decoder's rate."""
        return TrainConfig(
            epochs=10, min_steps=200, lr=1e-3, optimizer="adamw", weight_decay=1e-4, scheduler="cosine", warmup_epochs=0.3,
            backbone_lr_scale=0.1 if request.weights != "none" else 1.0,
        )


def _load_path(model, encoder, path: Path, skip: str | None) -> None:
    """A file saved from this whole model, else from its encoder alone."""
    from prep import WeightsError, load_matching_weights

    try:
        load_matching_weights(model, path)
    except WeightsError:
        try:
            load_matching_weights(encoder, path, skip=skip)
        except WeightsError as exc:
            raise WeightsError(f"{exc}; it fits neither this model nor its encoder") from None


def _unet(encoder_name: str, request: ModelRequest):
    from prep import torchvision_model
    from prep_trainers.unet_model import UNet

    encoder = torchvision_model(encoder_name, request.weights if request.weights == "imagenet" else "none")
    model = UNet(encoder_name, encoder, outputs_for(request.classes))
    if request.weights not in ("imagenet", "none"):
        _load_path(model, model.encoder, Path(request.weights), skip="fc" if encoder_name.startswith("resnet") else "classifier")
    return model, model.decoder


def _timm_unet(encoder_name: str, request: ModelRequest):
    """A U-Net on timm's ``encoder_name``. ``--weights PATH`` is a file saved from this whole
    model (a prep checkpoint), else the encoder's weights (a timm classifier's file or cache
    folder), which timm's own loading maps onto its feature maps."""
    from prep import WeightsError, load_matching_weights
    from prep_trainers.unet_model import TimmUNet

    whole = request.weights not in ("imagenet", "none") and Path(request.weights).is_file()
    encoder, channels, strides = timm_models.encoder(encoder_name, "none" if whole else request.weights, request.image_size)
    model = TimmUNet(encoder, channels, strides, outputs_for(request.classes))
    if whole:
        try:
            load_matching_weights(model, Path(request.weights))
        except WeightsError:
            encoder, channels, strides = timm_models.encoder(encoder_name, request.weights, request.image_size)
            model = TimmUNet(encoder, channels, strides, outputs_for(request.classes))
    return model, model.decoder


def _torchvision_segmentation(arch: str, request: ModelRequest):
    import torch
    import torchvision

    from prep import with_downloaded_weights
    from prep_trainers.unet_model import make_batch_of_one_safe

    builder = torchvision.models.get_model_builder(arch)
    kwargs = {"weights": None, "num_classes": outputs_for(request.classes)}
    if not arch.startswith("lraspp"):
        kwargs["aux_loss"] = True
    backbone = _BACKBONES[arch]
    if request.weights == "imagenet":
        model = with_downloaded_weights(lambda: builder(weights_backbone="DEFAULT", **kwargs), backbone)
    else:
        model = builder(weights_backbone=None, **kwargs)
    make_batch_of_one_safe(model)
    if request.weights not in ("imagenet", "none"):
        _load_path(model, model.backbone, Path(request.weights), skip="fc")
    heads = [model.classifier] + ([model.aux_classifier] if getattr(model, "aux_classifier", None) is not None else [])
    return model, torch.nn.ModuleList(heads)


@hookimpl
def register_trainers(register):
    register("unet", UNetTrainer())
