"""A stand-in `mlu` device for tests: PyTorch's PrivateUse1 backend on host memory.

`load()` builds the C++ extension in csrc/ once (cached; rebuilt when the source or torch
changes), renames PrivateUse1 to 'mlu' and registers `torch.mlu`, as torch_mlu 2.x does when
imported. After that `torch.device('mlu')` is a real, separate torch device whose kernels are
the CPU's own, so a run on it must compute exactly what the same run computes on CPU.

It is test support, never a product feature: nothing under yolov5/ imports it, and it only
loads when a test asks or YOLOV5_STANDIN_MLU=1 is set (see README.md in this folder).
"""
from .loader import NAME, counters, is_loaded, load, reset_counters

__all__ = ["NAME", "counters", "is_loaded", "load", "reset_counters"]
