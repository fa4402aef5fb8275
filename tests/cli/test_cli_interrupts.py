"""Ctrl-C at any moment: exit 130, one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import install_fake_plugin

COMMAND_INTERRUPTED = """
    from prep.hookspecs import hookimpl

    @hookimpl
    def register_commands(app):
        @app.command("slow")
        def slow():
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of a command
"""


def test_ctrl_c_in_any_command_exits_130_without_a_traceback(site: Path) -> None:
    install_fake_plugin(site, "misbehaving_interrupted", COMMAND_INTERRUPTED)
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-m", "prep", "slow"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "Interrupted." in done.stderr and "Traceback" not in done.stderr


def test_ctrl_c_while_prep_starts_exits_130_without_a_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The entry point catches a Ctrl-C that lands before any command runs (plugin loading)."""
    import prep.cli
    from prep.__main__ import main

    def interrupted_start() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prep.cli, "main", interrupted_start)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 130
    assert "Interrupted." in capsys.readouterr().err
