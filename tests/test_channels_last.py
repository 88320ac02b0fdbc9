"""--channels-last: model and training batches in NHWC on an accelerator (stand-in mlu); ignored on CPU."""
from train_helpers import OneThread, make_data_yaml, train_args, train_in_process
from utils.training.callbacks import Callbacks


def _run(tmp_path, real_images_dir, device, monkeypatch):
    import torch
    monkeypatch.setenv("YOLOV5_STANDIN_MLU", "1")
    data = make_data_yaml(tmp_path, real_images_dir, n=4)
    seen, callbacks = {}, Callbacks()

    def batch_end(ni, model, imgs, *args):
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        seen["weight"] = conv.weight.is_contiguous(memory_format=torch.channels_last)
        seen["batch"] = imgs.is_contiguous(memory_format=torch.channels_last)
    callbacks.register_action("on_train_batch_end", "layout", batch_end)
    args = train_args(data, tmp_path, device, 64, 4, 1, "--iters", "1", "--skip", "--noautoanchor", "--channels-last")
    args[args.index("--device") + 1] = device
    with OneThread():
        train_in_process(args, callbacks)
    return seen


def test_channels_last_on_mlu(standin_mlu, tmp_path, real_images_dir, monkeypatch):
    assert _run(tmp_path, real_images_dir, "mlu", monkeypatch) == {"weight": True, "batch": True}


def test_channels_last_is_ignored_on_cpu(tmp_path, real_images_dir, monkeypatch, capsys):
    assert _run(tmp_path, real_images_dir, "cpu", monkeypatch) == {"weight": False, "batch": False}
    out = capsys.readouterr()
    assert "--channels-last is ignored on CPU" in out.out + out.err
