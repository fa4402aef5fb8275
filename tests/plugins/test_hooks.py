"""The plugin manager, through the real entry-point machinery (a dist-info on sys.path)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prep import hookspecs
from prep.errors import PluginError, UnknownNameError
from prep.plugins import create_plugin_host, label_parsers, reset_plugin_host, splitters
from prep.registry import Registry
from prep.split.api import split_dataset
from prep.split.plan import SplitOptions

from conftest import install_fake_plugin, jpeg_bytes, plugins_json, write

GOOD_PLUGIN = '''
from prep.hookspecs import hookimpl

@hookimpl
def register_label_parsers(register):
    register("suffix", lambda name: name.rsplit(".", 1)[0].rsplit("-", 1)[-1])

@hookimpl
def register_splitters(register):
    register("everything-valid-but-one", lambda units, request, seed: ["train"] + ["valid"] * (len(units) - 1))

@hookimpl
def register_augmentation_presets(register):
    import albumentations as A
    register("flip-only", lambda size, train, task: [A.Resize(size, size), A.HorizontalFlip(p=1.0 if train else 0.0)])

@hookimpl
def register_trainers(register):
    import torch
    import prep

    class Tiny(prep.Trainer):
        def build_model(self, request):
            head = torch.nn.Linear(3, request.num_classes)
            return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head), head

        def recipe(self, name, request):
            return prep.TrainConfig(epochs=1, lr=0.1, optimizer="sgd", scheduler="none")

    register("tiny-trainer", Tiny())

@hookimpl
def register_lr_lambdas(register):
    register("halve-at-half", lambda epochs: (lambda epoch: 0.5 if epoch >= epochs // 2 else 1.0))

@hookimpl
def register_collate_fns(register):
    register("count-only", lambda samples: len(samples))

@hookimpl
def register_commands(app):
    @app.command("hello")
    def hello(name: str = "world"):
        print(f"hello {name}")
'''


def test_registry_lists_with_wildcards_and_suggests_names():
    registry: Registry[int] = Registry("thing")
    registry.register("resnet18", 1, plugin="a")
    registry.register("resnet50", 2, plugin="a")
    registry.register("vit", 3, plugin="b")
    assert registry.names("resnet*") == ["resnet18", "resnet50"]
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet18'"):
        registry.get("resnet19")


def test_registry_warns_when_a_name_is_replaced(caplog):
    registry: Registry[int] = Registry("thing")
    registry.register("x", 1, plugin="builtin")
    registry.register("x", 2, plugin="third")
    assert registry.get("x") == 2 and registry.registration("x").plugin == "third"
    assert "replaces the one from plugin 'builtin'" in caplog.text


def test_register_label_parsers_from_an_installed_plugin(site: Path, tmp_path: Path):
    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    reset_plugin_host()
    assert "suffix" in label_parsers() and "prefix" in label_parsers()
    root = tmp_path / "data"
    for i in range(4):
        write(root / f"{i}-red.jpg", jpeg_bytes(i))
        write(root / f"{i}-blue.jpg", jpeg_bytes(10 + i))
    report = split_dataset(root, SplitOptions(label_parser="suffix"), dry_run=True)
    assert set(report.splits["train"]) == {"red", "blue"}


def test_register_splitters_from_an_installed_plugin(site: Path, tmp_path: Path):
    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    reset_plugin_host()
    assert splitters().registration("everything-valid-but-one").plugin == "goodplugin"
    root = tmp_path / "data"
    for i in range(3):
        write(root / f"cat.{i}.jpg", jpeg_bytes(i))
    report = split_dataset(root, SplitOptions(splitter="everything-valid-but-one"), dry_run=True)
    assert report.splits == {"train": {"cat": 1}, "valid": {"cat": 2}}


def test_register_augmentation_presets_from_an_installed_plugin(site: Path):
    import numpy as np

    from prep.augment.presets import build_pipeline

    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    reset_plugin_host()
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    flipped = build_pipeline("flip-only", 8, train=True)(image=image)["image"]
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    assert "medium" in __import__("prep.plugins", fromlist=["x"]).augmentation_presets()


def test_register_collate_fns_from_an_installed_plugin(site: Path, tmp_path: Path):
    from prep.data.datasets import ClassificationDataset
    from prep.data.loader import create_loader

    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    reset_plugin_host()
    for i in range(5):
        write(tmp_path / "d" / "train" / "a" / f"{i}.jpg", jpeg_bytes(i))
    from prep.plugins import collate_fns

    counting = collate_fns().registration("count-only")
    loader = create_loader(ClassificationDataset(tmp_path / "d"), 2, train=False, collate_fn=counting.call, workers=0)
    assert list(loader) == [2, 2, 1]


def test_register_lr_lambdas_from_an_installed_plugin(site: Path):
    import torch

    from prep.engine.schedulers import LRSchedule, ScheduleConfig
    from prep.plugins import lr_lambdas

    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    reset_plugin_host()
    registry = lr_lambdas()
    assert registry.names() == ["halve-at-half"]
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = LRSchedule(optimizer, ScheduleConfig(name="lambda:halve-at-half", epochs=4), {n: registry.get(n) for n in registry.names()})
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_batch()
        schedule.after_epoch()
    assert seen == [1.0, 1.0, 0.5, 0.5]


def test_register_trainers_from_an_installed_plugin(site: Path, tmp_path: Path):
    from prep.train.options import TrainOptions
    from prep.train.run import train

    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    reset_plugin_host()
    root = tmp_path / "d"
    for split, n in (("train", 6), ("valid", 2)):
        for c in ("a", "b"):
            for i in range(n):
                write(root / split / c / f"{i}.jpg", jpeg_bytes(len(split) * 100 + ord(c) * 10 + i))
    summary = train(root, TrainOptions(plugin="tiny-trainer", image_size=16, batch_size=4, workers=0, run_dir=tmp_path / "run"))
    assert summary["status"] == "completed" and summary["epochs"] == 1 and summary["classes"] == ["a", "b"]
    assert (tmp_path / "run" / "last.pt").exists()


LISTENER_PLUGIN = '''
import json
from prep.hookspecs import hookimpl

EVENTS = []

@hookimpl
def on_train_start(run):
    EVENTS.append(("start", run.epoch, run.step, run.classes, run.is_main, type(run.model).__name__))

@hookimpl
def on_epoch_end(run, metrics):
    EVENTS.append(("epoch", metrics["epoch"], round(metrics["valid_acc"], 6), run.epoch, run.step))
    if metrics["epoch"] == 2:
        run.request_stop("enough for this test")

@hookimpl
def on_train_end(run, summary):
    EVENTS.append(("end", summary["status"], summary.get("stop_reason")))
'''
RAISING_LISTENER = '''
from prep.hookspecs import hookimpl

@hookimpl
def on_epoch_end(run, metrics):
    raise RuntimeError("callback bug")
'''


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "d"
    for split, n in (("train", 6), ("valid", 2)):
        for c in ("a", "b"):
            for i in range(n):
                write(root / split / c / f"{i}.jpg", jpeg_bytes(len(split) * 100 + ord(c) * 10 + i))
    return root


def _train_with_listener(site: Path, small_dataset: Path, run_dir: Path, epochs: int = 4) -> tuple[dict, list]:
    from prep.train.options import TrainOptions
    from prep.train.run import train

    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    install_fake_plugin(site, "listenerplugin", LISTENER_PLUGIN)
    reset_plugin_host()
    summary = train(small_dataset, TrainOptions(plugin="tiny-trainer", epochs=epochs, image_size=16, batch_size=4, workers=0, run_dir=run_dir))
    return summary, sys.modules["listenerplugin"].EVENTS


def test_on_train_start(site: Path, small_dataset: Path, tmp_path: Path):
    _, events = _train_with_listener(site, small_dataset, tmp_path / "run")
    assert events[0] == ("start", 0, 0, ["a", "b"], True, "Sequential")


def test_on_epoch_end(site: Path, small_dataset: Path, tmp_path: Path):
    summary, events = _train_with_listener(site, small_dataset, tmp_path / "run")
    epochs = [e for e in events if e[0] == "epoch"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Called after each epoch with the logged record; the third epoch never ran, because
    # the callback asked to stop after the second.
    assert epochs == [("epoch", r["epoch"], round(r["valid_acc"], 6), r["epoch"], r["step"]) for r in logged]
    assert [e[1] for e in epochs] == [1, 2] and summary["epochs"] == 2
    assert summary["status"] == "stopped" and summary["stop_reason"] == "enough for this test"


def test_on_train_end(site: Path, small_dataset: Path, tmp_path: Path):
    summary, events = _train_with_listener(site, small_dataset, tmp_path / "run")
    assert events[-1] == ("end", "stopped", "enough for this test")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "stopped"


def test_a_failing_callback_is_reported_and_the_run_goes_on(site: Path, small_dataset: Path, tmp_path: Path, caplog):
    from prep.train.options import TrainOptions
    from prep.train.run import train

    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    install_fake_plugin(site, "raisingplugin", RAISING_LISTENER, "0.9")
    reset_plugin_host()
    summary = train(small_dataset, TrainOptions(plugin="tiny-trainer", epochs=2, image_size=16, batch_size=4, workers=0, run_dir=tmp_path / "run"))
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert "plugin 'raisingplugin' (raisingplugin 0.9) failed at on_epoch_end: RuntimeError: callback bug" in caplog.text


def test_register_commands_adds_a_cli_command(site: Path):
    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-m", "prep", "hello", "--name", "plugin"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello plugin"


BROKEN_IMPORT = "raise ImportError('needs a package that is not installed')\n"
RAISING = '''
from prep.hookspecs import hookimpl

@hookimpl
def register_label_parsers(register):
    raise RuntimeError("bug in plugin")
'''
BAD_SIGNATURE = '''
from prep.hookspecs import hookimpl

@hookimpl
def register_label_parsers(register, not_a_hook_argument):
    pass
'''


def test_broken_plugins_are_isolated_and_named(site: Path):
    install_fake_plugin(site, "brokenplugin", BROKEN_IMPORT, "0.3")
    install_fake_plugin(site, "raisingplugin", RAISING, "2.1")
    install_fake_plugin(site, "badsig", BAD_SIGNATURE)
    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    host = create_plugin_host()
    registry = host.fill_registry("register_label_parsers", "label parser")
    assert "suffix" in registry and "prefix" in registry  # the rest keeps working
    failures = {f.plugin: f for f in host.failures}
    assert set(failures) == {"brokenplugin", "raisingplugin", "badsig"}
    assert failures["brokenplugin"].version == "brokenplugin 0.3" and "not installed" in failures["brokenplugin"].error
    assert failures["raisingplugin"].stage == "register_label_parsers" and "bug in plugin" in failures["raisingplugin"].error
    assert failures["badsig"].stage == "load"


def test_broken_plugin_never_locks_users_out_of_the_cli(site: Path):
    install_fake_plugin(site, "brokenplugin", BROKEN_IMPORT, "0.3")
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-m", "prep", "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "split" in done.stdout
    assert "brokenplugin" in done.stderr and "0.3" in done.stderr


def test_strict_mode_turns_plugin_failures_into_errors(site: Path, monkeypatch: pytest.MonkeyPatch):
    install_fake_plugin(site, "brokenplugin", BROKEN_IMPORT)
    monkeypatch.setenv("PREP_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="brokenplugin"):
        create_plugin_host()
    env = dict(os.environ, PYTHONPATH=str(site), PREP_STRICT_PLUGINS="1")
    done = subprocess.run([sys.executable, "-m", "prep", "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "brokenplugin" in done.stderr and "Traceback" not in done.stderr


def test_prep_load_plugins_chooses_which_load(site: Path, monkeypatch: pytest.MonkeyPatch):
    install_fake_plugin(site, "brokenplugin", BROKEN_IMPORT)
    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN)
    monkeypatch.setenv("PREP_LOAD_PLUGINS", "goodplugin")
    host = create_plugin_host()
    assert host.failures == [] and host.manager.has_plugin("goodplugin")
    monkeypatch.setenv("PREP_LOAD_PLUGINS", "")
    host = create_plugin_host()
    assert not host.manager.has_plugin("goodplugin")
    assert host.manager.has_plugin("prep.split.label_parsers")  # built-ins always load


def test_every_hook_has_a_test_and_a_documented_section():
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "prep_spec")]
    assert hooks, "no hookspecs found"
    tests = "".join(path.read_text() for path in Path(__file__).parents[1].rglob("test_*.py"))
    guide = (Path(__file__).parents[2] / "docs" / "plugin-hooks.md").read_text()
    for hook in hooks:
        assert f"def test_{hook}" in tests, f"hook {hook} has no test named test_{hook}..."
        arguments = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
        assert f"### `{hook}({arguments})`" in guide, f"hook {hook} has no section `{hook}({arguments})` in docs/plugin-hooks.md"
        assert inspect.getdoc(getattr(hookspecs, hook)), f"hook {hook} has no docstring"


def test_prep_plugins_lists_versions_hooks_and_failures(site: Path):
    install_fake_plugin(site, "goodplugin", GOOD_PLUGIN, "1.2")
    install_fake_plugin(site, "brokenplugin", BROKEN_IMPORT, "0.3")
    listed = plugins_json(site)
    by_name = {p["name"]: p for p in listed["plugins"]}
    assert by_name["goodplugin"]["version"] == "goodplugin 1.2"
    assert "register_label_parsers" in by_name["goodplugin"]["hooks"] and not by_name["goodplugin"]["builtin"]
    assert by_name["prep.split.splitters"]["builtin"] and by_name["prep.split.splitters"]["hooks"] == ["register_splitters"]
    assert listed["failures"] == [{"name": "brokenplugin", "version": "brokenplugin 0.3", "stage": "load", "error": "ImportError: needs a package that is not installed"}]
    table = CliRunner().invoke(__import__("prep.cli", fromlist=["app"]).app, ["plugins"])
    assert table.exit_code == 0 and "prep.augment.presets" in table.stdout
