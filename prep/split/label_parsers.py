"""Reading class labels out of file names (``prep.split.safe_names`` makes them safe).

Also a built-in plugin: it registers the parsers that ``--label-parser`` can name.
"""

from __future__ import annotations

import re
from typing import Callable

from prep.errors import UsageError
from prep.hookspecs import hookimpl

LabelParser = Callable[[str], "str | None"]

_PREFIX = re.compile(r"^([^._\-]+)[._\-]")

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


def merged_by_prefix(names: list[str]) -> str | None:
    """A sentence for the report when the default ``prefix`` parser merges classes that
    ``before-last-underscore`` tells apart (Oxford-IIIT Pet's ``golden_retriever_12.jpg`` and
    ``golden_doodle_3.jpg`` both read as ``golden``); None when it does not."""
    prefix: dict[str, set[str]] = {}
    for name in names:
        short, long = prefix_label(name), before_last_underscore_label(name)
        if short is None or long is None:
            return None  # not every name is <words>_<number>: no other reading to offer
        prefix.setdefault(short, set()).add(long)
    merged = {short: sorted(longs) for short, longs in prefix.items() if len(longs) > 1}
    if not merged:
        return None
    short, longs = min(merged.items(), key=lambda kv: kv[0])
    classes = sum(len(longs) for longs in prefix.values())
    return (
        f"the default label parser (prefix: the name up to the first . _ or -) reads {', '.join(longs[:3])}"
        f"{' ...' if len(longs) > 3 else ''} as one class, {short!r}: {len(prefix)} classes, where "
        f"--label-parser before-last-underscore reads {classes}; if those are the classes, split with that option "
        f"(or --label-pattern REGEX)"
    )


@hookimpl
def register_label_parsers(register: Callable[[str, LabelParser], None]) -> None:
    register("prefix", prefix_label)
    register("before-last-underscore", before_last_underscore_label)
