"""Making labels safe: a class name becomes a folder, a tag a word of ``labels.csv``.

Kept apart from the label parsers (a plugin module) so that the readers of a split dataset
use it without the plugin system.
"""

from __future__ import annotations

import re
import unicodedata

from prep.errors import UnsafeLabelError

# Names that would collide with prep's own folders in the output.
_RESERVED = {"_rejected"}


def sanitize_class_name(raw: str, origin: str, what: str = "Class name") -> str:
    """Return ``raw`` as a safe class folder name, or refuse it.

    Surrounding white space is stripped and Unicode is normalised (NFC) so that the same
    label typed two ways lands in one folder.

    Args:
        raw: the label as read from a file name, folder name or CSV cell.
        origin: where it came from, for the error message (a path or ``file.csv line 7``).
        what: what the label is, for the message (a multi-label CSV's ``Tag``).

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
        raise UnsafeLabelError(f"{what} {raw!r} from {origin} {problem}; refusing to use it.")
    return name
