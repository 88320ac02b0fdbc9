"""tqdm settings: live bars on a terminal, sparse plain lines in logs.

When output goes to a file or a pipe (batch jobs, CI, `nohup`), a bar that redraws ten times a
second fills the log with carriage returns. There we refresh at most every 30 s, in ASCII.
"""
import sys

BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"


def is_terminal(stream=None):
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_kwargs(leave=True, stream=None):
    """Keyword arguments for tqdm(...) suited to where the output goes."""
    if is_terminal(stream):
        return {"bar_format": BAR_FORMAT, "leave": leave}
    return {"bar_format": BAR_FORMAT, "leave": leave, "mininterval": 30.0, "maxinterval": 60.0, "ascii": True}
