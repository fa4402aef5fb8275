"""Named registries that plugins fill: register, look up, and list with wildcards."""

from __future__ import annotations

import difflib
import fnmatch
import logging
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prep.errors import PluginError, PrepError, UnknownNameError

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Imported:
    """A registered object named by where it lives (``module:attribute``), imported when it is
    first looked up: a plugin registers what needs torch without importing torch while prep
    starts up (``prep --help``, ``prep plugins``)."""

    target: str

    def load(self) -> Any:
        import importlib

        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Registration(Generic[T]):
    """One named entry, with the plugin that registered it."""

    name: str
    value: T
    plugin: str
    kind: str = "entry"

    @property
    def origin(self) -> str:
        """Who this is, for messages: ``splitter 'evil' (plugin 'evilsplit')``."""
        return f"{self.kind} {self.name!r} (plugin {self.plugin!r})"

    def call(self, *args: Any) -> Any:
        """Call the registered object; a failure that is not a ``PrepError`` becomes a
        ``PluginError`` naming it and its plugin. Picklable as a bound method, so it also
        serves as a DataLoader worker's collate function.

        Raises:
            PluginError: the plugin's code raised.
        """
        try:
            return self.value(*args)
        except PrepError:
            raise
        except SystemExit as exc:  # would end prep without a word
            raise PluginError(f"The {self.origin} called sys.exit({exc.code!r})") from None
        except Exception as exc:  # a plugin's bug: say whose
            raise PluginError(f"The {self.origin} failed: {type(exc).__name__}: {exc}") from None

    def call_method(self, method: str, *args: Any) -> Any:
        """Call a method of the registered object, naming it and its plugin on failure as
        ``call`` does.

        Raises:
            PluginError: the plugin's code raised.
        """
        try:
            return getattr(self.value, method)(*args)
        except PrepError:
            raise
        except SystemExit as exc:
            raise PluginError(f"The {self.origin} called sys.exit({exc.code!r}) in {method}") from None
        except Exception as exc:
            raise PluginError(f"The {self.origin} failed in {method}: {type(exc).__name__}: {exc}") from None


class Registry(Generic[T]):
    """A name -> object table for one kind of thing (label parsers, splitters, ...).

    The host owns the registry; plugins only call ``register``. A name registered twice
    keeps the later registration and logs a warning naming both plugins, so that a
    third-party plugin can deliberately replace a built-in and the user can see it did.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Registration[T]] = {}
        self._imported: dict[str, Registration[T]] = {}  # the Imported entries, once imported
        # Every registration in order, the replaced ones too (``prep plugins`` shows them).
        self.history: list[Registration[T]] = []

    def register(self, name: str, value: T, *, plugin: str) -> None:
        """Add ``value`` under ``name`` on behalf of ``plugin``."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        previous = self._entries.get(name)
        if previous is not None:
            log.warning(
                "%s %r from plugin %r replaces the one from plugin %r",
                self.kind, name, plugin, previous.plugin,
            )
        self._entries[name] = Registration(name, value, plugin, self.kind)
        self._imported.pop(name, None)
        self.history.append(self._entries[name])

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` (importing it, when it was registered as
        ``Imported``).

        Raises:
            UnknownNameError: no such name; the message lists what is registered.
            PluginError: an ``Imported`` object that cannot be imported.
        """
        return self.registration(name).value

    def registration(self, name: str) -> Registration[T]:
        """Return the full registration (value and owning plugin) for ``name``, its object
        imported when it was registered as ``Imported``."""
        entry = self.registered(name)
        if not isinstance(entry.value, Imported):
            return entry
        if name not in self._imported:
            try:
                value = entry.value.load()
            except Exception as exc:  # a plugin's bug: say whose
                raise PluginError(f"The {entry.origin} cannot be imported from {entry.value.target}: {type(exc).__name__}: {exc}") from None
            self._imported[name] = Registration(entry.name, value, entry.plugin, entry.kind)
        return self._imported[name]

    def registered(self, name: str) -> Registration[T]:
        """The registration of ``name`` as it was made (an ``Imported`` object not imported).

        Raises:
            UnknownNameError: no such name.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style wildcard, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "none"
        return f"Unknown {self.kind} {name!r}.{hint} Registered: {listing}."
