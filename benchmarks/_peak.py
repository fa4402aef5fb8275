"""Running a benchmark's contender in its own process, with the peak memory of that process
and all its children (loader workers, decode pools), so that each starts from nothing.

Memory is the proportional set size (PSS, Linux): a page shared by several processes (a
memory-mapped cache, the forked interpreter) counts once in total, not once per worker.
It is read every half second: reading it walks every mapped page, and more often would
slow the contender being measured (by a fifth for the cached loader at 0.05 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started, from each of its threads' ``children`` list."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return found


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pss(pid: int) -> int:
    """PSS of ``pid`` and every process below it, in bytes."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _pss(current)
        todo += _children(current)
    return total


def run_measured(args: list[str], poll_s: float = 0.5, whole_output: bool = False) -> tuple[dict, int]:
    """Run ``python args...``; return the JSON it prints last (``whole_output``: all it
    prints is one JSON document, as ``prep ... --json`` prints it), and its peak PSS in bytes."""
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss(process.pid))
            time.sleep(poll_s)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = process.communicate()
    done.set()
    watcher.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(args)} failed with exit code {process.returncode}")
    return json.loads(out if whole_output else out.strip().splitlines()[-1]), peak
