"""Data layer: raw sources, WebDataset shards, augmentation and the DDP-safe loader."""
