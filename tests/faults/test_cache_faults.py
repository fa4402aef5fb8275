"""The decoded cache under attack: files replaced behind its back, its own bytes flipped or
its index reordered, a dataset shipped with someone else's cache, a killed run's ram store,
a build killed while its workers decode. Never a stale or altered pixel served, never a
traceback, never a process left behind."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import jpeg_bytes, write
from prep.augment.presets import build_pipeline
from prep.cli import app
from prep.data import cache, cache_plan
from prep.data.cache import DamagedCacheError, DecodedStore
from prep.data.cache_plan import cache_datasets
from prep.data.datasets import ClassificationDataset, SegmentationDataset
from prep.data.resolution import source_side
from prep.testing import make_segmentation_dataset

runner = CliRunner()


def same_size_jpegs(a: int, b: int, size=(48, 40)) -> tuple[bytes, bytes]:
    """Two different JPEGs of the same byte length (the shorter padded after its end
    marker, which decoders ignore)."""
    first, second = jpeg_bytes(a, size=size), jpeg_bytes(b, size=size)
    length = max(len(first), len(second))
    return first.ljust(length, b"\0"), second.ljust(length, b"\0")


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    root = tmp_path / "d"
    for split, n in (("train", 6), ("valid", 2)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(n):
                write(root / split / name / f"{i}.jpg", jpeg_bytes(len(split) * 100 + c * 10 + i, size=(48, 40)))
    return root


def classification(root: Path) -> ClassificationDataset:
    pipeline = build_pipeline("light", 32, train=True, seed=0)
    return ClassificationDataset(root, "train", transform=pipeline, decode_side=source_side(pipeline))


def served(dataset) -> list[np.ndarray]:
    return [np.array(dataset.cache.read(i)[0]) for i in range(len(dataset))]


def decoded(dataset) -> list[np.ndarray]:
    return [dataset.decoder(dataset.sample_files(i))[0] for i in range(len(dataset))]


def assert_serves_the_files(dataset) -> None:
    for i, (got, want) in enumerate(zip(served(dataset), decoded(dataset))):
        assert np.array_equal(got, want), dataset.sample_files(i)


def train_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", str(root), "--weights", "none", "--image-size", "32", "--batch-size", "4", "--epochs", "1",
            "--preset", "light", "--run-dir", str(run_dir), *extra]


# -- Files replaced behind the cache's back ----------------------------------------------------

def test_an_image_replaced_by_one_of_the_same_size_and_mtime_is_decoded_again(dataset_root: Path):
    victim = dataset_root / "train" / "cat" / "2.jpg"
    old, new = same_size_jpegs(1, 2)
    write(victim, old)
    before = classification(dataset_root)
    cache_datasets("disk", dataset_root, {"train": before})
    old_pixels = served(before)
    stat = victim.stat()
    victim.write_bytes(new)  # cp other.jpg 2.jpg; touch -r
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    after = classification(dataset_root)
    report = cache_datasets("disk", dataset_root, {"train": after})
    assert report.reused == []
    assert_serves_the_files(after)
    position = [p for (p,) in map(after.sample_files, range(len(after)))].index(victim)
    assert not np.array_equal(served(after)[position], old_pixels[position])


def test_a_file_whose_bytes_did_not_change_is_copied_not_decoded(dataset_root: Path, monkeypatch: pytest.MonkeyPatch):
    first = classification(dataset_root)
    cache_datasets("disk", dataset_root, {"train": first})
    touched = first.sample_files(0)[0]
    os.chmod(touched, 0o600)  # the change time moves, the bytes stay

    decoded_files = []
    decode = first.decoder.__class__.__call__
    monkeypatch.setattr(first.decoder.__class__, "__call__", lambda self, files: decoded_files.append(files) or decode(self, files))
    again = classification(dataset_root)
    assert cache_datasets("disk", dataset_root, {"train": again}).reused == []
    assert decoded_files == []  # every sample copied, the chmod'ed one after its fingerprint matched
    assert_serves_the_files(again)


def test_verify_finds_a_change_that_the_file_times_cannot_show(dataset_root: Path, monkeypatch: pytest.MonkeyPatch):
    # A disk whose times say nothing (FAT, some network mounts): every state looks the same.
    from prep.data import cache as cache_module

    monkeypatch.setattr(cache_module, "file_states", lambda files: [[[0, 0, 0, 0]] * len(f) for f in files])
    victim = dataset_root / "train" / "dog" / "1.jpg"
    first = classification(dataset_root)
    cache_datasets("disk", dataset_root, {"train": first})
    write(victim, jpeg_bytes(4242, size=(48, 40)))

    trusting = classification(dataset_root)
    assert cache_datasets("auto", dataset_root, {"train": trusting}).reused == ["train"]  # what the times allow

    checked = classification(dataset_root)
    report = cache_datasets("verify", dataset_root, {"train": checked})
    assert report.reused == []
    assert_serves_the_files(checked)


# -- The store's own bytes ---------------------------------------------------------------------

def flip_byte(path: Path, at: int) -> None:
    with open(path, "r+b") as file:
        file.seek(at)
        value = file.read(1)[0]
        file.seek(at)
        file.write(bytes([value ^ 0xFF]))


def test_a_flipped_pixel_in_the_store_stops_the_run_with_one_line_and_the_next_run_rebuilds(dataset_root: Path, tmp_path: Path):
    first = runner.invoke(app, train_args(dataset_root, tmp_path / "a", "--cache", "disk", "--workers", "0"))
    assert first.exit_code == 0, first.output
    store = next((dataset_root / ".prep" / "cache").glob("train-*"))
    flip_byte(store / "pixels.u8", (store / "pixels.u8").stat().st_size // 2)

    damaged = runner.invoke(app, train_args(dataset_root, tmp_path / "b", "--cache", "disk", "--workers", "0"))
    assert damaged.exit_code != 0
    assert "Traceback" not in damaged.output
    lines = [line for line in damaged.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "decoded cache" in lines[0] and "damaged" in lines[0] and ".jpg" in lines[0], damaged.stderr
    assert (store / cache.DAMAGED).exists() and not (store / "meta.json").exists()

    healed = runner.invoke(app, train_args(dataset_root, tmp_path / "c", "--cache", "disk", "--workers", "0"))
    assert healed.exit_code == 0, healed.output
    dataset = classification(dataset_root)
    cache_datasets("disk", dataset_root, {"train": dataset})
    assert_serves_the_files(dataset)


def test_a_flipped_pixel_is_named_from_the_threads_that_read_a_cache(dataset_root: Path, tmp_path: Path):
    dataset = classification(dataset_root)
    cache_datasets("disk", dataset_root, {"train": dataset})
    flip_byte(dataset.cache.folder / "pixels.u8", 5)
    result = runner.invoke(app, train_args(dataset_root, tmp_path / "run", "--cache", "disk", "--workers", "2"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "damaged" in result.stderr and "Error:" in result.stderr


def test_a_flipped_mask_byte_is_never_served(tmp_path: Path):
    root = make_segmentation_dataset(tmp_path / "seg", per_split={"train": 4, "valid": 2}, size=40)
    dataset = SegmentationDataset(root, "train", decode_side=32)
    cache_datasets("disk", root, {"train": dataset})
    flip_byte(dataset.cache.folder / "masks.u8", 3)
    reopened = SegmentationDataset(root, "train", decode_side=32)
    cache_datasets("disk", root, {"train": reopened})
    with pytest.raises(DamagedCacheError, match="masks|stored sample of .*seg"):
        for i in range(len(reopened)):
            reopened.decoded(i)


def test_two_swapped_index_rows_or_an_offset_past_the_end_refuse_the_store(dataset_root: Path, caplog: pytest.LogCaptureFixture):
    for damage in ("swap", "past the end", "not an index"):
        dataset = classification(dataset_root)
        cache_datasets("disk", dataset_root, {"train": dataset})
        index_file = dataset.cache.folder / "index.npy"
        index = np.load(index_file)
        if damage == "swap":
            index[[0, 1]] = index[[1, 0]]
        elif damage == "past the end":
            index[2, 0] = 10**9
        else:
            index = index[:, :2].astype(np.float32)
        np.save(index_file, index)

        reopened = classification(dataset_root)
        with caplog.at_level(logging.WARNING):
            report = cache_datasets("disk", dataset_root, {"train": reopened})
        assert report.reused == [], damage
        assert "is not used" in caplog.text, damage
        assert_serves_the_files(reopened)
        caplog.clear()


def test_a_store_of_an_older_format_is_built_again(dataset_root: Path):
    dataset = classification(dataset_root)
    cache_datasets("disk", dataset_root, {"train": dataset})
    meta_file = dataset.cache.folder / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["format"] = "prep-decoded-cache/2"
    meta_file.write_text(json.dumps(meta))
    again = classification(dataset_root)
    assert cache_datasets("disk", dataset_root, {"train": again}).reused == []


def test_a_dataset_unpacked_with_a_poisoned_cache_trains_on_its_own_pixels(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # Someone builds a cache from other pictures, puts the real ones back with the same
    # sizes and times, and ships the lot as a tar: the records all match.
    shipped = tmp_path / "shipped"
    pairs = {}
    for c in ("cat", "dog"):
        for i in range(4):
            pairs[shipped / "train" / c / f"{i}.jpg"] = same_size_jpegs(300 + i * 7 + len(c), 900 + i * 7 + len(c))
    for split in ("valid",):
        for c in ("cat", "dog"):
            write(shipped / split / c / "0.jpg", jpeg_bytes(55 + len(c), size=(48, 40)))
    for path, (real, poison) in pairs.items():
        write(path, poison)
    poisoned = classification(shipped)
    cache_datasets("disk", shipped, {"train": poisoned})
    for path, (real, poison) in pairs.items():
        stat = path.stat()
        path.write_bytes(real)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    archive = tmp_path / "dataset.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(shipped, arcname="d")
    shutil.rmtree(shipped)
    unpacked = tmp_path / "here"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="tar")

    dataset = classification(unpacked / "d")
    with caplog.at_level(logging.WARNING):
        report = cache_datasets("disk", unpacked / "d", {"train": dataset})
    assert report.reused == [] and "was not built here" in caplog.text
    assert_serves_the_files(dataset)


# -- Killed runs -------------------------------------------------------------------------------

def test_a_killed_runs_ram_store_is_removed_by_the_next_run_and_never_counted_as_free(dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(cache_plan, "SHARED_MEMORY", shm)
    script = f"""
