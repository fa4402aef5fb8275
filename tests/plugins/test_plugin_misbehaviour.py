"""Plugins that misbehave: each failure names the plugin, nothing moves, nothing escapes OUT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prep.cli import app
from prep.errors import PluginError
from prep.plugins import create_plugin_host, reset_plugin_host

from conftest import jpeg_bytes, snapshot, write
from conftest import install_fake_plugin

runner = CliRunner()


def install(site: Path, name: str, source: str) -> None:
    install_fake_plugin(site, name, source, "6.6")
    reset_plugin_host()


def flat(root: Path, n: int = 8) -> Path:
    for i in range(n):
        write(root / "train" / f"cat.{i}.jpg", jpeg_bytes(i))
        write(root / "train" / f"dog.{i}.jpg", jpeg_bytes(100 + i))
    return root


@pytest.mark.parametrize("raise_", ["raise SystemExit(3)", "raise KeyboardInterrupt", "import sys; sys.exit()"])
def test_a_plugin_that_exits_while_imported_never_takes_prep_down(site: Path, raise_: str) -> None:
    install_fake_plugin(site, "misbehaving_exit", raise_ + "\n", "6.6")
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-m", "prep", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "split" in done.stdout
    assert "misbehaving_exit" in done.stderr and "6.6" in done.stderr


def test_a_hook_that_raises_system_exit_is_isolated_and_named(site: Path) -> None:
    install(site, "misbehaving_hook", """
        from prep.hookspecs import hookimpl

        @hookimpl
        def register_splitters(register):
            raise SystemExit("bye")
    """)
    host = create_plugin_host()
    host.fill_registry("register_splitters", "splitter")
    assert [(f.plugin, f.stage) for f in host.failures] == [("misbehaving_hook", "register_splitters")]
    assert "SystemExit" in host.failures[0].error


SPLITTER = """
    from prep.hookspecs import hookimpl

    @hookimpl
    def register_splitters(register):
        register("evil", lambda units, request, seed: {answer})
"""


@pytest.mark.parametrize(("answer", "message"), [
    ('["../x"] * len(units)', "split name '../x'"),
    ('["train"] * (len(units) - 3)', "for 16 units"),
    ('None', "not a list of split names"),
    ('1 / 0', "ZeroDivisionError"),
])
def test_a_splitter_that_answers_wrong_is_refused_before_anything_moves(site: Path, tmp_path: Path, answer: str, message: str) -> None:
    install(site, "misbehaving_splitter", SPLITTER.format(answer=answer))
    src = flat(tmp_path / "box" / "src")
    before = snapshot(tmp_path / "box")
    result = runner.invoke(app, ["split", str(src), "--splitter", "evil", "--out", str(tmp_path / "box" / "out")])
    assert result.exit_code == 1, result.output
    assert "misbehaving_splitter" in result.output and message in result.output
    assert "Nothing was moved" in result.output and "Traceback" not in result.output
    assert snapshot(tmp_path / "box") == before
    assert not (tmp_path / "box" / "x").exists()


@pytest.mark.parametrize(("body", "message"), [
    ("return None", "returned NoneType"),
    ("return [object()]", "not an albumentations transform"),
    ("raise RuntimeError('boom')", "RuntimeError: boom"),
])
def test_a_preset_that_returns_no_transforms_is_named(site: Path, body: str, message: str) -> None:
    install(site, "misbehaving_preset", f"""
        from prep.hookspecs import hookimpl

        def broken(image_size, train, task):
            {body}

        @hookimpl
        def register_augmentation_presets(register):
            register("broken", broken)
    """)
    from prep.augment.presets import build_pipeline

    with pytest.raises(PluginError, match=message) as raised:
        build_pipeline("broken", 32, train=True)
    assert "misbehaving_preset" in str(raised.value)


COLLATE = """
    import torch
    from prep.data.collate import Batch
    from prep.hookspecs import hookimpl

    def soft(samples):
        images = torch.stack([s[0] for s in samples])
        {body}

    @hookimpl
    def register_collate_fns(register):
        register("soft", soft)
"""


@pytest.mark.parametrize(("body", "message"), [
    # Class probabilities are welcome, but over the dataset's 2 classes, not 3.
    ("return Batch(images, torch.full((len(samples), 3), 1 / 3))", "(4, 3) torch.float32 tensor for 4 images"),
    ("return Batch(images, torch.full((len(samples),), 7))", "returned class index 7, but the dataset has 2 classes"),
    ("return images", "returned Tensor; the engine needs"),
    ("raise ValueError('no')", "ValueError: no"),
    # The worker process ends without a word: the parent names what ran there.
    ("import os; os._exit(3)", "A loader worker died while making a batch"),
])
def test_a_collate_function_that_returns_what_the_engine_cannot_use_is_named(site: Path, tmp_path: Path, body: str, message: str) -> None:
    install(site, "misbehaving_collate", COLLATE.format(body=body))
    data = tmp_path / "d"
    for split, n in (("train", 4), ("valid", 2)):
        for c in ("a", "b"):
            for i in range(n):
                write(data / split / c / f"{i}.jpg", jpeg_bytes(len(split) * 100 + ord(c) * 10 + i))
    result = runner.invoke(app, [
        "train", "--weights", "none", str(data), "--collate", "soft", "--arch", "resnet18", "--epochs", "1", "--image-size", "16",
        "--batch-size", "4", "--workers", "1", "--run-dir", str(tmp_path / "run"),
    ])
    assert result.exit_code == 1, result.output
    assert "misbehaving_collate" in result.output and message in result.output, result.output
    assert "Traceback" not in result.output


NOT_A_TRAINER = '''
import prep


class LooksLikeATrainer:
    task = "classification"

    def build_model(self, request):
        raise AssertionError("never built")


@prep.hookimpl
def register_trainers(register):
    register("impostor", LooksLikeATrainer())


@prep.hookimpl
def register_tasks(register):
    register("half-a-task", object())
'''


def test_what_cannot_serve_as_a_trainer_or_a_task_is_a_failure_as_soon_as_it_registers(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(site, "misbehaving_impostor", NOT_A_TRAINER)
    from prep.plugins import describe_plugins, plugin_host

    failures = {f["stage"]: f for f in describe_plugins(plugin_host())["failures"]}
    assert "registered trainer 'impostor', a LooksLikeATrainer, which is not a prep.Trainer" in failures["register_trainers"]["error"]
    assert "registered task 'half-a-task', which lacks name, layout" in failures["register_tasks"]["error"]
    # Strict mode stops at the first command that looks the trainers up: before any training.
    monkeypatch.setenv("PREP_STRICT_PLUGINS", "1")
    for command in (["plugins"], ["train", str(site), "--plugin", "impostor"]):
        reset_plugin_host()
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert "plugin 'misbehaving_impostor' (misbehaving_impostor 6.6) failed at register_" in result.output
