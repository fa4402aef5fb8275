"""The class table of a segmentation dataset: ``classes.csv``, one row per class.

Columns ``id,name`` and optionally ``r,g,b``; a header row is allowed. ``id`` is the value a
mask stores for the class (a class-id PNG, a palette index); ``r,g,b`` is its colour in a
colour-coded RGB mask, and the colour of predicted masks. A row named ``ignore`` (any id,
commonly 255) declares the value of pixels that count for nothing: no loss, no metric.
Classes are ordered by id, and the first one is the background: "foreground" means every
class but the first. ``prep split --classes FILE`` puts the table into the dataset (a
``classes.csv`` in the source folder is found without the option); stats, train, evaluate
and predict read it from there.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from prep.errors import ClassTableError
from prep.layout import CLASS_TABLE

IGNORE_NAME = "ignore"


@dataclass(frozen=True)
class ClassTable:
    """Classes by id, with their names and (optionally) colours.

    Attributes:
        ids: the mask value of each class, ascending; the position is the class index.
        names: the class names, in the same order.
        colours: an ``(r, g, b)`` per class, or ``None`` when the table has no colours.
        ignore: the mask value of pixels to ignore, or ``None``.
        source: where the table was read from (for messages).
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...] | None = None
    ignore: int | None = None
    ignore_colour: tuple[int, int, int] | None = None
    source: str = CLASS_TABLE

    def __len__(self) -> int:
        return len(self.ids)


def _integer(text: str, what: str, where: str, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ClassTableError(f"{where}: {what} must be a whole number, not {text.strip()!r}") from None
    if not 0 <= value <= high:
        raise ClassTableError(f"{where}: {what} must be between 0 and {high}, not {value}")
    return value


def parse_class_table(text: str, source: str) -> ClassTable:
    """A ``ClassTable`` from the text of a class table file.

    Raises:
        ClassTableError: a malformed row, a repeated id, name or colour, or fewer than two classes.
    """
    rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # a header
    entries: list[tuple[int, str, tuple[int, int, int] | None]] = []
    ignore: int | None = None
    ignore_colour = None
    for number, row in enumerate(rows, start=1):
        where = f"{source} row {number} ({','.join(row)})"
        if len(row) not in (2, 5):
            raise ClassTableError(f"{where}: a row is id,name or id,name,r,g,b")
        value = _integer(row[0], "the id", where, 65535)
        name = row[1].strip()
        if not name:
            raise ClassTableError(f"{where}: the name is empty")
        colour = tuple(_integer(c, "a colour", where, 255) for c in row[2:5]) if len(row) == 5 else None
        if name.lower() == IGNORE_NAME:
            if ignore is not None:
                raise ClassTableError(f"{where}: only one row may be named {IGNORE_NAME}")
            ignore, ignore_colour = value, colour
            continue
        entries.append((value, name, colour))
    entries.sort()
    ids = [e[0] for e in entries]
    names = [e[1] for e in entries]
    for label, values in (("id", ids + ([ignore] if ignore is not None else [])), ("name", [n.lower() for n in names])):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ClassTableError(f"{source}: the {label} {repeated[0]} appears more than once")
    if len(entries) < 2:
        raise ClassTableError(f"{source} lists {len(entries)} class{'es' if len(entries) != 1 else ''}; a segmentation needs at least two (the background and one more)")
    with_colour = [e[2] is not None for e in entries]
    if any(with_colour) and not all(with_colour):
        raise ClassTableError(f"{source}: give r,g,b for every class or for none")
    colours = tuple(e[2] for e in entries) if all(with_colour) else None
    if colours is not None:
        taken = list(colours) + ([ignore_colour] if ignore_colour else [])
        repeated = [c for c in taken if taken.count(c) > 1]
        if repeated:
            raise ClassTableError(f"{source}: the colour {repeated[0]} belongs to more than one class")
    return ClassTable(tuple(ids), tuple(names), colours, ignore, ignore_colour, source)


def read_class_table(path: Path) -> ClassTable:
    """Read a class table file.

    Raises:
        ClassTableError: unreadable or malformed.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ClassTableError(f"Cannot read the class table {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ClassTableError(f"{path} is not a text (CSV) file") from None
    return parse_class_table(text, str(path))


def dataset_class_table(root: Path) -> ClassTable | None:
    """The class table of a split dataset (``ROOT/classes.csv``), or ``None`` when it has none."""
    path = root / CLASS_TABLE
    return read_class_table(path) if path.is_file() else None
