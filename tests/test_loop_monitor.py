"""utils/training/loop_monitor.py: running losses and the non-finite flag kept on the device and read back only
at refresh points; under DDP the refresh agrees on losses (rank mean), flags and the next refresh."""
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.training import loop_monitor
from utils.device.devices import select_device
from utils.training.loop_monitor import LoopMonitor
from utils.device.parallel import grad_sync


def _cpu():
    return select_device("cpu", log=False)


def _feed(monitor, losses, start=0):
    for i, items in enumerate(losses, start):
        items = torch.tensor(items)
        monitor.record(i, items.sum().reshape(1), items, [f"img{i}_{k}.jpg" for k in range(5)])


def test_refresh_gives_running_means_and_the_first_bad_batch(monkeypatch):
    monkeypatch.setattr(loop_monitor, "FIXED_INTERVAL", 4)
    monitor = LoopMonitor(_cpu())
    monitor.start_epoch()
    assert monitor.due(0, last=False)
    _feed(monitor, [[1.0, 2.0, 3.0]])
    seen = monitor.refresh(0)
    assert seen.mloss == [1.0, 2.0, 3.0] and not seen.diverged and not seen.stop and seen.bad is None
    assert [monitor.due(i, last=False) for i in (1, 2, 3, 4)] == [False, False, False, True]
    assert monitor.due(2, last=True)
    # iteration 2 diverges, 3 too: the report names the first one, its losses and images
    _feed(monitor, [[3.0, 4.0, 5.0], [math.nan, 0.0, 0.0], [math.inf, 1.0, 1.0], [1.0, 1.0, 1.0]], start=1)
    seen = monitor.refresh(4, stop=True)
    assert seen.diverged and seen.stop and seen.bad.iteration == 2
    assert math.isnan(seen.bad.loss) and math.isnan(seen.bad.items[0]) and seen.bad.items[1:] == [0.0, 0.0]
    assert seen.bad.paths == ["img2_0.jpg", "img2_1.jpg", "img2_2.jpg", "img2_3.jpg"]
    # a new epoch starts clean
    monitor.start_epoch()
    _feed(monitor, [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    seen = monitor.refresh(1)
    assert seen.mloss == [2.0, 2.0, 2.0] and not seen.diverged and seen.bad is None


def test_interval_follows_wall_time_within_bounds(monkeypatch):
    clock = iter([0.0, 0.0, 0.0, 0.1, 0.1, 100.0, 100.0])
    monkeypatch.setattr(loop_monitor.time, "perf_counter", lambda: next(clock))
    monitor = LoopMonitor(_cpu())
    monitor.start_epoch()  # clock 0
    _feed(monitor, [[1.0, 1.0, 1.0]])
    monitor.refresh(0)  # no measurement yet: next refresh one iteration later
    assert monitor.next_refresh == 1
    _feed(monitor, [[1.0, 1.0, 1.0]] * 20, start=1)
    monitor.refresh(20)  # 20 iterations in 0.1 s would give 200 a second: capped
    assert monitor.interval == loop_monitor.MAX_INTERVAL and monitor.next_refresh == 20 + loop_monitor.MAX_INTERVAL
    monitor.refresh(30)  # 10 iterations in 99.9 s: every iteration
    assert monitor.interval == 1


def _ranks(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    try:
        monitor = LoopMonitor(_cpu(), world_size=world)
        monitor.interval = 5 + rank  # only rank 0's proposal counts
        monitor.start_epoch()
        _feed(monitor, [[1.0 + rank, 2.0, 3.0 * rank]] if rank == 0 else [[2.0, 2.0, 3.0], [2.0, math.nan, 0.0]])
        seen = monitor.refresh(1, stop=rank == 0)
        # DDP: gradients stay local under grad_sync(model, False) and are averaged otherwise
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1, bias=False))
        x = torch.full((1, 2), float(rank + 1))
        with grad_sync(model, False):
            model(x).sum().backward()
        local = model.module.weight.grad.clone()
        model.zero_grad()
        with grad_sync(model, True):
            model(x).sum().backward()
        out.put((rank, seen.mloss, seen.diverged, seen.stop, seen.bad and seen.bad.iteration, monitor.interval,
                 local.tolist(), model.module.weight.grad.tolist()))
    finally:
        dist.destroy_process_group()


def test_two_ranks_agree_on_mean_loss_flags_and_interval(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ranks, args=(r, 2, f"file://{tmp_path / 'pg'}", out)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    (_, mloss0, div0, stop0, bad0, n0, local0, synced0), (_, mloss1, div1, stop1, bad1, n1, local1, synced1) = results
    # rank 0: one batch (1, 2, 0); rank 1: two batches, means (2, nan, 1.5): mean over ranks
    assert mloss0[0] == mloss1[0] == 1.5 and math.isnan(mloss0[1]) and mloss0[2] == mloss1[2] == 0.75
    assert div0 and div1 and stop0 and stop1  # rank 1's NaN and rank 0's stop reach both ranks
    assert bad0 is None and bad1 == 1  # only the rank that saw it can name the batch
    assert n0 == n1 == 5
    assert local0 == [[1.0, 1.0]] and local1 == [[2.0, 2.0]]  # no_sync: each rank its own gradient
    assert synced0 == synced1 == [[1.5, 1.5]]


@pytest.mark.parametrize("sync", [True, False])
def test_grad_sync_is_a_no_op_without_ddp(sync):
    model = torch.nn.Linear(2, 1)
    with grad_sync(model, sync):
        model(torch.ones(1, 2)).sum().backward()
    assert model.weight.grad.tolist() == [[1.0, 1.0]]
