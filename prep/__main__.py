"""The ``prep`` executable: the CLI, with no traceback for a Ctrl-C at any moment.

Importing ``prep.cli`` already loads plugins, which can take a while; a Ctrl-C during that
import, before any command runs, would otherwise end in a traceback. This module is the
entry point so that it can catch it around the import too.
"""

from __future__ import annotations

import sys

from prep.errors import INTERRUPTED_EXIT_CODE


def main() -> None:
    try:
        from prep.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted.\n")
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None


if __name__ == "__main__":
    main()
