"""The training engine that every trainer shares: the loop, checkpoints, metrics, logging."""
