"""Validation end to end: utils/validator.run and the val.py command line, on real coco128 images.

The core check replays each batch's ground truth as the model's decoded output through the real
loop (rect loader, letterbox, NMS, scale_coords, matching, ap_per_class, COCO json): that must
reach the metric's ceiling, 0.995 for v6.0's AP rule and 1.0 for pycocotools.
"""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

REPO = Path(__file__).resolve().parents[1]
YOLO = REPO / "yolov5"
NC = 80


def _names():
    return yaml.safe_load((YOLO / "data" / "coco128.yaml").read_text())["names"]


def _write_yaml(path, real_images_dir, val, **extra):
    d = {"path": str(real_images_dir), "train": "images/train2017", "val": val, "nc": NC, "names": _names(), **extra}
    path.write_text(yaml.safe_dump(d))
    return path


def _gt_rows(real_images_dir, stem):
    """(N, 5) class, x, y, w, h (normalised) from the label file of one image."""
    text = (real_images_dir / "labels" / "train2017" / f"{stem}.txt").read_text()
    return np.array([line.split() for line in text.splitlines() if line.strip()], dtype=np.float64).reshape(-1, 5)


def _assert_same_rows(got, want, atol):
    """Same multiset of (class, x, y, w, h) rows up to atol, in any order (one-to-one pairing)."""
    from scipy.optimize import linear_sum_assignment
    assert got.shape == want.shape
    cost = np.abs(got[:, None, 1:] - want[None, :, 1:]).max(2) + 1e3 * (got[:, None, 0] != want[None, :, 0])
    rows, cols = linear_sum_assignment(cost)
    assert cost[rows, cols].max() <= atol, (got, want)


@pytest.fixture(scope="module")
def work(tmp_path_factory, real_images_dir):
    """Data yamls (all 16 in-repository images; a 4-image subset) and a default-initialised yolov5n checkpoint."""
    from models.yolo import Model
    from utils.io.checkpoint import build_checkpoint, save_checkpoint
    d = tmp_path_factory.mktemp("val")
    images = sorted((real_images_dir / "images" / "train2017").glob("*.jpg"))
    (d / "subset.txt").write_text("".join(f"{p}\n" for p in images[:4]))
    torch.manual_seed(0)
    model = Model(str(YOLO / "models" / "yolov5n.yaml"), nc=NC)
    model.names = _names()
    ckpt = save_checkpoint(build_checkpoint(model), d / "yolov5n_init.pt")
    return {"dir": d, "full": _write_yaml(d / "full.yaml", real_images_dir, "images/train2017"),
            "subset": _write_yaml(d / "subset.yaml", real_images_dir, str(d / "subset.txt")),
            "subset_images": images[:4], "init_ckpt": ckpt}


class ReplayModel(nn.Module):
    """Stand-in detector: for the k-th batch it returns the k-th recorded target set as decoded
    predictions (centre xywh in letterboxed input pixels, objectness 1, one-hot class), optionally
    disturbed by `edit(rows, generator)`."""

    def __init__(self, batches, names, edit=None, empty=False):
        super().__init__()
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self.names = names
        self.batches, self.edit, self.empty, self.k = batches, edit, empty, 0
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, im, augment=False):
        shape, targets = self.batches[self.k]
        self.k += 1
        assert tuple(im.shape) == shape, "the validator must see the loader's batches in order"
        nb, _, h, w = im.shape
        per_image = []
        for i in range(nb):
            t = targets[targets[:, 0] == i]
            rows = torch.zeros(len(t), 5 + NC)
            rows[:, :4] = t[:, 2:6] * torch.tensor((w, h, w, h))  # exactly what the validator computes
            rows[:, 4] = 0.0 if self.empty else 1.0
            rows[torch.arange(len(t)), 5 + t[:, 1].long()] = 1.0
            per_image.append(self.edit(rows, self.gen) if self.edit else rows)
        out = torch.zeros(nb, max([len(r) for r in per_image] + [1]), 5 + NC)
        for i, r in enumerate(per_image):
            out[i, :len(r)] = r
        return out, None


