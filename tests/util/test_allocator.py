"""Decoding processes keep the memory they free (prep.util.allocator): a loader worker or a
decoding pool does not fault in fresh pages for every photo it decodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what is tuned")


@pytest.fixture(scope="module")
def large_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1600 x 1200 JPEGs of about 480 KB, like a camera's, trained at 224 px."""
    import cv2
    from PIL import Image

    root = tmp_path_factory.mktemp("large")
    for i in range(6):
        coarse = np.random.default_rng(i).integers(0, 256, (120, 160, 3)).astype(np.uint8)
        path = root / "train" / ("a" if i % 2 else "b") / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(cv2.resize(coarse, (1600, 1200), interpolation=cv2.INTER_LINEAR)).save(path, quality=90)
    return root


_PROBE = """
import resource, sys, torch
from pathlib import Path
from prep.augment.presets import build_pipeline
from prep.data.datasets import ClassificationDataset
from prep.data.loader import create_loader
from prep.data.resolution import source_side
from prep.util.parallel import map_chunks

transform = build_pipeline("light", 224, train=True, seed=0)
dataset = ClassificationDataset(Path(sys.argv[2]), "train", transform=transform, decode_side=source_side(transform))

def faults_per_sample(*_):
    dataset[0]  # the first sample sizes the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for index in range(len(dataset)):
        dataset[index]  # megabytes allocated and freed: the half-scale decode, its copies, the crop
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / len(dataset)

class Probe(torch.utils.data.Dataset):
    def __len__(self):
        return 1
    def __getitem__(self, index):
        return faults_per_sample()

if sys.argv[1] == "loader":
    print(next(iter(create_loader(Probe(), 1, train=False, workers=1, collate_fn=lambda s: s[0]).loader)).batch)
else:
    print(max(map_chunks(faults_per_sample, [0, 1], chunk_size=1, workers=2, min_items=1)))
"""


@pytest.mark.parametrize("processes", ["loader", "pool"])
def test_decoding_processes_reuse_the_memory_each_sample_frees(large_photos: Path, processes: str):
    # In a fresh interpreter, as a training run starts: what a process did before decides
    # whether glibc gives memory back. Without prep.util.allocator a worker here faulted 590 to
    # 640 times per sample (its megabytes handed back and faulted in again); with it 5 to
    # 65 times (the upper figure when Python's own 256 KB arena comes and goes).
    out = subprocess.run([sys.executable, "-c", _PROBE, processes, str(large_photos)], capture_output=True, text=True, check=True)
    assert float(out.stdout.split()[-1]) < 200
