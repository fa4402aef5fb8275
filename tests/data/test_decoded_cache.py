"""The decoded-image cache and decoding no more pixels than training needs: the same
batches with or without it, never stale, never half-written, shared by workers, reused by
the next run, and bounded by the room there is."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import jpeg_bytes, write
from prep.augment.presets import build_pipeline
from prep.cli import app
from prep.data import cache_plan
from prep.data.cache import DecodedStore, build_store, open_store, store_folder
from prep.data.cache_plan import cache_datasets
from prep.data.collate import segmentation_collate, uint8_channels_last_collate
from prep.data.datasets import ClassificationDataset, SegmentationDataset
from prep.data.loader import create_loader
from prep.data.resolution import source_side
from prep.images.decode import load_rgb, load_rgb_at_side
from prep.testing import make_segmentation_dataset

runner = CliRunner()


class RecordingProgress:
    """A Progress that remembers the titles of its tasks."""

    def __init__(self) -> None:
        self.titles: list[str] = []

    @contextmanager
    def task(self, description: str, total: int):
        self.titles.append(description)
        yield lambda n=1, status=None: None


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A split dataset of JPEGs larger than the training size, of several aspect ratios."""
    root = tmp_path / "photos"
    sizes = [(120, 90), (90, 120), (100, 100), (160, 96)]
    for split, n in (("train", 6), ("valid", 2)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(n):
                write(root / split / name / f"{i}.jpg", jpeg_bytes(len(split) * 100 + c * 10 + i, size=sizes[i % 4]))
    return root


def _classification(root: Path, split: str = "train", preset: str = "light", size: int = 32) -> ClassificationDataset:
    transform = build_pipeline(preset, size, train=split == "train", seed=0)
    return ClassificationDataset(root, split, transform=transform, decode_side=source_side(transform))


def _batches(dataset, epochs=(0, 1), workers: int = 0, collate=uint8_channels_last_collate):
    loader = create_loader(dataset, 4, train=True, workers=workers, seed=3, collate_fn=collate)
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out += [(batch.inputs.clone(), batch.targets.clone()) for batch in loader]
    return out


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(t, u) for (x, t), (y, u) in zip(a, b))


# -- Decoding no more than needed ----------------------------------------------------------------

def test_the_first_step_of_the_pipeline_decides_how_many_pixels_are_decoded():
    assert source_side(build_pipeline("none", 224, train=True)) == 256  # SmallestMaxSize(256), then the centre crop
    assert source_side(build_pipeline("light", 224, train=True)) == 448  # a quarter-area crop keeps every pixel
    assert source_side(build_pipeline("light", 224, train=False)) == 256
    assert source_side(build_pipeline("none", 224, train=False, task="segmentation")) == 224  # Resize(224, 224)
    import albumentations as A

    assert source_side(A.Compose([A.RandomCrop(32, 32)])) is None  # shrinking first would change what it sees
    assert source_side(None) is None


def test_a_large_photo_is_decoded_at_reduced_scale_to_exactly_the_side_needed(tmp_path: Path):
    photo = write(tmp_path / "big.jpg", jpeg_bytes(1, size=(1600, 1200)))
    pixels = load_rgb_at_side(photo, 256)
    assert pixels.shape == (256, 341, 3)
    full = load_rgb(photo)
    assert full.shape == (1200, 1600, 3)
    small = write(tmp_path / "small.jpg", jpeg_bytes(2, size=(100, 80)))
    assert load_rgb_at_side(small, 256).shape == (80, 100, 3)  # never enlarged
    assert load_rgb_at_side(photo, None).shape == (1200, 1600, 3)