import os, signal
from prep.data import cache_plan
from pathlib import Path
cache_plan.SHARED_MEMORY = Path({str(shm)!r})
from prep.augment.presets import build_pipeline
from prep.data.datasets import ClassificationDataset
from prep.data.resolution import source_side
t = build_pipeline("light", 32, train=True, seed=0)
d = ClassificationDataset({str(dataset_root)!r}, "train", transform=t, decode_side=source_side(t))
cache_plan.cache_datasets("ram", d.root, {{"train": d}}, workers=1)
os.kill(os.getpid(), signal.SIGKILL)
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = list(shm.glob("prep-*/*/train-*"))
    assert left, "the killed run left no store to find"

    live = shm / f"prep-{os.getuid()}" / "held-by-this-test"
    live.mkdir()
    cache_plan._hold(live)  # a live run's store is left alone
    result = runner.invoke(app, train_args(dataset_root, tmp_path / "run", "--cache", "ram", "--workers", "0"))
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in left)
    assert live.is_dir()
    cache_plan._let_go(live)
    assert not live.exists()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_build_killed_while_its_workers_decode_leaves_no_process_behind(tmp_path: Path, signum: int):
    root = tmp_path / "d"
    for i in range(160):
        write(root / "train" / ("cat" if i % 2 else "dog") / f"{i}.jpg", jpeg_bytes(i, size=(400, 300)))
    script = f"""
import time
from prep.data import decoders
from prep.data.cache_plan import cache_datasets
from prep.augment.presets import build_pipeline
from prep.data.datasets import ClassificationDataset
from prep.data.resolution import source_side
slow = decoders.ImageDecoder.__call__
def crawl(self, files):
    time.sleep(0.2)
    return slow(self, files)
decoders.ImageDecoder.__call__ = crawl
t = build_pipeline("light", 32, train=True, seed=0)
d = ClassificationDataset({str(root)!r}, "train", transform=t, decode_side=source_side(t))
print("building", flush=True)
cache_datasets("disk", d.root, {{"train": d}}, workers=2)
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "building"
    deadline = time.monotonic() + 30
    while len(children_of(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = children_of(process.pid)
    assert len(workers) >= 2, "the build started no workers"
    process.send_signal(signum)
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "decoding workers outlived their parent"


@pytest.mark.slow
def test_a_training_killed_while_its_loader_workers_run_leaves_no_process_behind(tmp_path: Path):
    root = tmp_path / "d"
    for split, n in (("train", 40), ("valid", 8)):
        for c in ("cat", "dog"):
            for i in range(n):
                write(root / split / c / f"{i}.jpg", jpeg_bytes(i + len(c), size=(300, 200)))
    process = subprocess.Popen(
        [sys.executable, "-m", "prep", *train_args(root, tmp_path / "run", "--cache", "off", "--workers", "2", "--epochs", "50")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(children_of(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = children_of(process.pid)
    assert len(workers) >= 2, "the training started no loader workers"
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "loader workers outlived their parent"
