"""timm models for the built-in trainers: ``--arch timm:NAME``, a classifier of any timm
architecture, and ``--arch unet-timm:NAME``, a U-Net on a timm encoder.

``--weights`` means what it means for torchvision models:

* ``imagenet``: timm's default pretrained weights for NAME (or ``NAME.TAG``), downloaded
  once into timm's own cache (the Hugging Face hub cache, or torch hub's for the few that
  timm still fetches by URL). Offline, one line says what to pass instead.
* ``none``: random weights. Checkpoints are rebuilt this way, so evaluate, predict, export
  and resume never touch the network.
* ``PATH``: a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file (a bare state dict, timm's
  training checkpoint, or a prep checkpoint), or a timm or Hugging Face cache folder
  (``models--timm--NAME``, one of its snapshots, or a folder holding ``model.safetensors``).
  timm's own loading then adapts it to the model (a new head for your classes; a ViT's
  position embedding resampled to ``--image-size``).

timm is imported only here, when a model is built or listed: ``prep --help`` and ``prep
split`` never load it.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from pathlib import Path
from typing import Any

from prep import UsageError, WeightsError

PREFIX = "timm:"
# How long the hub may take to answer before a download is given up as offline.
REACH_TIMEOUT_S = 5
# Inside a cache folder: what timm and the Hugging Face hub write, best first.
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def check_name(name: str, option: str) -> str:
    """``name`` (``NAME`` or ``NAME.TAG``) when timm has that architecture.

    Raises:
        UsageError: an unknown name, with the nearest ones timm has.
    """
    import timm

    if name and timm.is_model(name):
        return name
    base = name.split(".")[0]
    nearest = difflib.get_close_matches(base, timm.list_models(), n=4, cutoff=0.6)
    hint = f"; nearest: {', '.join(nearest)}" if nearest else ""
    raise UsageError(
        f"{option}{name!r}: timm has no architecture of that name{hint} (prep plugins --arch '*{base[:6]}*' lists them)"
    )


def pretrained_config(name: str, weights: str) -> dict[str, Any]:
    """What the starting weights were trained with: timm's pretrained configuration of
    ``name``, overlaid by a cache folder's ``config.json`` when ``weights`` is one."""
    import timm.models

    config = timm.models.get_pretrained_cfg(name)
    found = config.to_dict() if config is not None else {}
    if weights not in ("imagenet", "none") and Path(weights).is_dir():
        for path in sorted(Path(weights).rglob("config.json")):
            try:
                found.update(json.loads(path.read_text(encoding="utf-8")).get("pretrained_cfg") or {})
            except (OSError, ValueError, AttributeError):
                continue  # not timm's config.json; the architecture's defaults stand
            break
    return found


def normalization(name: str, weights: str) -> tuple[list[float], list[float], str]:
    """The mean and std that ``name``'s pretrained weights expect, for ``--normalize auto``."""
    config = pretrained_config(name, weights)
    mean, std = config.get("mean") or (0.485, 0.456, 0.406), config.get("std") or (0.229, 0.224, 0.225)
    return [float(v) for v in mean], [float(v) for v in std], f"timm's pretrained configuration of {name}"


def create(name: str, weights: str, *, option: str, image_size: int, **kwargs: Any):
    """``timm.create_model(name, **kwargs)`` started from ``weights`` (``imagenet``, ``none``
    or a path), for images of ``image_size`` pixels.

    Raises:
        WeightsError: the weights cannot be downloaded, read, or do not fit ``name``.
        UsageError: the architecture cannot take images of that size.
    """
    import timm

    if pretrained_config(name, "none").get("fixed_input_size"):
        kwargs["img_size"] = image_size  # a ViT's patch grid is fixed when it is built
    if weights == "none":
        model = _create(timm, name, option, image_size, pretrained=False, **kwargs)
    elif weights == "imagenet":
        model = _download(timm, name, option, image_size, **kwargs)
    else:
        model = _from_file(timm, name, option, image_size, Path(weights), **kwargs)
    _check_input_size(model, name, option, image_size)
    return model


def _from_file(timm, name: str, option: str, image_size: int, weights: Path, **kwargs: Any):
    state = read_state_dict(weights)
    try:
        return _create(timm, name, option, image_size, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs)
    except (RuntimeError, KeyError):  # load_state_dict's report, or timm's head surgery on a foreign file
        fresh = _create(timm, name, option, image_size, pretrained=False, **kwargs)
        raise WeightsError(f"{weights} does not fit {option}{name}: {_mismatch(fresh.state_dict(), state)}") from None


def _create(timm, name: str, option: str, image_size: int, **kwargs: Any):
    try:
        return timm.create_model(name, **kwargs)
    except (AssertionError, ValueError, TypeError) as exc:
        raise UsageError(f"{option}{name} cannot be built for --image-size {image_size}: {_one_line(exc)}") from None


def _download(timm, name: str, option: str, image_size: int, **kwargs: Any):
    """timm's pretrained weights: from the hub cache when they are there, without asking the
    network (the hub's client would retry for most of a minute offline); else downloaded,
    once a quick request has shown that the hub can be reached."""
    cached = cached_weights(name)
    if cached is not None:
        return _from_file(timm, name, option, image_size, cached, **kwargs)
    _check_reachable(name)
    try:
        return _create(timm, name, option, image_size, pretrained=True, **kwargs)
    except UsageError:
        raise
    except Exception as exc:  # a refusing proxy, a hub error, a full disk
        if isinstance(exc, RuntimeError) and "features" in str(exc):
            raise  # the architecture, not the download: encoder() says so
        raise WeightsError(_cannot_download(name, _one_line(exc))) from None


