"""Inputs made to hurt: splits that would leak, files that are not files, checkpoints that
claim absurd sizes, names that are not UTF-8, masks and plugins that answer nonsense. Each
gets one line naming what is wrong, no traceback, no hang, and nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import jpeg_bytes, snapshot, write
from prep.cli import app

runner = CliRunner()


def one_error_line(result) -> str:
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- A split that would train on its own validation images --------------------------------------

@pytest.mark.parametrize("mode", ["copy", "link", "symlink"])
def test_an_in_place_split_that_keeps_sources_in_train_is_refused(tmp_path: Path, mode: str):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(10):
            write(src / "train" / c / f"{i}.jpg", jpeg_bytes(ord(c[0]) * 20 + i))
    before = snapshot(src)
    result = runner.invoke(app, ["split", str(src), "--mode", mode])
    assert result.exit_code != 0
    line = one_error_line(result)
    assert f"--mode {mode}" in line and str(src / "train") in line and "--mode move" in line
    assert snapshot(src) == before

    moved = runner.invoke(app, ["split", str(src), "--mode", mode, "--out", str(tmp_path / "out")])
    assert moved.exit_code == 0, moved.output
    train = {p.relative_to(tmp_path / "out" / "train") for p in (tmp_path / "out" / "train").rglob("*.jpg")}
    valid = {p.relative_to(tmp_path / "out" / "valid") for p in (tmp_path / "out" / "valid").rglob("*.jpg")}
    assert valid and not train & valid


def test_an_in_place_move_split_of_train_folders_leaves_no_image_in_two_splits(tmp_path: Path):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(10):
            write(src / "train" / c / f"{i}.jpg", jpeg_bytes(ord(c[0]) * 20 + i))
    result = runner.invoke(app, ["split", str(src)])
    assert result.exit_code == 0, result.output
    train = {p.relative_to(src / "train") for p in (src / "train").rglob("*.jpg")}
    valid = {p.relative_to(src / "valid") for p in (src / "valid").rglob("*.jpg")}
    assert len(valid) == 4 and not train & valid and len(train) == 16


# -- Files that are not files ------------------------------------------------------------------

def test_a_fifo_named_like_an_image_is_set_aside_without_being_opened(tmp_path: Path):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(6):
            write(src / c / f"{i}.jpg", jpeg_bytes(ord(c[0]) * 20 + i))
    os.mkfifo(src / "cat" / "pipe.jpg")
    result = subprocess.run(
        [sys.executable, "-m", "prep", "split", str(src), "--out", str(tmp_path / "out"), "--mode", "copy"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    placed = tmp_path / "out" / "_rejected" / "unreadable"
    assert [p.name for p in placed.iterdir()] == ["pipe.jpg"] and (placed / "pipe.jpg").is_symlink()
    assert (src / "cat" / "pipe.jpg").exists()
    undo = subprocess.run([sys.executable, "-m", "prep", "split", "--undo", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert undo.returncode == 0, undo.stderr
    assert not (tmp_path / "out" / "_rejected").exists()


@pytest.mark.parametrize("mode", ["move", "copy"])
def test_a_link_to_a_device_is_set_aside_and_undone_without_reading_it(tmp_path: Path, mode: str):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(6):
            write(src / c / f"{i}.jpg", jpeg_bytes(ord(c[0]) * 20 + i))
    (src / "dog" / "zero.jpg").symlink_to("/dev/zero")
    before = snapshot(src)
    split = subprocess.run([sys.executable, "-m", "prep", "split", str(src), "--out", str(tmp_path / "out"), "--mode", mode],
                           capture_output=True, text=True, timeout=60)
    assert split.returncode == 0, split.stderr
    undo = subprocess.run([sys.executable, "-m", "prep", "split", "--undo", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert undo.returncode == 0, undo.stderr
    assert snapshot(src) == before and os.readlink(src / "dog" / "zero.jpg") == "/dev/zero"


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_a_fifo_given_as_a_checkpoint_is_one_line_not_a_hang(tmp_path: Path, command: str):
    fifo = tmp_path / "best.pt"
    os.mkfifo(fifo)
    images = tmp_path / "images"
    write(images / "a.jpg", jpeg_bytes(1))
    args = {"evaluate": [str(fifo), str(images)], "predict": [str(fifo), str(images)], "export": [str(fifo), "--format", "torchscript"]}[command]
    result = subprocess.run([sys.executable, "-m", "prep", command, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "is a FIFO, not a checkpoint file" in result.stderr


# -- Checkpoints that lie ----------------------------------------------------------------------

def _rewritten(source: Path, target: Path, change) -> Path:
    from prep.engine.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(source)
    state.pop("tensor_checksum", None)
    state.pop("prep_checkpoint", None)
    change(state)
    save_checkpoint(target, state)
    return target


LIES = {
    "image_size 60000": lambda s: s["options"].update(image_size=60000),
    "image_size a string": lambda s: s["options"].update(image_size="224"),
    "no model": lambda s: s.pop("model"),
    "no classes": lambda s: s.pop("classes"),
    "a one-element mean": lambda s: s.update(mean=[0.5]),
    "a zero std": lambda s: s.update(std=[0.2, 0.0, 0.2]),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_checkpoint_with_a_missing_or_absurd_field_is_refused_at_once(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path, lie: str):
    import time

    bad = _rewritten(colours_checkpoint, tmp_path / "bad.pt", LIES[lie])
    for args in (["evaluate", str(bad), str(colours_dataset)], ["predict", str(bad), str(colours_dataset / "valid")], ["export", str(bad), "--format", "torchscript"]):
        began = time.monotonic()
        result = runner.invoke(app, args)
        assert result.exit_code != 0, (lie, args, result.output)
        line = one_error_line(result)
        assert str(bad) in line, (lie, line)
        assert time.monotonic() - began < 30, (lie, args)


def test_a_checkpoint_without_its_checksum_or_with_nan_weights_is_refused(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path):
    import torch

    from prep.engine.checkpoint import load_checkpoint

    state = load_checkpoint(colours_checkpoint)
    unchecked = tmp_path / "unchecked.pt"
    torch.save({k: v for k, v in state.items() if k != "tensor_checksum"}, unchecked)
    result = runner.invoke(app, ["evaluate", str(unchecked), str(colours_dataset)])
    assert result.exit_code != 0 and "no checksum" in one_error_line(result)

    def poison(s):
        name = next(k for k, v in s["model"].items() if v.is_floating_point())
        s["model"][name] = torch.full_like(s["model"][name], float("nan"))

    nan = _rewritten(colours_checkpoint, tmp_path / "nan.pt", poison)
    result = runner.invoke(app, ["evaluate", str(nan), str(colours_dataset)])
    assert result.exit_code != 0 and "NaN or infinite weights" in one_error_line(result)


# -- Masks that are not what they seem ---------------------------------------------------------

def _segmentation_source(root: Path, mask_of) -> Path:
    """A raw segmentation dataset (images/ and masks/) whose masks ``mask_of(i)`` makes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(10):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        mask_of(i).save(root / "masks" / f"{i}.png")
    return root


