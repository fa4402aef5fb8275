"""Start-up that feels instant: the commands that need no model never import torch (nor
timm, which imports it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prep.testing import make_classification_dataset, make_segmentation_dataset

RUN_AND_REPORT = """
import runpy, sys
sys.argv = ["prep", *sys.argv[1:]]
try:
    runpy.run_module("prep", run_name="__main__")
except SystemExit as exit:
    code = exit.code or 0
else:
    code = 0
print("exit", code, "torch" in sys.modules or "timm" in sys.modules, file=sys.stderr)
"""


def _prep(*args: str) -> tuple[int, bool]:
    """``prep ARGS`` in a fresh interpreter: its exit code, and whether torch or timm was imported."""
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *args], capture_output=True, text=True, timeout=120)
    _, code, torch = done.stderr.strip().splitlines()[-1].split()
    return int(code), torch == "True"


@pytest.mark.parametrize("args", [["--help"], ["split", "--help"], ["train", "--help"], ["plugins"], ["plugins", "--json"]])
def test_help_and_plugins_do_not_import_torch(args: list[str]):
    assert _prep(*args) == (0, False)


@pytest.mark.parametrize("make", [make_classification_dataset, make_segmentation_dataset])
def test_stats_does_not_import_torch(make, tmp_path: Path):
    data = make(tmp_path / "data")
    assert _prep("stats", str(data), "--workers", "1") == (0, False)
    assert (data / "stats.json").exists()


def test_split_does_not_import_torch(tmp_path: Path):
    data = make_classification_dataset(tmp_path / "made")
    raw = tmp_path / "raw"
    for image in (data / "train").rglob("*.png"):
        (raw / image.parent.name).mkdir(parents=True, exist_ok=True)
        image.rename(raw / image.parent.name / image.name)
    assert _prep("split", str(raw), "--out", str(tmp_path / "split")) == (0, False)
    assert (tmp_path / "split" / "valid").is_dir()


def test_importing_prep_does_not_ask_pypi_for_albumentations_updates():
    import os

    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    code = "import os, prep, albumentations; print(os.environ['NO_ALBUMENTATIONS_UPDATE'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "1"
    assert "albumentations" not in done.stderr.lower(), done.stderr
