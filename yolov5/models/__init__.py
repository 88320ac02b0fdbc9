"""Model definitions: layers (common.py), Detect/Model and the yaml parser (yolo.py)."""
