"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017), written from the paper: where in an image a CNN
found the evidence for a class.

The map of class c is ReLU(sum_k alpha_k A^k), where A^k is channel k of the last
convolutional feature map and alpha_k the mean over its positions of d score_c / d A^k. It is
upsampled to the image and scaled to [0, 1] per image.

The layer is found, not named: the last module, in the order modules finish, whose output is
an ``N x C x h x w`` map with more than one position and that is or holds a convolution,
followed by the normalisations and activations of the same shape (so that the map is taken
after them). A model whose convolutions all come before most of its parameters (a vision
transformer: its only convolution cuts the image into patches) is refused, since a map there
says nothing about the decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prep.errors import PrepError

# The share of a model's parameters that may run after the chosen map: a CNN's head is a few
# percent of it; a ViT's blocks after its patch embedding are nearly all of it.
MOST_PARAMETERS_AFTER = 0.5


class CamError(PrepError):
    """A model Grad-CAM cannot explain."""

    exit_code = 2


@dataclass(frozen=True)
class CamLayer:
    """The module whose output Grad-CAM weighs, and its name in the model."""

    name: str
    module: torch.nn.Module


def find_cam_layer(model: torch.nn.Module, example: torch.Tensor, *, about: str = "the model") -> CamLayer:
    """The module of ``model`` whose output map Grad-CAM uses (see the module docstring),
    found by running ``example`` (a normalised ``1 x 3 x H x W`` batch) through it once.

    Raises:
        CamError: no convolutional map with more than one position (at ``example``'s size),
            or one that comes before most of the model's parameters. ``about`` names the
            model in the message.
    """
    finished: list[tuple[str, tuple[int, ...] | None]] = []
    modules = dict(model.named_modules())

    def record(name: str):
        def hook(_module, _inputs, output):
            finished.append((name, tuple(output.shape) if isinstance(output, torch.Tensor) else None))

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in modules.items() if name]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    # A module called twice (a ResNet block's ReLU) counts where it finished last.
    last = {name: i for i, (name, _) in enumerate(finished)}
    order = [entry for i, entry in enumerate(finished) if last[entry[0]] == i]
    holds_conv = {name: any(isinstance(m, torch.nn.Conv2d) for m in modules[name].modules()) for name, _ in order}
    convolutional = [i for i, (name, shape) in enumerate(order) if shape is not None and len(shape) == 4 and holds_conv[name]]
    if convolutional and not _is_map(order[convolutional[-1]][1]):
        raise CamError(
            f"--cam: at this image size {about}'s last convolutional map ({order[convolutional[-1]][0]}) is 1 x 1, which cannot "
            f"show where; explain a model trained at a larger --image-size"
        )
    candidates = [i for i in convolutional if _is_map(order[i][1])]
    if not candidates:
        raise CamError(f"--cam: {about} has no convolutional feature map (h x w > 1) to explain; Grad-CAM explains CNNs")
    chosen = convolution = candidates[-1]
    while chosen + 1 < len(order) and order[chosen + 1][1] == order[chosen][1] and not holds_conv[order[chosen + 1][0]]:
        chosen += 1  # the normalisation and activation after the last convolution
    name = order[chosen][0]
    after = _parameters_run_after(modules, order, chosen)
    total = sum(p.numel() for p in model.parameters())
    if total and after / total > MOST_PARAMETERS_AFTER:
        raise CamError(
            f"--cam: {about}'s last convolutional map ({order[convolution][0]}) comes before {after / total:.0%} of its parameters "
            f"(a transformer's patch embedding); Grad-CAM explains CNNs"
        )
    return CamLayer(name, modules[name])


def _is_map(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def _parameters_run_after(modules: dict[str, torch.nn.Module], order: list[tuple[str, tuple[int, ...] | None]], chosen: int) -> int:
    """The parameters of the modules that finish after ``order[chosen]``, other than its own
    and its containers' (which finish after it, holding it), each counted once."""
    name = order[chosen][0]
    counted: set[int] = set()
    for other, _ in order[chosen + 1 :]:
        if other.startswith(name + ".") or name.startswith(other + "."):
            continue
        for parameter in modules[other].parameters(recurse=False):
            counted.add(id(parameter))
    parameters = {id(p): p for module in modules.values() for p in module.parameters(recurse=False)}
    return sum(parameters[i].numel() for i in counted)


def grad_cam(model: torch.nn.Module, layer: CamLayer, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps, ``N x H x W`` in [0, 1], of ``targets`` (a class index per image) for
    ``images`` (normalised ``N x 3 x H x W``), at ``layer``. ``model`` is left as it was."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        captured["maps"] = output

    handle = layer.module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            # Gradients are taken with respect to the maps, so the model's own parameters need not require any.
            inputs = images.detach().float().requires_grad_(True)
            outputs = model(inputs)
            score = outputs.float().gather(1, targets.view(-1, 1).to(outputs.device)).sum()
            maps = captured["maps"]
            (gradients,) = torch.autograd.grad(score, maps)
    finally:
        handle.remove()
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * maps.detach().float()).sum(dim=1, keepdim=True))
    cams = torch.nn.functional.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cams.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (cams / peak).cpu()
