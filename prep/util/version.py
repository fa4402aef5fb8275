"""prep's version, in the one place that setuptools, the CLI and every written file read it."""

__version__ = "0.1.0"
