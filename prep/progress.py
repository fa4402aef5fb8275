"""How library code reports progress without knowing who is watching.

Long-running functions take a ``Progress``; the CLI passes one that draws a rich progress
bar, a Python caller passes nothing and gets ``NO_PROGRESS``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Protocol

Advance = Callable[[int], None]


class Progress(Protocol):
    def task(self, description: str, total: int) -> AbstractContextManager[Advance]:
        """A context manager yielding ``advance(n)`` for a task of ``total`` steps."""


class _NoProgress:
    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda n: None


NO_PROGRESS: Progress = _NoProgress()
