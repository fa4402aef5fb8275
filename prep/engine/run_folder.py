"""A run folder: what makes a folder one, and the one place that writes a run's files.

A run folder holds ``config.yaml`` (written first, before any epoch), ``last.pt`` and
``best.pt``, ``metrics.jsonl``/``metrics.csv``, ``tensorboard/``, ``summary.json`` and the
task's pictures, and whatever else prep's commands, plugins' callbacks and tasks add there
later (an export, evaluate's pictures, a plugin's log). What makes a folder a run is
``config.yaml`` with prep's header: the engine keeps no list of the files a run may hold, so
a file a plugin wrote never makes its run refuse to resume, and a folder of someone else's
files is never taken for a run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prep.engine.checkpoint import CheckpointError, save_checkpoint, temp_checkpoint_path
from prep.errors import PrepError
from prep.util.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)

# The statuses of a run that ran to its end (``interrupted`` is the one that did not).
FINISHED = ("completed", "early-stopped", "max-steps", "stopped")
# What makes a folder a cross-validation (``prep train --fold all``): its record, beside ``fold-<k>/`` runs.
CV_FILE = "cross-validation.json"
CV_FORMAT = "prep-cross-validation/1"
CONFIG_HEADER = "# The resolved settings of this run. Repeat it with: prep train --config THIS_FILE\n"
CHECKPOINTS = ("last.pt", "best.pt")


class RunExistsError(PrepError):
    """The run folder already holds a run, and it was not asked to resume."""


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a run that prep train started (its ``config.yaml`` has prep's
    header), finished or not."""
    try:
        with open(folder / "config.yaml", encoding="utf-8") as config:
            return config.read(len(CONFIG_HEADER)) == CONFIG_HEADER
    except (OSError, UnicodeDecodeError):
        return False


def is_cross_validation(folder: Path) -> bool:
    """Whether ``folder`` holds a cross-validation that prep train started."""
    return (folder / CV_FILE).is_file()


def fold_folder(run_dir: Path, fold: int) -> Path:
    """The run folder of a cross-validation's fold ``fold``."""
    return run_dir / f"fold-{fold}"


def read_cross_validation(folder: Path) -> dict[str, Any]:
    """A cross-validation folder's ``cross-validation.json``: ``data``, ``folds``, ``options``.

    Raises:
        FoldsError: none there, or unreadable.
    """
    import json

    from prep.errors import FoldsError

    path = folder / CV_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FoldsError(f"{folder} holds no cross-validation (no {CV_FILE}); run prep train --fold all --run-dir {folder}") from None
    except (OSError, ValueError) as exc:
        raise FoldsError(f"Cannot read {path}: {exc}") from None
    if not isinstance(value, dict) or value.get("format") != CV_FORMAT or not isinstance(value.get("folds"), int):
        raise FoldsError(f"{path} is not a prep cross-validation record ({CV_FORMAT})")
    return value


def read_summary(folder: Path) -> dict[str, Any] | None:
    """A run's ``summary.json`` (written when it stops, ``status`` first), or None when it
    has none that can be read (a run killed before it stopped)."""
    import json

    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def run_checkpoint(folder: Path) -> Path | None:
    """The checkpoint that stands for a run: its best.pt, else its last.pt (None: neither)."""
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    return None


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a folder that holds a run unless resuming, resuming a folder that does not,
    and starting a run among someone else's files.

    Raises:
        RunExistsError, CheckpointError: with what to do instead.
    """
    has_checkpoint = (run_dir / "last.pt").exists()
    if not resume and has_checkpoint:
        raise RunExistsError(
            f"{run_dir} already holds a run (last.pt); continue it with --resume, or choose another --run-dir"
        )
    if resume and not has_checkpoint:
        raise CheckpointError(
            f"Nothing to resume in {run_dir}: it has no last.pt (the run stopped before its first "
            f"checkpoint, or this is not a run folder). Start the run again without --resume."
        )
    # A run stopped before its first checkpoint may start again in its folder; any other
    # folder with files in it is someone's, and a run must not mix its files with theirs.
    if not resume and run_dir.is_dir() and not is_run_folder(run_dir):
        foreign = sorted(entry.name for entry in run_dir.iterdir() if not entry.name.startswith("."))
        if foreign:
            raise RunExistsError(
                f"{run_dir} holds files that are not a prep run's (such as {foreign[0]}); choose an empty or new --run-dir"
            )


def discard_interrupted_saves(run_dir: Path) -> None:
    """Remove what a process killed in the middle of saving a checkpoint left behind."""
    for name in CHECKPOINTS:
        temp = temp_checkpoint_path(run_dir / name)
        if temp.exists():
            log.info("Removing %s, left by a run killed while saving", temp)
            temp.unlink()


class RunIO:
    """The one place that writes a run's files and draws its progress; only the main
    process (rank 0) does."""

    def __init__(self, run_dir: Path, is_main: bool, progress: Progress = NO_PROGRESS) -> None:
        self.run_dir = run_dir
        self.is_main = is_main
        self.progress = progress if is_main else NO_PROGRESS
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            discard_interrupted_saves(run_dir)

    def save(self, name: str, state: dict[str, Any]) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir / name, state)

    def write_json(self, name: str, value: Any) -> None:
        if self.is_main:
            from prep.util.files import atomic_write_json

            atomic_write_json(self.run_dir / name, value, indent=2)

    def write_config(self, value: dict[str, Any]) -> None:
        if self.is_main:
            import yaml

            from prep.util.files import atomic_write_bytes

            text = CONFIG_HEADER + yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
            atomic_write_bytes(self.run_dir / "config.yaml", text.encode("utf-8"))

    def existing(self, name: str) -> str | None:
        """The path of ``name`` in the run folder when it exists (for the summary)."""
        path = self.run_dir / name
        return str(path) if path.exists() else None
