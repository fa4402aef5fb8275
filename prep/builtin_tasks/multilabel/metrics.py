"""The multi-label task's metrics, from sums that torchrun's processes can add up.

A tag is predicted when its probability (the sigmoid of its logit) reaches its threshold:
0.5 during training, the tuned ones (``thresholds``) in evaluate and predict.

* ``f1``, ``f2``: the F-scores of each image's predicted tags against its true ones,
  averaged over the images (sample-averaged, as Kaggle's Planet scores F2:
  ``F_b = (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp)``; an image with no true and no
  predicted tag scores 1);
* ``macro_f1``: the mean over the tags that the pass holds of each tag's F1;
* ``map``: the mean over those tags of their average precision, threshold-free: a model
  that always answers the common tags scores low on it (the default monitor, ``valid_map``);
* validation also: ``per_tag_precision``, ``per_tag_recall`` (``None`` where undefined),
  ``per_tag_ap``, ``per_tag_images`` (images holding each tag), ``per_tag_predicted``
  (images given it), and ``thresholds_f1`` and ``thresholds_f2``: each tag's threshold
  that maximises its own F1 (F2) over the pass (0.5 for a tag that fewer than
  ``MIN_TUNING_IMAGES`` images of the pass hold: a threshold fitted to two images is noise).

Average precision and the thresholds come from histograms of each tag's probabilities for
the images that hold it and those that do not (``BINS`` bins over [0, 1]): sums, unlike a
list of every probability, so they add up over processes and a Ctrl-C'd epoch. The AP is
exact for probabilities that fall in distinct bins, and the thresholds are bin edges
(steps of 1/256).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

BINS = 256
MIN_TUNING_IMAGES = 5
BETAS = (1, 2)
DEFAULT_THRESHOLD = 0.5


def fbeta(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, beta: float) -> torch.Tensor:
    """F-beta of counts (elementwise); 0 where tp, fp and fn are all 0."""
    b2 = beta * beta
    denominator = (1 + b2) * tp + b2 * fn + fp
    return torch.where(denominator > 0, (1 + b2) * tp / denominator.clamp(min=1e-12), torch.zeros_like(denominator))


class MultiLabelMetrics:
    """See the module docstring.

    Args:
        tags: how many. train: the light accumulator of training (no per-tag tables).
        thresholds: each tag's threshold (default 0.5 for every tag).
    """

    def __init__(self, tags: int, train: bool, thresholds: Sequence[float] | None = None) -> None:
        self.train = train
        self.thresholds = torch.tensor(list(thresholds) if thresholds is not None else [DEFAULT_THRESHOLD] * tags, dtype=torch.float32)
        self.counts = {
            "images": torch.zeros((), dtype=torch.int64),
            "f1_sum": torch.zeros((), dtype=torch.float64), "f2_sum": torch.zeros((), dtype=torch.float64),
            "tp": torch.zeros(tags, dtype=torch.int64), "fp": torch.zeros(tags, dtype=torch.int64), "fn": torch.zeros(tags, dtype=torch.int64),
            "positive_hist": torch.zeros((tags, BINS), dtype=torch.int64), "negative_hist": torch.zeros((tags, BINS), dtype=torch.int64),
        }

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        device = outputs.device
        counts = self.counts = {name: value.to(device) for name, value in self.counts.items()}
        probabilities = outputs.float().sigmoid()
        truth = targets.to(device) > 0.5
        predicted = probabilities >= self.thresholds.to(device)
        tp = (predicted & truth).sum(dim=1).double()
        fp = (predicted & ~truth).sum(dim=1).double()
        fn = (~predicted & truth).sum(dim=1).double()
        empty = (tp + fp + fn) == 0  # nothing true, nothing predicted: right
        for beta in BETAS:
            scores = torch.where(empty, torch.ones_like(tp), fbeta(tp, fp, fn, beta))
            counts[f"f{beta}_sum"] += scores.sum()
        counts["images"] += len(outputs)
        counts["tp"] += (predicted & truth).sum(dim=0)
        counts["fp"] += (predicted & ~truth).sum(dim=0)
        counts["fn"] += (~predicted & truth).sum(dim=0)
        tags = outputs.shape[1]
        bins = (probabilities * BINS).long().clamp_(0, BINS - 1)
        flat = bins + torch.arange(tags, device=device).view(1, -1) * BINS
        for name, chosen in (("positive_hist", truth), ("negative_hist", ~truth)):
            counts[name] += torch.bincount(flat[chosen], minlength=tags * BINS).view(tags, BINS)

    def compute(self) -> dict[str, Any]:
        counts = {name: value.cpu() for name, value in self.counts.items()}
        images = int(counts["images"])
        tp, fp, fn = (counts[name].double() for name in ("tp", "fp", "fn"))
        held = (tp + fn) > 0
        f1_per_tag = fbeta(tp, fp, fn, 1)
        ap = average_precision(counts["positive_hist"], counts["negative_hist"])
        scores = {
            "f1": float(counts["f1_sum"]) / images if images else None,
            "f2": float(counts["f2_sum"]) / images if images else None,
            "macro_f1": float(f1_per_tag[held].mean()) if bool(held.any()) else None,
            "map": float(ap[held].mean()) if bool(held.any()) else None,
        }
        if self.train:
            return scores
        return {
            **scores,
            "per_tag_precision": [float(t / (t + f)) if t + f > 0 else None for t, f in zip(tp, fp)],
            "per_tag_recall": [float(t / (t + f)) if t + f > 0 else None for t, f in zip(tp, fn)],
            "per_tag_ap": [float(a) if h else None for a, h in zip(ap, held)],
            "per_tag_images": [int(n) for n in counts["positive_hist"].sum(dim=1)],
            "per_tag_predicted": [int(t + f) for t, f in zip(tp, fp)],
            **{f"thresholds_f{beta}": tuned_thresholds(counts["positive_hist"], counts["negative_hist"], beta) for beta in BETAS},
        }


def average_precision(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Each tag's average precision from its histograms (``tags x BINS``): the precision at
    each bin's threshold, from the highest down, weighted by the recall it adds (0 for a tag
    with no positives). Images in one bin count as tied scores, as scikit-learn counts ties."""
    tp = positive.flip(1).cumsum(1).double()
    fp = negative.flip(1).cumsum(1).double()
    total = tp[:, -1:].clamp(min=1)
    precision = tp / (tp + fp).clamp(min=1)
    gained = positive.flip(1).double() / total
    return (precision * gained).sum(dim=1)


def tuned_thresholds(positive: torch.Tensor, negative: torch.Tensor, beta: float) -> list[float]:
    """Each tag's threshold, among the bin edges, that maximises its F-beta (ties: the one
    nearest 0.5; a tag with fewer than ``MIN_TUNING_IMAGES`` positives keeps 0.5)."""
    # Predicting "at or above edge k" takes bins k..BINS-1: the counts from the top down.
    tp = positive.flip(1).cumsum(1).flip(1).double()  # tp[:, k]: positives in bins >= k
    fp = negative.flip(1).cumsum(1).flip(1).double()
    fn = tp[:, :1] - tp
    scores = fbeta(tp, fp, fn, beta)
    edges = torch.arange(BINS, dtype=torch.float64) / BINS
    nearness = (edges - DEFAULT_THRESHOLD).abs()
    thresholds = []
    for tag in range(positive.shape[0]):
        if int(positive[tag].sum()) < MIN_TUNING_IMAGES:
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        best = scores[tag].max()
        candidates = torch.nonzero(scores[tag] >= best - 1e-12).flatten()
        chosen = candidates[nearness[candidates].argmin()]
        thresholds.append(float(edges[chosen]) if chosen > 0 else 1.0 / BINS)
    return thresholds
