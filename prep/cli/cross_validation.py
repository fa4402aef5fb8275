"""How ``prep train --fold all`` speaks: a line per fold as it ends, and the cross-validation's
result at the end (each fold's best, their mean and spread, the out-of-fold score, the suspects)."""

from __future__ import annotations

from typing import Any

from prep.cli import output


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def print_fold(fold: int, folds: int, summary: dict[str, Any], earlier: bool) -> None:
    """One line for a fold that ended (or had ended before a ``--resume``)."""
    monitor = next((k[len("best_"):] for k in summary if k.startswith("best_") and k != "best_epoch"), "score")
    when = " (finished before; kept)" if earlier else ""
    output.info(
        f"fold {fold} ({fold + 1} of {folds}): {summary['status']}, best {monitor} {_number(summary.get(f'best_{monitor}'))} "
        f"at epoch {summary.get('best_epoch')}{when}",
        soft_wrap=True,
    )


def describe_cross_validation(summary: dict[str, Any]) -> str:
    """The last lines ``prep train --fold all`` prints."""
    monitor = summary["monitor"] or "score"
    lines = []
    for fold in summary["folds"]:
        lines.append(f"  fold {fold['fold']}: best {monitor} {_number(fold['best'])} (epoch {fold['best_epoch']}, {fold['status']})")
    elapsed = summary["elapsed_s"]
    rate = f", {summary['training_images_per_s']:,.0f} training images/s" if summary.get("training_images_per_s") else ""
    head = f"{summary['status']}: {len(summary['folds'])} of {summary['folds_total']} folds in {_duration(elapsed)}{rate}; run in {summary['run_dir']}"
    lines.insert(0, head)
    if summary.get("mean") is not None:
        lines.append(f"Folds' best {monitor}: mean {summary['mean']:.4f}, std {summary['std']:.4f}")
    oof = summary.get("oof")
    if oof:
        numbers = ", ".join(f"{key} {_number(value)}" for key, value in oof.items() if isinstance(value, float) or value is None)
        lines.append(f"Out-of-fold score over {oof['images']} images: {numbers} ({oof['csv']})")
    suspects = summary.get("suspects")
    if suspects:
        lines.append(suspects["about"])
    if summary["status"] == "interrupted":
        lines.append(f"Continue it with: prep train --fold all --resume --run-dir {summary['run_dir']}")
    elif oof:
        lines.append(f"Next: prep predict {summary['run_dir']} IMAGES --tta flip (the {summary['folds_total']} folds' models averaged)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"
