"""utils/evaluation/dist_val.py: validation split over 2 ranks (gloo) gives exactly the metrics of one process.

The detector is a lookup from each letterboxed image to its ground truth, disturbed (moved,
rescaled, random confidences, some wrong classes, some dropped), so the metrics are far from both 0
and 1 and depend on the order in which tied and near-tied detections are ranked.
"""
import hashlib
import json
import logging
import subprocess
import sys
import textwrap

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
    from utils.data.loaders import create_dataloader
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
    from utils.evaluation.validator import run
    loader = _loader(images_dir)
    data = {"nc": NC, "names": yaml.safe_load((YOLO_DIR / "data" / "coco128.yaml").read_text())["names"]}
    return run(data, model=LookupDetector(loader), dataloader=dataloader or loader, device="cpu", plots=False)


def _rank(rank, world, init, images_dir, out):
    from utils.evaluation.dist_val import shard_loader
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
    from utils.evaluation.dist_val import ShardedBatchSampler
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


VAL_WRAPPER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {yolo_dir!r})
    import val

    results, maps, _ = val.main(sys.argv[1:])
    with open(os.path.join({out_dir!r}, "rank" + os.environ.get("RANK", "-1") + ".json"), "w") as f:
        json.dump({{"results": list(results), "maps": maps.tolist()}}, f)
""")


def test_val_py_under_torchrun_equals_one_process(tmp_path, real_images_dir, upstream_checkpoint):
    """`torchrun --nproc_per_node 2 val.py` on real weights: both ranks return exactly the P, R, mAP@.5,
    mAP@.5:.95 and per-class mAP of a single-process val.py, and rank 0 alone prints and writes.

    Upstream's seeded random yolov5n at 64 px scores low but above zero, with hundreds of ranked
    detections per image, so a rank that scored only its own shard gets different numbers."""
    import val
    from train_helpers import COCO_NAMES, OneThread, cli_env
    data = tmp_path / "coco16.yaml"
    data.write_text(yaml.safe_dump({"path": str(real_images_dir), "train": "images/train2017",
                                    "val": "images/train2017", "nc": NC, "names": COCO_NAMES}))
    # batch 3: 6 rectangular batches of 16 images, the last one short; 3 per rank
    args = ["--weights", str(upstream_checkpoint), "--data", str(data), "--img", "64", "--batch-size", "3",
            "--device", "cpu", "--workers", "0", "--project", str(tmp_path), "--verbose"]
    logger = logging.getLogger("yolov5")
    before = (list(logger.handlers), logger.propagate, logger.level)
    try:
        with OneThread():
            single, single_maps, _ = val.main(args + ["--name", "single"])
    finally:
        logger.handlers[:], logger.propagate, logger.level = before
    assert 0 < single[0] < 0.1 and 0 < single[1] < 0.1 and 0 < single[3] < single[2] < 0.1

    script = tmp_path / "val_ranks.py"
    script.write_text(VAL_WRAPPER.format(yolo_dir=str(YOLO_DIR), out_dir=str(tmp_path)))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), *args, "--name", "ddp"], cwd=YOLO_DIR, env=cli_env(), capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["results"][:4] == list(single[:4]) and got["maps"] == single_maps.tolist()
    rows = [line.split() for line in run.stdout.splitlines() if line.strip().startswith("all ")]
    assert len(rows) == 1 and rows[0][1:3] == ["16", "95"]  # rank 0 alone prints, for every image and label
    assert run.stdout.count("val: data=") == 1 and run.stdout.count("Results saved to") == 1  # rank 0's log only
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["ddp", "single"]
