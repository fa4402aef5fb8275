"""``train``: the function behind ``prep train``. It prepares the run (``prep.train.prepare``),
hands it to the shared engine (``prep.engine.fit.fit``) with the installed plugins' callbacks,
and adds the task's example picture."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from prep.engine.config import TrainConfig
from prep.train.options import TrainOptions, options_as_data
from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from prep.data.index import DatasetIndex


def train(
    root: "Path | DatasetIndex", options: TrainOptions, *, config: TrainConfig | None = None,
    callbacks: Sequence[object] = (), progress: Progress = NO_PROGRESS, keep_cache: bool = False,
) -> dict[str, Any]:
    """Train with a registered trainer on a split dataset; return the run's summary.

    Args:
        root: the split dataset (``train/`` and ``valid/``), or its ``DatasetIndex``.
        options: what to train and how; ``None`` fields come from the trainer.
        config: settings to start from instead of the trainer's recipe (a repeated run's).
        callbacks: more listeners of the run's events (``prep.engine.events``), called after
            the installed plugins' hooks; ``on_train_start`` finds how the run is set up in
            ``run.setup`` (weights, normalisation, recipe, augmentation).
        progress: receives a task per epoch, with the live loss and images/s.
        keep_cache: leave a ``ram`` cache in place for the runs that follow (the folds of a
            cross-validation); ``prep.data.cache_plan.release_ram_cache`` removes it.

    Returns:
        ``summary.json``'s content, plus ``setup`` (``PreparedRun.describe``),
        ``normalization`` (``imagenet`` or ``dataset``), ``run_dir``, ``monitor`` and ``is_main``.

    Raises:
        UnknownNameError: no such trainer, task, collate function or LR lambda.
        TaskMismatchError: the trainer's task does not fit the dataset.
        RunExistsError: ``options.run_dir`` already holds a run and ``resume`` is off.
        WeightsError: the starting weights cannot be had or do not fit.
        DatasetNotFoundError, PrepError: bad data or options, with the reason.
    """
    from prep.engine.fit import fit
    from prep.engine.run_folder import check_run_dir
    from prep.plugins import PluginCallbacks, plugin_host
    from prep.train.prepare import prepare_run

    if options.run_dir is not None:  # before the weights are fetched and the data read
        check_run_dir(options.run_dir, options.resume)
    run = prepare_run(root, options, config=config, progress=progress)
    task, classes, world, norm, index = run.task, run.classes, run.world, run.normalization, run.index
    run_dir = options.run_dir or new_run_dir(options.plugin, run.request.arch)
    latest = LatestRun()
    recorded = replace(run.options, run_dir=run_dir)
    setup = run.describe()
    started = time.perf_counter()
    try:
        summary = fit(
            run.model, run.train_loader, run.valid_loader, run.config, run_dir, task=task, classes=classes,
            mean=norm.mean, std=norm.std, loss=run.settings.loss, head=run.head, settings=run.settings,
            callbacks=[latest, PluginCallbacks(plugin_host()), *callbacks], lr_lambdas=run.lr_lambdas,
            resume=options.resume, progress=progress, world=world, setup=setup,
            extra={
                "data": str(index.root.resolve()), "task": task.name, "options": options_as_data(recorded),
                "class_table": index.class_table_text(), "normalization": norm.mode, "normalization_source": norm.source,
            },
        )
        examples = None
        if world.is_main and summary["epochs"] and hasattr(task, "examples") and summary.get("best"):
            _load_best(run.model, Path(summary["best"]))  # the picture shows the model the run ships, not the last epoch's
            examples = task.examples(run.model, run.valid_loader.dataset, classes, norm.mean, norm.std, run.device, run_dir / "examples.png")
    finally:
        if world.local_rank == 0 and not keep_cache:  # the process that built it
            run.cache.release()
    return {
        **summary, "setup": setup, "normalization": norm.mode, "run_dir": str(run_dir), "monitor": run.settings.monitor,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "is_main": world.is_main, **({"examples": str(examples)} if examples else {}),
        **({"latest": str(latest.link)} if latest.link else {}),
    }


def _load_best(model, path: Path) -> None:
    from prep.engine.checkpoint import load_checkpoint, load_model_weights

    load_model_weights(model, load_checkpoint(path, next(model.parameters()).device)["model"], path)


def new_run_dir(plugin: str, arch: str | None, kind: str | None = None) -> Path:
    """A new folder ``runs/<plugin>-<arch>[-<kind>]-<time>`` (``kind``: ``cv`` for a cross-validation)."""
    if arch and arch.startswith(f"{plugin}-"):
        arch = arch[len(plugin) + 1 :]  # runs/unet-resnet34-..., not runs/unet-unet-resnet34-...
    base = Path("runs") / "-".join(filter(None, (plugin, arch, kind, time.strftime("%Y%m%d-%H%M%S"))))
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


class LatestRun:
    """Points ``runs/latest`` at the run once it has started (its folder made, every setting
    checked), so a run refused at the start leaves the link to the last real one."""

    link: Path | None = None

    def on_train_start(self, run) -> None:
        if run.is_main:
            self.link = point_latest_at(run.run_dir)


RUNS = Path("runs")
LATEST = "latest"


def point_latest_at(run_dir: Path) -> Path | None:
    """Make ``runs/latest`` a link to ``run_dir`` when the run is one of ``runs/``'s (as the
    default names are), so that ``prep evaluate runs/latest/best.pt`` always means the newest
    run; return the link, or None when there is none.

    The link is replaced atomically (a new link renamed over the old one), so a reader never
    finds it missing. A real file or folder named ``latest`` is the user's and is left alone,
    as are file systems without symbolic links.
    """
    import os

    try:
        if run_dir.resolve().parent != RUNS.resolve():
            return None
        link = RUNS / LATEST
        if link.exists() and not link.is_symlink():
            return None
        temporary = RUNS / f".{LATEST}-{os.getpid()}"
        if temporary.is_symlink():
            temporary.unlink()
        temporary.symlink_to(run_dir.resolve().name, target_is_directory=True)
        os.replace(temporary, link)
        return link
    except OSError:
        return None