@pytest.fixture(scope="module")
def loader320(real_images_dir):
    """The standalone validator's loader (rect, pad 0.5) over the 16 images at 320 in batches of 4, with its
    batches recorded."""
    from utils.data.loaders import create_dataloader
    loader, _ = create_dataloader(str(real_images_dir / "images" / "train2017"), 320, 4, 32, pad=0.5, rect=True,
                                  workers=0, nc=NC, prefix="val: ")
    batches = [(tuple(im.shape), t.clone()) for im, t, _, _ in loader]
    return loader, batches


@pytest.fixture(scope="module")
def loader640(real_images_dir, tmp_path_factory):
    """At 640 over the 11 images whose long side is 640: they are not resized, so boxes map
    back to original pixels exactly. (The other 5 are upscaled to whole pixels; v6.0's scale_coords
    undoes that with the height's ratio on both axes, so their boxes can be up to a pixel off: no
    matter to our metric, which maps labels the same way, but visible to pycocotools at IoU 0.95.)"""
    from PIL import Image
    from utils.data.loaders import create_dataloader
    images = [p for p in sorted((real_images_dir / "images" / "train2017").glob("*.jpg")) if max(Image.open(p).size) == 640]
    assert len(images) == 11
    listing = tmp_path_factory.mktemp("val640") / "long640.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    loader, _ = create_dataloader(str(listing), 640, 32, 32, pad=0.5, rect=True, workers=0, nc=NC, prefix="val: ")
    return loader, [(tuple(im.shape), t.clone()) for im, t, _, _ in loader]


def _validate_replay(work, loader, tmp_path, edit=None, empty=False, **kw):
    from utils.evaluation.validator import run
    loader, batches = loader
    model = ReplayModel(batches, _names(), edit=edit, empty=empty)
    data = yaml.safe_load(work["full"].read_text())
    out = run(data, model=model, dataloader=loader, device="cpu", save_dir=tmp_path, **kw)
    assert model.k == len(batches)
    return out


