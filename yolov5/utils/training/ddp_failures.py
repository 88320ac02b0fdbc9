"""Turning "another rank died or hangs" into one clear line instead of a backend traceback.

When one process of a DDP run dies (killed, out of memory, a crash), the others fail in their next
collective with a backend error (gloo: "Connection closed by peer"; NCCL: a remote error or a
watchdog timeout). A process that hangs (stopped, a stuck device) closes nothing: the others wait in
their collective until the backend's timeout. Each surviving rank then says what happened and where
the last checkpoint is.
"""
import os
from typing import Mapping, Optional

from utils.errors import UserError

PEER_FAILURE_SIGNS = ("connection closed by peer", "connection reset by peer", "broken pipe",
                      "remote process exited", "ncclremoteerror", "timed out", "timeout")
TIMEOUT_ENV = "YOLOV5_DDP_TIMEOUT"


def collective_timeout(environ: Optional[Mapping[str, str]] = None) -> Optional[float]:
    """Seconds a collective may wait for the other ranks ($YOLOV5_DDP_TIMEOUT), or None: the backend's
    default (gloo 30 min, NCCL 10 min). Rank 0 alone caches labels and images and runs AutoAnchor while
    the others wait, so the timeout must exceed that; it stays opt-in."""
    env = os.environ if environ is None else environ
    text = env.get(TIMEOUT_ENV, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise UserError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds above 0; set e.g. "
                        f"{TIMEOUT_ENV}=600, or unset it for the backend's default")
    return seconds


def peer_failure_message(exc, rank, world_size, last):
    """The message for a collective that failed because a peer went away, or None for other errors."""
    text = str(exc).lower()
    if world_size < 2 or not any(sign in text for sign in PEER_FAILURE_SIGNS):
        return None
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    hung = "timed out" in text or "timeout" in text
    what = "stopped answering" if hung else "stopped"
    return (f"rank {rank} of {world_size}: another process of this distributed run {what}, so training cannot "
            f"go on ({first}). Check the other ranks' output for the cause; the last checkpoint saved, if any, "
            f"is {last} (resume with --resume)")
