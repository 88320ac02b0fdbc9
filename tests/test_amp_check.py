"""utils/training/amp_check.py: fp32 vs autocast on the stand-in mlu device; a model that breaks under autocast
makes training fall back to fp32 with one warning."""
import logging

import torch

from utils.training.amp_check import amp_outputs_agree, check_amp


class BreaksUnderAutocast(torch.nn.Module):
    """Detector-shaped output whose scores change when autocast is on."""

    def forward(self, x):
        out = torch.zeros(1, 4, 85, device=x.device)
        if torch.is_autocast_enabled(x.device.type):
            out[..., 4] = 0.5
        return out, None


def test_yolov5n_agrees_under_mlu_autocast_and_keeps_training_mode(standin_mlu, monkeypatch):
    monkeypatch.setenv("YOLOV5_STANDIN_MLU", "1")
    from models.yolo import Model
    from utils.device.devices import select_device
    dev = select_device("mlu", log=False)
    torch.manual_seed(0)
    model = dev.move(Model("yolov5n.yaml", nc=6)).train()
    agree, box, score = amp_outputs_agree(model, dev)
    assert agree and 0 < box < 1.0 and score < 0.05  # fp16 differs a little, not beyond the tolerance
    assert model.training


def test_disagreement_gives_one_warning_and_false(standin_mlu, caplog, monkeypatch):
    monkeypatch.setenv("YOLOV5_STANDIN_MLU", "1")
    from utils.device.devices import select_device
    dev = select_device("mlu", log=False)
    with caplog.at_level(logging.WARNING, logger="yolov5"):
        assert check_amp(BreaksUnderAutocast(), dev) is False
    warnings = [r.getMessage() for r in caplog.records if "mixed precision check failed" in r.getMessage()]
    assert len(warnings) == 1 and "training in fp32 instead" in warnings[0] and "0.5 (scores)" in warnings[0]


def test_training_falls_back_to_fp32_when_the_check_fails(standin_mlu, monkeypatch, tmp_path, capsys):
    """--pyamp on mlu with a failing check: one warning, and the scaler stays off (fp32 training)."""
    from utils.training import amp_check, trainer
    from utils.training.callbacks import Callbacks
    from utils.data.demo_data import generate_demo_dataset

    from train_helpers import OneThread, train_in_process
    monkeypatch.setenv("YOLOV5_STANDIN_MLU", "1")
    monkeypatch.setattr(amp_check, "amp_outputs_agree", lambda model, device: (False, 0.0, 0.9))
    generate_demo_dataset(tmp_path / "demo", n_train=8, n_val=4, imgsz=96, seed=0)
    seen, callbacks = {}, Callbacks()
    real_init = trainer.Trainer._setup

    def setup(self):
        real_init(self)
        seen["amp"], seen["scaler"] = self.amp, self.scaler.is_enabled()
    monkeypatch.setattr(trainer.Trainer, "_setup", setup)
    with OneThread():
        train_in_process(["--data", str(tmp_path / "demo" / "demo.yaml"), "--cfg", "yolov5n.yaml", "--weights", "",
                          "--img", "64", "--batch-size", "4", "--epochs", "1", "--iters", "1", "--skip", "--pyamp",
                          "--device", "mlu", "--workers", "0", "--noautoanchor", "--project", str(tmp_path / "runs")],
                         callbacks)
    assert seen == {"amp": False, "scaler": False}
    out = capsys.readouterr()
    assert (out.out + out.err).count("mixed precision check failed") == 1
