"""The documentation site builds with no warning (mkdocs --strict: every page in the
navigation, every link and anchor found), and the README stays a README."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
