"""Every error that prep raises on purpose.

Library code raises these; only the CLI turns them into a message and an exit code, so a
Python user of the API can catch exactly what they expect.
"""

import errno

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a Ctrl-C'd program


class PrepError(Exception):
    """Base class for errors that are the user's to fix, with a message that says how."""

    exit_code = 1


class UsageError(PrepError):
    """Options that contradict each other or are out of range."""

    exit_code = 2


def check_choice(option: str, value: str, choices: "tuple[str, ...] | list[str]") -> str:
    """``value`` when it is one of ``choices``: the one check behind every option that takes
    a fixed set of names.

    Raises:
        UsageError: ``--option must be one of a, b, c, not 'x'``.
    """
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    return value


class DatasetNotFoundError(PrepError):
    """No dataset was given and none could be found from the working directory."""


class StatsNotFoundError(PrepError):
    """A dataset has no usable stats.json."""


class LayoutError(PrepError):
    """The source folder's layout is not one that prep split understands."""


class UnsafeLabelError(PrepError):
    """A class name would escape the output folder or is not a usable folder name."""


class LabelsFileError(PrepError):
    """A label CSV is missing, unreadable, or lacks the named columns."""


class TooFewSamplesError(PrepError):
    """A class has too few samples to give every requested split at least one."""


class FoldsError(PrepError):
    """A dataset's cross-validation folds (``folds.csv``) are missing, malformed, or do not
    match its ``train/``; or a fold was asked for that it does not have."""


class TargetExistsError(PrepError):
    """Writing the split would overwrite a file or fill a folder that already has content."""


class JournalError(PrepError):
    """A split journal is unreadable, belongs to other options, or disagrees with the disk."""


class PluginError(PrepError):
    """A plugin failed to load or to register, and strict mode turned that into an error."""


class UnknownNameError(UsageError):
    """A name was looked up in a registry that does not hold it: an option's value that
    no installed plugin provides (a trainer, preset, collate function, splitter ...)."""


class RunConfigError(PrepError):
    """A run's config.yaml cannot be read back to repeat the run."""


class PlacementError(PrepError):
    """A split stopped half-way because the disk refused a file; its journal can finish or undo it."""


class UnfinishedSplitError(PrepError):
    """A command that reads a split was pointed at one whose journal says it is not finished."""


class DiskError(PrepError):
    """The operating system refused to read or write a path (full disk, read-only, ...)."""

    # What the user can do about each cause; the strerror alone says only what happened.
    ADVICE = {
        errno.ENOSPC: "the disk is full; free some space and run the command again",
        errno.EDQUOT: "the disk quota is used up; free some space and run the command again",
        errno.EROFS: "the file system is read-only; choose a writable folder",
        errno.EACCES: "permission denied; check the owner and mode of the folder",
        errno.EPERM: "the operation is not permitted (an immutable or append-only file, or a file system that forbids it)",
        errno.ENAMETOOLONG: "a name is longer than the file system allows; shorten it",
        errno.ELOOP: "a symbolic link points back into itself",
        errno.ENOTDIR: "a path that should be a folder is a file",
        errno.EISDIR: "a path that should be a file is a folder",
        errno.EXDEV: "source and destination are on different file systems",
        errno.EIO: "the disk reported an I/O error",
        errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    }

    @classmethod
    def from_os_error(cls, exc: OSError, doing: str | None = None) -> "DiskError":
        """One line naming the path(s), what was being done, and the cause.

        Args:
            exc: the error the operating system raised.
            doing: what prep was doing, as a verb: ``"move"`` gives "Cannot move PATH: ...".
        """
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        cause = cls.ADVICE.get(exc.errno) or (exc.strerror or str(exc)).rstrip(".")
        strerror = exc.strerror or type(exc).__name__
        if doing:
            return cls(f"Cannot {doing}{' ' + paths if paths else ''}: {strerror} ({cause}).")
        return cls(f"{paths + ': ' if paths else ''}{strerror} ({cause}).")


class TaskMismatchError(PrepError):
    """A trainer's task does not fit the dataset's layout (a classifier on masks, say)."""


class ClassTableError(PrepError):
    """A segmentation class table (classes.csv) cannot be read or contradicts itself."""


class MaskError(PrepError):
    """Segmentation masks hold values that are not classes of the dataset, or cannot be read as classes."""


class UnknownClassError(PrepError):
    """A folder to evaluate on has a class that the model was not trained on."""
