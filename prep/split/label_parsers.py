"""Reading class labels out of file names, and making labels safe as folder names.

Also a built-in plugin: it registers the parsers that ``--label-parser`` can name.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable

from prep.errors import UnsafeLabelError, UsageError
from prep.hookspecs import hookimpl

LabelParser = Callable[[str], "str | None"]

_PREFIX = re.compile(r"^([^._\-]+)[._\-]")

# Names that would collide with prep's own folders in the output.
_RESERVED = {"_rejected"}


def prefix_label(file_name: str) -> str | None:
    """The part of the name before the first ``.``, ``_`` or ``-``: ``cat.0.jpg`` -> ``cat``.

    A name with no separator before its extension (Kaggle's ``test1/1.jpg``) has no label.
    """
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    match = _PREFIX.match(stem)
    return match.group(1) if match else None


def before_last_underscore_label(file_name: str) -> str | None:
    """Everything before the last ``_``: ``american_bulldog_12.jpg`` -> ``american_bulldog``.

    The naming of the Oxford-IIIT Pet dataset, whose breed names contain underscores.
    """
    stem = file_name.rsplit(".", 1)[0]
    label, sep, _ = stem.rpartition("_")
    return label if sep and label else None


def regex_label_parser(pattern: str) -> LabelParser:
    """A parser whose label is the one capturing group of ``pattern`` (searched in the name).

    Raises:
        UsageError: the pattern does not compile or does not have exactly one group.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--label-pattern {pattern!r} is not a valid regex: {exc}") from None
    if compiled.groups != 1:
        raise UsageError(
            f"--label-pattern {pattern!r} must have exactly one capturing group, "
            f"it has {compiled.groups}"
        )

    def parse(file_name: str) -> str | None:
        match = compiled.search(file_name)
        return match.group(1) if match and match.group(1) else None

    return parse


def sanitize_class_name(raw: str, origin: str) -> str:
    """Return ``raw`` as a safe class folder name, or refuse it.

    Surrounding white space is stripped and Unicode is normalised (NFC) so that the same
    label typed two ways lands in one folder.

    Args:
        raw: the label as read from a file name, folder name or CSV cell.
        origin: where it came from, for the error message (a path or ``file.csv line 7``).

    Raises:
        UnsafeLabelError: the label is empty, contains a path separator, ``..``, a NUL
            or control character, starts with a dot, or is absolute.
    """
    name = unicodedata.normalize("NFC", raw.strip())
    problem = None
    if not name:
        problem = "is empty"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif ".." in name:
        problem = "contains '..'"
    elif name.startswith("."):
        problem = "starts with a dot"
    elif any(unicodedata.category(ch) == "Cc" for ch in name):
        problem = "contains a control character"
    elif re.match(r"^[A-Za-z]:", name):
        problem = "looks like an absolute Windows path"
    elif name in _RESERVED:
        problem = "is reserved by prep"
    if problem:
        raise UnsafeLabelError(f"Class name {raw!r} from {origin} {problem}; refusing to use it.")
    return name


@hookimpl
def register_label_parsers(register: Callable[[str, LabelParser], None]) -> None:
    register("prefix", prefix_label)
    register("before-last-underscore", before_last_underscore_label)
