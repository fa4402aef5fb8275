"""The documentation site builds with no warning (mkdocs --strict: every page in the
navigation, every link and anchor found), and the README stays a README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import readme_tour_commands

REPO = Path(__file__).resolve().parents[1]


def test_the_docs_site_builds_strictly(tmp_path: Path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
        timeout=300, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for page in ("index.html", "cli/index.html", "plugins/index.html", "architecture/index.html", "changelog/index.html"):
        assert (tmp_path / "site" / page).exists(), page


def test_the_readme_is_short_and_gives_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 12_000
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    for link in ("docs/plugins.md", "docs/architecture.md", "docs/cli.md", "CHANGELOG.md"):
        assert f"]({link})" in readme and (REPO / link).exists(), link


def test_the_tours_hold_the_commands_the_readme_promises():
    classification = readme_tour_commands("Five minutes: classification")
    assert classification[0] == "source .venv/bin/activate"
    assert [c.split()[1] for c in classification[1:]] == ["sample", "split", "stats", "augment", "train", "evaluate", "predict", "export", "lr-find"]
    # Every command after the training names the run it uses the one way that survives a second run.
    assert all("runs/latest/" in c for c in classification if c.split()[1] in ("evaluate", "predict", "export"))
    assert not any("*" in c for section in ("Five minutes: classification", "Five minutes: segmentation", "Five minutes: several tags per image")
                   for c in readme_tour_commands(section))


def test_the_data_pipeline_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """docs/data-pipeline.md's example, on a small split and measured dataset in data/."""
    from typer.testing import CliRunner

    from prep.cli import app
    from conftest import write_colour_images

    root = tmp_path / "data" / "dogsandcats"
    for split, count in (("train", 4), ("valid", 2)):
        write_colour_images(root / split, count, seed=len(split))
    runner = CliRunner()
    assert runner.invoke(app, ["stats", str(root), "--workers", "1"]).exit_code == 0
    page = (REPO / "docs" / "data-pipeline.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", page, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "docs/data-pipeline.md", "exec"), namespace)
    x = namespace["x"]
    assert x.ndim == 4 and x.shape[1] == 3 and x.dtype.is_floating_point
    assert len(namespace["mean"]) == 3
