"""The plugin manager: built-in plugins, entry-point plugins, and fault isolation.

Installed plugins are found through the ``prep`` entry-point group. Each one is loaded and
registered on its own, so one that fails to import, has a bad hook signature or raises
while registering is reported by name and version while everything else keeps working.

Environment variables:
    PREP_LOAD_PLUGINS: comma-separated entry-point names to load; unset loads all, an
        empty value loads none. Built-in plugins always load.
    PREP_STRICT_PLUGINS: set to ``1`` to turn any plugin failure into a ``PluginError``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import time
from dataclasses import dataclass, field
from functools import cache, partial
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pluggy

from prep import hookspecs
from prep.errors import PluginError
from prep.registry import Imported, Registry

if TYPE_CHECKING:
    from prep.engine.events import TrainingRun

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "prep"

# Registered after the installed plugins. pluggy calls implementations last-registered
# first, so built-ins register first and an installed plugin may replace one of their
# names on purpose (the registry logs a warning when that happens).
DEFAULT_PLUGINS = (
    "prep.split.label_parsers",
    "prep.split.splitters",
    "prep.augment.presets",
    "prep.data.collate_plugin",
    "prep.builtin_tasks.classification.task",
    "prep.builtin_tasks.multilabel.task",
    "prep.builtin_tasks.segmentation.task",
)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or could not register."""

    plugin: str
    version: str
    stage: str  # "load" or the name of the hook that raised
    error: str

    def describe(self) -> str:
        return f"plugin {self.plugin!r} ({self.version}) failed at {self.stage}: {self.error}"


