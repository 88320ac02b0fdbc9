"""Dataloader workers that survive a stop signal sent to the whole process group.

Batch schedulers (Slurm), torchrun and `kill -TERM -<pgid>` signal every process of the job, the
dataloader workers included. PyTorch's worker dies on a SIGTERM that its parent did not send, and a
Ctrl-C ends its loop, so the trainer, which is still finishing its batch to save last.pt, fails
with "DataLoader worker ... is killed by signal" instead of stopping cleanly.

`shield_from_group_signals()`, run in each worker as it starts, blocks SIGINT and SIGTERM in the
worker's threads and hands them to one waiting thread that knows who sent them (sigwaitinfo):
  * SIGTERM from the parent (multiprocessing's shutdown of daemonic workers, e.g. at interpreter
    exit) ends the worker at once, as PyTorch's own handler does, so exit never hangs;
  * every other SIGINT/SIGTERM is dropped: the parent decides how to stop and then shuts its
    workers down through the DataLoader's normal path.
A worker whose parent dies still ends by itself: PyTorch's worker loop watches the parent.
"""
import os
import signal
import threading

GROUP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _wait_for_signals(parent_pid):
    while True:
        info = signal.sigwaitinfo(GROUP_SIGNALS)
        if info.si_signo == signal.SIGTERM and info.si_pid == parent_pid:
            os._exit(0)  # the parent ends its workers this way only when it is shutting them down


def shield_from_group_signals():
    """Call in a dataloader worker (worker_init_fn); a no-op where sigwaitinfo does not exist."""
    if not hasattr(signal, "sigwaitinfo"):
        return
    # Blocked before the thread starts, so it inherits the mask: every thread of the worker has
    # the signals blocked and they stay pending until the waiting thread takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    threading.Thread(target=_wait_for_signals, args=(os.getppid(),), name="group-signal-guard",
                     daemon=True).start()
