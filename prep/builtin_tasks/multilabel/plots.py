"""The multi-label task's picture: each tag's scores and answers, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prep.util.figures import pyplot


def plot_tags(report: dict[str, Any], path: Path, title: str | None = None) -> Path:
    """Two panels, a row per tag (rarest at the bottom): its F1 as a bar with its
    precision, recall and average precision marked; and its images found (true
    positives), missed (false negatives) and wrongly given it (false positives). Titled
    with what was measured and the overall scores."""
    plt = pyplot()
    tags = sorted(report["per_tag"], key=lambda name: (-report["per_tag"][name]["images"], name))
    rows = [report["per_tag"][name] for name in tags]
    height = max(3.5, 0.38 * len(tags) + 1.8)
    figure, (scores, answers) = plt.subplots(1, 2, figsize=(13, height), sharey=True, layout="constrained")
    positions = list(range(len(tags)))
    scores.barh(positions, [r["f1"] or 0 for r in rows], color="#9ecae1", label="F1")
    for key, marker, colour in (("precision", "^", "#d62728"), ("recall", "o", "#2ca02c"), ("ap", "D", "#6a3d9a")):
        shown = [(p, r[key]) for p, r in zip(positions, rows) if r[key] is not None]
        scores.scatter([v for _, v in shown], [p for p, _ in shown], marker=marker, color=colour, s=22, zorder=3, label=key if key != "ap" else "AP")
    scores.set_xlim(0, 1.02)
    scores.set_yticks(positions, labels=[f"{name} ({r['images']})" for name, r in zip(tags, rows)])
    scores.invert_yaxis()
    scores.set_xlabel("score at each tag's threshold (AP needs none)")
    scores.legend(loc="lower right", fontsize=8)
    found, missed, wrong = [], [], []
    for r in rows:
        tp = round((r["recall"] or 0) * r["images"])
        found.append(tp)
        missed.append(r["images"] - tp)
        wrong.append(r["predicted"] - tp)
    answers.barh(positions, found, color="#2ca02c", label="found (true positives)")
    answers.barh(positions, missed, left=found, color="#ff9896", label="missed (false negatives)")
    answers.barh([p + 0.3 for p in positions], wrong, height=0.25, color="#d62728", label="wrongly given (false positives)")
    answers.set_xlabel("images")
    answers.legend(loc="lower right", fontsize=8)
    overall = (
        f"F2 {_number(report.get('f2'))}, F1 {_number(report.get('f1'))} (per image), macro F1 {_number(report.get('macro_f1'))}, "
        f"mAP {_number(report.get('map'))} over {report.get('images', '?')} images; thresholds {report.get('thresholds', '0.5')}"
    )
    figure.suptitle(f"{title}\n{overall}" if title else overall, fontsize=10)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
