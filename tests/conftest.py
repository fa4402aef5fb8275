"""What tests across prep share: fixtures that build small image folders in tmp_path, plugins
installed for one test through the real entry-point machinery, and helpers to compare trees."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 32), fmt: str = "JPEG") -> bytes:
    """A small, distinct image (different seeds give different bytes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def run_two_gloo_ranks(target, args: tuple, seconds: float) -> None:
    """Run ``target(rank, port, *args)`` in two spawned processes that meet on a free local
    port (Gloo); a rank left waiting for the other fails the test after ``seconds``."""
    import socket
    import time

    import torch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = torch.multiprocessing.start_processes(target, args=(port, *args), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + seconds
    while not job.join(timeout=5):
        if time.monotonic() > deadline:
            for process in job.processes:
                process.kill()
            pytest.fail(f"the two ranks did not finish in {seconds:.0f} s: one is waiting for the other")


def _metrics_on_rank(rank: int, port: int, out: str, make_metrics, make_batch) -> None:
    import os

    import torch

    from prep.engine.distributed import World
    from prep.engine.epoch import sum_counts

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    outputs, targets = make_batch()
    half = len(outputs) // 2
    metrics = make_metrics()
    metrics.update(outputs[rank * half : (rank + 1) * half], targets[rank * half : (rank + 1) * half])
    sum_counts(metrics, World(rank, rank, 2), torch.device("cpu"))
    torch.save(metrics.compute(), Path(out) / f"rank{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def assert_metric_sums_over_two_ranks_equal_one_process(make_metrics, make_batch, folder: Path) -> None:
    """Two Gloo ranks each update ``make_metrics()`` with half of ``make_batch()`` and add up
    the counts as the engine does: both must compute what one process computes on the whole
    batch. ``make_metrics`` and ``make_batch`` are module-level functions (the ranks are spawned)."""
    import torch

    run_two_gloo_ranks(_metrics_on_rank, (str(folder), make_metrics, make_batch), seconds=120)
    alone = make_metrics()
    alone.update(*make_batch())
    expected = alone.compute()
    for rank in (0, 1):
        summed = torch.load(folder / f"rank{rank}.pt", weights_only=False)
        assert summed.keys() == expected.keys()
        for key, value in expected.items():
            assert summed[key] == pytest.approx(value), key


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> content hash, for every file under root (links as their target)."""
    result = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[rel] = "link:" + os.readlink(path)
            else:
                result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def dirs(root: Path) -> set[str]:
    return {Path(d).relative_to(root).as_posix() for d, _, _ in os.walk(root)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every end-to-end journey is slow: real processes, one after another, each importing torch."""
    for item in items:
        if "journeys" in item.path.parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def flat_dataset(tmp_path: Path) -> Path:
    """Kaggle dogs-vs-cats shape: train/cat.N.jpg, train/dog.N.jpg, test1/N.jpg."""
    root = tmp_path / "dogsandcats"
    for i in range(20):
        write(root / "train" / f"cat.{i}.jpg", jpeg_bytes(i))
        write(root / "train" / f"dog.{i}.jpg", jpeg_bytes(1000 + i))
    for i in range(1, 6):
        write(root / "test1" / f"{i}.jpg", jpeg_bytes(5000 + i))
    return root


@pytest.fixture(scope="session", autouse=True)
def _session_working_directory(tmp_path_factory):
    """Module and session fixtures run before ``_isolated_workspace``: give them a working
    directory of their own too, and check that the suite leaves the repository's own
    workspace (``.prep/workspace.json``, the dataset a bare command uses) as it found it."""
    workspace = Path(__file__).resolve().parents[1] / ".prep" / "workspace.json"
    before = workspace.read_bytes() if workspace.exists() else None
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("session-cwd"))
        yield
    after = workspace.read_bytes() if workspace.exists() else None
    assert after == before, f"a test wrote {workspace}"


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run every test from its own working directory, so workspace state never leaks."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("PREP_DATA", raising=False)
    monkeypatch.delenv("PREP_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PREP_STRICT_PLUGINS", raising=False)
    yield
    from prep.plugins import reset_plugin_host

    reset_plugin_host()


# -- Plugins installed for one test --------------------------------------------------------

def install_fake_plugin(site: Path, name: str, source: str, version: str = "1.0") -> None:
    """Write a module plus a dist-info that declares it in the ``prep`` entry-point group."""
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[prep]\n{name} = {name}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path where ``install_fake_plugin`` puts plugins for this test only."""
    from prep.plugins import reset_plugin_host

    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [m for m in sys.modules if m.startswith(("goodplugin", "brokenplugin", "raisingplugin", "badsig", "listenerplugin", "misbehaving", "seamplugin", "thirdparty"))]:
        del sys.modules[name]
    reset_plugin_host()


def plugins_json(site: Path) -> dict:
    """``prep plugins --json`` in a fresh process that sees the plugins installed in ``site``."""
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-m", "prep", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- Six colours: a dataset and a checkpoint shared by the weights, evaluate, TTA and lr-find tests --

COLOURS = ["amber", "blue", "cyan", "green", "pink", "red"]  # six: top-5 accuracy applies


def write_colour_images(folder: Path, per_class: int, seed: int, classes=COLOURS) -> None:
    """Noisy pictures whose colour tells the class, with a brighter left half (so that the
    mirror image is another picture)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        colour = np.array([(k * 53) % 256, (k * 97 + 40) % 256, (k * 151 + 80) % 256])
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 25, (24, 24, 3)), 0, 255)
            pixels[:, :12] = np.clip(pixels[:, :12] + 40, 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{name}_{seed}_{i}.png")


@pytest.fixture(scope="session")
def colours_dataset(tmp_path_factory) -> Path:
    """A split dataset of six classes told apart by colour (top-5 accuracy applies), with a
    test split."""
    root = tmp_path_factory.mktemp("finetune") / "colours"
    for split, n, seed in (("train", 6, 0), ("valid", 3, 1), ("test", 3, 2)):
        write_colour_images(root / split, n, seed)
    return root


@pytest.fixture(scope="session")
def resnet18_weights_file(tmp_path_factory) -> Path:
    """Stands in for a downloaded ImageNet file: a torchvision ResNet-18's state dict."""
    import torch
    import torchvision

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def colours_checkpoint(colours_dataset: Path, tmp_path_factory) -> Path:
    """best.pt of one epoch of resnet-finetune from scratch on ``colours_dataset``."""
    from prep.train.options import TrainOptions
    from prep.train.run import train

    dataset = colours_dataset
    run_dir = tmp_path_factory.mktemp("run") / "run"
    train(dataset, TrainOptions(weights="none", epochs=1, image_size=16, batch_size=12, lr=0.002, workers=0, run_dir=run_dir))
    return run_dir / "best.pt"


def evaluate_cli(checkpoint: Path, folder: Path, *extra: str, out: Path):
    """``prep evaluate CHECKPOINT FOLDER ...`` through the CLI, its picture under ``out``."""
    from typer.testing import CliRunner

    from prep.cli import app

    return CliRunner().invoke(app, ["evaluate", str(checkpoint), str(folder), "--workers", "0", "--out", str(out / "c.png"), *extra])


def readme_tour_commands(section: str) -> list[str]:
    """The shell commands of the fenced ``bash`` blocks under the README's heading
    ``section``, up to the next heading of its level, comments dropped."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"## {section}\n")
    end = readme.find("\n## ", start + 1)
    body = readme[start : end if end >= 0 else None]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands
