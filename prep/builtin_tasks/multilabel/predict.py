"""``prep predict`` for a multi-label model: each image's tags.

prep's CSV (default ``predictions.csv``) is ``file,tags,<p(tag)>...``: the tags whose
probability reaches their threshold, space-separated, then every tag's probability. With
``--kaggle-submission`` it is the competitions' ``image_name,tags`` (Planet's; the image's
name without its extension), and an image with no tag over its threshold gets an empty cell.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.layout import MULTILABEL, TAG_SEPARATOR

if TYPE_CHECKING:
    from prep.builtin_tasks.multilabel.task import Thresholds
    from prep.inference.predict import PredictRequest

SUBMISSION_HEADER = ("image_name", "tags")


def predict_tags(request: "PredictRequest", thresholds: "Thresholds") -> dict[str, Any]:
    """Write the request's predictions (see the module docstring); return the report."""
    from prep.errors import UsageError
    from prep.inference.predict import check_clip, class_probabilities, refuse_existing

    options, classes = request.options, request.state["classes"]
    out = refuse_existing(options.out or Path("submission.csv" if options.kaggle_submission else "predictions.csv"))
    check_clip(options.clip)
    if options.positive:
        raise UsageError(f"--positive {options.positive}: a multi-label model writes every tag that reaches its threshold")
    results = class_probabilities(request, MULTILABEL, scores="sigmoid")
    text = predictions_text(results, classes, thresholds.values, kaggle_submission=options.kaggle_submission, clip=options.clip)
    from prep.util.files import atomic_write_bytes

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 keeps its bytes
    return {**request.report(len(results), "predictions", out), "thresholds": thresholds.source}


def predictions_text(
    results: list[tuple[Path, list[float]]], classes: list[str], thresholds: tuple[float, ...], *, kaggle_submission: bool, clip: float = 0.0,
) -> str:
    """The CSV's content for ``(file, each tag's probability)`` rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUBMISSION_HEADER if kaggle_submission else ("file", "tags", *classes))
    for image, probabilities in results:
        tags = TAG_SEPARATOR.join(tag for tag, p, t in zip(classes, probabilities, thresholds) if p >= t)
        if kaggle_submission:
            writer.writerow((image.stem, tags))
        else:
            writer.writerow((str(image), tags, *(f"{min(max(p, clip), 1 - clip):.6f}" for p in probabilities)))
    return buffer.getvalue()


def read_submission(path: Path) -> dict[str, tuple[str, ...]]:
    """A submission's ``image_name -> tags`` (what ``--kaggle-submission`` wrote), for checks."""
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    if not rows or tuple(rows[0]) != SUBMISSION_HEADER:
        from prep.errors import PrepError

        raise PrepError(f"{path} does not start with {','.join(SUBMISSION_HEADER)}")
    return {row[0]: tuple(row[1].split(TAG_SEPARATOR)) if row[1] else () for row in rows[1:]}
