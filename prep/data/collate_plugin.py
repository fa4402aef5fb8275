"""Built-in plugin registering the collate functions of ``prep.data.collate``.

They are registered by where they live (``prep.registry.Imported``), so that loading plugins
at start-up does not import torch: ``prep.data.collate`` is imported when a collate function
is first looked up.
"""

from __future__ import annotations

from typing import Callable

from prep.hookspecs import hookimpl
from prep.registry import Imported


@hookimpl
def register_collate_fns(register: Callable[[str, Callable], None]) -> None:
    register("uint8-channels-last", Imported("prep.data.collate:uint8_channels_last_collate"))
    register("segmentation", Imported("prep.data.collate:segmentation_collate"))
    register("multilabel", Imported("prep.data.collate:multilabel_collate"))
    register("targets-as-list", Imported("prep.data.collate:targets_as_list_collate"))
