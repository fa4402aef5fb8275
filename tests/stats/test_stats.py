"""prep stats: exact statistics against a numpy reference, train-only, masks, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prep.cli import app
from prep.images.decode import load_rgb
from prep.stats.dataset_stats import compute_dataset_stats

from conftest import jpeg_bytes, write

runner = CliRunner()


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


@pytest.fixture
def odd_images(tmp_path: Path):
    """Images in every awkward mode, with the RGB pixels training must see for each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "odd"
    train = root / "train"
    expected: dict[str, np.ndarray] = {}

    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    _save(train / "a" / "gray.png", Image.fromarray(gray, "L"))
    expected["gray"] = np.repeat(gray[:, :, None], 3, axis=2)

    rgba = rng.integers(0, 256, (25, 17, 4), dtype=np.uint8)
    _save(train / "a" / "rgba.png", Image.fromarray(rgba, "RGBA"))
    expected["rgba"] = rgba[:, :, :3]

    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(colors=16)
    _save(train / "b" / "palette.png", palette)
    expected["palette"] = np.asarray(palette.convert("RGB"))

    transparent = palette.copy()
    transparent.info["transparency"] = 0
    _save(train / "b" / "palette_t.png", transparent, transparency=0)
    expected["palette_t"] = np.asarray(palette.convert("RGB"))

    deep = rng.integers(0, 65536, (12, 14), dtype=np.uint16)
    _save(train / "b" / "deep.png", Image.fromarray(deep))
    expected["deep"] = np.repeat(np.rint(deep / 257.0).astype(np.uint8)[:, :, None], 3, axis=2)

    cmyk = Image.fromarray(rng.integers(0, 256, (18, 22, 3), dtype=np.uint8)).convert("CMYK")
    _save(train / "a" / "cmyk.jpg", cmyk, quality=95)
    with Image.open(train / "a" / "cmyk.jpg") as decoded:
        expected["cmyk"] = np.asarray(decoded.convert("RGB"))

    return root, expected


def test_odd_modes_convert_as_documented(odd_images):
    root, expected = odd_images
    for path in sorted((root / "train").rglob("*.*")):
        got = load_rgb(path)
        assert got.dtype == np.uint8 and got.shape[2] == 3
        np.testing.assert_array_equal(got, expected[path.stem], err_msg=path.name)


