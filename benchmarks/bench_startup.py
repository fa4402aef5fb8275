"""How long prep takes to answer, against the interpreter starting and doing nothing.

Times, in turn and each ``--repeat`` times, as real processes of this interpreter:

* ``python -c pass``: the floor, what any Python command costs;
* ``python -c "import torch"``: what a command pays when it imports torch;
* ``prep --help``, ``prep plugins``, ``prep split --help`` and ``prep train --help``
  (as ``python -m prep``, so that no console-script wrapper is timed).

It prints the median wall time and peak memory (maximum resident set) of each, and each
prep command's ratio to ``python -c pass``. The commands run in turn, round after round,
so that a busy machine weighs on all of them alike.

Usage: python benchmarks/bench_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CONTENDERS = {
    "python -c pass": ["-c", "pass"],
    'python -c "import torch"': ["-c", "import torch"],
    "prep --help": ["-m", "prep", "--help"],
    "prep plugins": ["-m", "prep", "plugins"],
    "prep split --help": ["-m", "prep", "split", "--help"],
    "prep train --help": ["-m", "prep", "train", "--help"],
}
FLOOR = "python -c pass"


def run_once(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident bytes of ``python args...``."""
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"python {' '.join(args)} failed: {process.stderr.read().decode()[-500:]}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    peaks: dict[str, int] = dict.fromkeys(CONTENDERS, 0)
    for name, command in CONTENDERS.items():  # warm the file cache once, untimed
        run_once(command)
    for _ in range(args.repeat):
        for name, command in CONTENDERS.items():
            seconds, peak = run_once(command)
            times[name].append(seconds)
            peaks[name] = max(peaks[name], peak)
    floor = statistics.median(times[FLOOR])
    print(f"{'command':<28} {'median':>9} {'x pass':>7} {'peak memory':>12}   (median of {args.repeat})")
    for name in CONTENDERS:
        median = statistics.median(times[name])
        print(f"{name:<28} {median * 1000:>7.0f} ms {median / floor:>6.1f}x {peaks[name] / 1e6:>9.0f} MB")


if __name__ == "__main__":
    main()
