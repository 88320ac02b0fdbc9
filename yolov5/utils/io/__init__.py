"""Files of a run: checkpoints (safe load, atomic save), model/config file lookup, run folders, disk-full-safe writes."""