def test_ground_truth_replay_reaches_the_v60_metric_ceiling(work, loader320, tmp_path, real_images_dir):
    """P = R = 1, mAP50 = mAP50-95 = 0.995 (the 101-point trapezoid with the (1, 0) sentinel tops out
    at 0.995, see tests/test_metrics.py). NMS IoU 0.95: some same-class boxes in coco128 overlap at
    IoU up to 0.87 (0.35 among these 16), and v6.0's 0.6 would merge those (checked below at 0.3)."""
    (s, maps, t) = _validate_replay(work, loader320, tmp_path, iou_thres=0.95, save_txt=True, save_conf=True,
                                    plots=True)
    mp, mr, map50, map_, *losses = s
    assert (mp, mr) == (pytest.approx(1.0, abs=1e-9), pytest.approx(1.0, abs=1e-9))
    assert map50 == pytest.approx(0.995, abs=1e-9) and map_ == pytest.approx(0.995, abs=1e-9)
    assert losses == [0.0, 0.0, 0.0] and len(t) == 3
    labelled = {s: _gt_rows(real_images_dir, s) for s in (p.stem for p in (real_images_dir / "images/train2017").glob("*"))}
    labelled = {k: v for k, v in labelled.items() if len(v)}
    classes = np.unique(np.concatenate([v[:, 0] for v in labelled.values()])).astype(int)
    assert len(classes) == 28 and np.allclose(maps[classes], 0.995) and np.allclose(np.delete(maps, classes), 0.995)

    # --save-txt --save-conf: one file per image with detections, rows = the label rows, conf 1. Up to
    # ~1/320 off: scale_coords undoes the letterbox with the height's resize ratio on both axes (v6.0),
    # while the loader resized each axis to a whole number of pixels.
    files = sorted((tmp_path / "labels").glob("*.txt"))
    assert {f.stem for f in files} == set(labelled)
    for f in files:
        got = np.loadtxt(f, ndmin=2)
        assert got.shape == (len(labelled[f.stem]), 6) and np.all(got[:, 5] == 1)
        _assert_same_rows(got[:, :5], labelled[f.stem], atol=4e-3)

    for name in ("confusion_matrix.png", "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png",
                 "val_batch0_labels.jpg", "val_batch0_pred.jpg", "val_batch2_pred.jpg"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert not (tmp_path / "val_batch3_labels.jpg").exists()


def test_nms_below_the_labels_overlap_merges_ground_truth(work, loader320, tmp_path):
    """Two same-class labels of 000000000009.jpg overlap at IoU 0.35: NMS at 0.3 keeps one of them."""
    (mp, mr, map50, map_, *_), _, _ = _validate_replay(work, loader320, tmp_path, iou_thres=0.3, plots=False)
    assert mp == pytest.approx(1.0) and 0.95 < mr < 1.0 and map50 < 0.995


def test_ground_truth_replay_scores_one_in_pycocotools(work, loader640, tmp_path, real_images_dir):
    """--save-json with an explicit annotation file: class names map to COCO's category ids, numeric
    file stems are the image ids, only the split's images are scored (the file covers all 16), and
    pycocotools' AP (which replaces ours in the result) is 1.0."""
    anno = real_images_dir / "annotations" / "instances_train2017.json"
    (mp, mr, map50, map_, *_), _, _ = _validate_replay(work, loader640, tmp_path, iou_thres=0.95, save_json=True,
                                                       plots=False, anno_json=anno)
    assert (map50, map_) == (pytest.approx(1.0, abs=1e-12), pytest.approx(1.0, abs=1e-12))
    records = json.loads((tmp_path / "_predictions.json").read_text())
    n_labels = sum(len(t) for _, t in loader640[1])
    assert len(records) == n_labels and {r["category_id"] for r in records} <= set(range(1, 91))
    assert {r["category_id"] for r in records if r["image_id"] == 9} == {51, 55, 56}  # bowl, orange, broccoli


def test_save_json_with_missing_annotation_file_is_a_user_error(work, loader640, tmp_path):
    from utils.errors import UserError
    with pytest.raises(UserError, match="annotation file .*nope.json not found"):
        _validate_replay(work, loader640, tmp_path, save_json=True, anno_json=tmp_path / "nope.json")


def _disturb(rows, gen):
    """Shift, rescore, drop and mislabel ground-truth rows (deterministic)."""
    n = len(rows)
    if not n:
        return rows
    rows = rows.clone()
    rows[:, :2] += (torch.rand(n, 2, generator=gen) - 0.5) * rows[:, 2:4] * 0.4
    rows[:, 2:4] *= 0.8 + 0.4 * torch.rand(n, 2, generator=gen)
    rows[:, 4] = 0.05 + 0.95 * torch.rand(n, generator=gen)
    wrong = torch.rand(n, generator=gen) < 0.1
    rows[wrong, 5:] = torch.roll(rows[wrong, 5:], 1, dims=1)
    return rows[torch.rand(n, generator=gen) > 0.15]


def test_save_json_reports_exactly_pycocotools_ap(work, loader640, tmp_path, real_images_dir):
    """Imperfect detections: the validator's reported mAP equals COCOeval run by hand on its json."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    anno = real_images_dir / "annotations" / "instances_train2017.json"
    data = yaml.safe_load(work["full"].read_text())
    data["anno_json"] = "annotations/instances_train2017.json"  # data-yaml route, relative to `path`
    from utils.evaluation.validator import run
    loader, batches = loader640
    (mp, mr, map50, map_, *_), _, _ = run(data, model=ReplayModel(batches, _names(), edit=_disturb),
                                          dataloader=loader, device="cpu", save_dir=tmp_path, save_json=True,
                                          plots=False)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(anno))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "_predictions.json")), "bbox")
        ev.params.imgIds = sorted(int(Path(f).stem) for f in loader.dataset.img_files)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.2 < ev.stats[0] < 0.9
    assert (map_, map50) == (float(ev.stats[0]), float(ev.stats[1]))


def test_save_hybrid_writes_labels_as_detections(work, loader320, tmp_path, real_images_dir):
    """A model that detects nothing: with --save-hybrid the labels join NMS as conf-1 detections, so the
    txt files hold exactly the labels and the metrics are perfect; without it, nothing is found."""
    s, _, _ = _validate_replay(work, loader320, tmp_path / "plain", empty=True, plots=False)
    assert s[:4] == (0.0, 0.0, 0.0, 0.0)
    s, _, _ = _validate_replay(work, loader320, tmp_path, empty=True, iou_thres=0.95, save_txt=True,
                               save_hybrid=True, plots=False)
    assert s[0] == pytest.approx(1.0) and s[1] == pytest.approx(1.0) and s[2] == pytest.approx(0.995)
    files = sorted((tmp_path / "labels").glob("*.txt"))
    assert len(files) == 15  # one image has no labels
    for f in files[::5]:
        got, want = np.loadtxt(f, ndmin=2), _gt_rows(real_images_dir, f.stem)
        assert got.shape == want.shape
        _assert_same_rows(got, want, atol=4e-3)


def test_trainer_path_returns_val_losses_and_writes_nothing(work, tmp_path):
    """run(model=, dataloader=, compute_loss=, device=Device) as the trainer calls it: the val losses are
    the mean over batches of ComputeLoss on the eval-mode raw outputs; plots=False writes no file."""
    from models.yolo import Model
    from utils.device.devices import select_device
    from utils.data.loaders import create_dataloader
    from utils.training.loss import ComputeLoss, scale_loss_gains
    from utils.evaluation.validator import run
    torch.manual_seed(1)
    model = Model(str(YOLO / "models" / "yolov5n.yaml"), nc=NC)
    hyp = yaml.safe_load((YOLO / "data" / "hyps" / "hyp.scratch.yaml").read_text())
    model.hyp = scale_loss_gains(hyp, 3, NC, 160)
    compute_loss = ComputeLoss(model)
    loader, _ = create_dataloader(str(work["dir"] / "subset.txt"), 160, 2, 32, pad=0.5, rect=True, workers=0, nc=NC)
    data = yaml.safe_load(work["subset"].read_text())
    (mp, mr, map50, map_, *losses), maps, times = run(
        data, batch_size=2, imgsz=160, model=model, dataloader=loader, compute_loss=compute_loss,
        device=select_device("cpu", log=False), save_dir=tmp_path, plots=False)
    assert all(isinstance(x, float) for x in losses) and len(losses) == 3
    model.eval()
    want = torch.zeros(3)
    with torch.no_grad():
        for im, targets, _, _ in loader:
            want += compute_loss(model(im.float() / 255)[1], targets)[1]
    np.testing.assert_allclose(losses, (want / len(loader)).tolist(), rtol=1e-5)
    assert min(losses) > 0 and len(maps) == NC
    assert list(tmp_path.iterdir()) == []


def _val_cli(*args, cwd=YOLO):
    return subprocess.run([sys.executable, "val.py", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli_real_checkpoint(work, upstream_checkpoint, tmp_path, real_images_dir):
    """Upstream's v6.0 checkpoint (seeded random weights: many candidates, so 4 images only), through
    val.py with option prefixes (--iou, --conf, --img); then run() directly with the same settings."""
    ckpt = upstream_checkpoint
    r = _val_cli("--weights", ckpt, "--data", work["subset"], "--img", 320, "--batch", 16, "--device", "cpu",
                 "--iou", 0.65, "--conf", 0.01, "--project", tmp_path, "--name", "cli")
    assert r.returncode == 0, r.stderr[-2000:]
    header = "               Class     Images     Labels          P          R     mAP@.5 mAP@.5:.95"
    assert (r.stderr + r.stdout).count(header) == 1 and "\r" not in r.stderr  # output to a pipe: log lines
    assert r.stdout.startswith(f"val: data={work['subset']}, weights=['{ckpt}'], batch_size=16, imgsz=320, ")
    assert "\nFusing layers... \nModel Summary: 213 layers" in r.stdout  # the "yolov5" logger is shown
    assert "Speed: " in r.stdout and "ms NMS per image at shape (16, 3, 320, 320)" in r.stdout
    n_labels = sum(len(_gt_rows(real_images_dir, p.stem)) for p in work["subset_images"])
    row = next(line for line in r.stdout.splitlines() if line.strip().startswith("all ")).split()
    assert row[1:3] == ["4", str(n_labels)]

    from utils.evaluation.validator import run
    results, maps, times = run(str(work["subset"]), weights=str(ckpt), batch_size=16, imgsz=320, conf_thres=0.01,
                               iou_thres=0.65, device="cpu", project=tmp_path, name="direct", plots=False)
    assert len(results) == 7 and all(isinstance(x, float) for x in results)
    assert results[4:] == (0.0, 0.0, 0.0)
    assert isinstance(maps, np.ndarray) and maps.shape == (NC,)
    assert len(times) == 3 and all(isinstance(x, float) and x > 0 for x in times)
    assert [float(x) for x in row[3:7]] == [float("%.3g" % v) for v in results[:4]]  # same numbers as the CLI


@pytest.mark.parametrize("case", ["missing", "corrupt", "empty_split"])
def test_cli_bad_input_exits_2_with_one_line(case, work, tmp_path):
    weights, data = work["init_ckpt"], work["subset"]
    if case == "missing":
        weights = tmp_path / "nope.pt"
        expect = "file not found"
    elif case == "corrupt":
        blob = Path(work["init_ckpt"]).read_bytes()
        weights = tmp_path / "truncated.pt"
        weights.write_bytes(blob[: len(blob) // 2])
        expect = "truncated, corrupt"
    else:
        (tmp_path / "empty").mkdir()
        data = tmp_path / "empty.yaml"
        data.write_text(yaml.safe_dump({"path": str(tmp_path), "val": "empty", "nc": 80, "names": _names()}))
        expect = "no images found"
    r = _val_cli("--weights", weights, "--data", data, "--img", 64, "--device", "cpu", "--project", tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and expect in errors[0] and "Traceback" not in r.stderr


def test_cli_imgsz_not_multiple_of_32_is_rounded_up(work, tmp_path):
    r = _val_cli("--weights", work["init_ckpt"], "--data", work["subset"], "--img", 300, "--batch", 16,
                 "--device", "cpu", "--project", tmp_path, "--half")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "WARNING: --img-size 300 must be multiple of max stride 32, updating to 320" in r.stdout
    assert "at shape (16, 3, 320, 320)" in r.stdout
    assert "--half is ignored on CPU" in r.stdout


def test_option_prefixes_and_value_checks():
    import val
    from utils.errors import UserError
    opt = val.parse_opt(["--iou", "0.65", "--conf", "0.01", "--img", "320", "--batch", "8", "--weights", "a.pt",
                         "b.pt", "--save-hy"])
    assert (opt.iou_thres, opt.conf_thres, opt.imgsz, opt.batch_size) == (0.65, 0.01, 320, 8)
    assert opt.weights == ["a.pt", "b.pt"] and opt.save_hybrid and opt.save_txt and not opt.half
    assert val.parse_opt(["--data", "x/coco.yaml"]).save_json  # forced for COCO, as upstream
    for bad in (["--conf", "1.5"], ["--iou", "-0.1"], ["--task", "tune"], ["--batch", "0"]):
        with pytest.raises(UserError):
            val.parse_opt(bad)


def test_task_speed_and_study(work, tmp_path, monkeypatch):
    import val
    calls = []
    real_run = val.run

    def spy(*a, **k):
        calls.append(k)
        return real_run(*a, **k)

    monkeypatch.setattr(val, "run", spy)
    common = ["--weights", str(work["init_ckpt"]), "--data", str(work["subset"]), "--device", "cpu",
              "--project", str(tmp_path), "--batch", "4"]
    out = val.main(common + ["--task", "speed", "--img", "64"])
    assert len(out) == 1 and len(out[0][0]) == 7
    assert (calls[0]["conf_thres"], calls[0]["iou_thres"], calls[0]["plots"], calls[0]["save_json"]) == \
           (0.25, 0.45, False, False)

    assert val.STUDY_SIZES == tuple(range(256, 1537, 128)) and len(val.STUDY_SIZES) == 11
    calls.clear()
    res = val.study(val.parse_opt(common + ["--task", "study", "--iou", "0.7", "--name", "study"]), sizes=(64, 96))
    assert [c["imgsz"] for c in calls] == [64, 96] and all(c["iou_thres"] == 0.7 for c in calls)
    txt = tmp_path / "study" / f"study_subset_{Path(work['init_ckpt']).stem}.txt"
    rows = np.loadtxt(txt, ndmin=2)
    assert rows.shape == (2, 10) and np.all(rows[:, 7:] > 0)  # 3 timings per size
    assert (tmp_path / "study" / "study.png").stat().st_size > 10_000
    assert len(res) == 1


def test_augment_and_half_on_cpu(work, upstream_checkpoint, tmp_path, capsys):
    """TTA changes the detections (more boxes from 3 scales); --half on CPU is a note, not a change."""
    from utils.evaluation.validator import run
    kw = dict(batch_size=4, imgsz=64, device="cpu", project=tmp_path, plots=False, conf_thres=0.01,
              save_txt=True, save_conf=True)
    ckpt = str(upstream_checkpoint)
    plain = run(str(work["subset"]), weights=ckpt, name="plain", **kw)
    tta = run(str(work["subset"]), weights=ckpt, augment=True, name="tta", **kw)
    assert len(tta) == 3 and len(tta[0]) == 7

    def detections(name):  # the random-weight model scores 0 either way: compare the boxes themselves
        return {f.name: f.read_text() for f in sorted((tmp_path / name / "labels").glob("*.txt"))}
    assert detections("plain") and detections("tta") and detections("plain") != detections("tta")
    kw.update(save_txt=False, save_conf=False)
    from utils.cli import set_logging
    set_logging()  # the note goes through the "yolov5" logger, which val.py sets up
    capsys.readouterr()
    half = run(str(work["subset"]), weights=ckpt, half=True, **kw)
    assert "--half is ignored on CPU" in capsys.readouterr().out
    assert half[0] == plain[0]


def test_channels_last_inference_is_as_accurate_as_contiguous(upstream_checkpoint):
    """The standalone CPU path runs the model in channels_last. Against a float64 reference its error is
    of the same size as the plain layout's (the seeded random weights amplify float32 rounding, so both
    differ from float64 by up to ~0.3%: the two float32 layouts cannot be compared bit for bit)."""
    import copy
    from models.experimental import attempt_load
    model = attempt_load(upstream_checkpoint)
    x = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double())[0]
        plain = model(x)[0]
        cl_model = model.to(memory_format=torch.channels_last)  # Detect's 5-D grid caches are rebuilt
        assert cl_model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
        cl = cl_model(x.contiguous(memory_format=torch.channels_last))[0]
    err_plain, err_cl = ((t.double() - ref).abs().max().item() for t in (plain, cl))
    assert err_cl <= 2 * err_plain and (cl.double() - ref).abs().div(ref.abs() + 1).max() < 5e-3


# v6.0 val.run's parameter list, in its order (workers, amp and anno_json are ours, keyword-only)
V60_RUN = ["data", "weights", "batch_size", "imgsz", "conf_thres", "iou_thres", "task", "device", "single_cls",
           "augment", "verbose", "save_txt", "save_hybrid", "save_conf", "save_json", "project", "name", "exist_ok",
           "half", "model", "dataloader", "save_dir", "plots", "callbacks", "compute_loss"]


def test_run_takes_v60_positional_order(work, upstream_checkpoint, tmp_path):
    """A v6.0 script's positional call (single_cls, save_txt and save_conf on, project and name by
    position) validates exactly as the same call by keyword. (workers=0: a second standalone run in
    one process otherwise waits ~10 s for the first run's loader workers to shut down.)"""
    import inspect
    from utils.evaluation.validator import run
    params = inspect.signature(run).parameters
    assert list(params)[:len(V60_RUN)] == V60_RUN
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("workers", "amp", "anno_json"))
    data, ckpt = str(work["subset"]), str(upstream_checkpoint)
    by_position = run(data, ckpt, 4, 64, 0.01, 0.6, "val", "cpu", True, False, False, True, False, True, False,
                      tmp_path, "pos", False, None, None, None, Path(""), False, workers=0)
    by_name = run(data, weights=ckpt, batch_size=4, imgsz=64, conf_thres=0.01, device="cpu", single_cls=True,
                  save_txt=True, save_conf=True, project=tmp_path, name="kw", plots=False, workers=0)
    assert by_position[0] == by_name[0] and list(by_position[1]) == list(by_name[1])
    files = {f.name: f.read_text() for f in sorted((tmp_path / "pos" / "labels").glob("*.txt"))}
    assert files and files == {f.name: f.read_text() for f in sorted((tmp_path / "kw" / "labels").glob("*.txt"))}
    rows = np.concatenate([np.loadtxt(tmp_path / "pos" / "labels" / f, ndmin=2) for f in files])
    assert rows.shape[1] == 6 and set(rows[:, 0]) == {0.0}  # save_conf column; single_cls: one class
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kw", "pos"]  # nothing plotted (plots=False)
    with pytest.raises(TypeError, match="at most 25 positional arguments"):
        run(data, ckpt, *([None] * 24))
