"""scripts/setup.sh, the first thing every user and CI runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_setup_refuses_to_start_on_a_disk_too_small_for_torch(tmp_path: Path):
    # A disk that fills during the torch install leaves a venv that fails with "marshal data
    # too short"; setup must say what is wrong before it installs anything.
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", checkout / "scripts" / "setup.sh")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    df = fake_bin / "df"  # 3 GB available wherever it is asked
    df.write_text("#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
                  "echo '/dev/x 100000000 97000000 3145728 97% /'\n")
    df.chmod(0o755)
    done = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=checkout, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}"),
    )
    assert done.returncode == 1
    assert f"installing torch needs about 8 GB free; {checkout} has 3 GB" in done.stderr
    assert not (checkout / ".venv").exists()
