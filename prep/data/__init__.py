"""Reading a split dataset: its folders, datasets, collate functions and loaders."""
