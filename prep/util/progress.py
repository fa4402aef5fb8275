"""How library code reports progress without knowing who is watching.

Long-running functions take a ``Progress``; the CLI passes one that draws a rich progress
bar, a Python caller passes nothing and gets ``NO_PROGRESS``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Protocol

Advance = Callable[..., None]  # advance(n, status=None): n more steps done; status is live text


class Progress(Protocol):
    def task(self, description: str, total: int) -> AbstractContextManager[Advance]:
        """A context manager yielding ``advance(n, status=None)`` for a task of ``total``
        steps; ``status`` is a short live text such as the current loss."""


class _NoProgress:
    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda n, status=None: None


NO_PROGRESS: Progress = _NoProgress()
