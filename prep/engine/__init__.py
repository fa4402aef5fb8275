"""The training engine that every trainer shares (being built: see issue 4)."""