@dataclass
class PluginHost:
    """The plugin manager plus what was loaded, and what went wrong while filling it.

    Attributes:
        loaded: one line per plugin loaded, in order (``prep -v`` prints them).
    """

    manager: pluggy.PluginManager
    failures: list[PluginFailure] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)

    def record_failure(self, failure: PluginFailure) -> None:
        if strict_mode():
            raise PluginError(failure.describe())
        log.warning("%s", failure.describe())
        self.failures.append(failure)

    def call_each(self, hook_name: str, kwargs_for: Callable[[str], dict[str, Any]]) -> None:
        """Call every implementation of a hook on its own, isolating failures.

        pluggy would stop the whole hook call at the first exception; calling each
        implementation separately lets the other plugins still contribute.

        Args:
            hook_name: the hook to call.
            kwargs_for: builds the hook's arguments for the plugin of the given name.
        """
        hook = getattr(self.manager.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            kwargs = kwargs_for(impl.plugin_name)
            interrupts = _Interrupts()
            try:
                with plugin_interrupts(interrupts):
                    impl.function(**{name: kwargs[name] for name in impl.argnames})
            # BaseException: a plugin calling sys.exit() or raising KeyboardInterrupt must
            # not take prep down with it either; the user's Ctrl-C does.
            except BaseException as exc:  # noqa: BLE001 - a plugin's bug must not lock users out
                if isinstance(exc, KeyboardInterrupt) and not interrupts.plugins_own:
                    raise KeyboardInterrupt from None
                self.record_failure(
                    PluginFailure(
                        impl.plugin_name,
                        self.versions.get(impl.plugin_name, "unknown version"),
                        hook_name,
                        f"{type(exc).__name__}: {exc}",
                    )
                )

    def fill_registry(self, hook_name: str, kind: str) -> Registry:
        """Build a registry of ``kind`` from every plugin's ``hook_name`` hook; what a plugin
        registered that cannot serve as a ``kind`` is a failure of that plugin (strict mode
        stops here, before anything uses it)."""
        registry: Registry = Registry(kind)
        self.call_each(
            hook_name, lambda plugin: {"register": partial(registry.register, plugin=plugin)}
        )
        for entry in registry.history:
            misfit = _misfit(kind, entry.value)
            if misfit:
                version = self.versions.get(entry.plugin, "unknown version")
                self.record_failure(PluginFailure(entry.plugin, version, hook_name, f"registered {kind} {entry.name!r}, {misfit}"))
        return registry


# What a task must have (prep.engine.task.Task); the other methods are optional.
_TASK_ATTRIBUTES = ("name", "layout", "collate", "metric_names", "monitor", "mode", "classes", "dataset", "targets", "loss", "metrics", "pictures")


def _misfit(kind: str, value: Any) -> str | None:
    """Why ``value`` cannot serve as a registered ``kind``, or None when it can."""
    if kind == "trainer":
        from prep.train.trainer import Trainer

        return None if isinstance(value, Trainer) else f"a {type(value).__name__}, which is not a prep.Trainer (subclass prep.Trainer)"
    if kind == "task":
        missing = [name for name in _TASK_ATTRIBUTES if not hasattr(value, name)]
        return f"which lacks {', '.join(missing)} (see prep.Task)" if missing else None
    if isinstance(value, Imported) or (kind == "collate function" and hasattr(value, "with_classes")):
        return None  # an Imported one is checked when it is imported
    return None if callable(value) else f"a {type(value).__name__}, which cannot be called"


class PluginCallbacks:
    """The installed plugins' ``on_*`` hooks as one training callback (see
    ``prep.engine.events``), each plugin called on its own (``PluginHost.call_each``): one that
    raises is reported by name and the run goes on, unless ``PREP_STRICT_PLUGINS`` is set."""

    def __init__(self, host: PluginHost) -> None:
        self.host = host

    def on_train_start(self, run: "TrainingRun") -> None:
        self.host.call_each("on_train_start", lambda plugin: {"run": run})

    def on_epoch_end(self, run: "TrainingRun", metrics: dict[str, Any]) -> None:
        self.host.call_each("on_epoch_end", lambda plugin: {"run": run, "metrics": metrics})

    def on_train_end(self, run: "TrainingRun", summary: dict[str, Any]) -> None:
        self.host.call_each("on_train_end", lambda plugin: {"run": run, "summary": summary})


def describe_plugins(host: PluginHost) -> dict[str, Any]:
    """What ``prep plugins`` shows: every plugin with its version, hooks and what it registered
    in each registry, the trainers' options, and every failure at load or registration.

    Every registry is filled first, so that a plugin failing while it registers shows here.
    """
    registrations: dict[str, dict[str, list[str]]] = {}
    trainer_rows = []
    for hook_name, registry_of in REGISTRIES.items():
        registry = registry_of()
        for entry in registry.history:
            names = registrations.setdefault(entry.plugin, {}).setdefault(registry.kind, [])
            winner = registry.registered(entry.name)
            names.append(entry.name if winner is entry else f"{entry.name} (replaced by {winner.plugin})")
        if hook_name == "register_trainers":
            trainer_rows = [_describe_trainer(registry.registration(name)) for name in registry.names()]
    plugins = []
    for name, plugin in sorted(host.manager.list_name_plugin()):
        callers = host.manager.get_hookcallers(plugin) or []
        plugins.append({
            "name": name,
            "version": host.versions.get(name, "unknown version"),
            "builtin": name in DEFAULT_PLUGINS,
            "hooks": sorted(caller.name for caller in callers),
            "registered": registrations.get(name, {}),
        })
    failures = [
        {"name": f.plugin, "version": f.version, "stage": f.stage, "error": f.error}
        for f in host.failures
    ]
    return {"plugins": plugins, "trainers": trainer_rows, "failures": failures}


def find_architectures(pattern: str) -> dict[str, Any]:
    """What ``prep plugins --arch PATTERN`` lists: ``trainers``, trainer name -> the
    architectures of ``Trainer.find_architectures(pattern)``, and ``failures``, a line for
    each trainer whose listing failed."""
    from prep.registry import Registration
    from prep.train.trainer import Trainer

    registry = REGISTRIES["register_trainers"]()
    found: dict[str, list[dict[str, Any]]] = {}
    failures = []
    for name in registry.names():
        registration: Registration = registry.registration(name)
        if not isinstance(registration.value, Trainer):
            continue
        try:
            found[name] = list(registration.call_method("find_architectures", pattern))
        except PrepError as exc:
            failures.append(str(exc))
    return {"trainers": found, "failures": failures}


def _describe_trainer(registration) -> dict[str, Any]:
    from prep.train.trainer import Trainer

    trainer = registration.value
    about = trainer.describe() if isinstance(trainer, Trainer) else {"error": "not a prep.Trainer subclass"}
    return {"name": registration.name, "plugin": registration.plugin, **about}


def strict_mode() -> bool:
    return os.environ.get("PREP_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def _selected_entry_point_names() -> set[str] | None:
    raw = os.environ.get("PREP_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _load_entry_points(host: PluginHost) -> None:
    selected = _selected_entry_point_names()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if selected is not None and entry_point.name not in selected:
            continue
        dist = entry_point.dist
        version = f"{dist.name} {dist.version}" if dist is not None else "unknown version"
        host.versions[entry_point.name] = version
        started = time.perf_counter()
        interrupts = _Interrupts()
        try:
            with plugin_interrupts(interrupts):
                plugin = entry_point.load()
            host.manager.register(plugin, name=entry_point.name)
        except BaseException as exc:  # noqa: BLE001 - even sys.exit() at import is the plugin's failure
            if isinstance(exc, KeyboardInterrupt) and not interrupts.plugins_own:
                raise KeyboardInterrupt from None  # the user's Ctrl-C, while a slow plugin imports
            host.record_failure(
                PluginFailure(entry_point.name, version, "load", f"{type(exc).__name__}: {exc}")
            )
            continue
        host.loaded.append(
            f"Loaded plugin {entry_point.name!r} ({version}) from entry point {entry_point.value} "
            f"in {(time.perf_counter() - started) * 1000:.0f} ms"
        )


@dataclass
class _Interrupts:
    plugins_own: bool = False  # a KeyboardInterrupt the plugin's code raised itself


@contextmanager
def plugin_interrupts(noted: _Interrupts) -> Iterator[None]:
    """Tell a KeyboardInterrupt that a plugin's own code raises (its failure, which prep
    survives) from the user's Ctrl-C (which stops prep, even in the middle of a slow
    import): ``noted.plugins_own`` is set only for one raised inside while no Ctrl-C came.
    Only where Ctrl-C raises (Python's own handler, in the main thread); a run's gentle
    handler is left alone, and a KeyboardInterrupt under it is the plugin's."""
    import signal

    pressed = False
    ours = _in_main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if ours:
        def handler(signum, frame):  # noqa: ANN001 - signal's signature
            nonlocal pressed
            pressed = True
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, handler)
    try:
        yield
    except KeyboardInterrupt:
        noted.plugins_own = not pressed
        raise
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _register_default_plugins(host: PluginHost) -> None:
    from prep.util.version import __version__

    for module_name in DEFAULT_PLUGINS:
        host.manager.register(importlib.import_module(module_name), name=module_name)
        host.versions[module_name] = f"prep {__version__} (built-in)"
        host.loaded.append(f"Loaded built-in plugin {module_name!r}")


def create_plugin_host() -> PluginHost:
    """A fresh host with installed plugins loaded, then the built-in ones."""
    manager = pluggy.PluginManager("prep")
    manager.add_hookspecs(hookspecs)
    host = PluginHost(manager)
    _load_entry_points(host)
    _register_default_plugins(host)
    return host


@cache
def plugin_host() -> PluginHost:
    """The process-wide plugin host, created on first use."""
    return create_plugin_host()


@contextmanager
def temporary_plugin(plugin: object, name: str) -> Iterator[None]:
    """Register ``plugin`` with the process-wide host while the block runs, with the
    registries refilled before and after, so that its ``register_*`` hooks count too."""
    manager = plugin_host().manager
    manager.register(plugin, name=name)
    _registry.cache_clear()
    try:
        yield
    finally:
        manager.unregister(plugin)
        _registry.cache_clear()


def reset_plugin_host() -> None:
    """Forget the process-wide host and registries (tests use this after changing the
    environment)."""
    plugin_host.cache_clear()
    _registry.cache_clear()


@cache
def _registry(hook_name: str, kind: str) -> Registry:
    return plugin_host().fill_registry(hook_name, kind)


def label_parsers() -> Registry:
    """Every registered label parser, by name."""
    return _registry("register_label_parsers", "label parser")


def splitters() -> Registry:
    """Every registered splitter, by name."""
    return _registry("register_splitters", "splitter")


def augmentation_presets() -> Registry:
    """Every registered augmentation preset, by name."""
    return _registry("register_augmentation_presets", "augmentation preset")


def collate_fns() -> Registry:
    """Every registered collate function, by name."""
    return _registry("register_collate_fns", "collate function")


def lr_lambdas() -> Registry:
    """Every registered learning-rate lambda factory, by name."""
    return _registry("register_lr_lambdas", "LR lambda")


def trainers() -> Registry:
    """Every registered trainer, by name."""
    return _registry("register_trainers", "trainer")


def tasks() -> Registry:
    """Every registered task, by name."""
    return _registry("register_tasks", "task")


# Every registry, by the hook that fills it: what ``prep plugins`` lists.
REGISTRIES = {
    "register_trainers": trainers,
    "register_tasks": tasks,
    "register_collate_fns": collate_fns,
    "register_augmentation_presets": augmentation_presets,
    "register_splitters": splitters,
    "register_label_parsers": label_parsers,
    "register_lr_lambdas": lr_lambdas,
}
