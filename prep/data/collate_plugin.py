"""Built-in plugin registering the collate functions of ``prep.data.collate``.

Kept apart so that loading plugins at CLI start-up does not import torch.
"""

from __future__ import annotations

from typing import Callable

from prep.hookspecs import hookimpl


@hookimpl
def register_collate_fns(register: Callable[[str, Callable], None]) -> None:
    from prep.data import collate

    register("uint8-channels-last", collate.uint8_channels_last_collate)
    register("segmentation", collate.segmentation_collate)
    register("targets-as-list", collate.targets_as_list_collate)
