"""Turning "another rank died" into one clear line instead of a backend traceback.

When one process of a DDP run dies (killed, out of memory, a crash), the others fail in their next
collective with a backend error (gloo: "Connection closed by peer"; NCCL: a remote error or a
watchdog timeout). Each surviving rank then says what happened and where the last checkpoint is.
"""
PEER_FAILURE_SIGNS = ("connection closed by peer", "connection reset by peer", "broken pipe",
                      "remote process exited", "ncclremoteerror", "timed out", "timeout")


def peer_failure_message(exc, rank, world_size, last):
    """The message for a collective that failed because a peer went away, or None for other errors."""
    text = str(exc).lower()
    if world_size < 2 or not any(sign in text for sign in PEER_FAILURE_SIGNS):
        return None
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return (f"rank {rank} of {world_size}: another process of this distributed run stopped, so training cannot "
            f"go on ({first}). Check the other ranks' output for the cause; the last checkpoint saved, if any, "
            f"is {last} (resume with --resume)")
