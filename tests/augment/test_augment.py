"""Augmentation presets, pipeline files and previews."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prep.augment.presets import build_pipeline
from prep.cli import app
from prep.errors import UnknownNameError, UsageError

runner = CliRunner()
PRESETS = ["none", "flip", "light", "medium", "heavy", "randaugment", "trivialaugment", "erasing"]


def picture(seed: int = 0, size=(96, 128)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_repeat_with_a_seed_and_give_the_requested_size(preset: str):
    image = picture()
    first = [build_pipeline(preset, 64, train=True, seed=7)(image=image)["image"] for _ in range(1)]
    again = [build_pipeline(preset, 64, train=True, seed=7)(image=image)["image"] for _ in range(1)]
    np.testing.assert_array_equal(first[0], again[0])
    assert first[0].shape == (64, 64, 3) and first[0].dtype == np.uint8


def test_different_seeds_give_different_augmentations():
    image = picture()
    a = build_pipeline("heavy", 64, train=True, seed=1)(image=image)["image"]
    b = build_pipeline("heavy", 64, train=True, seed=2)(image=image)["image"]
    assert not np.array_equal(a, b)


def test_flip_is_the_eval_picture_or_its_mirror():
    image = picture(size=(100, 200))
    plain = build_pipeline("none", 64, train=False)(image=image)["image"]
    pipeline = build_pipeline("flip", 64, train=True, seed=4)
    seen = set()
    for _ in range(20):
        out = pipeline(image=image)["image"]
        if np.array_equal(out, plain):
            seen.add("plain")
        else:
            np.testing.assert_array_equal(out, plain[:, ::-1])
            seen.add("mirror")
    assert seen == {"plain", "mirror"}


def test_eval_pipeline_only_resizes_and_centre_crops():
    image = picture(size=(100, 200))
    out = build_pipeline("heavy", 64, train=False)(image=image)["image"]
    assert out.shape == (64, 64, 3)
    again = build_pipeline("heavy", 64, train=False, seed=5)(image=image)["image"]
    np.testing.assert_array_equal(out, again)  # no randomness at all


@pytest.mark.parametrize("preset", PRESETS)
def test_segmentation_masks_keep_exactly_their_class_values(preset: str):
    rng = np.random.default_rng(3)
    mask = np.zeros((96, 128), dtype=np.uint8)
    mask[10:50, 20:90] = 1
    mask[60:90, 40:70] = 2
    pipeline = build_pipeline(preset, 64, train=True, task="segmentation", seed=0)
    for _ in range(20):
        out = pipeline(image=picture(int(rng.integers(100))), mask=mask)
        assert out["mask"].shape == (64, 64)
        assert set(np.unique(out["mask"])) <= {0, 1, 2}


@pytest.mark.filterwarnings("ignore:Transform NoSuchTransform has no 'p' parameter")
def test_user_pipeline_files_in_yaml_and_json(tmp_path: Path):
    import albumentations as A

    custom = A.Compose([A.RandomCrop(height=32, width=32), A.VerticalFlip(p=1.0)])
    for fmt in ("yaml", "json"):
        path = tmp_path / f"mine.{fmt}"
        A.save(custom, str(path), data_format=fmt)
        pipeline = build_pipeline(str(path), 64, train=True, seed=3)
        assert pipeline(image=picture())["image"].shape == (32, 32, 3)
    broken = tmp_path / "broken.yaml"
    broken.write_text("transform: {__class_fullname__: NoSuchTransform}\n")
    with pytest.raises(UsageError, match="broken.yaml"):
        build_pipeline(str(broken), 64, train=True)


def test_unknown_preset_and_task():
    with pytest.raises(UnknownNameError, match="Did you mean 'medium'"):
        build_pipeline("meduim", 64, train=True)
    with pytest.raises(UsageError, match="task"):
        build_pipeline("light", 64, train=True, task="detection")


def test_cli_preview_png(flat_dataset: Path, tmp_path: Path):
    assert runner.invoke(app, ["split", str(flat_dataset)]).exit_code == 0
    out = tmp_path / "preview.png"
    result = runner.invoke(app, ["augment", "--preset", "heavy", "--out", str(out), "--images", "3", "--versions", "4", "--size", "48"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (6 + 5 * (48 + 6), 18 + 6 + 3 * (48 + 18 + 6))


def test_cli_preview_overlays_segmentation_masks(tmp_path: Path):
    data = tmp_path / "carvana"
    assert runner.invoke(app, ["sample", str(data), "--n", "4", "--kind", "segmentation"]).exit_code == 0
    assert runner.invoke(app, ["split", str(data), "--group-pattern", "^([^_]+)_"]).exit_code == 0
    out = tmp_path / "seg.png"
    result = runner.invoke(app, ["augment", str(data), "--out", str(out), "--images", "2", "--versions", "2", "--size", "64"])
    assert result.exit_code == 0, result.output
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    # The cars are outlined: white pixels right beside black ones, which the sample's
    # coloured pictures do not have on their own.
    white = (pixels == 255).all(axis=-1)
    black = (pixels == 0).all(axis=-1)
    outlined = (white[1:, :] & black[:-1, :]).sum() + (white[:, 1:] & black[:, :-1]).sum()
    assert outlined > 100
    assert "(preset light: what prep train --plugin unet uses for" in " ".join(result.stderr.split())  # unet trains with light


def test_the_outline_follows_the_mask_and_leaves_the_rest_alone():
    from prep.augment.preview import _overlay

    image = np.full((10, 10, 3), 100, dtype=np.uint8)
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[3:7, 3:7] = 1
    out = _overlay(image, mask)
    changed = (out != 100).any(axis=-1)
    assert changed[2:8, 2:8].sum() == changed.sum() > 0  # only around the square
    assert (out[5, 5] == 100).all() and (out[0, 0] == 100).all()  # inside and outside untouched


def test_the_policies_move_masks_with_the_image_and_recolour_only_the_image():
    from prep.augment.policies import rand_augment, trivial_augment

    import albumentations as A

    # A picture whose every pixel says where it came from, and its mask: the same pattern.
    ramp = (np.arange(64)[None, :] * 4 + np.zeros((64, 1), int)).astype(np.uint8)
    image = np.repeat(ramp[:, :, None], 3, axis=2)
    mask = (ramp // 64).astype(np.uint8)  # four stripes, ids 0-3
    moved = recoloured = 0
    for policy in (rand_augment(), trivial_augment()):
        pipeline = A.Compose([policy], seed=3)
        for _ in range(60):
            out = pipeline(image=image, mask=mask)
            changed_mask = not np.array_equal(out["mask"], mask)
            moved += changed_mask
            recoloured += not changed_mask and not np.array_equal(out["image"], image)
            assert set(np.unique(out["mask"])) <= {0, 1, 2, 3}
    assert moved > 10 and recoloured > 10  # both kinds of operation are drawn


def test_random_erasing_fills_a_box_with_noise_and_leaves_the_mask():
    from prep.augment.policies import random_erasing

    import albumentations as A

    image, mask = np.full((64, 64, 3), 128, np.uint8), np.ones((64, 64), np.uint8)
    out = A.Compose([random_erasing(p=1.0)], seed=0)(image=image, mask=mask)
    erased = (out["image"] != 128).any(axis=2).mean()
    assert 0.01 < erased <= 0.34 and np.array_equal(out["mask"], mask)


def test_cli_previews_the_policies(tmp_path: Path):
    from prep.testing import make_classification_dataset

    data = make_classification_dataset(tmp_path / "data", per_class=3, valid_per_class=1, size=48)
    for preset in ("randaugment", "trivialaugment"):
        result = runner.invoke(app, ["augment", str(data), "--preset", preset, "--out", str(tmp_path / f"{preset}.png"), "--images", "2", "--versions", "3"])
        assert result.exit_code == 0, result.output
        assert Image.open(tmp_path / f"{preset}.png").size[0] > 300


def test_the_auto_preview_shows_what_each_trainer_trains_with(tmp_path: Path):
    from typer.testing import CliRunner

    from prep.cli import app
    from prep.testing import make_classification_dataset, make_segmentation_dataset

    runner = CliRunner()
    masks = make_segmentation_dataset(tmp_path / "masks")
    shown = runner.invoke(app, ["augment", str(masks), "--out", str(tmp_path / "m.png")])
    assert shown.exit_code == 0, shown.output
    assert "preset light: what prep train --plugin unet uses for" in " ".join(shown.output.split())  # unet's recipe: light
    classes = make_classification_dataset(tmp_path / "classes")
    short = runner.invoke(app, ["augment", str(classes), "--out", str(tmp_path / "c.png")])
    assert "preset none: what prep train --plugin resnet-finetune uses for" in " ".join(short.output.split())
    long = runner.invoke(app, ["augment", str(classes), "--epochs", "25", "--out", str(tmp_path / "l.png")])
    assert "preset light: what prep train --plugin resnet-finetune uses for 25 epochs" in " ".join(long.output.split())
