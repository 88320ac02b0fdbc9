"""What the training loop reports (mean losses, a non-finite loss, stop requests) without making the
host wait for the device on every iteration.

On an accelerator every `.item()`, `.tolist()` or `bool(tensor)` drains the queue of launched work,
so the loop keeps its running loss means and a "some loss was inf or NaN" flag on the device and
reads them back only at refresh points: the first iteration of an epoch, every `interval`
iterations after that, the last iteration of the epoch and the iteration the loop leaves on. A
refresh costs one device->host copy (plus, under DDP, one small all_reduce that carries the rank
sums of the losses, the non-finite flag, stop requests and rank 0's next interval, so every rank
agrees on all of them and refreshes at the same iterations).

The interval is chosen on rank 0 so a refresh comes about every REFRESH_SECONDS of wall time, at
most MAX_INTERVAL iterations apart: a non-finite loss is noticed at most `interval - 1` iterations
after it happened (never more than MAX_INTERVAL - 1), and always before anything is validated or
saved, because the last iteration of an epoch refreshes. The report names the iteration, loss
values and images of the first bad batch, recorded on the device when it happened.
"""
import time
from typing import List, NamedTuple, Optional

import torch

REFRESH_SECONDS = 1.0  # the progress bar stays live without a host round trip per iteration
MAX_INTERVAL = 64  # bounds how late a non-finite loss is noticed
FIXED_INTERVAL: Optional[int] = None  # set (e.g. by bench/sync_budget.py) to refresh every N iterations


class BadLoss(NamedTuple):
    """The first non-finite loss of this rank in the epoch."""

    iteration: int  # within the epoch
    loss: float
    items: List[float]  # box, obj, cls
    paths: List[str]


class Refresh(NamedTuple):
    mloss: List[float]  # epoch-mean box, obj, cls losses (mean over ranks under DDP)
    diverged: bool  # some rank saw a non-finite loss
    stop: bool  # some rank asked to stop
    bad: Optional[BadLoss]  # this rank's first bad batch (None when another rank saw it)


class LoopMonitor:
    def __init__(self, device, world_size=1):
        self.device, self.world_size = device.torch_device, max(int(world_size), 1)
        self.interval = FIXED_INTERVAL or 1  # until the first measurement
        self.refreshes = 0

    def start_epoch(self):
        dev = self.device
        self.mloss = torch.zeros(3, device=dev)
        self.bad = torch.zeros((), dtype=torch.bool, device=dev)
        self.bad_record = torch.zeros(5, device=dev)  # iteration, loss, box, obj, cls of the first bad batch
        self.counter = torch.zeros((), device=dev)  # iteration index, kept on the device
        self.paths = {}  # iteration -> image paths since the last refresh (host side)
        self.next_refresh = 0
        self.last_refresh = (-1, time.perf_counter())

    def record(self, i, loss, loss_items, paths):
        """Fold iteration i's losses in; device operations only (no host sync)."""
        finite = torch.isfinite(loss.detach()).all()
        first = ~finite & ~self.bad
        row = torch.cat((self.counter.reshape(1), loss.detach().reshape(-1)[:1].float(), loss_items.float()))
        self.bad_record = torch.where(first, row, self.bad_record)
        self.bad = self.bad | ~finite
        self.mloss = (self.mloss * i + loss_items) / (i + 1)
        self.counter += 1
        self.paths[i] = [str(p) for p in paths[:4]]

    def due(self, i, last):
        """Refresh at this iteration? `last`: the epoch (or the loop) ends here. Same on every rank."""
        return last or i >= self.next_refresh

    def refresh(self, i, stop=False):
        """Read the state back (one device->host copy; one all_reduce under DDP); plan the next refresh."""
        now = time.perf_counter()
        done, t = self.last_refresh
        proposal = float(self.interval)
        if FIXED_INTERVAL:
            proposal = float(FIXED_INTERVAL)
        elif i > done >= 0 and now > t:  # iterations per REFRESH_SECONDS, as timed since the last refresh
            proposal = float(min(max(round(REFRESH_SECONDS * (i - done) / (now - t)), 1), MAX_INTERVAL))
        shared = torch.cat((self.mloss, self.bad.float().reshape(1)))
        if self.world_size > 1:
            import torch.distributed as dist
            rank0 = dist.get_rank() == 0
            extra = torch.tensor([float(bool(stop)), proposal if rank0 else 0.0], device=self.device)
            shared = torch.cat((shared, extra))
            dist.all_reduce(shared, op=dist.ReduceOp.SUM)
        values = torch.cat((shared, self.bad.float().reshape(1), self.bad_record)).tolist()  # the one copy
        n = 4 if self.world_size == 1 else 6
        reduced, (local_bad, bad_i, bad_loss, *bad_items) = values[:n], values[n:]
        mloss = [x / self.world_size for x in reduced[:3]]
        if self.world_size > 1:
            stop, proposal = reduced[4] > 0, reduced[5]
        self.interval = int(proposal)
        self.next_refresh = i + self.interval
        self.last_refresh = (i, time.perf_counter())
        bad = None
        if local_bad:
            bad_i = int(bad_i)
            bad = BadLoss(bad_i, bad_loss, bad_items, self.paths.get(bad_i, []))
        self.paths = {}
        self.refreshes += 1
        return Refresh(mloss, reduced[3] > 0, bool(stop), bad)
