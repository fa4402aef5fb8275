"""timm models through the built-in trainers: ``--arch timm:NAME`` and ``--arch
unet-timm:NAME``, from weights files and cache folders the tests write themselves, with
everything after training done with the network unreachable."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prep.cli import app
from prep.hookspecs import hookimpl
from prep.plugins import temporary_plugin
from prep.inference.checkpoints import peek_checkpoint
from prep.testing import make_classification_dataset, make_segmentation_dataset

timm = pytest.importorskip("timm")  # a declared dependency: this only names it for the reader

runner = CliRunner()
QUICK = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--preset", "none", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_classification_dataset(tmp_path_factory.mktemp("timm-data"), ("cat", "dog"), per_class=8, valid_per_class=4)


@pytest.fixture
def offline(monkeypatch):
    """No network: the hub told to stay offline, proxies that refuse, and any socket
    connection an error (so a test fails if anything tries)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def _save_weights(name: str, path: Path, **kwargs) -> dict[str, torch.Tensor]:
    """A timm model's random weights, written as timm's downloads are (safetensors) or as a
    torch file, so that a test can tell them from the trainer's own random start."""
    from safetensors.torch import save_file

    torch.manual_seed(123)
    state = {k: v.contiguous() for k, v in timm.create_model(name, **kwargs).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


class CtrlCAfterFirstEpoch:
    @hookimpl
    def on_epoch_end(self, run, metrics):
        if metrics["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C


def _train(data: Path, run_dir: Path, *extra: str):
    return runner.invoke(app, ["train", str(data), *QUICK, "--run-dir", str(run_dir), *extra])


def test_a_timm_cnn_starts_from_a_weights_file_and_its_checkpoint_is_used_offline(data: Path, tmp_path: Path, offline):
    weights = tmp_path / "resnet18.safetensors"
    saved = _save_weights("resnet18", weights)
    with temporary_plugin(CtrlCAfterFirstEpoch(), "test-ctrl-c"):
        result = _train(data, tmp_path / "run", "--arch", "timm:resnet18", "--weights", str(weights), "--epochs", "2")
    assert result.exit_code == 130, result.output
    header = " ".join(result.output.split())
    assert "pretrained (timm's pretrained configuration of resnet18)" in header
    state = peek_checkpoint(tmp_path / "run" / "best.pt")
    assert state["options"]["arch"] == "timm:resnet18"
    assert state["mean"] == pytest.approx([0.485, 0.456, 0.406]) and state["std"] == pytest.approx([0.229, 0.224, 0.225])
    best = str(tmp_path / "run" / "best.pt")
    evaluated = runner.invoke(app, ["evaluate", best, str(data), "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "c.png"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["images"] == 8
    predicted = runner.invoke(app, ["predict", best, str(data / "valid"), "--out", str(tmp_path / "p.csv"), "--tta", "flip", "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    assert len((tmp_path / "p.csv").read_text().strip().splitlines()) == 1 + 8
    for fmt, name in (("torchscript", "m.ts"), ("onnx", "m.onnx")):
        exported = runner.invoke(app, ["export", best, "--format", fmt, "--out", str(tmp_path / name), "--json"])
        assert exported.exit_code == 0, exported.output
        assert json.loads(exported.output)["checked"]
    # Stopped in epoch 2: resuming rebuilds the model from last.pt, with no download.
    resumed = runner.invoke(app, ["train", "--resume", "--run-dir", str(tmp_path / "run"), "--json"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert offline == []
    # The weights really were the file's: the head is new, the rest as saved (four steps
    # at the backbone's low rate later, close to them; another random start is far).
    from prep.inference.checkpoints import load_model

    model, _ = load_model(tmp_path / "run" / "best.pt", "cpu")
    conv = model.state_dict()["conv1.weight"]
    assert torch.allclose(conv, saved["conv1.weight"], atol=1e-2)
    assert model.state_dict()["fc.weight"].shape == (2, 512)


def test_a_convnext_from_a_torch_file_evaluates_and_exports_offline(data: Path, tmp_path: Path, offline):
    weights = tmp_path / "convnext.pth"
    saved = _save_weights("convnext_atto", weights)
    result = _train(data, tmp_path / "run", "--arch", "timm:convnext_atto", "--weights", str(weights), "--max-steps", "1", "--freeze-backbone", "1")
    assert result.exit_code == 0, result.output
    from prep.inference.checkpoints import load_model

    model, _ = load_model(tmp_path / "run" / "best.pt", "cpu")
    # --freeze-backbone: one step trained the head alone; the backbone is the file's.
    assert torch.equal(model.state_dict()["stem.0.weight"], saved["stem.0.weight"])
    assert model.state_dict()["head.fc.weight"].shape == (2, 320)
    best = str(tmp_path / "run" / "best.pt")
    evaluated = runner.invoke(app, ["evaluate", best, str(data), "--tta", "flip", "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "c.png")])
    assert evaluated.exit_code == 0 and "valid: acc" in evaluated.output, evaluated.output
    exported = runner.invoke(app, ["export", best, "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--json"])
    assert exported.exit_code == 0 and json.loads(exported.output)["checked"], exported.output
    assert offline == []


def test_a_cache_folders_configuration_decides_the_normalisation(data: Path, tmp_path: Path, offline):
    snapshot = tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    _save_weights("resnet18", snapshot / "model.safetensors")
    config = {"architecture": "resnet18", "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (snapshot / "config.json").write_text(json.dumps(config))
    result = _train(data, tmp_path / "run", "--arch", "timm:resnet18", "--weights", str(tmp_path / "hub" / "models--timm--resnet18.a1_in1k"), "--max-steps", "1")
    assert result.exit_code == 0, result.output
    state = peek_checkpoint(tmp_path / "run" / "best.pt")
    assert state["mean"] == pytest.approx([0.5] * 3) and state["std"] == pytest.approx([0.25] * 3)
    # --normalize says otherwise: the dataset's statistics.
    told = _train(data, tmp_path / "told", "--arch", "timm:resnet18", "--weights", str(snapshot), "--normalize", "imagenet", "--max-steps", "1")
    assert told.exit_code == 0 and peek_checkpoint(tmp_path / "told" / "best.pt")["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert offline == []


def test_a_vit_trains_at_a_small_size_with_its_own_normalisation_and_exports_at_that_size(data: Path, tmp_path: Path, offline):
    name = "vit_tiny_patch16_224.augreg_in21k"  # timm's configuration: mean and std 0.5
    weights = tmp_path / "vit.pth"
    _save_weights(name, weights)
    result = _train(data, tmp_path / "run", "--arch", f"timm:{name}", "--weights", str(weights), "--max-steps", "1")
    assert result.exit_code == 0, result.output
    state = peek_checkpoint(tmp_path / "run" / "best.pt")
    assert state["mean"] == pytest.approx([0.5] * 3)
    exported = runner.invoke(app, ["export", str(tmp_path / "run" / "best.pt"), "--format", "onnx", "--out", str(tmp_path / "v.onnx"), "--json"])
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.output)
    assert report["checked"] and "32 x 32" in report["input"]
    cam = runner.invoke(app, ["evaluate", str(tmp_path / "run" / "best.pt"), str(data), "--cam", "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "c.png")])
    assert cam.exit_code == 2
    assert "patch_embed.proj" in cam.output and "Grad-CAM explains CNNs" in cam.output and "Traceback" not in cam.output
    assert not (tmp_path / "cam.png").exists() and not (tmp_path / "c.png").exists()
    assert offline == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--arch", "timm:convnxt_atto", "--weights", "none"], "timm has no architecture of that name; nearest: convnext_atto"),
        (["--arch", "timm:maxvit_nano_rw_256", "--weights", "none", "--image-size", "40"], "timm:maxvit_nano_rw_256 cannot take 40 px images"),
        (["--arch", "timm:resnet18", "--weights", "imagenet"], "Cannot download timm's pretrained weights for resnet18"),
    ],
)
def test_timm_refusals_are_one_line_and_write_nothing(data: Path, tmp_path: Path, offline, extra, expected):
    result = _train(data, tmp_path / "run", *extra)
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert expected in text and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_download_that_fails_says_what_to_pass_instead(data: Path, tmp_path: Path, offline):
    result = _train(data, tmp_path / "run", "--arch", "timm:resnet18", "--weights", "imagenet")
    text = " ".join(result.output.split())
    assert "--weights PATH" in text and "cached in" in text and "--weights none" in text


def test_imagenet_weights_already_in_the_hub_cache_are_used_without_the_network(data: Path, tmp_path: Path, offline, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / "c0ffee").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    saved = _save_weights("resnet18", repo / "snapshots" / "c0ffee" / "model.safetensors")
    result = _train(data, tmp_path / "run", "--arch", "timm:resnet18", "--weights", "imagenet", "--max-steps", "1")
    assert result.exit_code == 0, result.output
    from prep.inference.checkpoints import load_model

    model, _ = load_model(tmp_path / "run" / "best.pt", "cpu")
    assert torch.allclose(model.state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"], atol=1e-2)
    assert offline == []


def test_weights_of_another_architecture_are_named_as_not_fitting(data: Path, tmp_path: Path):
    weights = tmp_path / "resnet18.pth"
    _save_weights("resnet18", weights)
    result = _train(data, tmp_path / "run", "--arch", "timm:convnext_atto", "--weights", str(weights))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"{weights} does not fit --arch timm:convnext_atto" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_a_folder_without_weights_is_refused_in_one_line(data: Path, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = _train(data, tmp_path / "run", "--arch", "timm:resnet18", "--weights", str(tmp_path / "empty"))
    assert result.exit_code != 0 and "holds no model.safetensors or pytorch_model.bin" in " ".join(result.output.split())


def test_a_unet_on_a_timm_encoder_trains_from_a_file_and_predicts_offline(tmp_path: Path, offline):
    masks = make_segmentation_dataset(tmp_path / "masks", per_split={"train": 6, "valid": 2})
    weights = tmp_path / "mnv3.safetensors"
    saved = _save_weights("mobilenetv3_small_050", weights)
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "train", str(masks), "--plugin", "unet", "--arch", "unet-timm:mobilenetv3_small_050", "--weights", str(weights),
        "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--run-dir", str(run),
    ])
    assert result.exit_code == 0, result.output
    from prep.inference.checkpoints import load_model

    model, state = load_model(run / "best.pt", "cpu")
    assert state["options"]["arch"] == "unet-timm:mobilenetv3_small_050"
    encoder = {k.split("encoder.", 1)[1]: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert torch.allclose(encoder["conv_stem.weight"], saved["conv_stem.weight"], atol=1e-2)
    predicted = runner.invoke(app, ["predict", str(run / "best.pt"), str(masks / "valid" / "images"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    assert offline == []


def test_a_unet_refuses_an_encoder_without_halving_feature_maps(tmp_path: Path):
    masks = make_segmentation_dataset(tmp_path / "masks", per_split={"train": 4, "valid": 2})
    result = runner.invoke(app, [
        "train", str(masks), "--plugin", "unet", "--arch", "unet-timm:vit_tiny_patch16_224", "--weights", "none",
        "--epochs", "1", "--image-size", "32", "--workers", "0", "--device", "cpu", "--run-dir", str(tmp_path / "run"),
    ])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unet-timm:vit_tiny_patch16_224" in result.output
    assert not (tmp_path / "run").exists()


def test_plugins_lists_timm_architectures_with_their_pretrained_tags():
    listed = runner.invoke(app, ["plugins", "--arch", "*convnext_at*", "--json"])
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.output)
    rows = {row["arch"]: row["pretrained"] for row in found["trainers"]["resnet-finetune"]}
    assert "d2_in1k" in rows["timm:convnext_atto"]
    assert "unet-timm:convnext_atto" in {row["arch"] for row in found["trainers"]["unet"]}
    table = runner.invoke(app, ["plugins", "--arch", "resnet1*"])
    assert table.exit_code == 0 and "resnet18" in table.output and "timm:resnet18" in table.output
    plain = runner.invoke(app, ["plugins"])
    assert "--arch also takes" in " ".join(plain.output.split())