def cached_weights(name: str) -> Path | None:
    """The weights file of ``name``'s default pretrained tag in the hub cache, if there."""
    import timm.models
    from huggingface_hub import try_to_load_from_cache

    config = timm.models.get_pretrained_cfg(name)
    repo = getattr(config, "hf_hub_id", None)
    if not repo:
        return None
    for filename in ([config.hf_hub_filename] if getattr(config, "hf_hub_filename", None) else []) + list(WEIGHTS_FILES[:2]):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _check_reachable(name: str) -> None:
    """Raise ``WeightsError`` at once when the hub cannot be reached.

    Weights that timm fetches by URL rather than from the hub are left to torch's
    download, which fails at once by itself.
    """
    import timm.models
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if not getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None):
        return
    if constants.HF_HUB_OFFLINE:
        raise WeightsError(_cannot_download(name, "HF_HUB_OFFLINE is set"))
    try:
        get_session().head(constants.ENDPOINT, timeout=REACH_TIMEOUT_S)
    except Exception as exc:  # no network, a proxy that refuses, DNS
        raise WeightsError(_cannot_download(name, f"{constants.ENDPOINT} cannot be reached: {_one_line(exc)}")) from None


def _cannot_download(name: str, why: str) -> str:
    return (
        f"Cannot download timm's pretrained weights for {name} ({why}). Connect once so that they are cached in "
        f"{cache_folder()}, or pass --weights PATH to a .safetensors/.pth file or a cache folder, or --weights none."
    )


def cache_folder() -> str:
    """Where timm keeps the weights it downloads: the Hugging Face hub cache."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def weights_file(path: Path) -> Path:
    """The weights file of ``path``: itself, or inside a cache folder (the newest snapshot).

    Raises:
        WeightsError: a folder without a weights file.
    """
    if path.is_file():
        return path
    for filename in WEIGHTS_FILES:
        found = sorted(path.rglob(filename), key=lambda p: p.stat().st_mtime, reverse=True)
        if found:
            return found[0]
    raise WeightsError(f"{path} holds no {' or '.join(WEIGHTS_FILES[:2])}: pass a weights file, or a timm or Hugging Face cache folder")


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a weights file or cache folder: a bare state dict, or the ``model``
    (prep's checkpoints), ``state_dict`` or ``state_dict_ema`` of a training checkpoint.

    Raises:
        WeightsError: unreadable, unsafe (pickled code), or holding no tensors.
    """
    import torch

    file = weights_file(path)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"Cannot load weights {file}: {_one_line(exc)}") from None
    if isinstance(state, dict):
        for key in ("state_dict_ema", "model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{file} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _check_input_size(model, name: str, option: str, image_size: int) -> None:
    """A transformer's windows and patches take only some sizes: try one image now, rather
    than fail at the first batch."""
    import torch

    if not pretrained_config(name, "none").get("fixed_input_size") and not _has_windows(model):
        return
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    except Exception as exc:
        raise UsageError(f"{option}{name} cannot take {image_size} px images ({_one_line(exc)}); choose another --image-size") from None
    finally:
        model.train(was_training)


def _has_windows(model) -> bool:
    return any("window" in type(m).__name__.lower() or "partition" in type(m).__name__.lower() for m in model.modules())


def _mismatch(own: dict[str, Any], state: dict[str, Any]) -> str:
    """What a weights file lacks or has beyond a model, in a few words."""
    missing = [k for k, v in own.items() if k not in state or state[k].shape != v.shape]
    unexpected = [k for k in state if k not in own]
    example = (missing or unexpected or ["?"])[0]
    return f"{len(missing)} of its {len(own)} tensors missing or of another shape, {len(unexpected)} unexpected, such as {example}"


def _one_line(exc: BaseException | str) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def find_architectures(pattern: str, prefix: str = PREFIX) -> list[dict[str, Any]]:
    """timm's architectures matching the shell pattern ``pattern`` (with or without
    ``prefix``), each with its pretrained tags."""
    import timm

    bare = pattern.removeprefix(prefix)
    tags: dict[str, list[str]] = {}
    for tagged in timm.list_pretrained():
        arch, _, tag = tagged.partition(".")
        tags.setdefault(arch, []).append(tag)
    return [
        {"arch": prefix + name, "pretrained": tags.get(name, [])}
        for name in timm.list_models() if fnmatch.fnmatchcase(name, bare)
    ]


def count_architectures() -> int:
    """How many architectures timm has."""
    import timm

    return len(timm.list_models())


def classifier(name: str, weights: str, num_classes: int, image_size: int):
    """A timm classifier with a new head of ``num_classes`` outputs: ``(model, head)``."""
    model = create(name, weights, option="--arch timm:", image_size=image_size, num_classes=num_classes)
    return model, model.get_classifier()


def encoder(name: str, weights: str, image_size: int):
    """A timm encoder for a U-Net (``features_only``): its features at strides that halve
    from one to the next, with their channels and strides.

    Raises:
        UsageError: the architecture has no feature maps a U-Net can join (a ViT's are all
            at one stride).
    """
    option = "--arch unet-timm:"
    try:
        model = create(name, weights, option=option, image_size=image_size, features_only=True)
    except RuntimeError as exc:  # features_only not implemented for this architecture
        raise UsageError(f"{option}{name}: timm gives no feature maps for it ({_one_line(exc)})") from None
    strides = model.feature_info.reduction()
    if any(b != 2 * a for a, b in zip(strides, strides[1:])) or strides[0] not in (1, 2, 4) or strides[-1] != 32:
        raise UsageError(
            f"{option}{name} gives features at strides {', '.join(map(str, strides))}: a U-Net needs a CNN encoder whose "
            f"feature maps halve in size down to stride 32 (resnet*, efficientnet*, convnext*, regnet*, ...)"
        )
    return model, model.feature_info.channels(), strides