def test_exif_orientation_is_applied(tmp_path: Path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    path = _save(tmp_path / "rotated.jpg", Image.fromarray(pixels), exif=exif, quality=100)
    upright = load_rgb(path)
    assert upright.shape == (40, 20, 3)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50  # band now on top
    half = load_rgb(path, min_side=10)
    assert half.shape == (20, 10, 3) and half[:5].mean() > 200


def test_stats_match_a_float64_reference_over_all_pixels(odd_images):
    root, expected = odd_images
    write(root / "train" / "a" / "photo.jpg", jpeg_bytes(3, size=(33, 21)))
    expected["photo"] = load_rgb(root / "train" / "a" / "photo.jpg")
    stats = compute_dataset_stats(root, workers=2)
    everything = np.concatenate([a.reshape(-1, 3) for a in expected.values()]).astype(np.float64) / 255
    np.testing.assert_allclose(stats["mean"], everything.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(stats["std"], everything.std(axis=0), rtol=0, atol=1e-9)
    assert stats["exact"] is True and stats["images"] == len(expected)
    assert stats["modes"]["I;16"] == 1 and stats["modes"]["CMYK"] == 1
    assert stats["pixels"] == sum(a.shape[0] * a.shape[1] for a in expected.values())


def test_only_the_train_split_counts(tmp_path: Path):
    root = tmp_path / "d"
    for i in range(3):
        _save(root / "train" / "x" / f"{i}.png", Image.new("RGB", (8, 8), (0, 0, 0)))
        _save(root / "valid" / "x" / f"{i}.png", Image.new("RGB", (8, 8), (255, 255, 255)))
        _save(root / "test" / "x" / f"{i}.png", Image.new("RGB", (8, 8), (255, 255, 255)))
    stats = compute_dataset_stats(root, workers=1)
    assert stats["mean"] == [0.0, 0.0, 0.0] and stats["std"] == [0.0, 0.0, 0.0]
    assert stats["splits"] == {"train": {"x": 3}, "valid": {"x": 3}, "test": {"x": 3}}


def test_corrupt_train_image_is_named_with_its_reason(tmp_path: Path):
    root = tmp_path / "d"
    write(root / "train" / "x" / "good.jpg", jpeg_bytes(1))
    write(root / "train" / "x" / "bad.jpg", b"\xff\xd8\xff garbage")
    stats = compute_dataset_stats(root, workers=1)
    assert [Path(f["file"]).name for f in stats["failed"]] == ["bad.jpg"]
    assert stats["images"] == 1


def test_fast_and_sample_are_marked_approximate(tmp_path: Path):
    root = tmp_path / "d"
    for i in range(12):
        write(root / "train" / ("a" if i % 2 else "b") / f"{i}.jpg", jpeg_bytes(i, size=(64, 48)))
    exact = compute_dataset_stats(root, workers=1)
    fast = compute_dataset_stats(root, workers=1, fast=True)
    sampled = compute_dataset_stats(root, workers=1, sample=5, seed=1)
    assert fast["exact"] is False and sampled["exact"] is False and sampled["images"] == 5
    np.testing.assert_allclose(fast["mean"], exact["mean"], rtol=0.01)
    assert compute_dataset_stats(root, workers=1, sample=5, seed=1)["mean"] == sampled["mean"]


def test_fast_adds_back_the_detail_that_half_scale_decoding_loses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from prep.stats import dataset_stats

    # Pixel noise is all fine detail: a half-scale decode averages 2 x 2 blocks of it away.
    root = tmp_path / "d"
    for i in range(96):
        write(root / "train" / ("a" if i % 2 else "b") / f"{i}.jpg", jpeg_bytes(i, size=(96, 64)))
    exact = compute_dataset_stats(root, workers=1)
    fast = compute_dataset_stats(root, workers=1, fast=True)
    np.testing.assert_allclose(fast["std"], exact["std"], rtol=0.01)
    np.testing.assert_allclose(fast["mean"], exact["mean"], rtol=0.001)
    # The images decoded fully are chosen by name, so the figures do not depend on where the
    # dataset lies (they once did, by the whole path).
    moved = tmp_path / "elsewhere" / "d"
    shutil.copytree(root, moved)
    assert compute_dataset_stats(moved, workers=1, fast=True)["std"] == fast["std"]

    monkeypatch.setattr(dataset_stats, "CALIBRATE_EVERY", 10**9)  # no image decoded fully
    uncalibrated = compute_dataset_stats(root, workers=1, fast=True)
    assert max(abs(u - e) / e for u, e in zip(uncalibrated["std"], exact["std"])) > 0.1


def _segmentation(root: Path, mask_values: list[int], with_orphan: bool = False) -> None:
    for i, value in enumerate(mask_values):
        write(root / "train" / "images" / f"{i}.jpg", jpeg_bytes(i, size=(16, 16)))
        mask = np.zeros((16, 16), dtype=np.uint8)
        mask[4:12, 4:12] = value
        _save(root / "train" / "masks" / f"{i}_mask.png", Image.fromarray(mask, "L"))
    if with_orphan:
        write(root / "train" / "images" / "orphan.jpg", jpeg_bytes(99, size=(16, 16)))


def test_mask_audit_finds_0_255_masks_and_images_without_masks(tmp_path: Path):
    root = tmp_path / "seg"
    _segmentation(root, [255, 255, 0], with_orphan=True)
    masks = compute_dataset_stats(root, workers=1)["masks"]
    assert masks["values"] == [0, 255] and masks["binary_0_255"] is True
    assert [Path(p).name for p in masks["images_without_masks"]] == ["orphan.jpg"]
    assert masks["out_of_range"] == []
    assert masks["pixel_frequency"]["255"] == pytest.approx(2 * 64 / (3 * 256))


def test_mask_audit_finds_out_of_range_values(tmp_path: Path):
    root = tmp_path / "seg"
    _segmentation(root, [1, 2, 7])
    masks = compute_dataset_stats(root, workers=1, mask_classes=3)["masks"]
    assert masks["binary_0_255"] is False and masks["out_of_range"] == [7]


def test_cli_stats_after_split_needs_no_argument(flat_dataset: Path):
    assert runner.invoke(app, ["split", str(flat_dataset)]).exit_code == 0
    result = runner.invoke(app, ["stats", "--json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = json.loads((flat_dataset / "stats.json").read_text())
    assert written["mean"] == printed["mean"] and len(written["mean"]) == 3 and len(written["std"]) == 3
    assert written["splits"]["train"] == {"cat": 16, "dog": 16}
    table = runner.invoke(app, ["stats", str(flat_dataset), "--fast"])
    assert table.exit_code == 0 and "approximate" in table.stdout


def test_cli_stats_without_a_dataset_is_a_clear_error():
    result = runner.invoke(app, ["stats"])
    assert result.exit_code == 1 and "run prep split first" in result.output


def test_trainers_read_mean_and_std_back(tmp_path: Path):
    from prep.errors import StatsNotFoundError
    from prep.stats.dataset_stats import read_mean_std, write_stats

    root = tmp_path / "d"
    for i in range(3):
        write(root / "train" / "x" / f"{i}.jpg", jpeg_bytes(i))
    with pytest.raises(StatsNotFoundError, match="prep stats"):
        read_mean_std(root)
    stats = compute_dataset_stats(root, workers=1)
    write_stats(root, stats)
    assert read_mean_std(root) == (stats["mean"], stats["std"])
    (root / "stats.json").write_text('{"mean": [0.5, 0.5], "std": [1, 1, 1]}')
    with pytest.raises(StatsNotFoundError, match="not usable"):
        read_mean_std(root)


def test_approximate_stats_never_replace_exact_ones_unless_asked(tmp_path: Path):
    import json

    from typer.testing import CliRunner

    from prep.cli import app
    from prep.testing import make_classification_dataset

    data = make_classification_dataset(tmp_path / "data")
    runner = CliRunner()
    assert runner.invoke(app, ["stats", str(data)]).exit_code == 0
    exact = (data / "stats.json").read_bytes()
    fast = runner.invoke(app, ["stats", str(data), "--sample", "3"])
    assert fast.exit_code == 0 and "keeps its exact figures" in " ".join(fast.output.split())
    assert (data / "stats.json").read_bytes() == exact
    replaced = runner.invoke(app, ["stats", str(data), "--sample", "3", "--replace"])
    assert replaced.exit_code == 0 and json.loads((data / "stats.json").read_text())["exact"] is False
    from prep.train.options import TrainOptions
    from prep.train.run import train

    train(data, TrainOptions(weights="none", epochs=1, image_size=32, batch_size=8, workers=0, run_dir=tmp_path / "run"))
    import torch

    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert state["normalization_source"] == "stats.json, approximate: --sample 3"  # the run says which stats it used
