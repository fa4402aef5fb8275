"""Where the CLI writes: results on stdout, messages and progress bars on stderr."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prep.util.progress import Advance


class _LazyConsole:
    """A rich Console made on first use: importing rich.console costs 25 ms of every
    start-up, and quiet commands never print."""

    def __init__(self, **options) -> None:
        self._options = options
        self._console = None

    @property
    def console(self):
        """The rich Console itself, for APIs that need a real one (progress bars)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str):
        return getattr(self.console, name)


stdout = _LazyConsole(highlight=False, soft_wrap=True)
stderr = _LazyConsole(stderr=True, highlight=False)


def escape(text: str) -> str:
    """``text`` made safe to print as rich markup: a file named ``cat[1].jpg`` stays whole."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)


class Verbosity:
    level = 0  # -1 quiet, 0 normal, 1 verbose


def configure(verbose: bool, quiet: bool) -> None:
    """Apply the global --verbose/--quiet options to messages and logging."""
    Verbosity.level = 1 if verbose else -1 if quiet else 0
    # A plain handler: rich's logging handler would import rich on every start-up.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.basicConfig(handlers=[handler], force=True)
    logging.getLogger("prep").setLevel(
        logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    )


def info(message: str, *, soft_wrap: bool = False) -> None:
    """A line on stderr, unless --quiet; ``soft_wrap`` keeps a long line whole."""
    if Verbosity.level >= 0:
        stderr.print(message, soft_wrap=soft_wrap)


def chosen_dataset(given: Path | None) -> Path:
    """The dataset a command works on; when the user named none, a line says which one was
    picked and why, since a bare command otherwise runs on whatever was split last."""
    from prep.cli.workspace import choose_dataset

    dataset, origin = choose_dataset(given)
    if origin is not None:
        info(f"Dataset: {escape(str(dataset))}, {escape(origin)} (pass a path for another)", soft_wrap=True)
    return dataset


def warn(message: str) -> None:
    """A line on stderr that something was skipped or is off, unless --quiet."""
    if Verbosity.level >= 0:
        stderr.print(f"[yellow]Warning:[/] {escape(message)}", markup=True, soft_wrap=True)


class RichProgress:
    """A ``prep.util.progress.Progress`` that draws a bar on stderr, when it is a terminal.

    Args:
        min_total: tasks of fewer steps get no bar. File tasks count files, and a few
            thousand finish before a bar is worth drawing; training counts batches, each
            of which is slow enough to show.
    """

    def __init__(self, min_total: int = 2000) -> None:
        self.min_total = min_total

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        if Verbosity.level < 0 or total < self.min_total or not sys.stderr.isatty():
            yield lambda n, status=None: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=stderr.console, transient=True,
        ) as bar:
            task_id = bar.add_task(description, total=total, status="")

            def advance(n: int, status: str | None = None) -> None:
                if status is None:
                    bar.advance(task_id, n)
                else:
                    bar.update(task_id, advance=n, status=status)

            yield advance
