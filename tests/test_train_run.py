"""train.py end to end on real coco128 images: every file of a run, and starting from pretrained weights.

Tiny runs (yolov5n, 8 images, 64-128 px, 2 batches per epoch) in this process.
"""
import cv2
import numpy as np
import pytest
import torch
import yaml

from train_helpers import YOLO_DIR, OneThread, make_data_yaml, train_args, train_in_process
from utils.training.callbacks import Callbacks
from utils.io.checkpoint import load_checkpoint
from utils.training.results_log import read_results

V60_RESULTS_HEADER = ("epoch,train/box_loss,train/obj_loss,train/cls_loss,metrics/precision,metrics/recall,"
                      "metrics/mAP_0.5,metrics/mAP_0.5:0.95,val/box_loss,val/obj_loss,val/cls_loss,x/lr0,x/lr1,x/lr2")


@pytest.fixture(autouse=True)
def one_thread():
    with OneThread():
        yield


def _image_ok(path):
    im = cv2.imread(str(path))
    return im is not None and im.shape[0] > 10 and im.shape[1] > 10


def test_full_run_writes_every_file(tmp_path, real_images_dir, capsys):
    """From scratch, 2 epochs, single class (so the untrained model already has correct boxes and the
    PR/F1 curves exist): checkpoints, yaml files, results.csv/png, plots, validator plots, TensorBoard."""
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    results = train_in_process(train_args(data, tmp_path, "full", 128, 4, 2, "--single-cls"))
    out = capsys.readouterr()
    run = tmp_path / "full"

    # checkpoints: stripped, loadable by our safe loader and by attempt_load
    from models.experimental import attempt_load
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run / "weights" / name)
        assert ckpt["epoch"] == -1 and ckpt["optimizer"] is None and ckpt["ema"] is None
        assert "resume_state" not in ckpt and ckpt["updates"] is None
        assert next(ckpt["model"].parameters()).dtype == torch.float16
        model = attempt_load(run / "weights" / name)
        assert model.nc == 1 and list(model.names) == ["item"]
        assert model(torch.zeros(1, 3, 64, 64))[0].shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 6)

    opt = yaml.safe_load((run / "opt.yaml").read_text())
    assert (opt["epochs"], opt["batch_size"], opt["imgsz"], opt["single_cls"]) == (2, 4, 128, True)
    assert opt["save_dir"] == str(run) and opt["weights"] == ""
    hyp = yaml.safe_load((run / "hyp.yaml").read_text())
    shipped = yaml.safe_load((YOLO_DIR / "data" / "hyps" / "hyp.scratch.yaml").read_text())
    assert all(hyp[k] == v for k, v in shipped.items()) and hyp["copy_paste"] == 0.0

    lines = (run / "results.csv").read_text().splitlines()
    assert lines[0].replace(" ", "") == V60_RESULTS_HEADER and all(len(f) == 20 for f in lines[0].split(","))
    columns, values = read_results(run / "results.csv")
    assert values.shape == (2, 14) and list(values[:, 0]) == [0, 1]
    assert np.isfinite(values).all() and (values[:, 1:3] > 0).all()  # box and obj losses
    assert ((values[:, 4:8] >= 0) & (values[:, 4:8] <= 1)).all() and (values[:, 8] > 0).all()  # metrics, val box
    assert values[1, 11] > values[0, 11]  # warmup raises lr0 of the weights

    for name in ("results.png", "labels.jpg", "train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg",
                 "confusion_matrix.png", "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png",
                 "val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert _image_ok(run / name), name
    assert not (run / "train_batch3.jpg").exists() and not (run / "val_batch1_labels.jpg").exists()

    # the returned results are the final best.pt validation's, and the summary line says so
    assert len(results) == 7 and 0 < results[2] <= 1
    assert f"Final mAP@0.5 {results[2]:.4f}" in out.out and f"Validating {run / 'weights' / 'best.pt'}" in out.out

    events = list(run.glob("events.out.tfevents.*"))
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        assert not events and out.out.count("TensorBoard: not installed") == 1
        return
    assert len(events) == 1
    acc = EventAccumulator(str(run))
    acc.Reload()
    for col, tag in enumerate(V60_RESULTS_HEADER.split(",")[1:], start=1):
        scalars = acc.Scalars(tag)
        assert [s.step for s in scalars] == [0, 1]
        np.testing.assert_allclose([s.value for s in scalars], values[:, col], rtol=1e-4, atol=1e-7)


def _ckpt_with_shifted_anchors(tmp_path, upstream_checkpoint):
    """The upstream-format fixture with its anchors changed, so 'anchors excluded' is visible."""
    from utils.io.checkpoint import save_checkpoint
    ckpt = load_checkpoint(upstream_checkpoint)
    ckpt["model"].model[-1].anchors.mul_(1.5)
    return save_checkpoint(ckpt, tmp_path / "shifted.pt"), ckpt


def test_pretrained_transfer_matches_checkpoint(tmp_path, upstream_checkpoint):
    """As upstream v6.0: keys with equal name and shape copied; anchors excluded when --cfg is given."""
    from utils.training.train_setup import build_model, load_hyp
    weights, ckpt = _ckpt_with_shifted_anchors(tmp_path, upstream_checkpoint)
    source = {k: v.float() for k, v in ckpt["model"].state_dict().items()}
    hyp = load_hyp("hyp.scratch.yaml")

    model, loaded = build_model("yolov5n.yaml", str(weights), 3, hyp, resume=False)
    state = model.state_dict()
    copied = [k for k in state
              if k in source and state[k].shape == source[k].shape and torch.equal(state[k], source[k])]
    assert len(copied) == 342 and len(state) == 349
    assert not torch.equal(state["model.24.anchors"], source["model.24.anchors"])  # from the yaml
    assert all(k.startswith("model.24.m.") for k in state if k not in copied and "anchors" not in k)

    model, _ = build_model("", str(weights), 3, hyp, resume=False)  # architecture from the checkpoint
    assert torch.equal(model.state_dict()["model.24.anchors"], source["model.24.anchors"])


def test_pretrained_run_freeze_and_transfer_message(tmp_path, real_images_dir, upstream_checkpoint, capsys):
    """--weights upstream checkpoint with another nc: 'Transferred 342/349', and --freeze 10 keeps
    model.0-9 exactly at the checkpoint's values while later layers train."""
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    weights = upstream_checkpoint
    seen = {}
    callbacks = Callbacks()
    callbacks.register_action("on_train_batch_end", "keep", lambda ni, model, *a: seen.update(model=model, ni=ni))
    train_in_process(train_args(data, tmp_path, "frozen", 64, 4, 1, "--single-cls", "--freeze", "10",
                                "--iters", "2", "--skip", "--noautoanchor", weights=str(weights)), callbacks)
    out = capsys.readouterr().out
    assert f"Transferred 342/349 items from {weights}" in out
    source = {k: v.float() for k, v in load_checkpoint(weights)["model"].state_dict().items()}
    trained = dict(seen["model"].named_parameters())
    frozen = [k for k in trained if int(k.split(".")[1]) < 10]
    assert len(frozen) == 99 and seen["ni"] == 1
    assert all(torch.equal(trained[k].detach(), source[k]) for k in frozen)
    assert not torch.equal(trained["model.13.cv1.conv.weight"].detach(), source["model.13.cv1.conv.weight"])


def test_every_v6_hook_fires(tmp_path, real_images_dir):
    """Each training hook runs the number of times its moment occurs: 2 batches, one optimizer step
    each (warmup accumulates 1), hyperparameters once, teardown last."""
    from utils.training.callbacks import HOOKS
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    calls = []
    callbacks = Callbacks()
    for hook in HOOKS:
        callbacks.register_action(hook, "record", lambda *a, hook=hook, **k: calls.append((hook, a)))
    train_in_process(train_args(data, tmp_path, "hooks", 64, 4, 1, "--iters", "2", "--skip", "--noautoanchor"),
                     callbacks)
    counts = {hook: sum(h == hook for h, _ in calls) for hook in HOOKS}
    assert {h: counts[h] for h in ("on_train_batch_start", "optimizer_step", "on_before_zero_grad",
                                   "on_train_batch_end")} == dict.fromkeys(
        ("on_train_batch_start", "optimizer_step", "on_before_zero_grad", "on_train_batch_end"), 2)
    assert counts["on_params_update"] == counts["teardown"] == counts["on_train_end"] == 1
    order = [h for h, _ in calls]
    assert order.index("on_params_update") < order.index("on_pretrain_routine_end") < order.index("on_train_start")
    assert order[-1] == "teardown"
    assert order[order.index("optimizer_step") + 1] == "on_before_zero_grad"
    params = next(a for h, a in calls if h == "on_params_update")[0]
    assert params["lr0"] == 0.01 and params["box"] == pytest.approx(0.05 * 3 / 3)
