"""The built-in tasks (see ``prep.engine.task``): what classification, and later other kinds
of problem, contribute to the shared engine."""
