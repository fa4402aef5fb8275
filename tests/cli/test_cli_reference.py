"""docs/cli.md is the CLI's own help: generated, and current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_generated_cli_reference_is_current():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PREP_LOAD_PLUGINS"},
    )
    assert done.returncode == 0, done.stderr + " (regenerate it: python scripts/cli_reference.py)"


def test_the_reference_shows_every_command_and_every_option():
    import typer.main

    from prep.cli import app

    page = (REPO / "docs" / "cli.md").read_text()
    group = typer.main.get_command(app)
    for name in ("split", "stats", "augment", "train", "evaluate", "predict", "lr-find", "export", "sample", "plugins"):
        assert f"## `prep {name}`" in page
        for param in group.get_command(typer.Context(group), name).params:
            assert all(opt in page for opt in param.opts if opt.startswith("--")), (name, param.opts)
