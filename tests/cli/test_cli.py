"""The command line, through Typer's CliRunner and through real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from prep import __version__
from prep.cli import app
from prep.cli.workspace import remembered_dataset, resolve_dataset

from conftest import jpeg_bytes, snapshot

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("split", "sample"):
        assert command in result.output


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    assert "Usage" in result.output and "split" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"prep {__version__}"


def test_python_dash_m_and_no_torch_import_for_split(tmp_path: Path, flat_dataset: Path):
    code = (
        "import sys, runpy; sys.argv=['prep','--quiet','split','" + str(flat_dataset) + "'];"
        "\ntry: runpy.run_module('prep', run_name='__main__')\nexcept SystemExit: pass"
        "\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
    assert (flat_dataset / "valid" / "cat").is_dir()
    help_run = subprocess.run([sys.executable, "-m", "prep", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "split" in help_run.stdout


def test_split_json_report_and_workspace(flat_dataset: Path):
    result = runner.invoke(app, ["split", str(flat_dataset), "--json", "--test", "0.1", "--seed", "7"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["totals"] == {"train": 28, "valid": 8, "test": 4}
    assert report["unlabeled"] == 5 and report["layout"] == "filename-labels"
    assert remembered_dataset() == flat_dataset.resolve()
    assert resolve_dataset(None) == flat_dataset.resolve()


def test_split_table_report(flat_dataset: Path):
    result = runner.invoke(app, ["split", str(flat_dataset)])
    assert result.exit_code == 0
    assert "Samples per split and class" in result.stdout and "Journal:" in result.stdout


def test_dry_run_through_cli_touches_nothing(flat_dataset: Path):
    before = snapshot(flat_dataset)
    result = runner.invoke(app, ["split", str(flat_dataset), "--dry-run"])
    assert result.exit_code == 0 and "Example moves" in result.stdout
    assert snapshot(flat_dataset) == before
    assert remembered_dataset() is None


def test_undo_through_cli(flat_dataset: Path):
    before = snapshot(flat_dataset)
    assert runner.invoke(app, ["split", str(flat_dataset)]).exit_code == 0
    result = runner.invoke(app, ["split", "--undo", str(flat_dataset), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["restored"] == 40
    assert snapshot(flat_dataset) == before
    assert remembered_dataset() is None


def test_errors_are_messages_with_exit_codes(tmp_path: Path, flat_dataset: Path):
    missing = runner.invoke(app, ["split", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "is not a folder" in missing.output
    bad_ratio = runner.invoke(app, ["split", str(flat_dataset), "--valid", "1.5"])
    assert bad_ratio.exit_code == 2 and "--valid" in bad_ratio.output
    bad_mode = runner.invoke(app, ["split", str(flat_dataset), "--mode", "teleport"])
    assert bad_mode.exit_code == 2 and "--mode" in bad_mode.output
    unknown = runner.invoke(app, ["split", str(flat_dataset), "--splitter", "stratifed"])
    assert unknown.exit_code == 2 and "Did you mean 'stratified'" in unknown.output
    assert "Traceback" not in missing.output + bad_ratio.output + unknown.output


def test_sample_writes_kaggle_shapes(tmp_path: Path):
    out = tmp_path / "dc"
    result = runner.invoke(app, ["sample", str(out), "--n", "6", "--seed", "1"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "train").iterdir())
    assert names[:2] == ["cat.0.jpg", "cat.1.jpg"] and len(names) == 12
    assert sorted(p.name for p in (out / "test1").iterdir()) == ["1.jpg"]
    from PIL import Image

    widths = [Image.open(p).size[0] for p in (out / "train").iterdir()]
    assert all(300 <= w <= 500 for w in widths)
    again = runner.invoke(app, ["sample", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_sample_is_deterministic(tmp_path: Path):
    for name in ("a", "b"):
        runner.invoke(app, ["sample", str(tmp_path / name), "--n", "3", "--seed", "5"])
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_segmentation_sample_then_split(tmp_path: Path):
    out = tmp_path / "carvana"
    assert runner.invoke(app, ["sample", str(out), "--n", "5", "--kind", "segmentation"]).exit_code == 0
    masks = sorted(p.name for p in (out / "train_masks").iterdir())
    assert masks[0].endswith("_01_mask.png") and len(masks) == 20
    result = runner.invoke(app, ["split", str(out), "--group-pattern", "^([^_]+)_", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layout"] == "segmentation" and sum(report["totals"].values()) == 20
    valid_cars = {p.name.split("_")[0] for p in (out / "valid" / "images").iterdir()}
    train_cars = {p.name.split("_")[0] for p in (out / "train" / "images").iterdir()}
    assert valid_cars and not valid_cars & train_cars


def test_quiet_prints_nothing_and_verbose_lists_every_rejected_file(flat_dataset: Path):
    (flat_dataset / "train" / "cat.broken.jpg").write_bytes(b"")
    (flat_dataset / "train" / "dog.broken.jpg").write_bytes(b"not an image")
    quiet = runner.invoke(app, ["--quiet", "split", str(flat_dataset), "--dry-run"])
    assert quiet.exit_code == 0 and quiet.output == ""
    verbose = runner.invoke(app, ["--verbose", "split", str(flat_dataset), "--dry-run"])
    assert "empty: train/cat.broken.jpg" in verbose.stdout
    assert "undecodable: train/dog.broken.jpg" in verbose.stdout


def test_too_small_class_is_a_message_not_a_crash(flat_dataset: Path):
    (flat_dataset / "train" / "bird.0.jpg").write_bytes(jpeg_bytes(777))
    before = snapshot(flat_dataset)
    result = runner.invoke(app, ["split", str(flat_dataset)])
    assert result.exit_code == 1
    assert "'bird' (1)" in result.output and "Traceback" not in result.output
    assert snapshot(flat_dataset) == before


def test_error_messages_keep_square_brackets(tmp_path: Path):
    """Rich markup must not eat parts of file names such as ``photos[old]``."""
    result = CliRunner().invoke(app, ["stats", str(tmp_path / "data[old]")])
    assert result.exit_code == 1 and "data[old]" in result.output


def test_progress_bars_draw_on_a_terminal(monkeypatch):
    """The bar path only runs on a terminal, which tests lack: pretend to be one."""
    import io

    from prep.cli import output

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(output.sys, "stderr", terminal)
    monkeypatch.setattr(output, "stderr", output._LazyConsole(file=terminal, force_terminal=True, highlight=False))
    with output.RichProgress(min_total=1).task("Epoch 1/1", 3) as advance:
        advance(1, status="loss 0.5000 · 10 img/s")
        advance(2)
    assert "Epoch 1/1" in terminal.getvalue() and "loss 0.5000" in terminal.getvalue()
