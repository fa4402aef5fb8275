"""prep's built-in trainers, installed as the package ``prep_trainers`` and registered through
the ``prep`` entry-point group exactly like third-party trainers.

The folder is named ``trainers`` and imported as ``prep_trainers`` (see ``package-dir`` in
pyproject.toml): a top-level ``trainers`` package could clash with another installed one.
"""
