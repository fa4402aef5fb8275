"""What a trainer plugin provides: a subclass of ``Trainer``, registered by name.

A trainer names its task, builds a model from a ``ModelRequest`` and may declare
architectures, recipes and its own loss; everything else (data, loop, checkpoints, metrics)
is the engine's. The smallest trainer is a ``build_model``::

    class TinyTrainer(prep.Trainer):
        def build_model(self, request):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(request.num_classes))

Kept free of torch, so that plugins can define trainers while prep starts up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prep.engine.config import TrainConfig
from prep.errors import UsageError

if TYPE_CHECKING:
    import torch

    from prep.engine.task import Loss


@dataclass(frozen=True)
class ModelRequest:
    """What ``Trainer.build_model`` receives: everything a model needs, nothing of the CLI.

    Attributes:
        classes: the class names, in the order of the model's outputs (a multi-label
            model's: its tags).
        arch: the architecture asked for with ``--arch``, else the trainer's
            ``default_arch`` (``None`` when the trainer has no architectures).
        weights: ``"imagenet"``, ``"none"``, or the path of a weights file (see
            ``prep.train.weights``, which loads any of them for you).
        image_size: the side of the training images, in pixels.
        task: the name of the task the model is for (one of the trainer's ``tasks``).
    """

    classes: tuple[str, ...]
    arch: str | None = None
    weights: str = "none"
    image_size: int = 224
    task: str = "classification"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class Trainer:
    """The base of every trainer; override what differs from these defaults.

    Attributes:
        task: the name of the task it trains (``"classification"``; see ``prep plugins``).
        tasks: the tasks it trains when there are several (``("classification",
            "multilabel")``): a run takes the one whose layout the dataset has, and
            ``build_model`` is told which in ``request.task``. Empty: only ``task``.
        collate: the name of the collate function for training batches (``None``: the
            task's); ``--collate`` overrides it.
        architectures: the names ``--arch`` accepts, shown in ``prep train --help`` and
            ``prep plugins`` (empty: the trainer has no choice of architecture).
        default_arch: the architecture used when ``--arch`` is not given.
        recipes: the names ``--recipe`` accepts; the first is the default.
        default_weights: what ``--weights`` means when it is not given (``imagenet``,
            ``none``, or a file's path).
        default_batch_size: images per batch when ``--batch-size`` is not given.
    """

    task: str = "classification"
    tasks: tuple[str, ...] = ()
    collate: str | None = None
    architectures: tuple[str, ...] = ()
    default_arch: str | None = None
    recipes: tuple[str, ...] = ("default",)
    default_weights: str = "none"
    default_batch_size: int = 64

    def build_model(self, request: ModelRequest) -> "torch.nn.Module | tuple[torch.nn.Module, torch.nn.Module | None]":
        """The model for ``request``: a module, or ``(model, head)`` where ``head`` is the
        newly initialised part (it gives users ``--freeze-backbone`` and a lower learning
        rate for the rest, ``TrainConfig.backbone_lr_scale``). The model takes normalised
        float images ``N x 3 x H x W`` and returns what the task's loss and metrics take
        (classification: logits ``N x classes``). Checkpoints are reloaded by calling this
        again with ``weights="none"``, so it must depend on nothing else."""
        raise NotImplementedError(f"{type(self).__name__} must define build_model(request)")

    def recipe(self, name: str, request: ModelRequest) -> TrainConfig:
        """The training settings of the recipe ``name`` (one of ``recipes``, already
        checked). Options given on the command line replace its values. Default:
        ``TrainConfig()``."""
        return TrainConfig()

    def loss(self, config: TrainConfig, classes: list[str]) -> "Loss | None":
        """``loss(outputs, targets) -> scalar tensor``, or ``None`` for the task's default.
        Supply one for targets the default does not take, or another objective."""
        return None

    def pretrained(self, request: ModelRequest) -> bool:
        """True when the model starts from trained weights, torchvision's or a file's, so
        that ``--normalize auto`` uses ImageNet's constants (else the dataset's ``stats.json``).
        A file is taken to hold weights trained on ImageNet-normalised images, as nearly
        every published one is; ``--normalize dataset`` says otherwise."""
        return request.weights != "none"

    def pretrained_normalization(self, request: ModelRequest) -> "tuple[list[float], list[float], str] | None":
        """The mean and std that the starting weights were trained with, and where they
        come from in words, for ``--normalize auto`` when ``pretrained(request)``; ``None``:
        ImageNet's constants. A timm architecture's come from its pretrained configuration."""
        return None

    def find_architectures(self, pattern: str) -> list[dict[str, Any]]:
        """The architectures matching the shell pattern ``pattern``, as ``prep plugins
        --arch`` lists them: ``arch`` and ``pretrained``, the names of the pretrained
        weights known for it (empty: none, or unknown). Default: ``architectures``."""
        import fnmatch

        return [{"arch": arch, "pretrained": []} for arch in self.architectures if fnmatch.fnmatchcase(arch, pattern)]

    def trained_tasks(self) -> tuple[str, ...]:
        """The names of the tasks this trainer trains: ``tasks``, else ``(task,)``."""
        return tuple(self.tasks) or (self.task,)

    def choose_arch(self, requested: str | None) -> str | None:
        """The architecture to build: ``requested`` (checked against ``architectures``),
        else ``default_arch``.

        Raises:
            UsageError: an architecture this trainer does not offer.
        """
        if requested is None:
            return self.default_arch
        if not self.architectures:
            raise UsageError(f"This trainer has no choice of architecture; leave out --arch (it was {requested!r})")
        if requested not in self.architectures:
            raise UsageError(f"--arch must be one of this trainer's {', '.join(self.architectures)}, not {requested!r}")
        return requested

    def choose_recipe(self, requested: str | None) -> str:
        """``requested`` if it is one of ``recipes``, else the first recipe.

        Raises:
            UsageError: a recipe this trainer does not have.
        """
        if requested is None:
            return self.recipes[0]
        if requested not in self.recipes:
            raise UsageError(f"--recipe must be one of this trainer's {', '.join(self.recipes)}, not {requested!r}")
        return requested

    def describe(self) -> dict[str, Any]:
        """What ``prep plugins`` and ``prep train --help`` show about this trainer."""
        doc = (type(self).__doc__ or "").strip().splitlines()
        return {
            "task": self.task, "tasks": list(self.trained_tasks()), "summary": doc[0] if doc else "",
            "architectures": list(self.architectures), "default_arch": self.default_arch,
            "recipes": list(self.recipes), "default_recipe": self.recipes[0] if self.recipes else None,
            "collate": self.collate, "default_weights": self.default_weights, "default_batch_size": self.default_batch_size,
        }


def split_model(built: Any) -> tuple["torch.nn.Module", "torch.nn.Module | None"]:
    """``build_model``'s answer as ``(model, head)``."""
    if isinstance(built, tuple):
        model, head = built
        return model, head
    return built, None
