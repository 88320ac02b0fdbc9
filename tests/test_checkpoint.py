"""Checkpoints: safe loading (allow-list unpickler), upstream parity, atomic save, strip, errors."""
import copy
import inspect
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

from utils.io import checkpoint as ckpt_mod
from utils.io.checkpoint import (build_checkpoint, load_checkpoint, model_from_checkpoint,
                              save_checkpoint, strip_optimizer)
from utils.errors import UserError
from utils.io.safe_pickle import SAFE_PICKLE_MODULE

UNTRUSTED_HINT = "Do not load files from untrusted sources"


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def fixture_paths(fixtures_dir):
    return {
        "ckpt": fixtures_dir / "yolov5n_upstream_ckpt.pt",
        "sd": fixtures_dir / "yolov5n_state_dict.pt",
        "io": fixtures_dir / "yolov5n_io.npz",
    }


@pytest.fixture(scope="module")
def io_arrays(fixture_paths):
    return dict(np.load(fixture_paths["io"]))


@pytest.fixture(scope="module")
def reference_state_dict(fixture_paths):
    """The fp32 state dict saved beside the checkpoint where the set has one. The in-repository set has
    none; there the reference is the checkpoint read by torch's own unpickler (our trusted fixture file),
    so our restricted loader is still compared with an independent route."""
    if fixture_paths["sd"].is_file():
        return torch.load(fixture_paths["sd"], map_location="cpu", weights_only=True)
    kwargs = {"weights_only": False} if "weights_only" in inspect.signature(torch.load).parameters else {}
    model = torch.load(fixture_paths["ckpt"], map_location="cpu", **kwargs)["model"]
    return {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def state_dict_path(fixture_paths, reference_state_dict, tmp_path_factory):
    """A plain state_dict file: the set's own, or the reference written as upstream's torch.save would."""
    if fixture_paths["sd"].is_file():
        return fixture_paths["sd"]
    path = tmp_path_factory.mktemp("sd") / "yolov5n_state_dict.pt"
    torch.save(OrderedDict(reference_state_dict), path)
    return path


@pytest.fixture(scope="module")
def upstream_model(fixture_paths):
    """The fixture's pickled upstream Model, through our loader, float32 (fresh per module)."""
    return model_from_checkpoint(load_checkpoint(fixture_paths["ckpt"]))


@pytest.fixture(scope="module")
def yolov5n_yaml(repo_root):
    return repo_root / "yolov5" / "models" / "yolov5n.yaml"


# Forward-pass tolerance recommended by fixtures/README.md (fp32 op-order noise through 60 layers,
# amplified by the (2 sigma)^2 * anchor box decoding). Checkpoint-specific checks below are exact.
TOL = dict(rtol=1e-3, atol=1e-3)


def eval_output(model, x):
    model.eval()
    with torch.no_grad():
        y, _ = model(torch.from_numpy(x))
    return y.numpy()


def assert_tensors_identical(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b)


class CommandOnLoad:
    """An object whose unpickling calls `func(*args)`: the classic malicious pickle payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# ------------------------------------------------------------------- 1. upstream checkpoint parity
def test_upstream_checkpoint_weights_bit_identical(upstream_model, reference_state_dict):
    assert type(upstream_model).__module__ == "models.yolo"
    assert type(upstream_model).__name__ == "Model"
    sd = upstream_model.state_dict()
    assert list(sd) == list(reference_state_dict)
    assert len(sd) == 349
    for k, ref in reference_state_dict.items():
        assert_tensors_identical(sd[k], ref)


def test_upstream_checkpoint_dict_and_attributes(fixture_paths, io_arrays):
    ckpt = load_checkpoint(fixture_paths["ckpt"])
    assert list(ckpt) == ["epoch", "best_fitness", "model", "ema", "updates", "optimizer", "wandb_id", "date"]
    assert ckpt["epoch"] == -1 and ckpt["ema"] is None and ckpt["date"] == "2021-10-12T00:00:00.000000"
    model = ckpt["model"]
    assert next(model.parameters()).dtype == torch.float16
    assert next(model.parameters()).device.type == "cpu"
    assert model.names == [str(i) for i in range(80)] and model.nc == 80
    np.testing.assert_array_equal(model.stride.numpy(), io_arrays["stride"])
    detect = model.model[-1]
    np.testing.assert_array_equal(detect.anchors.float().numpy(), io_arrays["anchors"])
    np.testing.assert_array_equal((detect.anchors.float() * detect.stride.float().view(-1, 1, 1)).numpy(),
                                  io_arrays["anchors_pixels"])


def test_upstream_checkpoint_eval_output_matches(upstream_model, io_arrays, reference_state_dict, yolov5n_yaml):
    y = eval_output(upstream_model, io_arrays["x"])
    assert y.shape == io_arrays["y_eval"].shape
    np.testing.assert_allclose(y, io_arrays["y_eval"], **TOL)
    # The unpickled upstream object computes exactly what our freshly built Model computes with the
    # fixture's fp32 state dict: the loader changes nothing.
    fresh = model_from_checkpoint(reference_state_dict, cfg=yolov5n_yaml)
    np.testing.assert_array_equal(y, eval_output(fresh, io_arrays["x"]))


def test_attempt_load_fused_eval_model(fixture_paths, io_arrays, reference_state_dict, yolov5n_yaml):
    from models.experimental import attempt_load

    model = attempt_load(fixture_paths["ckpt"])
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # Conv+BN folded
    y_fused = eval_output(model, io_arrays["x"][:1])
    ref = io_arrays["y_eval"][:1] + io_arrays["y_eval_fused_minus_y_eval_img0"]
    np.testing.assert_allclose(y_fused, ref, **TOL)
    np.testing.assert_array_equal(model.stride.numpy(), [8, 16, 32])
    fresh = model_from_checkpoint(copy.deepcopy(reference_state_dict), cfg=yolov5n_yaml).fuse()
    np.testing.assert_array_equal(y_fused, eval_output(fresh, io_arrays["x"][:1]))


def test_attempt_load_ensemble_concatenates_boxes(fixture_paths, io_arrays):
    from models.experimental import Ensemble, attempt_load

    ens = attempt_load([fixture_paths["ckpt"], fixture_paths["ckpt"]], fuse=False)
    assert isinstance(ens, Ensemble) and len(ens) == 2
    assert ens.names == [str(i) for i in range(80)]
    np.testing.assert_array_equal(ens.stride.numpy(), [8, 16, 32])
    with torch.no_grad():
        y, extra = ens(torch.from_numpy(io_arrays["x"][:1]))
    n = io_arrays["y_eval"].shape[1]
    assert extra is None and y.shape == (1, 2 * n, 85)
    np.testing.assert_allclose(y[:, :n].numpy(), io_arrays["y_eval"][:1], **TOL)
    assert torch.equal(y[:, :n], y[:, n:])


def test_old_upstream_objects_are_upgraded(fixture_paths, io_arrays, tmp_path):
    """v5.0-era pickles: anchor_grid as a buffer, no Detect.inplace, no _non_persistent_buffers_set."""
    model = load_checkpoint(fixture_paths["ckpt"])["model"]
    detect = model.model[-1]
    del detect.anchor_grid
    detect.register_buffer("anchor_grid", torch.zeros(3, 1, 3, 1, 1, 2, dtype=torch.float16))
    del detect.inplace
    del model.model[0].__dict__["_non_persistent_buffers_set"]
    path = tmp_path / "old.pt"  # and in the pre-1.6 (non-zip) torch format
    torch.save({"model": model, "ema": None, "epoch": -1}, path, _use_new_zipfile_serialization=False)

    from models.experimental import attempt_load

    loaded = attempt_load(path, fuse=False)
    new_detect = loaded.model[-1]
    assert isinstance(new_detect.anchor_grid, list) and "anchor_grid" not in new_detect._buffers
    assert new_detect.inplace is True and loaded.model[0]._non_persistent_buffers_set == set()
    np.testing.assert_allclose(eval_output(loaded, io_arrays["x"]), io_arrays["y_eval"], **TOL)


# ---------------------------------------------------------------------------- 5. plain state_dict
def test_plain_state_dict_loads_and_builds_model(state_dict_path, reference_state_dict, io_arrays, yolov5n_yaml):
    sd = load_checkpoint(state_dict_path)
    assert isinstance(sd, OrderedDict) and list(sd) == list(reference_state_dict)
    for k, ref in reference_state_dict.items():
        assert_tensors_identical(sd[k], ref)
    with pytest.raises(UserError, match="--cfg"):
        model_from_checkpoint(sd, source=str(state_dict_path))
    model = model_from_checkpoint(sd, cfg=yolov5n_yaml)
    assert model.model[-1].nc == 80  # inferred from the Detect conv shape
    np.testing.assert_allclose(eval_output(model, io_arrays["x"]), io_arrays["y_eval"], **TOL)


def test_state_dict_number_of_classes_inferred(tmp_path, yolov5n_yaml):
    from models.yolo import Model

    path = tmp_path / "nc3.pt"
    torch.save(Model(yolov5n_yaml, nc=3).state_dict(), path)
    model = model_from_checkpoint(load_checkpoint(path), cfg=yolov5n_yaml)
    assert model.model[-1].nc == 3 and model.model[-1].m[0].out_channels == 3 * 8


def test_state_dict_with_wrong_cfg_is_user_error(state_dict_path, repo_root):
    sd = load_checkpoint(state_dict_path)
    with pytest.raises(UserError, match="do not fit model"):
        model_from_checkpoint(sd, cfg=repo_root / "yolov5" / "models" / "yolov5s.yaml")


# ------------------------------------------------------------------------- 2. malicious pickles
@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen"])
def test_malicious_checkpoint_refused_and_not_executed(tmp_path, fmt, payload):
    marker = tmp_path / "pwned"
    shell = f"touch {marker}"
    python = f"open({str(marker)!r}, 'w').close()"
    obj = {
        "os.system": CommandOnLoad(os.system, shell),
        "builtins.exec": CommandOnLoad(exec, python),
        "builtins.eval": CommandOnLoad(eval, python),
        "subprocess.Popen": CommandOnLoad(subprocess.Popen, ["touch", str(marker)]),
    }[payload]
    ckpt = {"epoch": 0, "model": obj, "optimizer": None}
    path = tmp_path / "evil.pt"
    if fmt == "zip":
        torch.save(ckpt, path)
    elif fmt == "legacy":
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(ckpt, protocol=2))
    expected_global = {"os.system": os.system.__module__ + ".system"}.get(payload, payload)

    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert expected_global in msg and str(path) in msg and UNTRUSTED_HINT in msg
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [
    ("builtins", "getattr"), ("__builtin__", "eval"), ("torch", "load"), ("torch.hub", "load"),
    ("models.common", "torch"),  # a module attribute of our package, not a layer class
    ("models.common", "__builtins__"),
    ("torch.nn.modules.module", "Module.__init__.__globals__"),
])
def test_crafted_globals_refused(tmp_path, module, name):
    path = tmp_path / "crafted.pt"
    path.write_bytes(b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n.")
    with pytest.raises(UserError, match="refused to load") as info:
        load_checkpoint(path)
    assert f"{module.replace('__builtin__', 'builtins')}.{name}" in str(info.value)


def test_missing_model_class_is_reported_as_version_mismatch(tmp_path):
    path = tmp_path / "fork.pt"
    path.write_bytes(b"\x80\x02cmodels.common\nNotARealLayer\n.")
    with pytest.raises(UserError, match="models.common.NotARealLayer") as info:
        load_checkpoint(path)
    assert "another YOLOv5 version" in str(info.value)


def test_later_upstream_class_name_maps_to_ours():
    from models.yolo import Model
    from utils.io.safe_pickle import resolve_global

    assert resolve_global("models.yolo", "DetectionModel") is Model  # v7.0's name for Model
    assert resolve_global("__builtin__", "set") is set


def test_numpy_reconstructors_allowed_under_old_and_new_paths():
    arr = np.array([0.5, 0.25])
    data2 = pickle.dumps({"a": arr, "s": np.float64(0.937)}, protocol=2)
    assert b"numpy._core.multiarray" in data2
    v60_era = data2.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # numpy < 2 files
    for data in (data2, v60_era, pickle.dumps({"a": arr, "s": np.float64(0.937)}, protocol=4)):
        out = SAFE_PICKLE_MODULE.loads(data)
        np.testing.assert_array_equal(out["a"], arr)
        assert out["s"] == np.float64(0.937) and type(out["s"]) is np.float64


def test_torchscript_archive_refused(tmp_path):
    # torch.load hands zips with constants.pkl (TorchScript archives) to torch.jit.load.
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as z:
        for name in ("data.pkl", "constants.pkl", "code/__torch__.py", "version"):
            z.writestr(f"scripted/{name}", b"3")
    with pytest.raises(UserError, match="TorchScript"):
        load_checkpoint(path)


# ---------------------------------------------------------------------- 3. save / round trip
def test_saved_checkpoint_round_trip_bit_identical(upstream_model, tmp_path):
    model = upstream_model
    ema = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    for g in opt.param_groups:
        g["momentum"] = np.float64(0.9)  # upstream warmup leaves numpy scalars here
    ckpt = build_checkpoint(model, ema, opt, epoch=3, best_fitness=np.array([0.25]), updates=12)
    assert list(ckpt) == list(ckpt_mod.CHECKPOINT_KEYS)
    assert next(ckpt["model"].parameters()).dtype == torch.float16
    assert next(model.parameters()).dtype == torch.float32  # the live model is not converted
    path = save_checkpoint(ckpt, tmp_path / "weights" / "last.pt")

    loaded = load_checkpoint(path)
    assert list(loaded) == list(ckpt)
    assert loaded["epoch"] == 3 and loaded["updates"] == 12
    np.testing.assert_array_equal(loaded["best_fitness"], [0.25])
    for key in ("model", "ema"):
        assert type(loaded[key]).__module__ == "models.yolo" and type(loaded[key]).__name__ == "Model"
        a, b = ckpt[key].state_dict(), loaded[key].state_dict()
        assert list(a) == list(b)
        for k in a:
            assert_tensors_identical(a[k], b[k])
        assert loaded[key].names == model.names
    assert loaded["optimizer"]["param_groups"][0]["momentum"] == np.float64(0.9)
    assert sorted(os.listdir(path.parent)) == ["last.pt"]


def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.arange(1000.0)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_die(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(ckpt_mod.torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2, "w": torch.zeros(100000)}, path)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def test_process_killed_during_save_keeps_previous_file(tmp_path, repo_root):
    """A process killed (SIGKILL) after writing the data but before the rename."""
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()
    script = (
        "import os, signal, torch\n"
        "from utils.io import checkpoint\n"
        "checkpoint.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"checkpoint.save_checkpoint({{'epoch': 2, 'w': torch.zeros(10000)}}, {str(path)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo_root / "yolov5", capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert path.read_bytes() == before
    leftovers = [n for n in os.listdir(tmp_path) if n != "last.pt"]
    # The killed process could not clean up; its temp file is hidden and does not match last*.pt.
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.") and leftovers[0].endswith(".tmp")


def test_strip_optimizer(upstream_model, tmp_path):
    model = upstream_model
    ema = copy.deepcopy(model)
    with torch.no_grad():
        ema.model[0].conv.weight.mul_(0.5)  # make EMA weights distinguishable from the model's
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ckpt = build_checkpoint(model, ema, opt, epoch=5, best_fitness=np.array([0.3]), updates=7)
    ckpt["opt"] = {"epochs": 10}  # upstream v6.2 key: kept
    ckpt["resume_state"] = {"rng": torch.zeros(3)}  # our trainer's extra state: dropped
    src = save_checkpoint(ckpt, tmp_path / "last.pt")
    out = tmp_path / "best_stripped.pt"
    mb = strip_optimizer(src, out)
    assert mb == pytest.approx(os.path.getsize(out) / 1e6)
    assert os.path.getsize(out) < os.path.getsize(src)
    stripped = load_checkpoint(out)
    assert list(stripped) == list(ckpt_mod.CHECKPOINT_KEYS) + ["opt"]
    assert stripped["epoch"] == -1 and stripped["opt"] == {"epochs": 10}
    for key in ("optimizer", "best_fitness", "wandb_id", "ema", "updates"):
        assert stripped[key] is None
    params = list(stripped["model"].parameters())
    assert all(p.dtype == torch.float16 and not p.requires_grad for p in params)
    assert torch.equal(stripped["model"].model[0].conv.weight, ema.model[0].conv.weight.half())
    assert load_checkpoint(src)["epoch"] == 5  # source untouched when `out` is given


# ------------------------------------------------------------------------- 4. bad files
def test_truncated_zip_checkpoint(fixture_paths, tmp_path):
    data = fixture_paths["ckpt"].read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_legacy_checkpoint(tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"epoch": 1, "w": torch.arange(5000.0)}, full, _use_new_zipfile_serialization=False)
    data = full.read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"epoch: 3\nthis is a yaml file, not weights\n"])
def test_empty_or_text_file(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a PyTorch checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="not found") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert str(tmp_path / "nope.pt") in str(info.value)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path)


def test_non_checkpoint_object_is_user_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(UserError, match="not a YOLOv5 checkpoint"):
        model_from_checkpoint(load_checkpoint(path), source=str(path))
