"""Segmentation: class tables, mask decoding, losses, metrics, run-length encoding and
inference on whole images. The ``segmentation`` task (``prep.builtin_tasks.segmentation``)
and the ``unet`` trainer are built from these parts."""
