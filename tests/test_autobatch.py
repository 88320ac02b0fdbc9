"""utils/training/autobatch.py: --batch-size -1 from measured peak memory, on the stand-in mlu with a pretend capacity."""
import dataclasses
import logging

import pytest
import torch

from utils.training.autobatch import autobatch, measure_peaks


def _mlu(monkeypatch, capacity):
    from utils.device.devices import DeviceProps, select_device
    monkeypatch.setenv("YOLOV5_STANDIN_MLU", "1")
    dev = select_device("mlu", log=False)
    return dataclasses.replace(dev, props=(DeviceProps(0, "standin-mlu", capacity),))


def _model(dev):
    from models.yolo import Model
    torch.manual_seed(0)
    return dev.move(Model("yolov5n.yaml", nc=6)).train()


def test_picks_the_batch_where_measured_memory_meets_the_fraction(standin_mlu, monkeypatch):
    dev = _mlu(monkeypatch, capacity=0)
    model = _model(dev)
    peaks = measure_peaks(model, dev, 64)
    assert peaks[0] < peaks[1] < peaks[2] < peaks[3]  # grows with the batch
    per_image = (peaks[3] - peaks[0]) / 7
    capacity = int((peaks[0] + 40 * per_image) / 0.9)  # the line reaches 90 % at about batch 41
    b = autobatch(model, _mlu(monkeypatch, capacity), 64)
    assert 38 <= b <= 44
    assert all(p.grad is None for p in model.parameters())  # trial gradients are not left behind


def test_cpu_uses_16_with_a_warning(caplog):
    from utils.device.devices import select_device
    with caplog.at_level(logging.WARNING, logger="yolov5"):
        assert autobatch(torch.nn.Identity(), select_device("cpu", log=False), 64) == 16
    assert "needs an accelerator" in caplog.text


def test_too_small_a_device_is_a_user_error(standin_mlu, monkeypatch):
    from utils.errors import UserError
    dev = _mlu(monkeypatch, capacity=1000)
    with pytest.raises(UserError, match="even batch size 1 needs more than 90%"):
        autobatch(_model(dev), dev, 64)


def test_train_with_batch_size_minus_one_on_cpu_uses_16(tmp_path, real_images_dir, capsys):
    import yaml

    from train_helpers import OneThread, make_data_yaml, train_args, train_in_process
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    with OneThread():
        train_in_process(train_args(data, tmp_path, "ab", 64, -1, 1, "--iters", "1", "--skip", "--noautoanchor"))
    out = capsys.readouterr()
    assert "--batch-size -1 (AutoBatch): it needs an accelerator (CUDA or MLU); using batch size 16" in out.out + out.err
    assert yaml.safe_load((tmp_path / "ab" / "opt.yaml").read_text())["batch_size"] == 16


def test_batch_size_minus_one_under_torchrun_is_refused_with_the_autobatch_message(tmp_path, real_images_dir,
                                                                                 capsys, monkeypatch):
    """Checked before the multiple-of-processes rule (which -1 would fail with a misleading message)."""
    from train_helpers import make_data_yaml, train_args, train_in_process
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as stop:
        train_in_process(train_args(data, tmp_path, "ab", 64, -1, 1, "--noautoanchor"))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR")]
    assert stop.value.code == 2 and len(errors) == 1
    assert "--batch-size -1 (AutoBatch) works with one device" in errors[0] and "multiple of" in errors[0]
    assert not (tmp_path / "ab").exists()  # refused before anything was written
