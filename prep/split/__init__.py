"""Turn a raw image folder into train/valid(/test) folders, journaled so nothing is lost."""
