"""Progress bars: live on a terminal; in logs one plain line per drawing, no carriage returns."""
import io

from tqdm import tqdm

from utils.progress import LogLines, progress_kwargs


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_short_loop_in_a_log_leaves_one_line():
    log = io.StringIO()
    for _ in tqdm(range(5), desc="scan", **progress_kwargs(stream=log)):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 1
    assert lines[0].startswith("scan: 100%|##########| 5/5 ")


def test_each_refresh_in_a_log_is_a_line_and_the_opening_draw_is_dropped():
    log = io.StringIO()
    kwargs = {**progress_kwargs(stream=log), "mininterval": 0, "miniters": 1, "bar_format": "{n}/{total}"}
    for _ in tqdm(range(3), **kwargs):
        pass
    assert log.getvalue() == "1/3\n2/3\n3/3\n"  # no 0/3; the closing redraw of 3/3 is not repeated


def test_bar_that_does_not_stay_leaves_nothing_in_a_log():
    log = io.StringIO()
    for _ in tqdm(range(4), **progress_kwargs(leave=False, stream=log)):
        pass
    assert log.getvalue() == ""


def test_terminal_gets_a_live_bar():
    term = Terminal()
    kwargs = progress_kwargs(stream=term)
    assert "file" not in kwargs and "mininterval" not in kwargs
    log_kwargs = progress_kwargs(stream=io.StringIO())
    assert isinstance(log_kwargs["file"], LogLines) and log_kwargs["mininterval"] == 30.0
