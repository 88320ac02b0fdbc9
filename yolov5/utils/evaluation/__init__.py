"""Evaluation: NMS, metrics and their plots, COCO json, the validator and its DDP split."""
