"""Stop training when the validation fitness has not improved for `patience` epochs.

Upstream v6.0 semantics (`EarlyStopping` in utils/torch_utils.py): an epoch whose fitness is >= the best so far becomes
the new best epoch (ties move it forward, so a flat fitness, e.g. all zeros under --noval, never
stops a run); `possible_stop` turns on one epoch before the stop so train.py can validate and save
that final epoch; patience 0 disables stopping.
"""
import logging

LOGGER = logging.getLogger("yolov5")


class EarlyStopping:
    """Call once per epoch with (epoch, fitness); returns True when training should stop."""

    def __init__(self, patience=30):
        self.patience = patience or float("inf")  # 0 / None -> never stop
        self.best_fitness = 0.0
        self.best_epoch = 0
        self.possible_stop = False

    def __call__(self, epoch, fitness):
        if fitness >= self.best_fitness:
            self.best_epoch = epoch
            self.best_fitness = fitness
        waited = epoch - self.best_epoch
        self.possible_stop = waited >= (self.patience - 1)
        stop = waited >= self.patience
        if stop:
            LOGGER.info(f"Stopping training early: fitness has not improved for {self.patience} epochs. "
                        f"Best epoch was {self.best_epoch} (saved as best.pt). Use --patience N to wait "
                        f"longer, or --patience 0 to disable early stopping.")
        return stop

    def state_dict(self):
        """Plain values for a checkpoint, so a resumed run counts patience from the same epoch."""
        return {"best_fitness": float(self.best_fitness), "best_epoch": int(self.best_epoch),
                "possible_stop": bool(self.possible_stop)}

    def load_state_dict(self, state):
        self.best_fitness = float(state["best_fitness"])
        self.best_epoch = int(state["best_epoch"])
        self.possible_stop = bool(state["possible_stop"])
