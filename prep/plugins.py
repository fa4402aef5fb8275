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
from dataclasses import dataclass, field
from functools import cache, partial
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pluggy

from prep import hookspecs
from prep.errors import PluginError
from prep.registry import Registry

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
    """The plugin manager plus what went wrong while filling it."""

    manager: pluggy.PluginManager
    failures: list[PluginFailure] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

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
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            # BaseException: a plugin calling sys.exit() or raising KeyboardInterrupt must
            # not take prep down with it either.
            except BaseException as exc:  # noqa: BLE001 - a plugin's bug must not lock users out
                self.record_failure(
                    PluginFailure(
                        impl.plugin_name,
                        self.versions.get(impl.plugin_name, "unknown version"),
                        hook_name,
                        f"{type(exc).__name__}: {exc}",
                    )
                )

    def fill_registry(self, hook_name: str, kind: str) -> Registry:
        """Build a registry of ``kind`` from every plugin's ``hook_name`` hook."""
        registry: Registry = Registry(kind)
        self.call_each(
            hook_name, lambda plugin: {"register": partial(registry.register, plugin=plugin)}
        )
        return registry


def describe_plugins(host: PluginHost) -> dict[str, Any]:
    """What ``prep plugins`` shows: every plugin with its version and hooks, and failures."""
    plugins = []
    for name, plugin in sorted(host.manager.list_name_plugin()):
        callers = host.manager.get_hookcallers(plugin) or []
        plugins.append({
            "name": name,
            "version": host.versions.get(name, "unknown version"),
            "builtin": name in DEFAULT_PLUGINS,
            "hooks": sorted(caller.name for caller in callers),
        })
    failures = [
        {"name": f.plugin, "version": f.version, "stage": f.stage, "error": f.error}
        for f in host.failures
    ]
    return {"plugins": plugins, "failures": failures}


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
        try:
            plugin = entry_point.load()
            host.manager.register(plugin, name=entry_point.name)
        except BaseException as exc:  # noqa: BLE001 - even sys.exit() at import is the plugin's failure
            host.record_failure(
                PluginFailure(entry_point.name, version, "load", f"{type(exc).__name__}: {exc}")
            )


def _register_default_plugins(host: PluginHost) -> None:
    from prep import __version__

    for module_name in DEFAULT_PLUGINS:
        host.manager.register(importlib.import_module(module_name), name=module_name)
        host.versions[module_name] = f"prep {__version__} (built-in)"


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
    """Register ``plugin`` with the process-wide host while the block runs (the CLI's
    own listeners of training events, for instance)."""
    manager = plugin_host().manager
    manager.register(plugin, name=name)
    try:
        yield
    finally:
        manager.unregister(plugin)


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
