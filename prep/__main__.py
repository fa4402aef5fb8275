"""The ``prep`` executable: the CLI, with no traceback for a Ctrl-C at any moment.

Importing ``prep.cli`` already loads plugins, which can take a while; a Ctrl-C during that
import, before any command runs, would otherwise end in a traceback. This module is the
entry point so that it can catch it around the import too (``import prep`` itself, which
must come first, imports almost nothing). A Ctrl-C once the command is done, while Python
shuts down (joining threads, finalising loaders), ends the process at once, quietly,
instead of printing "Exception ignored ... KeyboardInterrupt".
"""

from __future__ import annotations

import os
import signal
import sys

from prep.errors import INTERRUPTED_EXIT_CODE


def _exit_interrupted(signum, frame) -> None:  # noqa: ANN001 - signal's signature
    os._exit(INTERRUPTED_EXIT_CODE)


def main() -> None:
    try:
        from prep.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted.\n")
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    finally:
        try:
            signal.signal(signal.SIGINT, _exit_interrupted)
        except ValueError:  # not the main thread (prep run from a thread): leave it
            pass


if __name__ == "__main__":
    main()
