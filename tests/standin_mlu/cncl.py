"""A stand-in 'cncl' distributed backend for the stand-in mlu device.

Our device layer initialises torch.distributed with backend 'cncl' on MLU (Cambricon's collective
library). This registers that name with torch.distributed for device 'mlu' and carries out each
collective with gloo on host copies of the mlu tensors, so DDP, SyncBatchNorm's process group and
our rank agreement take exactly the code path they take on an MLU cluster. The host copies show
up in the stand-in's copy counters (a real CNCL moves nothing through the host).
"""
import torch.distributed as dist
from torch._C._distributed_c10d import _create_work_from_future
from torch.futures import Future

NAME = "cncl"


def _done(result):
    fut = Future()
    fut.set_result(result)
    return _create_work_from_future(fut)


def _to_host(tensors):
    return [t.detach().cpu() if t.device.type != "cpu" else t for t in tensors]


def _back(devices, hosts):
    for d, h in zip(devices, hosts):
        if d.device.type != "cpu":
            d.copy_(h)


class StandinCncl(dist.ProcessGroup):
    """Process group whose collectives run through gloo on host copies."""

    def __init__(self, store, rank, size, timeout):
        super().__init__(rank, size)
        self._rank, self._size = rank, size
        self._gloo = dist.ProcessGroupGloo(dist.PrefixStore("standin_cncl", store), rank, size, timeout)

    def size(self):
        return self._size

    def rank(self):
        return self._rank

    def getBackendName(self):
        return NAME

    def __repr__(self):
        return f"StandinCncl(rank={self._rank}, size={self._size}, via gloo on host copies)"

    def allreduce(self, tensors, opts=None):
        hosts = _to_host(tensors)
        opts = opts if opts is not None else dist.AllreduceOptions()
        self._gloo.allreduce(hosts, opts).wait()
        _back(tensors, hosts)
        return _done(tensors)

    def allreduce_coalesced(self, tensors, opts=None):
        for t in tensors:
            one = dist.AllreduceOptions()
            if opts is not None:
                one.reduceOp = opts.reduceOp
            self.allreduce([t], one)
        return _done(tensors)

    def broadcast(self, tensors, opts=None):
        hosts = _to_host(tensors)
        self._gloo.broadcast(hosts, opts if opts is not None else dist.BroadcastOptions()).wait()
        _back(tensors, hosts)
        return _done(tensors)

    def allgather(self, output_lists, inputs, opts=None):
        host_out = [_to_host(outs) for outs in output_lists]
        self._gloo.allgather(host_out, _to_host(inputs), opts if opts is not None else dist.AllgatherOptions()).wait()
        for outs, hosts in zip(output_lists, host_out):
            _back(outs, hosts)
        return _done(output_lists)

    def _allgather_base(self, output, inp, opts=None):
        chunks = list(output.chunk(self._size))
        self.allgather([chunks], [inp], opts)
        return _done(output)

    def barrier(self, opts=None):
        self._gloo.barrier(opts if opts is not None else dist.BarrierOptions()).wait()
        return _done(None)


def _create(store, rank, size, timeout):
    return StandinCncl(store, rank, size, timeout)


def register():
    """Register 'cncl' with torch.distributed (once; a real CNCL backend must not be present)."""
    if NAME in dist.Backend.backend_list or not dist.is_available():
        return
    dist.Backend.register_backend(NAME, _create, devices=["mlu"])
