"""Datasets, collate functions, loaders and reduced-scale decoding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prep.augment.presets import build_pipeline
from prep.data.collate import (
    segmentation_collate,
    targets_as_list_collate,
    to_device_normalized,
    uint8_channels_last_collate,
)
from prep.data.datasets import ClassificationDataset, CorruptSample, SegmentationDataset
from prep.data.loader import create_loader
from prep.images.decode import load_rgb
from prep.plugins import collate_fns

from conftest import jpeg_bytes, write


@pytest.fixture
def split_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "d"
    seed = 0
    for split, n in (("train", 6), ("val", 2)):
        for c in ("dog", "cat"):
            for i in range(n):
                seed += 1
                write(root / split / c / f"{i}.jpg", jpeg_bytes(seed, size=(40, 30)))
    return root


def test_class_mapping_is_sorted_stable_and_val_reads_as_valid(split_dataset: Path):
    train = ClassificationDataset(split_dataset, "train")
    valid = ClassificationDataset(split_dataset, "valid", classes=train.classes)
    assert train.classes == ["cat", "dog"] and train.class_to_index == {"cat": 0, "dog": 1}
    assert len(train) == 12 and len(valid) == 4
    image, target = train[0]
    assert image.dtype == torch.uint8 and image.shape == (30, 40, 3) and target == 0


def test_uint8_channels_last_collate_shapes_dtypes_and_layout():
    samples = [(torch.full((8, 6, 3), i, dtype=torch.uint8), i % 2) for i in range(4)]
    batch = uint8_channels_last_collate(samples)
    assert batch.inputs.shape == (4, 8, 6, 3) and batch.inputs.dtype == torch.uint8
    assert batch.inputs.is_contiguous()
    assert batch.targets.tolist() == [0, 1, 0, 1] and batch.targets.dtype == torch.int64
    x = to_device_normalized(batch.inputs, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], "cpu")
    assert x.shape == (4, 3, 8, 6) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (3 / 255 - 0.5) / 0.25
    assert torch.allclose(x[3], torch.full((3, 8, 6), expected), atol=1e-6)


def test_segmentation_collate_shapes_and_dtypes():
    samples = [(torch.zeros((8, 6, 3), dtype=torch.uint8), torch.ones((8, 6), dtype=torch.int64)) for _ in range(3)]
    batch = segmentation_collate(samples)
    assert batch.inputs.shape == (3, 8, 6, 3) and batch.targets.shape == (3, 8, 6)
    assert batch.targets.dtype == torch.int64


def test_targets_as_list_collate_keeps_variable_size_targets():
    boxes = [torch.zeros((n, 4)) for n in (0, 2, 5)]
    samples = [(torch.zeros((8, 8, 3), dtype=torch.uint8), b) for b in boxes]
    batch = targets_as_list_collate(samples)
    assert batch.inputs.shape == (3, 8, 8, 3)
    assert isinstance(batch.targets, list) and [t.shape[0] for t in batch.targets] == [0, 2, 5]


def test_collates_drop_corrupt_samples():
    samples = [(torch.zeros((4, 4, 3), dtype=torch.uint8), 1), CorruptSample("x.jpg", "truncated")]
    batch = uint8_channels_last_collate(samples)
    assert batch.inputs.shape[0] == 1 and batch.skipped == (CorruptSample("x.jpg", "truncated"),)


def test_collate_functions_are_registered_by_name():
    assert collate_fns().names() == ["multilabel", "segmentation", "targets-as-list", "uint8-channels-last"]
    assert collate_fns().get("uint8-channels-last") is uint8_channels_last_collate


def test_reduced_scale_decode_matches_full_decode_and_resize(tmp_path: Path):
    import cv2

    y, x = np.mgrid[0:480, 0:640]
    smooth = np.stack([(x / 640 * 255), (y / 480 * 255), ((x + y) / 1120 * 255)], axis=2).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    full = load_rgb(path)
    reduced = load_rgb(path, min_side=120)  # 480 / 4 = 120: a quarter-scale DCT decode
    assert reduced.shape == (120, 160, 3)
    resized = cv2.resize(full, (160, 120), interpolation=cv2.INTER_AREA)
    error = np.abs(reduced.astype(int) - resized.astype(int))
    assert error.mean() < 1.5 and np.percentile(error, 99) < 6
    assert load_rgb(path, min_side=300).shape == (480, 640, 3)  # 240 < 300: no reduction


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_is_skipped_and_reported_once(split_dataset: Path, workers: int, caplog):
    bad = split_dataset / "train" / "cat" / "broken.jpg"
    bad.write_bytes(jpeg_bytes(1)[:200])
    dataset = ClassificationDataset(split_dataset, "train", transform=build_pipeline("light", 24, train=True, seed=0))
    # 13 files in batches of 5: no lone last batch to drop, so every good image is seen.
    loader = create_loader(dataset, 5, train=True, workers=workers, seed=0)
    seen = 0
    with caplog.at_level(logging.WARNING, logger="prep"):
        for _ in range(2):  # two epochs: reported once, not once per epoch
            for batch in loader:
                seen += batch.inputs.shape[0]
                assert batch.inputs.shape[1:] == (24, 24, 3)
    assert seen == 2 * 12
    assert list(loader.skipped) == [str(bad)]
    assert sum("broken.jpg" in r.getMessage() for r in caplog.records) == 1


def test_same_seed_repeats_shuffle_and_augmentation(split_dataset: Path):
    def first_batch(seed: int):
        dataset = ClassificationDataset(split_dataset, "train", transform=build_pipeline("heavy", 24, train=True, seed=seed))
        batch = next(iter(create_loader(dataset, 6, train=True, workers=2, seed=seed)))
        return batch.inputs, batch.targets

    a, b, c = first_batch(5), first_batch(5), first_batch(6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_loader_defaults(split_dataset: Path):
    loader = create_loader(ClassificationDataset(split_dataset), 4, train=False, workers=2)
    assert loader.loader.persistent_workers and not loader.loader.pin_memory
    assert loader.loader.num_workers == 2


def test_segmentation_dataset_pairs_images_and_masks(tmp_path: Path):
    root = tmp_path / "seg"
    for i in range(3):
        write(root / "train" / "images" / f"{i}.jpg", jpeg_bytes(i, size=(32, 32)))
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[8:24, 8:24] = 255
        (root / "train" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "train" / "masks" / f"{i}_mask.png")
    write(root / "train" / "images" / "alone.jpg", jpeg_bytes(9, size=(32, 32)))
    dataset = SegmentationDataset(root, "train", transform=build_pipeline("heavy", 16, train=True, task="segmentation", seed=1))
    assert len(dataset) == 3 and [p.name for p in dataset.unpaired] == ["alone.jpg"]
    batch = next(iter(create_loader(dataset, 3, train=False, collate_fn=segmentation_collate, workers=0)))
    assert batch.inputs.shape == (3, 16, 16, 3) and batch.targets.shape == (3, 16, 16)
    assert set(batch.targets.unique().tolist()) <= {0, 1}  # 0/255 masks read as class ids


def test_truncated_and_bomb_jpegs_fail_loudly(tmp_path: Path):
    from prep.images.decode import ImageDecodeError

    big = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    path = tmp_path / "cut.jpg"
    Image.fromarray(big).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # no end marker: must not come out grey
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_rgb(path)
    header_only = bytearray(data)
    sof = header_only.find(b"\xff\xc0")
    header_only[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2  # claims 60000 x 60000
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(bytes(header_only))
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_rgb(bomb)


def test_order_and_augmentation_depend_only_on_seed_and_epoch(split_dataset: Path):
    """What an exact resume needs: a new loader, set to epoch 1, replays epoch 1."""

    def epoch_batches(loader, epoch):
        loader.set_epoch(epoch)
        return [(b.inputs.clone(), b.targets.clone()) for b in loader]

    def make():
        dataset = ClassificationDataset(split_dataset, "train", transform=build_pipeline("heavy", 24, train=True, seed=3))
        return create_loader(dataset, 5, train=True, workers=2, seed=3)

    straight = make()
    first, second = epoch_batches(straight, 0), epoch_batches(straight, 1)
    resumed = epoch_batches(make(), 1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(second, resumed))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second))  # epochs differ
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    epoch_batches(make(), 0)
    assert torch.equal(torch.rand(1), before)  # loading leaves torch's global RNG alone


def test_plain_datasets_get_plain_indexes():
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            assert isinstance(index, int)
            return torch.zeros((2, 2, 3), dtype=torch.uint8), index

    batches = list(create_loader(Plain(), 2, train=True, workers=0))
    assert sorted(t for b in batches for t in b.targets.tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("length", [10, 11, 2])
def test_ranks_share_an_epoch_without_overlap(length: int):
    from prep.data.sampling import SeededSampler

    def shares(pad: bool) -> list[list[int]]:
        samplers = [SeededSampler(length, seed=3, rank=r, world_size=3, pad=pad, with_seeds=False) for r in range(3)]
        for sampler in samplers:
            sampler.set_epoch(2)
        return [list(s) for s in samplers]

    alone = SeededSampler(length, seed=3, with_seeds=False)
    alone.set_epoch(2)
    padded = shares(pad=True)
    assert len({len(share) for share in padded}) == 1  # as many batches on every rank, as DDP needs
    assert set(sum(padded, [])) == set(range(length))
    exact = shares(pad=False)  # evaluation: every image exactly once
    assert sorted(sum(exact, [])) == list(range(length))
    assert [i for group in zip(*padded) for i in group][:length] == list(alone)  # the same order, dealt out


def test_a_lone_last_training_batch_is_dropped_and_validation_keeps_every_image(split_dataset: Path):
    dataset = ClassificationDataset(split_dataset, "train", transform=build_pipeline("none", 24, train=False))
    assert len(dataset) == 12
    train = create_loader(dataset, 11, train=True, workers=0, seed=0)  # 11 + 1
    assert [len(batch.inputs) for batch in train] == [11]
    valid = create_loader(dataset, 11, train=False, workers=0, seed=0)
    assert [len(batch.inputs) for batch in valid] == [11, 1]
    assert [len(batch.inputs) for batch in create_loader(dataset, 5, train=True, workers=0, seed=0)] == [5, 5, 2]
