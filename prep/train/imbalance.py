"""What a run does about an imbalanced training split, decided before anything is written.

The task counts its training split's classes (``class_counts``: images for classification,
pixels for segmentation, see ``prep.stats.balance``). When the largest class has more than
2x the samples of the smallest, the task's ``defaults_for_imbalance`` apply to every setting
whose option was not given: classification monitors ``valid_balanced_acc`` and weighs its
loss with ``--class-weights auto``; multiclass segmentation weighs its pixels so. Class
weights are not added to a run that draws classes evenly already (``--sampler balanced``).
``--class-weights auto`` then becomes numbers, so that ``config.yaml`` repeats the run with
the weights it had, and ``--sampler balanced`` becomes a weight per training sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prep.engine.config import SAMPLERS, TrainConfig
from prep.errors import UsageError, check_choice
from prep.stats.balance import ClassBalance, auto_class_weights
from prep.train.options import TrainOptions

if TYPE_CHECKING:
    from prep.data.index import DatasetIndex
    from prep.engine.task import Task

AUTO = "auto"


@dataclass
class Imbalance:
    """What was found and done.

    Attributes:
        balance: the training split's counts per class (None: the task does not count them).
        adapted: the settings the imbalance chose (name -> value), for the run's header.
        auto_weights: whether the class weights were computed (``--class-weights auto``).
        sample_weights: one weight per training sample for ``--sampler balanced``, else None.
        absent_from_valid: the classes no validation sample holds (their scores are n/a).
    """

    balance: ClassBalance | None
    adapted: dict[str, Any] = field(default_factory=dict)
    auto_weights: bool = False
    sample_weights: list[float] | None = None
    absent_from_valid: list[str] = field(default_factory=list)

    def describe_valid(self) -> str | None:
        """The header's line about classes the validation split lacks, if any."""
        if not self.absent_from_valid:
            return None
        which = ", ".join(self.absent_from_valid)
        return f"the validation split holds no {which}: {'its' if len(self.absent_from_valid) == 1 else 'their'} scores are n/a and left out of the means"

    def describe(self, config: TrainConfig) -> str | None:
        """The header's line about the classes' balance (None when nothing is known)."""
        if self.balance is None:
            return None
        text = self.balance.describe()
        absent = self.balance.absent()
        if absent:
            text += f"; no training {self.balance.unit} of {', '.join(absent)}"
        done = []
        if "monitor" in self.adapted:
            done.append(f"monitoring {self.adapted['monitor']}")
        if config.class_weights is not None:
            weights = ", ".join(f"{name} {w:.3g}" for name, w in zip(self.balance.classes, config.class_weights))
            done.append(f"class weights {'auto ' if self.auto_weights else ''}({weights})")
        if config.sampler == "balanced":
            done.append("sampling classes evenly")
        return text + (f"; {', '.join(done)}" if done else "")


def check_sampler(sampler: str) -> str:
    """Raises: UsageError: a sampler prep does not have."""
    return check_choice("--sampler", sampler, SAMPLERS)


def resolve_imbalance(
    task: "Task", index: "DatasetIndex", classes: list[str], config: TrainConfig, options: TrainOptions, *,
    train_held: list[tuple[int, ...]] | None = None, with_valid: bool = True,
) -> Imbalance:
    """Count the training split's classes, apply the task's defaults for an imbalanced one
    to ``config`` (in place), resolve ``--class-weights auto`` and ``--sampler balanced``
    (from ``train_held``, the task's ``sample_classes`` of the training split, when the
    caller has it), and find the classes the validation split lacks (``with_valid``).

    Raises:
        UsageError: ``auto`` or ``balanced`` for a task that does not count its classes,
            another word for the weights, or ``balanced`` with a class that has no sample.
    """
    check_sampler(config.sampler)
    if isinstance(config.class_weights, str) and config.class_weights != AUTO:
        raise UsageError(f"--class-weights takes auto or one number per class (1,5,5), not {config.class_weights!r}")
    balance = None
    if hasattr(task, "class_counts"):
        counts = tuple(int(n) for n in task.class_counts(index, classes))
        balance = ClassBalance(tuple(classes), counts, getattr(task, "count_unit", "images"))
    imbalance = Imbalance(balance)
    if balance is not None and balance.imbalanced and hasattr(task, "defaults_for_imbalance"):
        for name, value in task.defaults_for_imbalance(classes).items():
            if getattr(options, name, None) is not None:
                continue  # the user chose
            if name == "class_weights" and config.sampler == "balanced":
                continue  # classes are drawn evenly already
            setattr(config, name, value)
            imbalance.adapted[name] = value
    if config.class_weights == AUTO:
        if balance is None:
            raise UsageError(f"--class-weights auto needs a task that counts its classes; the {task.name} task does not: give one number per class")
        if hasattr(task, "auto_class_weights"):
            config.class_weights = [float(w) for w in task.auto_class_weights(index, classes, balance.counts)]
        else:
            config.class_weights = auto_class_weights(balance.counts)
        imbalance.auto_weights = True
    if config.sampler == "balanced":
        imbalance.sample_weights = _sample_weights(task, index, classes, train_held)
    if with_valid and hasattr(task, "sample_classes"):
        held = {c for sample in task.sample_classes(index, "valid", classes) for c in sample}
        imbalance.absent_from_valid = [name for i, name in enumerate(classes) if i not in held]
    return imbalance


def _sample_weights(task: "Task", index: "DatasetIndex", classes: list[str], held: list[tuple[int, ...]] | None) -> list[float]:
    from prep.data.sampling import balanced_weights

    if not hasattr(task, "sample_classes"):
        raise UsageError(f"--sampler balanced needs a task that knows each sample's classes; the {task.name} task does not")
    if held is None:
        held = task.sample_classes(index, "train", classes)
    per_class = [0] * len(classes)
    for sample in held:
        for c in sample:
            per_class[c] += 1
    empty = [name for name, n in zip(classes, per_class) if n == 0]
    if empty:
        raise UsageError(
            f"--sampler balanced cannot draw {', '.join(empty)}: no training image holds {'it' if len(empty) == 1 else 'them'}; "
            f"add images, or leave out --sampler"
        )
    return balanced_weights(held, len(classes))
