"""Every number option of every command, given a value out of its range, is refused before
anything starts: a clear message naming the option, exit 2, no traceback, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from prep.cli import app

runner = CliRunner()
# Numbers that every value of is a valid choice: seeds.
ANY_VALUE = {"--seed"}
# What a command needs besides the option; {data}, {checkpoint} and {tmp} are filled in.
ARGUMENTS = {
    "augment": ["{data}", "--out", "{tmp}/a.png"],
    "evaluate": ["{checkpoint}", "{data}", "--out", "{tmp}/e.png"],
    "export": ["{checkpoint}", "--out", "{tmp}/m.onnx"],
    "lr-find": ["{data}", "--weights", "none", "--out", "{tmp}/lr.png"],
    "predict": ["{checkpoint}", "{data}/test", "--out", "{tmp}/p.csv"],
    "sample": ["{tmp}/sample"],
    "split": ["{raw}", "--out", "{tmp}/split"],
    "stats": ["{data}"],
    "train": ["{data}", "--weights", "none", "--run-dir", "{tmp}/run"],
}


def number_options() -> list[tuple[str, str, type]]:
    """(command, option, int or float) for every number option of the CLI."""
    group = typer.main.get_command(app)
    found = []
    for name, command in sorted(group.commands.items()):
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag and param.type_descriptor.annotation in (int, float):
                if param.opts[0] not in ANY_VALUE:
                    found.append((name, param.opts[0], param.type_descriptor.annotation))
    return found


def test_the_walk_finds_the_options_it_should():
    options = {(c, o) for c, o, _ in number_options()}
    assert {("train", "--lr"), ("train", "--epochs"), ("lr-find", "--start-lr"), ("predict", "--clip"), ("split", "--folds")} <= options
    assert {c for c, _ in options} == set(ARGUMENTS) - {"plugins"}


@pytest.mark.parametrize("command, option, kind", number_options(), ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_a_number_out_of_range_is_refused_before_anything_starts(command: str, option: str, kind: type, colours_dataset: Path, colours_checkpoint: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(colours_dataset, data)
    raw = tmp_path / "raw"
    shutil.copytree(colours_dataset / "train", raw)
    values = ["-1", "nan"] if kind is float else ["-1"]
    for value in values:
        args = [a.format(data=data, checkpoint=colours_checkpoint, tmp=tmp_path, raw=raw) for a in ARGUMENTS[command]]
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        result = runner.invoke(app, [command, *args, option, value])
        assert result.exit_code == 2, (option, value, result.output[-600:])
        assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
        assert option in result.output or option.strip("-") in result.output, result.output
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, f"{option} {value} wrote something"
