"""The whole pipeline on cpu and on the stand-in mlu device (a separate torch device whose kernels
are the CPU's): training from scratch, from a checkpoint, resumed, with --pyamp, timed with
--iters/--skip, then val.py, detect.py and export.py from the model trained on mlu.

fp32 runs on 'mlu' must end bit-identical to the same runs on 'cpu' (fixed seed, --workers 0):
any difference is a device-handling bug in our code. Validation in fp32 on both
(YOLOV5_FP32_VALIDATION=1), because accelerators validate in fp16 by default.
"""
import json
import shutil

import pytest
import torch

from train_helpers import OneThread, train_in_process
from utils.training.callbacks import Callbacks
from utils.io.checkpoint import load_checkpoint

EPOCHS = 2
DEVICES = ["cpu", "mlu"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from utils.data.demo_data import generate_demo_dataset
    root = tmp_path_factory.mktemp("standin_demo") / "demo"
    generate_demo_dataset(root, n_train=16, n_val=8, imgsz=128, seed=0)
    return root / "demo.yaml"


def _args(data, project, name, device, *extra, epochs=EPOCHS, weights="", cfg="yolov5n.yaml"):
    args = ["--data", str(data), "--weights", weights, "--img", "64", "--batch-size", "4", "--epochs", str(epochs),
            "--device", device, "--workers", "0", "--seed", "0", "--project", str(project), "--name", name]
    return args + (["--cfg", cfg] if cfg else []) + [str(x) for x in extra]


def _env(mp, fp32_validation=True):
    mp.setenv("YOLOV5_STANDIN_MLU", "1")
    if fp32_validation:
        mp.setenv("YOLOV5_FP32_VALIDATION", "1")
    else:
        mp.delenv("YOLOV5_FP32_VALIDATION", raising=False)


def _train(argv, callbacks=None, fp32_validation=True):
    with pytest.MonkeyPatch.context() as mp, OneThread():
        _env(mp, fp32_validation)
        return train_in_process(argv, callbacks)


def _weights(path):
    return load_checkpoint(path)["model"].float().state_dict()


def _assert_same_weights(a, b):
    sa, sb = _weights(a), _weights(b)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} of {len(sa)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference_runs(standin_mlu, demo_data, tmp_path_factory):
    """The same fp32 training on cpu and on mlu: {device: (run dir, returned results)}.

    First a backward pass on mlu under two threads: autograd's device thread may start there, as it
    does when other tests ran before. The stand-in's kernels must still follow the one thread the
    trainings run with (a stand-in bug once made the mlu run differ in the last bit then)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).to("mlu")
        layer(torch.rand(2, 3, 16, 16, device="mlu")).sum().backward()
    finally:
        torch.set_num_threads(before)
    project = tmp_path_factory.mktemp("standin_runs")
    return {dev: (project / dev, _train(_args(demo_data, project, dev, dev))) for dev in DEVICES}


def test_fp32_training_on_mlu_equals_cpu_bit_for_bit(reference_runs):
    (cpu, cpu_results), (mlu, mlu_results) = reference_runs["cpu"], reference_runs["mlu"]
    rows = (cpu / "results.csv").read_text().splitlines()
    assert len(rows) == EPOCHS + 1 and (mlu / "results.csv").read_text().splitlines() == rows
    for name in ("last.pt", "best.pt"):
        _assert_same_weights(cpu / "weights" / name, mlu / "weights" / name)
    assert tuple(mlu_results) == tuple(cpu_results) and cpu_results[2] > 0  # final best.pt validation


def test_resume_on_mlu_is_exact(reference_runs, demo_data, tmp_path):
    callbacks = Callbacks()

    def stop_after_first_epoch(values, epoch, *args):
        callbacks.stop_training = epoch == 0
    callbacks.register_action("on_fit_epoch_end", "stop", stop_after_first_epoch)
    _train(_args(demo_data, tmp_path, "split", "mlu"), callbacks)
    last = tmp_path / "split" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 0
    _train(["--resume", str(last)])
    cpu = reference_runs["cpu"][0]
    assert (tmp_path / "split" / "results.csv").read_text() == (cpu / "results.csv").read_text()
    _assert_same_weights(last, cpu / "weights" / "last.pt")


def test_pretrained_checkpoint_is_loaded_on_cpu_then_moved(reference_runs, demo_data, tmp_path):
    """--weights from an upstream-format checkpoint (fp16 model pickled with its yaml) on both devices."""
    start = reference_runs["cpu"][0] / "weights" / "best.pt"
    for dev in DEVICES:
        _train(_args(demo_data, tmp_path, dev, dev, "--noautoanchor", epochs=1, weights=str(start), cfg=""))
    assert (tmp_path / "mlu" / "results.csv").read_text() == (tmp_path / "cpu" / "results.csv").read_text()
    _assert_same_weights(tmp_path / "cpu" / "weights" / "last.pt", tmp_path / "mlu" / "weights" / "last.pt")


@pytest.mark.parametrize("device,dtype,scale", [("cpu", torch.bfloat16, None), ("mlu", torch.float16, 65536.0)])
def test_pyamp_autocast_and_grad_scaler_are_active(standin_mlu, demo_data, tmp_path, device, dtype, scale):
    seen, handles, callbacks = [], [], Callbacks()

    def hook_once(ni, model, *args):
        if ni == 0:  # from batch 1 on, record what the first convolution block outputs
            handles.append(model.model[1].register_forward_hook(lambda m, i, out: seen.append(out.dtype)))

    def unhook(*args, **kwargs):  # before the checkpoint is pickled
        handles.pop().remove()

    def keep_last(last, epoch, *args):
        shutil.copy(last, tmp_path / "unstripped.pt")
    callbacks.register_action("on_train_batch_end", "hook", hook_once)
    callbacks.register_action("on_train_epoch_end", "unhook", unhook)
    callbacks.register_action("on_model_save", "keep", keep_last)
    _train(_args(demo_data, tmp_path, "amp", device, "--pyamp", "--noautoanchor", epochs=1), callbacks,
           fp32_validation=False)
    assert seen[:3] == [dtype] * 3  # training batches 1-3 ran under autocast
    scaler = load_checkpoint(tmp_path / "unstripped.pt")["resume_state"]["scaler"]
    if scale is None:
        assert scaler == {}  # bf16 needs no loss scaling: the scaler is disabled
    else:
        assert scaler["scale"] == scale and scaler["_growth_tracker"] > 0


@pytest.mark.parametrize("device,shown", [("cpu", None), ("mlu", "standin-mlu")])
def test_iters_skip_writes_a_benchmark_line_for_the_device(standin_mlu, demo_data, tmp_path, monkeypatch,
                                                           device, shown):
    log = tmp_path / "benchmark_log"
    monkeypatch.setenv("BENCHMARK_LOG", str(log))
    monkeypatch.setenv("MLU_ADAPTIVE_STRATEGY_COUNT", "2")
    _train(_args(demo_data, tmp_path, "bench", device, "--iters", "6", "--skip", "--noautoanchor", epochs=1))
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert (record["iterations"], record["warmup_iterations"], record["batch_size"]) == (4, 2, 4)
    assert record["status"] == "ok" and record["batch_time_avg"] > 0
    if shown:
        assert record["device"] == shown
    else:
        assert "mlu" not in record["device"]
    assert not list((tmp_path / "bench" / "weights").iterdir())


@pytest.fixture(scope="module")
def mlu_weights(reference_runs):
    return reference_runs["mlu"][0] / "weights" / "best.pt"


def _main(module, argv):
    import importlib
    with pytest.MonkeyPatch.context() as mp, OneThread():
        _env(mp)
        return importlib.import_module(module).main(argv)


def test_val_detect_export_from_a_model_trained_on_mlu(mlu_weights, demo_data, tmp_path):
    """val.py and detect.py give the same numbers and boxes on both devices; export.py traces on mlu.

    Standalone CPU validation runs channels-last by default (faster, rounds differently): switched
    off here so that both devices compute in the same layout."""
    import utils.evaluation.validator
    metrics = {}
    for dev in DEVICES:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(utils.evaluation.validator, "CHANNELS_LAST_ON_CPU", False)
            results, maps, _times = _main("val", ["--weights", str(mlu_weights), "--data", str(demo_data), "--img",
                                                  "64", "--device", dev, "--batch-size", "4", "--workers", "0",
                                                  "--project", str(tmp_path), "--name", f"val_{dev}"])
        metrics[dev] = (tuple(results), maps.tolist())
    assert metrics["mlu"] == metrics["cpu"] and metrics["cpu"][0][2] > 0

    images = demo_data.parent / "images" / "val"
    for dev in DEVICES:
        _main("detect", ["--weights", str(mlu_weights), "--source", str(images), "--img", "64", "--device", dev,
                         "--conf-thres", "0.001", "--save-txt", "--save-conf", "--nosave", "--project", str(tmp_path),
                         "--name", f"det_{dev}"])
    labels = {dev: {p.name: p.read_text() for p in (tmp_path / f"det_{dev}" / "labels").glob("*.txt")}
              for dev in DEVICES}
    assert labels["cpu"] and labels["mlu"] == labels["cpu"]

    exported = {}
    for dev in DEVICES:
        copy = tmp_path / f"export_{dev}.pt"
        shutil.copy(mlu_weights, copy)
        _main("export", ["--weights", str(copy), "--include", "torchscript", "--img", "64", "--device", dev])
        exported[dev] = torch.jit.load(str(copy.with_suffix(".torchscript.pt")), map_location="cpu")
    im = torch.rand(1, 3, 64, 64)
    assert torch.equal(exported["mlu"](im)[0], exported["cpu"](im)[0])


def test_evolve_two_generations_on_mlu(standin_mlu, demo_data, tmp_path):
    _train(_args(demo_data, tmp_path, "evo", "mlu", "--evolve", "2", "--noautoanchor", epochs=1))
    lines = (tmp_path / "evo" / "evolve.csv").read_text().splitlines()
    assert len(lines) == 3  # header and one row per generation
    rows = [[float(x) for x in line.split(",")] for line in lines[1:]]
    assert rows[0][7:] != rows[1][7:]  # the second generation trained a mutation
    assert (tmp_path / "evo" / "hyp_evolve.yaml").is_file()
