"""Devices: the --device spec, device kinds and their set-up, timing, DDP wrappers, the stand-in MLU."""
