"""Data: files, labels and their cache, augmentations, datasets and loaders, demo data, COCO conversion."""