def test_shrinking_averages_every_pixel_from_2x_and_stays_close_to_a_lanczos_resize_below():
    from PIL import Image, ImageFilter

    from prep.images.decode import shrink_to_side

    # From 2x, each output pixel is the mean of the pixels it covers, so that noise does not
    # alias (bilinear would read 4 of the 16 and be off by up to 120 levels).
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (400, 400, 3)).astype(np.uint8)
    block_means = noise.reshape(100, 4, 100, 4, 3).mean(axis=(1, 3))
    assert np.abs(shrink_to_side(noise, 100) - block_means).max() <= 0.5
    # Below 2x (what follows a reduced-scale decode), close to a Lanczos resize.
    detail = np.kron(rng.integers(0, 256, (150, 200, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 600 x 800
    detail = np.asarray(Image.fromarray(detail).filter(ImageFilter.GaussianBlur(1.5)))
    shrunk = shrink_to_side(detail, 448)
    reference = np.asarray(Image.fromarray(detail).resize(shrunk.shape[1::-1], Image.LANCZOS))
    assert shrunk.shape == (448, 597, 3)
    assert np.abs(shrunk.astype(int) - reference.astype(int)).mean() < 2


# -- The same batches, cached or not ------------------------------------------------------------

def test_cached_and_uncached_batches_are_identical_for_the_same_seed_and_epoch(photos: Path):
    uncached = _batches(_classification(photos))
    dataset = _classification(photos)
    report = cache_datasets("disk", photos, {"train": dataset})
    assert report.where == "disk" and dataset.cache is not None
    cached = _batches(dataset)
    assert _same(cached, uncached)
    assert not torch.equal(cached[0][0], cached[len(cached) // 2][0])  # epochs differ: augmentation stays random


def test_segmentation_masks_are_cached_with_their_images(tmp_path: Path):
    root = make_segmentation_dataset(tmp_path / "seg", per_split={"train": 6, "valid": 2}, size=48, classes=3)

    from prep.masks.read import ClassMapping, MaskDecoder

    def dataset(decode_mask=None):
        transform = build_pipeline("light", 32, train=True, task="segmentation", seed=0)
        return SegmentationDataset(root, "train", transform=transform, decode_side=source_side(transform), decode_mask=decode_mask)

    # As training reads them (the task's decoder, 3 classes: one byte a pixel), and as stored.
    for decode_mask, dtype in ((MaskDecoder(None, ClassMapping((0, 1, 2))), np.uint8), (None, np.uint16)):
        uncached = _batches(dataset(decode_mask), collate=segmentation_collate)
        cached_dataset = dataset(decode_mask)
        cache_datasets("disk", root, {"train": cached_dataset})
        assert cached_dataset.cache.mask_dtype == dtype
        assert _same(_batches(cached_dataset, collate=segmentation_collate), uncached)


def plain_collate(samples):
    """A collate function that is not one of prep's own (so loading uses processes)."""
    return uint8_channels_last_collate(samples)


def test_worker_processes_map_the_store_instead_of_receiving_a_copy(photos: Path):
    dataset = _classification(photos)
    cache_datasets("disk", photos, {"train": dataset})
    dataset.cache.read(0)  # maps the files in this process
    pickled = pickle.dumps(dataset)
    assert dataset.cache.nbytes > 20_000 and len(pickled) < dataset.cache.nbytes / 4
    assert pickle.loads(pickled).cache._maps is None  # each worker maps the file itself
    loader = create_loader(dataset, 4, train=True, workers=2, seed=3, collate_fn=plain_collate)
    assert isinstance(loader.loader, torch.utils.data.DataLoader)  # a plugin's collate may draw random numbers
    assert _same(_batches(dataset, workers=2, collate=plain_collate), _batches(_classification(photos), workers=0))


def test_an_epoch_left_early_leaves_the_threads_ready_for_the_next(photos: Path):
    dataset = _classification(photos)
    cache_datasets("disk", photos, {"train": dataset})
    loader = create_loader(dataset, 2, train=True, workers=2, seed=3)
    loader.set_epoch(0)
    for _ in loader:  # a Ctrl-C after the first batch: the loop breaks
        break
    loader.set_epoch(1)
    again = [batch.inputs.clone() for batch in loader]
    fresh = create_loader(_classification(photos), 2, train=True, workers=0, seed=3)
    fresh.set_epoch(1)
    assert len(again) == len(fresh) and all(torch.equal(a, b.inputs) for a, b in zip(again, fresh))


def test_threads_make_the_batches_of_a_cached_dataset_and_they_are_the_same(photos: Path, tmp_path: Path):
    from prep.data.loader import ThreadedLoader

    dataset = _classification(photos)
    cache_datasets("disk", photos, {"train": dataset})
    assert isinstance(create_loader(dataset, 4, train=True, workers=2, seed=3).loader, ThreadedLoader)
    assert _same(_batches(dataset, workers=2), _batches(_classification(photos), workers=2))
    assert _same(_batches(dataset, workers=3), _batches(dataset, workers=0))

    root = make_segmentation_dataset(tmp_path / "seg", per_split={"train": 6, "valid": 2}, size=48, classes=3)
    transform = build_pipeline("light", 32, train=True, task="segmentation", seed=0)
    seg = SegmentationDataset(root, "train", transform=transform, decode_side=source_side(transform))
    uncached = _batches(seg, workers=2, collate=segmentation_collate)
    cache_datasets("disk", root, {"train": seg})
    assert _same(_batches(seg, workers=2, collate=segmentation_collate), uncached)


# -- Never stale, never half-written, reused ----------------------------------------------------

def test_a_file_changed_on_disk_is_decoded_again_and_the_others_are_copied(photos: Path):
    dataset = _classification(photos)
    cache_datasets("disk", photos, {"train": dataset})
    changed = dataset.samples[3][0]
    before = dataset.cache.read(3)[0]
    write(changed, jpeg_bytes(999, size=(120, 90)))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10_000_000))

    again = _classification(photos)
    progress = RecordingProgress()
    report = cache_datasets("disk", photos, {"train": again}, progress=progress)
    assert report.reused == [] and progress.titles  # rebuilt ...
    assert np.array_equal(again.cache.read(3)[0], load_rgb_at_side(changed, again.decoder.side))
    assert not np.array_equal(again.cache.read(3)[0], before)
    assert np.array_equal(again.cache.read(0)[0], dataset.cache.read(0)[0])  # ... the rest unchanged

    calls = []

    class Counting:
        def __init__(self, decoder):
            self.decoder, self.key, self.side = decoder, decoder.key, decoder.side

        def __call__(self, files):
            calls.append(files)
            return self.decoder(files)

    write(changed, jpeg_bytes(1000, size=(120, 90)))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 20_000_000))
    folder = again.cache.folder
    build_store(folder, [again.sample_files(i) for i in range(len(again))], Counting(again.decoder), workers=1)
    assert calls == [(changed,)]  # only the changed file was decoded


def test_the_decode_settings_are_part_of_the_key(photos: Path):
    small, large = _classification(photos, size=32), _classification(photos, size=48)
    cache_datasets("disk", photos, {"train": small})
    report = cache_datasets("disk", photos, {"train": large})
    assert report.reused == [] and small.cache.folder != large.cache.folder
    assert large.cache.read(0)[0].shape != small.cache.read(0)[0].shape


def test_a_store_resampled_another_way_is_not_reused(photos: Path, monkeypatch: pytest.MonkeyPatch):
    from prep.data import decoders

    before = _classification(photos)
    cache_datasets("disk", photos, {"train": before})
    monkeypatch.setattr(decoders, "SHRINK_RESAMPLING", "area at every factor")  # as a store from an older prep
    after = _classification(photos)
    assert cache_datasets("disk", photos, {"train": after}).reused == []
    assert after.cache.folder != before.cache.folder


def test_an_interrupted_build_is_never_served_and_is_cleaned_up(photos: Path):
    dataset = _classification(photos)
    files = [dataset.sample_files(i) for i in range(len(dataset))]
    folder = store_folder(photos / ".prep" / "cache", "train", dataset.decoder.key)

    class Interrupted:
        key, side = dataset.decoder.key, dataset.decoder.side

        def __init__(self):
            self.n = 0

        def __call__(self, files):
            self.n += 1
            if self.n == 5:
                raise KeyboardInterrupt
            return dataset.decoder(files)

    with pytest.raises(KeyboardInterrupt):
        build_store(folder, files, Interrupted(), workers=1)
    assert not folder.exists() and not list(folder.parent.glob("*.partial-*"))
    assert open_store(folder, files, dataset.decoder.key) is None


def test_a_store_whose_files_were_cut_short_is_rebuilt_not_read(photos: Path, tmp_path: Path):
    root = make_segmentation_dataset(tmp_path / "seg", per_split={"train": 4, "valid": 2}, size=40)
    for name, dataset in (("photos", _classification(photos)), ("masks", SegmentationDataset(root, "train", decode_side=32))):
        cache_datasets("disk", dataset.root, {"train": dataset})
        store = dataset.cache
        assert store.complete(), name
        victim = store.folder / ("masks.u8" if name == "masks" else "pixels.u8")
        os.truncate(victim, victim.stat().st_size - 7)
        files = [dataset.sample_files(i) for i in range(len(dataset))]
        assert open_store(store.folder, files, dataset.decoder.key) is None, name
        again = type(dataset).__new__(type(dataset))
        again.__dict__.update(dataset.__dict__, cache=None)
        report = cache_datasets("disk", dataset.root, {"train": again})
        assert report.reused == [] and again.cache.complete(), name


@pytest.mark.slow
def test_a_build_killed_half_way_leaves_nothing_that_is_read(photos: Path):
    for i in range(40):  # enough work to kill it in the middle
        write(photos / "train" / "cat" / f"big{i}.jpg", jpeg_bytes(500 + i, size=(900, 700)))
    script = f"""
import time
from prep.data import datasets, decoders
from prep.data.cache_plan import cache_datasets
from prep.augment.presets import build_pipeline
from prep.data.resolution import source_side
slow = decoders.ImageDecoder.__call__
def crawl(self, files):
    time.sleep(0.05)
    decoded = slow(self, files)
    print("decoded", flush=True)
    return decoded
decoders.ImageDecoder.__call__ = crawl
t = build_pipeline("light", 32, train=True, seed=0)
d = datasets.ClassificationDataset({str(photos)!r}, "train", transform=t, decode_side=source_side(t))
print("building", flush=True)
cache_datasets("disk", d.root, {{"train": d}}, workers=1)
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "building"
    # Killed once 5 of the 40 images are decoded and written: in the middle, however fast
    # this machine is.
    for _ in range(5):
        assert process.stdout.readline().strip() == "decoded"
    process.kill()
    process.wait()
    cache = photos / ".prep" / "cache"
    partials = list(cache.glob("*.partial-*"))
    assert partials and not [p for p in cache.iterdir() if ".partial-" not in p.name]  # nothing finished

    dataset = _classification(photos)
    report = cache_datasets("disk", photos, {"train": dataset})
    assert report.reused == [] and not any(p.exists() for p in partials)  # the next build cleans up
    assert np.array_equal(dataset.cache.read(0)[0], dataset.decoder(dataset.sample_files(0))[0])


def test_a_cache_built_by_one_run_is_reused_by_the_next_and_by_resume(photos: Path, tmp_path: Path):
    args = ["train", str(photos), "--weights", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--preset", "light"]
    first = runner.invoke(app, [*args, "--epochs", "1", "--run-dir", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "cache: disk (auto: it fits in half the free disk)" in first.stderr and "built in" in first.stderr
    stores = sorted((photos / ".prep" / "cache").iterdir())
    assert [p.name.split("-")[0] for p in stores] == ["train", "valid"]
    built = {p: (p / "meta.json").stat().st_mtime_ns for p in stores}

    second = runner.invoke(app, [*args, "--epochs", "2", "--run-dir", str(tmp_path / "a"), "--resume"])
    assert second.exit_code == 0, second.output
    assert "(reused)" in second.stderr
    assert {p: (p / "meta.json").stat().st_mtime_ns for p in stores} == built

    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:  # the loader's speed, recorded each epoch
        assert record["loader_images_per_s"] > 0 and 0 <= record["data_wait"] <= 1
    # The epoch line names the loader only when waiting for it took a large share of the epoch.
    line = next(line for line in second.stderr.splitlines() if line.startswith("epoch 2/2:"))
    assert ("waiting for it" in line) == (records[-1]["data_wait"] >= 0.2), line


def test_cached_and_uncached_runs_report_the_same_figures(photos: Path, tmp_path: Path):
    args = ["train", str(photos), "--weights", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--epochs", "1", "--json"]
    cached = runner.invoke(app, [*args, "--run-dir", str(tmp_path / "c")])
    uncached = runner.invoke(app, [*args, "--run-dir", str(tmp_path / "u"), "--cache", "off"])
    assert cached.exit_code == 0 and uncached.exit_code == 0, cached.output + uncached.output
    a, b = json.loads(cached.stdout), json.loads(uncached.stdout)
    assert a["setup"]["cache"] == "disk" and b["setup"]["cache"] is None
    timing = ("images_per_s", "loader_images_per_s", "data_wait")

    def figures(run: str) -> list[dict]:
        records = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in record.items() if k not in timing} for record in records]

    assert a["best_valid_acc"] == b["best_valid_acc"] and figures("c") == figures("u")


def test_a_ram_cache_lives_in_shared_memory_for_the_run_only(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(cache_plan, "SHARED_MEMORY", shm)
    result = runner.invoke(app, [
        "train", str(photos), "--weights", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0",
        "--epochs", "1", "--cache", "ram", "--run-dir", str(tmp_path / "r"),
    ])
    assert result.exit_code == 0, result.output
    assert "cache: ram (--cache ram)" in result.stderr and str(shm) in result.stderr
    assert list(shm.iterdir()) == [] and not (photos / ".prep" / "cache").exists()


# -- Bounded: the size is shown first, and what does not fit is not built ----------------------

def test_the_size_is_shown_before_the_store_is_built(photos: Path):
    dataset = _classification(photos)
    progress = RecordingProgress()
    report = cache_datasets("auto", photos, {"train": dataset}, progress=progress)
    [title] = progress.titles
    assert title.startswith(f"Caching train images at {dataset.decoder.side} px (about ") and title.endswith(" KB, disk)")
    estimate = cache_plan.estimate_bytes([dataset.sample_files(i) for i in range(len(dataset))], dataset.decoder)
    assert 0.5 * report.nbytes <= estimate <= 2 * report.nbytes


def test_auto_falls_back_to_off_with_a_message_when_the_cache_would_not_fit(photos: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cache_plan, "_free_space", lambda folder: 1000)
    monkeypatch.setattr(cache_plan, "_available_memory", lambda: 1000)
    dataset = _classification(photos)
    report = cache_datasets("auto", photos, {"train": dataset})
    assert report.where is None and dataset.cache is None
    assert report.reason.startswith("off (auto: it would need about") and "every epoch decodes again" in report.reason
    assert not (photos / ".prep" / "cache").exists()


def test_auto_uses_memory_when_the_disk_is_full_and_a_cache_asked_for_where_it_does_not_fit_is_refused(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(cache_plan, "SHARED_MEMORY", shm)
    real_free_space = cache_plan._free_space
    monkeypatch.setattr(cache_plan, "_free_space", lambda folder: real_free_space(folder) if str(folder).startswith(str(shm)) else 1000)
    report = cache_datasets("auto", photos, {"train": _classification(photos)})
    assert report.where == "ram" and str(shm) in report.describe()
    report.release()
    assert list(shm.iterdir()) == []

    result = runner.invoke(app, [
        "train", str(photos), "--weights", "none", "--image-size", "32", "--workers", "0", "--epochs", "1",
        "--cache", "disk", "--run-dir", str(tmp_path / "r"),
    ])
    assert result.exit_code == 1
    assert "--cache disk: the decoded cache needs about" in result.output and "use --cache ram, or --cache off" in result.output
    assert not (tmp_path / "r").exists()


def test_a_disk_that_fills_up_while_building_is_one_line_and_leaves_nothing(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import errno

    from prep.data import cache

    def full(partial, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(partial / "pixels.u8"))

    monkeypatch.setattr(cache, "_write_samples", full)
    result = runner.invoke(app, [
        "train", str(photos), "--weights", "none", "--image-size", "32", "--workers", "0", "--epochs", "1",
        "--run-dir", str(tmp_path / "r"),
    ])
    assert result.exit_code == 1
    [line] = [l for l in result.output.splitlines() if l.strip()][-1:]
    assert "pixels.u8" in line and "the disk is full" in line and "Traceback" not in result.output
    assert list((photos / ".prep" / "cache").iterdir()) == [] and not (tmp_path / "r").exists()


# -- Bad files ------------------------------------------------------------------------------------

def test_a_corrupt_file_met_while_building_is_named_once_and_skipped(photos: Path, tmp_path: Path):
    broken = write(photos / "train" / "dog" / "broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    result = runner.invoke(app, [
        "train", str(photos), "--weights", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0",
        "--epochs", "2", "--run-dir", str(tmp_path / "r"), "--json",
    ])
    assert result.exit_code == 0, result.output
    assert result.stderr.count(f"{broken}:") == 1
    assert str(broken) in json.loads(result.stdout)["skipped_images"]
    store = DecodedStore(next((photos / ".prep" / "cache").glob("train-*")))
    assert len(store.corrupt) == 1


# -- torchrun --------------------------------------------------------------------------------------

def _cached_rank(rank: int, port: int, root: str, out: str) -> None:
    """One of two Gloo processes training with the default cache; writes what its header said."""
    from prep.train.options import TrainOptions
    from prep.train.run import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    summary = train(Path(root), TrainOptions(
        weights="none", normalize="imagenet", epochs=1, image_size=32, batch_size=4, workers=0, device="cpu",
        run_dir=Path(out) / "run",
    ))
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(summary["setup"]))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_under_torchrun_the_first_process_builds_and_the_other_takes_its_cache(photos: Path, tmp_path: Path):
    from conftest import run_two_gloo_ranks

    run_two_gloo_ranks(_cached_rank, (str(photos), str(tmp_path)), seconds=180)
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first["cache"] == second["cache"] == "disk"
    assert "built in" in first["cache_about"]
    assert "built by the first process of this machine" in second["cache_about"]
    assert sorted(p.name.split("-")[0] for p in (photos / ".prep" / "cache").iterdir()) == ["train", "valid"]
