"""Augmentation on the training device (--augment-device device) against the CPU path.

For the same seeds both paths draw the same samples: labels must be identical (count, classes,
coordinates within 1e-3 px); pixels differ only by interpolation (mean absolute difference under
1 grey level; measured 0.36 with the default hyps, 0.48 with perspective, shear, mixup and flips);
and the device path gives the same bytes on the stand-in mlu device as on the CPU.
"""
import random
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml

from train_helpers import YOLO_DIR, train_args, train_in_process
from utils.data.augment_pack import AugmentBatch, collate_device
from utils.data.detection_dataset import LoadImagesAndLabels
from utils.data.device_augment import augment_batch
from utils.errors import UserError
from utils.data.loaders import create_dataloader

IMG = 128
HYP = yaml.safe_load((YOLO_DIR / "data" / "hyps" / "hyp.scratch.yaml").read_text())
HEAVY = dict(HYP, mixup=0.5, degrees=10.0, shear=5.0, perspective=0.0005, mosaic=0.8, flipud=0.5)


@pytest.fixture(scope="module")
def coco16(real_images_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("coco16") / "coco16"
    shutil.copytree(real_images_dir, root)
    return str(root / "images" / "train2017")


def _datasets(path, hyp):
    return (LoadImagesAndLabels(path, IMG, 8, augment=True, hyp=hyp),
            LoadImagesAndLabels(path, IMG, 8, augment=True, hyp=hyp, augment_device=True))


def _draw(ds, seed, n):
    random.seed(seed)
    np.random.seed(seed)
    return [ds[i % ds.n] for i in range(n)]


@pytest.mark.parametrize("hyp", [HYP, HEAVY], ids=["default", "heavy"])
def test_labels_equal_the_cpu_path_and_pixels_are_close(coco16, hyp):
    cpu, dev = _datasets(coco16, hyp)
    compared = boxes = 0
    for seed in (0, 1, 2):
        a, b = _draw(cpu, seed, 48), _draw(dev, seed, 48)
        for (_, la, pa, sa), (_, lb, pb, sb) in zip(a, b):
            assert pa == pb and sa == sb and la.shape == lb.shape
            assert torch.equal(la[:, :2], lb[:, :2])  # image index and class
            assert (la[:, 2:] - lb[:, 2:]).abs().max().item() * IMG <= 1e-3 if len(la) else True
            compared, boxes = compared + 1, boxes + len(la)
        if seed == 0:  # pixels of the first 16 samples
            batch, targets, _, _ = collate_device(b[:16])
            images = augment_batch(batch, "cpu")
            expected = torch.stack([x[0] for x in a[:16]])
            assert images.dtype == torch.uint8 and images.shape == expected.shape == (16, 3, IMG, IMG)
            mad = (images.float() - expected.float()).abs().mean().item()
            assert mad < 1.0, mad
            assert torch.equal(targets[:, 0], torch.cat([torch.full((len(x[1]),), float(i)) for i, x in
                                                         enumerate(b[:16])]))
    assert compared == 144 and boxes > 300  # the samples carried real boxes


def test_device_path_is_bit_identical_on_mlu(coco16, standin_mlu):
    _, dev = _datasets(coco16, HEAVY)
    batch = collate_device(_draw(dev, 3, 8))[0]
    assert batch.mix.max() >= 0 and batch.hsv.all() and batch.flip.any()  # every stage is exercised
    on_cpu = augment_batch(batch, "cpu")
    on_mlu = augment_batch(batch, "mlu")
    assert on_mlu.device.type == "mlu"
    assert torch.equal(on_mlu.cpu(), on_cpu)


def test_loader_workers_hand_over_crops_and_the_same_targets(coco16):
    kw = dict(hyp=HYP, augment=True, workers=1, shuffle=True, seed=5)
    cpu_loader, _ = create_dataloader(coco16, IMG, 8, 32, **kw)
    dev_loader, _ = create_dataloader(coco16, IMG, 8, 32, augment_device=True, **kw)
    (imgs, t_cpu, p_cpu, _), (batch, t_dev, p_dev, _) = next(iter(cpu_loader)), next(iter(dev_loader))
    assert isinstance(batch, AugmentBatch) and p_cpu == p_dev
    assert torch.equal(t_cpu[:, :2], t_dev[:, :2]) and (t_cpu - t_dev).abs().max().item() * IMG <= 1e-3
    # the source pixels are the visible crops only: less than four full images per sample
    assert batch.pixels.shape[0] < 8 * 4 * IMG * IMG
    assert (augment_batch(batch, "cpu").float() - imgs.float()).abs().mean().item() < 1.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(rect=True), "does not support --rect"),
    (dict(hyp=dict(HYP, copy_paste=0.5)), "copy_paste"),
    (dict(quad=True), "does not support --quad"),
    (dict(augment=False), "only applies to augmented"),
])
def test_unsupported_settings_are_user_errors(coco16, kwargs, match):
    kw = dict(hyp=HYP, augment=True, workers=0, augment_device=True)
    with pytest.raises(UserError, match=match):
        create_dataloader(coco16, IMG, 8, 32, **{**kw, **kwargs})


