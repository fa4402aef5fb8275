"""Exact dataset statistics: per-channel mean and std, sizes, classes, masks."""
