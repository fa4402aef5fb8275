"""Where a run's numbers go: metrics.jsonl and metrics.csv always, TensorBoard when installed.

One record per epoch (a flat dict of numbers and strings). The JSON Lines file is appended
and flushed after every epoch, so a killed run keeps what it measured; the CSV is rewritten
each time, so that a column that appears later (a metric first logged in epoch 3) still
gets a header.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterator

from prep.util.files import atomic_write_bytes

log = logging.getLogger(__name__)


class MetricsLog:
    """Appends epoch records to ``run_dir/metrics.jsonl`` and ``metrics.csv``, and their
    numbers to TensorBoard when it is installed (a per-class list as ``name/<class>``)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, classes: list[str] | None = None, keep_through: int | None = None) -> None:
        """Args:
            keep_through: continue the existing log up to this epoch only (a resumed run
                passes the epoch its checkpoint holds; None keeps every epoch). Epochs
                logged after it, by a process killed before it saved that epoch's
                checkpoint, are dropped: the resumed run measures them again, and each
                epoch stays in the log once.
        """
        self.run_dir = run_dir
        self.classes = classes or []
        self.records: list[dict[str, Any]] = []
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        if self.jsonl.exists():
            kept: dict[int, dict[str, Any]] = {}
            for record in self._read_jsonl():
                if keep_through is None or record["epoch"] <= keep_through:
                    kept.setdefault(record["epoch"], record)
            self.records = [kept[e] for e in sorted(kept)]
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            atomic_write_bytes(self.jsonl, text.encode("utf-8"), durable=False)
        self._writer = self._tensorboard_writer() if tensorboard else None

    def _tensorboard_writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _read_jsonl(self) -> Iterator[dict[str, Any]]:
        for line in self.jsonl.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # the half-written last line of a killed process
                continue
            if isinstance(record, dict) and isinstance(record.get("epoch"), int):
                yield record

    def append(self, record: dict[str, Any]) -> None:
        """Log one epoch's record (must hold an ``epoch`` key)."""
        self.records = [r for r in self.records if r.get("epoch") != record["epoch"]] + [record]
        with self.jsonl.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
        self._write_csv()
        if self._writer is not None:
            for tag, value in self._scalars(record):
                self._writer.add_scalar(tag, value, record["epoch"])
            self._writer.flush()

    def _scalars(self, record: dict[str, Any]) -> Iterator[tuple[str, float]]:
        for key, value in record.items():
            if key == "epoch":
                continue
            if isinstance(value, (int, float)):
                yield key, float(value)
            elif isinstance(value, list) and len(value) == len(self.classes):
                # A class with no validation images has None, which TensorBoard cannot plot.
                yield from ((f"{key}/{name}", float(v)) for name, v in zip(self.classes, value) if isinstance(v, (int, float)))

    def _flat(self, record: dict[str, Any]) -> dict[str, Any]:
        """A record as CSV columns: its numbers, and each per-class list as ``name[class]``
        (a class with no validation images is an empty cell)."""
        flat = {}
        for key, value in record.items():
            if isinstance(value, list) and len(value) == len(self.classes) and all(v is None or isinstance(v, (int, float)) for v in value):
                flat.update({f"{key}[{name}]": v for name, v in zip(self.classes, value)})
            elif not isinstance(value, (list, dict)):
                flat[key] = value
        return flat

    def _write_csv(self) -> None:
        rows = [self._flat(record) for record in self.records]
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.csv, buffer.getvalue().encode(), durable=False)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
