"""v6.0 positional call order onto keyword-only options (utils/upstream_call.py)."""
import inspect

import pytest

from utils.upstream_call import upstream_positions


@upstream_positions("path", "imgsz", "batch_size", "stride", "single_cls", "hyp")
def _loader(path, imgsz, *, batch_size=1, stride=32, single_cls=False, hyp=None, rect=False):
    return dict(path=path, imgsz=imgsz, batch_size=batch_size, stride=stride, single_cls=single_cls, hyp=hyp,
                rect=rect)


def test_positions_bind_in_upstream_order():
    got = _loader("a.txt", 320, 16, 64, True, {"lr0": 0.1}, rect=True)
    assert got == dict(path="a.txt", imgsz=320, batch_size=16, stride=64, single_cls=True, hyp={"lr0": 0.1},
                       rect=True)
    assert _loader(path="b", imgsz=1)["batch_size"] == 1


def test_bad_calls_raise_like_python():
    with pytest.raises(TypeError, match="at most 6 positional arguments \\(7 given\\)"):
        _loader("a", 1, 2, 3, False, None, True)
    with pytest.raises(TypeError, match="multiple values for argument 'imgsz'"):
        _loader("a", 1, imgsz=2)
    with pytest.raises(TypeError, match="no parameter"):
        upstream_positions("nope")(lambda *, x=1: x)


def test_help_shows_the_upstream_order():
    params = inspect.signature(_loader).parameters
    assert list(params)[:6] == ["path", "imgsz", "batch_size", "stride", "single_cls", "hyp"]
    assert params["rect"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["stride"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
