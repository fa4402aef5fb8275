"""prep-smallcnn: a small CNN trainer and a cutout collate function for prep."""

__version__ = "0.1.0"
