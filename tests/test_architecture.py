"""The house's rules (docs/architecture.md), checked: the import rules between packages by
import-linter, the few modules at the top, and plugins that import only what a third party can."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the packages of ``tree`` (a checkout), with its pyproject's contracts."""
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{tree / 'trainers'}")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, env=env, timeout=300)


def test_every_import_rule_holds():
    done = _lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    "module, line, broken",
    [
        ("prep/engine/fit.py", "from prep.cli import output", "Nothing outside the command line imports it"),
        ("prep/data/datasets.py", "from prep.builtin_tasks.classification import task", "Data reading knows no task"),
        ("prep/engine/epoch.py", "import prep.plugins", "The engine knows tasks and callbacks only through its own protocols"),
        ("prep/util/files.py", "from prep.masks import read", "The foundations import nothing of prep above them"),
        ("trainers/unet.py", "from prep.engine.fit import fit", "The built-in trainers are plugins like any other"),
    ],
)
def test_an_import_against_the_rules_is_caught(tmp_path: Path, module: str, line: str, broken: str):
    tree = tmp_path / "checkout"
    shutil.copytree(REPO / "prep", tree / "prep", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "trainers", tree / "trainers" / "prep_trainers", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    target = tree / (module if not module.startswith("trainers/") else module.replace("trainers/", "trainers/prep_trainers/"))
    target.write_text(target.read_text() + f"\n{line}\n")
    done = _lint_imports(tree)
    assert done.returncode == 1, done.stdout[-2000:]
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout


def test_at_most_eight_modules_live_at_the_top_of_prep():
    top = sorted(p.name for p in (REPO / "prep").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "errors.py", "hookspecs.py", "layout.py", "plugins.py", "registry.py", "testing.py"]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder, own", [("trainers", "prep_trainers"), ("examples/prep-smallcnn", "prep_smallcnn")])
def test_the_built_in_trainers_and_the_example_plugin_import_only_prep_itself(folder: str, own: str):
    """What the example plugin does, a third party can: nothing of prep's but ``prep`` and its
    test kit."""
    for path in (REPO / folder).rglob("*.py"):
        of_prep = {name for name in _imported_modules(path) if name == "prep" or name.startswith("prep.")}
        assert of_prep <= {"prep", "prep.testing"}, f"{path.relative_to(REPO)} imports {sorted(of_prep - {'prep', 'prep.testing'})}"
        assert not {name for name in _imported_modules(path) if name.startswith("prep_") and not name.startswith(own)}
