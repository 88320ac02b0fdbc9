"""Stopping a training run early and cleanly: Ctrl-C, SIGTERM (batch schedulers) or a callback.

The first SIGINT/SIGTERM only records the request; the trainer finishes the current batch, saves
a resumable last.pt and returns, and train.py exits with the shell's code for the signal
(130 for SIGINT, 143 for SIGTERM), so job schedulers see an early stop, not a success. A second
signal (after half a second) stops at once (KeyboardInterrupt): checkpoints are written atomically, so the previous
last.pt stays intact. A callback can ask for the same clean stop by setting
`callbacks.stop_training = True`; that run exits with code 0.
"""
import logging
import signal
import time
from contextlib import contextmanager

LOGGER = logging.getLogger("yolov5")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_WINDOW_S = 0.5  # the same signal again within this time is the same stop request


class StopRequest:
    """Why the run should stop early: None until a signal or a callback asks."""

    def __init__(self):
        self.reason = None  # 'SIGINT', 'SIGTERM' or 'callback'
        self.signum = None

    def __bool__(self):
        return self.reason is not None

    def set(self, reason, signum=None):
        if self.reason is None:
            self.reason, self.signum = reason, signum

    @property
    def exit_code(self):
        """128 + signal number after a signal (the shell convention), 0 otherwise."""
        return 128 + int(self.signum) if self.signum else 0


@contextmanager
def stop_on_signals(request):
    """While active, SIGINT/SIGTERM fill `request` (the second one raises KeyboardInterrupt)."""
    first = []  # monotonic time of the first signal

    def handler(signum, frame):
        if request.signum is not None:
            # torchrun forwards the SIGTERM a scheduler sent to the whole group: the rank gets it twice
            # within milliseconds, which is one request, not the "stop at once" of a repeated signal.
            if signum == request.signum and time.monotonic() - first[0] < REPEAT_WINDOW_S:
                return
            raise KeyboardInterrupt
        first.append(time.monotonic())
        request.set(signal.Signals(signum).name, signum)
        LOGGER.warning(f"\n{request.reason} received: finishing this batch, saving last.pt, then stopping "
                       "(send it again to stop at once)")

    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): keep the default handlers
        for sig, old in previous.items():
            signal.signal(sig, old)
        previous = {}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class ValidationAbandoned(Exception):
    """A stop was requested during an epoch's validation: its metrics will never be used."""


@contextmanager
def abandon_validation_on_stop(callbacks, stop_wanted, agree=None, agreed_batches=0):
    """While active, validation raises ValidationAbandoned before its next batch once `stop_wanted()`.

    A validation pass can take minutes; schedulers kill a job some seconds after their stop signal
    (Slurm: 30 s by default), so the stop must not wait for it.

    Under DDP every rank validates its own shard and all of them must leave together, or one would wait
    forever in the next collective. `agree(flag)` makes a flag True on every rank when it is True on any
    (one small all_reduce); the ranks call it at the start of each of their first `agreed_batches`
    batches, the count every shard has, and never after, so a shard's one extra batch runs unasked."""
    asked = [0]

    def check():
        if agree is None:
            wanted = stop_wanted()
        elif asked[0] < agreed_batches:
            asked[0] += 1
            wanted = agree(stop_wanted())
        else:
            return
        if wanted:
            raise ValidationAbandoned

    actions = callbacks.get_registered_actions("on_val_batch_start")
    action = {"name": "abandon_on_stop", "callback": check}
    actions.insert(0, action)  # before other actions: nothing runs for a batch that is dropped
    try:
        yield
    finally:
        actions.remove(action)