def test_training_with_device_augmentation(tmp_path, real_images_dir):
    from train_helpers import make_data_yaml
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    results = train_in_process(train_args(data, tmp_path, "dev", 64, 4, 1, "--augment-device", "device",
                                          "--noval", "--seed", "1"))
    assert len(results) == 7 and all(np.isfinite(results))
    opt = yaml.safe_load((tmp_path / "dev" / "opt.yaml").read_text())
    assert opt["augment_device"] == "device"
    with pytest.raises(SystemExit) as e:
        train_in_process(train_args(data, tmp_path, "bad", 64, 4, 1, "--augment-device", "gpu"))
    assert e.value.code == 2


DDP_RECORDER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {yolo_dir!r})
    import torch
    import train
    from utils.training.callbacks import Callbacks
    from utils.device.parallel import de_parallel

    rank, seen = int(os.environ["RANK"]), {{"batches": []}}
    callbacks = Callbacks()

    def batch_end(ni, model, imgs, targets, paths, plots, sync_bn):
        seen["model"] = model
        seen["batches"].append((ni, list(paths), targets.detach().cpu().clone(), imgs.detach().cpu().clone()))

    def train_end(*args):
        params = [p.detach().cpu().clone() for p in de_parallel(seen["model"]).parameters()]
        torch.save({{"batches": seen["batches"], "params": params}}, os.path.join({out_dir!r}, f"rank{{rank}}.pt"))

    callbacks.register_action("on_train_batch_end", "record", batch_end)
    callbacks.register_action("on_train_end", "record", train_end)
    train.main(sys.argv[1:], callbacks=callbacks)
""")


def test_two_rank_ddp_training_with_device_augmentation(tmp_path, real_images_dir):
    """torchrun, 2 CPU ranks (gloo), --augment-device device, 2 epochs: both ranks end with the same
    weights, results.csv holds both epochs with finite losses, and every batch of every rank has the
    boxes, classes and (within interpolation) pixels the CPU path draws for the same seed, epoch and rank."""
    from train_helpers import cli_env, make_data_yaml
    from utils.training.results_log import read_results
    from utils.training.seeds import epoch_seed
    seed, nb = 3, 2  # 8 images, 4 per rank, batches of 2 per rank
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    script = tmp_path / "ddp_record.py"
    script.write_text(DDP_RECORDER.format(yolo_dir=str(YOLO_DIR), out_dir=str(tmp_path)))
    args = train_args(data, tmp_path / "runs", "dev", 64, 4, 2, "--augment-device", "device", "--noval",
                      "--noautoanchor", "--seed", seed)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), *args], cwd=YOLO_DIR, env=cli_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["params"], ranks[1]["params"]))
    _, rows = read_results(tmp_path / "runs" / "dev" / "results.csv")
    assert list(rows[:, 0]) == [0, 1] and np.isfinite(rows[:, 1:4]).all() and (rows[:, 1:4] > 0).all()

    hyp = yaml.safe_load((tmp_path / "runs" / "dev" / "hyp.yaml").read_text())
    cpu = LoadImagesAndLabels(str(tmp_path / "data.txt"), 64, 2, augment=True, hyp=hyp, stride=32, nc=80)
    index = {p: i for i, p in enumerate(cpu.img_files)}
    boxes = 0
    for rank, got in enumerate(ranks):
        assert [b[0] for b in got["batches"]] == [0, 1, 2, 3]
        assert not {p for b in got["batches"][:nb] for p in b[1]} & {p for b in ranks[1 - rank]["batches"][:nb]
                                                                       for p in b[1]}  # halves of the data
        for epoch in (0, 1):  # the trainer seeds every epoch from (seed, epoch, rank); workers 0: in order
            s = epoch_seed(seed, epoch, rank)
            random.seed(s)
            np.random.seed(s % 2 ** 32)
            torch.manual_seed(s)
            for _, paths, targets, imgs in got["batches"][epoch * nb:(epoch + 1) * nb]:
                want_imgs, want, _, _ = LoadImagesAndLabels.collate_fn([cpu[index[p]] for p in paths])
                assert targets.shape == want.shape and torch.equal(targets[:, :2], want[:, :2])
                assert (targets[:, 2:] - want[:, 2:]).abs().max().item() * 64 <= 1e-3
                assert (imgs * 255 - want_imgs.float()).abs().mean().item() < 1.0
                boxes += len(targets)
    assert boxes > 40  # the batches carried real boxes
