"""``--weights imagenet|none|PATH``: the one place where starting weights are checked and loaded.

Every trainer can use it:

* ``check_weights(value)`` before anything is built: ``imagenet``, ``none`` or an existing file;
* ``torchvision_model(name, weights)`` builds a torchvision model by name with ImageNet's
  weights (downloaded once and cached by torchvision; offline, a one-line ``WeightsError``
  says what to do instead) or none;
* ``load_matching_weights(model, path, skip=head)`` loads a state dict file (a bare state
  dict, or a prep checkpoint's ``model``) into a model, except the new head.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from prep.errors import PrepError, UsageError

if TYPE_CHECKING:
    import torch

IMAGENET = "imagenet"
NONE = "none"
WEIGHTS_HELP = (
    "imagenet (torchvision's or timm's; downloaded once, needs internet) | none | PATH to a state dict, a prep "
    "checkpoint, or (timm architectures) a .safetensors file or a timm/Hugging Face cache folder."
)


class WeightsError(PrepError):
    """Starting weights cannot be had or do not fit the model."""


def check_weights(value: str) -> str:
    """``imagenet``, ``none`` or the path of an existing file or folder (a cache folder, for
    trainers that take one), as given.

    Raises:
        UsageError: anything else.
    """
    if value in (IMAGENET, NONE):
        return value
    if not Path(value).exists():
        raise UsageError(f"--weights must be imagenet, none, or a weights file or folder; {value} does not exist")
    return value


def torchvision_model(name: str, weights: str) -> "torch.nn.Module":
    """torchvision's model ``name``, with ImageNet's weights for ``weights="imagenet"`` and
    random ones otherwise (load a file afterwards with ``load_matching_weights``).

    Raises:
        UsageError: torchvision has no model of that name.
        WeightsError: the ImageNet weights cannot be downloaded.
    """
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise UsageError(f"torchvision has no model named {name!r}") from None
    if weights != IMAGENET:
        return builder(weights=None)
    return with_downloaded_weights(lambda: builder(weights="DEFAULT"), name)


def with_downloaded_weights(build: "Callable[[], torch.nn.Module]", name: str) -> "torch.nn.Module":
    """``build()``, which loads torchvision's ImageNet weights for ``name`` (downloaded first,
    once, into torchvision's cache, unless already there); offline, a one-line
    ``WeightsError`` instead of a network traceback.

    Raises:
        WeightsError: the weights are not cached and cannot be downloaded.
    """
    try:
        _download_once(name)
        return build()
    except Exception as exc:  # URLError, HTTPError, a proxy's reply, a truncated download
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"Cannot download torchvision's ImageNet weights for {name} ({reason}). Connect once so that "
            f"torchvision caches them, or pass --weights PATH to a weights file, or --weights none."
        ) from None


def cached_weights_path(name: str) -> Path:
    """Where torchvision keeps its ImageNet weights for the model ``name`` once downloaded."""
    from urllib.parse import urlparse

    import torch
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _download_once(name: str) -> None:
    """Fetch the weights into torchvision's cache, checked against the hash in their name,
    so that torchvision then only reads them (its own download prints a line and a raw
    traceback when offline)."""
    import sys

    import torch
    import torchvision

    target = cached_weights_path(name)
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = torch.hub.HASH_REGEX.search(target.name)
    torch.hub.download_url_to_file(
        torchvision.models.get_model_weights(name).DEFAULT.url, str(target),
        hash_prefix=digest.group(1) if digest else None, progress=sys.stderr.isatty(),
    )


def load_matching_weights(model: "torch.nn.Module", path: Path, *, skip: str | None = None) -> int:
    """Load every tensor of ``path`` into ``model``, except those under ``skip`` (the new head).

    Returns:
        How many tensors were loaded.

    Raises:
        WeightsError: the file is unreadable or unsafe, or leaves part of the model unloaded.
    """
    import torch

    if path.is_dir():
        raise WeightsError(f"{path} is a folder; this architecture takes a weights file (cache folders are for timm:NAME architectures)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"Cannot load weights {path}: {str(exc).splitlines()[0]}") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict (found {type(state).__name__})")

    def kept(key: str) -> bool:
        return skip is None or not key.startswith(skip + ".")

    own = model.state_dict()
    usable = {k: v for k, v in state.items() if kept(k) and k in own and own[k].shape == v.shape}
    missing = [k for k in own if kept(k) and k not in usable]
    unexpected = [k for k in state if kept(k) and k not in own]
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise WeightsError(
            f"{path} does not fit this architecture: {len(missing)} tensors missing or of another "
            f"shape and {len(unexpected)} unexpected, such as {example}"
        )
    model.load_state_dict(usable, strict=False)
    return len(usable)
