"""YOLOV5_STANDIN_MLU=1: use the test suite's stand-in 'mlu' device (host memory) as the MLU.

The stand-in lives with the tests (tests/standin_mlu/, a PrivateUse1 extension built on first
use); it lets anyone run the MLU code path of train.py, val.py, detect.py, export.py and the
benchmarks on a machine without a Cambricon card. Nothing of it is imported unless the variable
is exactly '1'. It is never reported as a Cambricon card: the banner and collect_env name it a
stand-in on host memory.
"""
import importlib.util
import os
import sys
from pathlib import Path

from utils.errors import UserError

ENV = "YOLOV5_STANDIN_MLU"
PACKAGE = Path(__file__).resolve().parents[3] / "tests" / "standin_mlu"


def standin_requested(environ=None) -> bool:
    return (os.environ if environ is None else environ).get(ENV, "") == "1"


def load_standin_if_requested():
    """torch.mlu of the stand-in when YOLOV5_STANDIN_MLU=1 (built/loaded on first call), else None."""
    if not standin_requested():
        return None
    module = sys.modules.get("standin_mlu")
    if module is None:
        init = PACKAGE / "__init__.py"
        if not init.is_file():
            raise UserError(f"{ENV}=1 but this checkout has no stand-in device ({init} is missing); "
                            f"unset {ENV} to use a real MLU or the CPU")
        spec = importlib.util.spec_from_file_location("standin_mlu", init,
                                                      submodule_search_locations=[str(PACKAGE)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["standin_mlu"] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop("standin_mlu", None)
            raise
    try:
        return module.load()
    except RuntimeError as e:
        raise UserError(f"{ENV}=1: the stand-in mlu device could not be loaded ({e}); unset {ENV}") from None


def is_standin(module) -> bool:
    """True for the stand-in's torch.mlu module."""
    return bool(getattr(module, "STANDIN", False))
