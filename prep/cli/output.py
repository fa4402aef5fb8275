"""Where the CLI writes: results on stdout, messages and progress bars on stderr."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from prep.progress import Advance


class _LazyConsole:
    """A rich Console made on first use: importing rich.console costs 25 ms of every
    start-up, and quiet commands never print."""

    def __init__(self, **options) -> None:
        self._options = options
        self._console = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


stdout = _LazyConsole(highlight=False, soft_wrap=True)
stderr = _LazyConsole(stderr=True, highlight=False)


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


def info(message: str) -> None:
    if Verbosity.level >= 0:
        stderr.print(message)


class RichProgress:
    """A ``prep.progress.Progress`` that draws a bar on stderr for long tasks."""

    MIN_TOTAL = 2000  # shorter tasks finish before a bar is worth drawing

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        if Verbosity.level < 0 or total < self.MIN_TOTAL or not sys.stderr.isatty():
            yield lambda n: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=stderr, transient=True,
        ) as bar:
            task_id = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task_id, n)
