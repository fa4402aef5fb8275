"""The training loop every trainer shares: read it top to bottom.

``fit`` trains a classifier on batches from ``prep.data.loader`` (uint8 channels-last images,
normalised on the device), validates after every epoch, and keeps the run folder up to date:
``last.pt`` and ``best.pt`` checkpoints (atomic; everything needed to resume exactly),
``metrics.jsonl``/``metrics.csv``, and at the end ``summary.json`` and PNG plots.

What stops a run: the last epoch or ``max_steps``; early stopping; a loss that is not finite
(the last good checkpoint stays, and ``NonFiniteLossError`` says at which step); Ctrl-C (the
first one saves ``last.pt`` at the end of the current step and returns, marked interrupted).
All files are written by the main process only (``RunIO.is_main``), so running under
torchrun needs no change here beyond wrapping the model.
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch

from prep.data.collate import to_device_normalized
from prep.engine.config import TrainConfig
from prep.engine.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from prep.engine.logbook import MetricsLog
from prep.engine.metrics import ConfusionMatrix
from prep.engine.optim import build_optimizer, parameter_groups
from prep.engine.schedulers import LRSchedule, ScheduleConfig
from prep.errors import PrepError


class NonFiniteLossError(PrepError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class RunIO:
    """The one place that writes a run's files; only the main process (rank 0) does."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.is_main = int(os.environ.get("RANK", "0")) == 0
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, state: dict[str, Any]) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir / name, state)

    def write_json(self, name: str, value: Any) -> None:
        if self.is_main:
            from prep.fsutil import atomic_write_json

            atomic_write_json(self.run_dir / name, value, indent=2)


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device, amp: str):
    if device.type != "cuda" or amp == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


@contextmanager
def _first_interrupt_stops_gently() -> Iterator[dict[str, bool]]:
    """The first Ctrl-C sets a flag the loop checks after each step; a second one kills."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def evaluate(model: torch.nn.Module, loader, mean, std, device: torch.device, num_classes: int) -> tuple[float, ConfusionMatrix]:
    """Mean cross-entropy and the confusion matrix over a loader."""
    model.eval()
    confusion = ConfusionMatrix(num_classes)
    total_loss, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            if len(batch.targets) == 0:
                continue
            images = to_device_normalized(batch.inputs, mean, std, device)
            targets = batch.targets.to(device)
            logits = model(images).float()
            total_loss += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            count += len(targets)
            confusion.update(logits, targets)
    return total_loss / max(count, 1), confusion


def fit(
    model: torch.nn.Module,
    train_loader,
    valid_loader,
    config: TrainConfig,
    run_dir: Path,
    *,
    classes: list[str],
    mean: list[float],
    std: list[float],
    head: torch.nn.Module | None = None,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, validate every epoch, checkpoint, and return the run's summary.

    ``extra`` (plain data, such as the trainer's options) is stored in every checkpoint and
    in config.json, so that the model can be rebuilt from a checkpoint alone.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite.
        CheckpointError: ``resume`` found an unusable ``last.pt``.
    """
    io = RunIO(run_dir)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(
        config.optimizer,
        parameter_groups(model, lr=config.lr, weight_decay=config.weight_decay, head=head, backbone_lr_scale=config.backbone_lr_scale),
        lr=config.lr, momentum=config.momentum,
    )
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulate)
    schedule = LRSchedule(optimizer, ScheduleConfig(
        name=config.scheduler, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.warmup_epochs, step_size=config.step_size, gamma=config.gamma,
    ))
    autocast, scaler = _autocast(device, config.amp)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    epoch, step, best, bad_epochs = 0, 0, -math.inf, 0
    if resume and (run_dir / "last.pt").exists():
        state = load_checkpoint(run_dir / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        epoch, step, best, bad_epochs = state["epoch"], state["step"], state["best"], state["bad_epochs"]
    io.write_json("config.json", {"train": asdict(config), "classes": classes, "mean": mean, "std": std, **(extra or {})})
    log = MetricsLog(run_dir) if io.is_main else None

    def checkpoint_state() -> dict[str, Any]:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": capture_rng_state(),
            "epoch": epoch, "step": step, "best": best, "bad_epochs": bad_epochs,
            "classes": classes, "mean": mean, "std": std, "config": asdict(config), **(extra or {}),
        }

    stopped = "completed"
    with _first_interrupt_stops_gently() as interrupt:
        while epoch < config.epochs and stopped == "completed":
            if config.max_steps and step >= config.max_steps:  # a resumed run already there
                stopped = "max-steps"
                break
            # Everything random in this epoch follows from (seed, epoch): see SeededSampler.
            train_loader.set_epoch(epoch)
            torch.manual_seed(config.seed * 1_000_003 + epoch)
            model.train()
            started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            optimizer.zero_grad(set_to_none=True)
            batches = len(train_loader)
            for index, batch in enumerate(train_loader):
                if len(batch.targets) == 0:
                    continue
                images = to_device_normalized(batch.inputs, mean, std, device)
                targets = batch.targets.to(device)
                with autocast:
                    logits = model(images)
                    loss = criterion(logits.float(), targets)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"The loss became {loss.item()} at step {step} (epoch {epoch + 1}); stopped. "
                        f"The last good checkpoint is {run_dir / 'last.pt'}. Try a lower --lr."
                    )
                (scaler.scale(loss) if scaler else loss).div(config.accumulate).backward()
                seen += len(targets)
                loss_sum += loss.item() * len(targets)
                correct += (logits.argmax(1) == targets).sum().item()
                if (index + 1) % config.accumulate and index + 1 != batches:
                    continue
                if config.clip_grad_norm:
                    if scaler:
                        scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                schedule.after_batch()
                step += 1
                if interrupt["stop"]:
                    stopped = "interrupted"
                    break
                if config.max_steps and step >= config.max_steps:
                    stopped = "max-steps"
                    break
            valid_loss, confusion = evaluate(model, valid_loader, mean, std, device, len(classes))
            valid_acc = confusion.accuracy()
            if stopped != "interrupted":  # an interrupted epoch is replayed on resume
                epoch += 1
            schedule.after_epoch(valid_loss)
            improved = valid_acc > best + config.early_stop_min_delta
            best, bad_epochs = (valid_acc, 0) if improved else (best, bad_epochs + 1)
            record = {
                "epoch": epoch, "step": step, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                "valid_loss": valid_loss, "valid_acc": valid_acc, "lr": schedule.lrs()[0],
                "images_per_s": seen / max(time.perf_counter() - started, 1e-9),
                "per_class_acc": confusion.per_class_accuracy(), "confusion": confusion.as_lists(),
            }
            if log is not None:
                log.append(record)
            state = checkpoint_state()
            io.save("last.pt", state)
            if improved:
                io.save("best.pt", state)
            if config.early_stop_patience is not None and bad_epochs > config.early_stop_patience:
                stopped = "early-stopped"
    summary = {
        "status": stopped, "epochs": epoch, "steps": step,
        "best_valid_acc": best, "final_valid_acc": log.records[-1]["valid_acc"] if log and log.records else None,
        "best": str(run_dir / "best.pt"), "last": str(run_dir / "last.pt"), "classes": classes,
    }
    if io.is_main and log is not None and log.records:
        from prep.engine.plots import plot_confusion, plot_curves

        plot_curves(log.records, run_dir / "curves.png")
        plot_confusion(log.records[-1]["confusion"], classes, run_dir / "confusion.png")
        log.close()
    io.write_json("summary.json", summary)
    return summary