def test_sixteen_bit_masks_of_0_and_65535_are_binary(tmp_path: Path):
    import numpy as np
    from PIL import Image

    def mask(i):
        values = np.zeros((32, 32), dtype=np.uint16)
        values[: 4 + i, :16] = 65535
        return Image.fromarray(values)  # I;16

    src = _segmentation_source(tmp_path / "src", mask)
    split = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "out")])
    assert split.exit_code == 0, split.output
    stats = runner.invoke(app, ["stats", str(tmp_path / "out"), "--json"])
    assert stats.exit_code == 0, stats.output
    import json

    assert json.loads(stats.stdout)["masks"]["classes"] == ["background", "foreground"], stats.stdout


def test_masks_whose_values_are_no_class_ids_are_one_line_not_a_huge_model(tmp_path: Path):
    import numpy as np
    from PIL import Image

    def mask(i):
        values = np.zeros((32, 32), dtype=np.uint16)
        values[: 4 + i] = 1000 * (1 + i % 3)
        return Image.fromarray(values)

    src = _segmentation_source(tmp_path / "src", mask)
    split = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "out")])
    assert split.exit_code == 0, split.output
    stats = runner.invoke(app, ["stats", str(tmp_path / "out")])  # stats reports what training would stop at
    assert stats.exit_code == 0 and "Traceback" not in stats.output
    assert "Training would stop here: Masks hold the value 3000" in stats.output
    train = runner.invoke(app, ["train", str(tmp_path / "out"), "--plugin", "unet", "--weights", "none", "--epochs", "1", "--workers", "0"])
    assert train.exit_code != 0
    line = one_error_line(train)
    assert "3000" in line and "class table" in line, line


def test_a_negative_int32_mask_in_stats_is_one_line(tmp_path: Path):
    import numpy as np
    from PIL import Image

    from prep.testing import make_segmentation_dataset

    root = make_segmentation_dataset(tmp_path / "seg", per_split={"train": 4, "valid": 2}, size=32)
    victim = sorted((root / "train" / "masks").iterdir())[0]
    values = np.zeros((32, 32), dtype=np.int32)
    values[:5] = -7
    victim.unlink()
    victim = victim.with_suffix(".tif")  # a 32-bit signed mask: TIFF holds them, PNG cannot
    Image.fromarray(values, mode="I").save(victim)
    stats = runner.invoke(app, ["stats", str(root)])
    assert stats.exit_code == 0 and "Traceback" not in stats.output
    assert "Training would stop here" in stats.output and "-7" in stats.output, stats.output
    train = runner.invoke(app, ["train", str(root), "--plugin", "unet", "--weights", "none", "--epochs", "1", "--workers", "0"])
    assert train.exit_code != 0
    line = one_error_line(train)
    assert victim.name in line and "-7" in line, line


# -- Plugins that answer nonsense, or leave ----------------------------------------------------

LABEL_PARSER = """
    from prep.hookspecs import hookimpl

    @hookimpl
    def register_label_parsers(register):
        def parse(name):
            {body}
        register("odd", parse)
"""


