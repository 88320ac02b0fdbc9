"""utils/dist_val.py: validation split over 2 ranks (gloo) gives exactly the metrics of one process.

The detector is a lookup from each letterboxed image to its ground truth, disturbed (moved,
rescaled, random confidences, some wrong classes, some dropped), so the metrics are far from both 0
and 1 and depend on the order in which tied and near-tied detections are ranked.
"""
import hashlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import yaml

from train_helpers import YOLO_DIR

NC = 80
BATCH = 3  # 16 images: 6 batches, the last one short; 3 per rank


def _loader(images_dir):
    from utils.loaders import create_dataloader
    return create_dataloader(str(images_dir), 320, BATCH, 32, pad=0.5, rect=True, workers=0, nc=NC,
                             prefix="val: ")[0]


class LookupDetector(nn.Module):
    """Decoded predictions for each image, found by the bytes of the letterboxed image."""

    def __init__(self, loader):
        super().__init__()
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self.table = {}
        gen = torch.Generator().manual_seed(0)
        for im, targets, _, _ in loader:
            _, _, h, w = im.shape
            for i in range(im.shape[0]):
                t = targets[targets[:, 0] == i]
                n = len(t)
                rows = torch.zeros(n, 5 + NC)
                rows[:, :4] = t[:, 2:6] * torch.tensor((w, h, w, h))
                rows[:, :2] += (torch.rand(n, 2, generator=gen) - 0.5) * rows[:, 2:4] * 0.4
                rows[:, 2:4] *= 0.8 + 0.4 * torch.rand(n, 2, generator=gen)
                rows[:, 4] = torch.rand(n, generator=gen).mul(20).round().div(20).clamp(min=0.05)  # many ties
                rows[torch.arange(n), 5 + t[:, 1].long()] = 1.0
                wrong = torch.rand(n, generator=gen) < 0.15
                rows[wrong, 5:] = torch.roll(rows[wrong, 5:], 1, dims=1)
                self.table[self._key(im[i].float() / 255)] = rows[torch.rand(n, generator=gen) > 0.15]

    @staticmethod
    def _key(image):
        return hashlib.sha256((image.float() * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()

    def forward(self, im, augment=False):
        found = [self.table[self._key(x)] for x in im]
        out = torch.zeros(len(found), max([len(r) for r in found] + [1]), 5 + NC)
        for i, r in enumerate(found):
            out[i, :len(r)] = r
        return out, None


def _validate(images_dir, dataloader=None):
    from utils.validator import run
    loader = _loader(images_dir)
    data = {"nc": NC, "names": yaml.safe_load((YOLO_DIR / "data" / "coco128.yaml").read_text())["names"]}
    return run(data, model=LookupDetector(loader), dataloader=dataloader or loader, device="cpu", plots=False)


def _rank(rank, world, init, images_dir, out):
    from utils.dist_val import shard_loader
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        shard = shard_loader(_loader(images_dir), rank, world)
        results, maps, _ = _validate(images_dir, shard)
        out.put((rank, shard.shard.batches, results, maps.tolist()))
    finally:
        dist.destroy_process_group()


def test_two_ranks_validate_exactly_as_one(tmp_path, real_images_dir):
    images = real_images_dir / "images" / "train2017"
    single, single_maps, _ = _validate(images)
    assert 0.2 < single[0] < 1 and 0.2 < single[1] < 0.95 and 0.1 < single[3] < single[2] < 0.95
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, 2, f"file://{tmp_path / 'pg'}", images, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = sorted(out.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert [g[1] for g in got] == [[0, 2, 4], [1, 3, 5]]
    for _, _, results, maps in got:  # identical P, R, mAP@.5, mAP@.5:.95 and per-class mAP on both ranks
        assert tuple(results[:4]) == tuple(single[:4]) and maps == single_maps.tolist()


def test_sharded_batches_cover_the_set_once():
    from utils.dist_val import ShardedBatchSampler
    shards = [list(ShardedBatchSampler(16, 3, r, 3)) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    assert sorted(i for s in shards for b in s for i in b) == list(range(16))
    assert shards[2][-1] == [15]  # batch 5, the short one


def test_val_save_json_under_torchrun_is_refused(monkeypatch, capsys):
    import val
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit) as failed:
        val.main(["--weights", "x.pt", "--device", "cpu", "--save-json"])
    assert failed.value.code == 2 and "--save-json is not supported under torchrun" in capsys.readouterr().err
