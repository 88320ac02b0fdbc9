"""Inference: detect.py's sources and run loop, feature maps, export."""
