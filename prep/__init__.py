"""prep: from a raw Kaggle image folder to a trained PyTorch model, through plugins."""

__version__ = "0.1.0"