@pytest.mark.parametrize(("body", "message"), [
    ("return 7", "returned 7 (int)"),
    ("raise ValueError('no label here')", "ValueError: no label here"),
    ("raise SystemExit(4)", "called sys.exit(4)"),
])
def test_a_label_parser_that_answers_nonsense_or_raises_is_named_in_one_line(site: Path, tmp_path: Path, body: str, message: str):
    from conftest import install_fake_plugin
    from prep.plugins import reset_plugin_host

    install_fake_plugin(site, "misbehaving_parser", LABEL_PARSER.format(body=body), "6.6")
    reset_plugin_host()
    src = tmp_path / "src"
    for i in range(8):
        write(src / "train" / f"cat.{i}.jpg", jpeg_bytes(i))
        write(src / "train" / f"dog.{i}.jpg", jpeg_bytes(100 + i))
    before = snapshot(src)
    result = runner.invoke(app, ["split", str(src), "--label-parser", "odd", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    line = one_error_line(result)
    assert "misbehaving_parser" in line and message in line, line
    assert snapshot(src) == before and not (tmp_path / "out").exists()


def test_a_splitter_calling_sys_exit_is_named_not_silent(site: Path, tmp_path: Path):
    from conftest import install_fake_plugin
    from prep.plugins import reset_plugin_host

    install_fake_plugin(site, "misbehaving_exit_splitter", """
        import sys
        from prep.hookspecs import hookimpl

        @hookimpl
        def register_splitters(register):
            register("leave", lambda units, request, seed: sys.exit(0))
    """, "6.6")
    reset_plugin_host()
    src = tmp_path / "src"
    for i in range(8):
        write(src / "train" / f"cat.{i}.jpg", jpeg_bytes(i))
        write(src / "train" / f"dog.{i}.jpg", jpeg_bytes(100 + i))
    result = runner.invoke(app, ["split", str(src), "--splitter", "leave", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "misbehaving_exit_splitter" in line and "sys.exit(0)" in line


def test_ctrl_c_while_a_slow_plugin_imports_stops_prep(site: Path):
    import signal
    import time

    from conftest import install_fake_plugin

    install_fake_plugin(site, "slow_import", """
        import sys, time
        print("importing", file=sys.stderr, flush=True)
        time.sleep(30)
    """, "1.0")
    env = dict(os.environ, PYTHONPATH=str(site))
    process = subprocess.Popen([sys.executable, "-m", "prep", "--help"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stderr.readline().strip() == "importing"
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130 and time.monotonic() - began < 10
    assert "Traceback" not in stderr and "Interrupted" in stderr


# -- Names that are not text -------------------------------------------------------------------

def test_file_names_that_are_not_utf8_are_refused_by_split_and_kept_byte_for_byte_elsewhere(tmp_path: Path):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(6):
            write(src / c / f"{i}.jpg", jpeg_bytes(ord(c[0]) * 20 + i))
    latin1 = os.fsdecode(b"caf\xe9.jpg")
    write(src / "cat" / latin1, jpeg_bytes(999))
    before = snapshot(src)
    split = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "out")])
    assert split.exit_code != 0
    line = one_error_line(split)
    assert "caf\\xe9.jpg" in line and "not UTF-8" in line
    assert snapshot(src) == before and not (tmp_path / "out").exists()

    # A dataset split by other means: training, evaluation and predictions name it as it is.
    data = tmp_path / "data"
    for c in ("cat", "dog"):
        for i in range(6):
            write(data / "train" / c / f"{i}.jpg", jpeg_bytes(ord(c[0]) * 20 + i))
        write(data / "valid" / c / "v.jpg", jpeg_bytes(ord(c[0]) * 30))
    write(data / "train" / "cat" / latin1, jpeg_bytes(999))
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", str(data), "--weights", "none", "--epochs", "1", "--image-size", "32", "--workers", "0", "--run-dir", str(run)])
    assert trained.exit_code == 0, trained.output
    predictions = tmp_path / "p.csv"
    predicted = runner.invoke(app, ["predict", str(run / "best.pt"), str(data / "train"), "--out", str(predictions)])
    assert predicted.exit_code == 0, predicted.output
    assert os.fsencode(str(data / "train" / "cat" / latin1)) in predictions.read_bytes()


# -- Ctrl-C at any moment ----------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_at_random_moments_of_start_up_never_prints_a_traceback(tmp_path: Path):
    import random
    import signal
    import time

    data = tmp_path / "data"
    for split in ("train", "valid"):
        for c in ("cat", "dog"):
            for i in range(3):
                write(data / split / c / f"{i}.jpg", jpeg_bytes(ord(c[0]) + i + len(split)))
    prep = Path(sys.executable).with_name("prep")
    command = [str(prep)] if prep.exists() else [sys.executable, "-m", "prep"]
    rng = random.Random(0)
    for attempt in range(24):
        process = subprocess.Popen([*command, "stats", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        for sign in ("Traceback", "Exception ignored", "KeyboardInterrupt", "failed at load"):
            assert sign not in stderr, (attempt, stderr)
        assert process.returncode in (0, 130, -signal.SIGINT), (attempt, process.returncode, stderr)
