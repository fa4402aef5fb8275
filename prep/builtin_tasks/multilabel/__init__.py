"""The ``multilabel`` task: several tags per image (Kaggle's Planet, the Human Protein Atlas).

``task`` registers it and holds what the engine and the commands ask of it; ``metrics``,
``losses``, ``predict`` and ``plots`` hold the rest.
"""
