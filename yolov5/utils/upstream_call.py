"""Keep v6.0's positional call order for functions whose options are keyword-only here.

Upstream YOLOv5 functions such as `create_dataloader` and `val.run` take a dozen or more
parameters in a fixed order, and scripts written for v6.0 pass many of them by position. Our
functions make everything after the first few parameters keyword-only (a long positional list is
easy to get wrong); this decorator lets old positional calls through by naming each position with
v6.0's parameter order.
"""
from __future__ import annotations

import functools
import inspect


def upstream_positions(*names: str):
    """Decorator: positional arguments of a call are bound, in order, to `names`.

    The wrapped function must accept every one of `names` by keyword. A call that gives a name both
    by position and by keyword, or more positions than `names`, raises TypeError as Python would.
    """
    def decorate(func):
        signature = inspect.signature(func)
        missing = [n for n in names if n not in signature.parameters]
        if missing:
            raise TypeError(f"{func.__qualname__} has no parameter(s) {missing} to bind positions to")

        @functools.wraps(func)
        def call(*args, **kwargs):
            if len(args) > len(names):
                raise TypeError(f"{func.__name__}() takes at most {len(names)} positional arguments "
                                f"({len(args)} given)")
            for name, value in zip(names, args):
                if name in kwargs:
                    raise TypeError(f"{func.__name__}() got multiple values for argument {name!r}")
                kwargs[name] = value
            return func(**kwargs)

        # help() and IDEs show the v6.0 order: the named positions first, then the rest keyword-only.
        params = [signature.parameters[n].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
        params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in signature.parameters.items()
                   if n not in names]
        call.__signature__ = signature.replace(parameters=_valid_order(params))
        return call
    return decorate


def _valid_order(params):
    """A parameter without a default may not follow one with a default among positionals."""
    seen_default = False
    ordered = []
    for p in params:
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            if p.default is inspect.Parameter.empty and seen_default:
                p = p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            seen_default = seen_default or p.default is not inspect.Parameter.empty
        ordered.append(p)
    return sorted(ordered, key=lambda p: p.kind)


def forward_other_names(module_name: str, real_module):
    """A module `__getattr__` for an upstream import path that re-exports `real_module`: names not
    listed in the re-export (helpers, constants) are still found, as they were in v6.0's module."""
    def __getattr__(name):
        try:
            return getattr(real_module, name)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
    return __getattr__
