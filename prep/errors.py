"""Every error that prep raises on purpose.

Library code raises these; only the CLI turns them into a message and an exit code, so a
Python user of the API can catch exactly what they expect.
"""


class PrepError(Exception):
    """Base class for errors that are the user's to fix, with a message that says how."""

    exit_code = 1


class UsageError(PrepError):
    """Options that contradict each other or are out of range."""

    exit_code = 2


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


class TargetExistsError(PrepError):
    """Writing the split would overwrite a file or fill a folder that already has content."""


class JournalError(PrepError):
    """A split journal is unreadable, belongs to other options, or disagrees with the disk."""


class PluginError(PrepError):
    """A plugin failed to load or to register, and strict mode turned that into an error."""


class UnknownNameError(PrepError):
    """A name was looked up in a registry that does not hold it."""


class RunConfigError(PrepError):
    """A run's config.yaml cannot be read back to repeat the run."""
