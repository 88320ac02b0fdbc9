"""tqdm settings: live bars on a terminal, sparse plain lines in logs.

When output goes to a file or a pipe (batch jobs, CI, `nohup`), a bar that redraws ten times a
second fills the log with carriage returns. There we refresh at most every 30 s, in ASCII, and
each drawing becomes a line of its own; the drawing a bar makes when it opens (0%) is dropped,
so a short loop leaves exactly one line, its final state.
"""
import sys

BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"


def is_terminal(stream=None):
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class LogLines:
    """File-like target for one tqdm bar writing to a log: '\\r'-redrawn statuses become lines."""

    def __init__(self, stream):
        self.stream = stream
        self.opened = False  # the first status is the bar's opening draw
        self.last = None

    def write(self, text):
        for status in text.split("\r"):
            status = status.rstrip(" \n")  # tqdm pads over the previous status and ends with '\n'
            if not status:
                continue
            if self.opened and status != self.last:  # closing redraws the last refresh: once is enough
                self.stream.write(status + "\n")
            self.opened, self.last = True, status

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):  # encoding, fileno, ... as the real stream
        return getattr(self.stream, name)


def progress_kwargs(leave=True, stream=None):
    """Keyword arguments for tqdm(...) suited to where the output goes."""
    stream = stream or sys.stderr
    if is_terminal(stream):
        return {"bar_format": BAR_FORMAT, "leave": leave}
    return {"bar_format": BAR_FORMAT, "leave": leave, "mininterval": 30.0, "maxinterval": 60.0, "ascii": True,
            "file": LogLines(stream)}
