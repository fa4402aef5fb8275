"""The hook implementations prep finds through this package's entry point.

Kept free of torch at import time: prep loads every plugin when it starts, and a command
such as ``prep split`` should not pay for torch. The heavy modules are imported inside the
functions that need them.
"""

from __future__ import annotations

from prep import hookimpl


@hookimpl
def register_trainers(register):
    from prep_smallcnn.trainer import SmallCNNTrainer

    register("small-cnn", SmallCNNTrainer())


@hookimpl
def register_collate_fns(register):
    from prep_smallcnn.cutout import cutout_collate

    register("cutout", cutout_collate)
