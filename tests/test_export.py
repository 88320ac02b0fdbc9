"""export.py: TorchScript and ONNX exports agree with the PyTorch model they came from.

Run as a user would (`python export.py ...` from yolov5/). Two checkpoints:
* one of ours (Model('yolov5n.yaml'), seeded default init, saved by utils.io.checkpoint): a well-conditioned
  network, so exports must match PyTorch within 1e-4;
* the upstream-format fixture (random weights): its activations reach ~200 before the head, so float32
  rounding alone moves boxes by ~0.1 px (measured against float64). There the export must be as exact as
  PyTorch float32 itself: its error against a float64 reference at most twice PyTorch's.
"""
import ast
import copy
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx  # requirements-export.txt
import onnxruntime as ort
import pytest
import torch

from models.experimental import attempt_load
from models.yolo import Model
from utils.io.checkpoint import build_checkpoint, save_checkpoint
from utils.cli import set_logging
from utils.inference.exporter import simplify_onnx

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def export_cli(repo_root, *args):
    return subprocess.run([sys.executable, "export.py", *map(str, args)], cwd=repo_root / "yolov5",
                          capture_output=True, text=True, timeout=300)


def export_copy(repo_root, src, path, *args):
    """Copy checkpoint `src` to `path` and export the copy at 160 px with `args`; returns path."""
    shutil.copyfile(src, path)
    r = export_cli(repo_root, "--weights", path, "--imgsz", 160, *args)
    assert r.returncode == 0, r.stderr
    return path


def ort_run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.run(None, {"images": x.numpy()})


@pytest.fixture(scope="module")
def ours(repo_root, tmp_path_factory):
    """Our checkpoint, exported to TorchScript and ONNX at 160x224 (h, w)."""
    torch.manual_seed(0)
    model = Model(str(repo_root / "yolov5" / "models" / "yolov5n.yaml"))
    path = tmp_path_factory.mktemp("ours") / "ours.pt"
    save_checkpoint(build_checkpoint(model), path)
    r = export_cli(repo_root, "--weights", path, "--imgsz", 160, 224, "--include", "torchscript", "onnx")
    assert r.returncode == 0, r.stderr
    return path, r


@pytest.fixture(scope="module")
def upstream(repo_root, upstream_checkpoint, tmp_path_factory):
    """The upstream-format fixture checkpoint, exported at 160x160."""
    path = tmp_path_factory.mktemp("upstream") / "yolov5n.pt"
    shutil.copyfile(upstream_checkpoint, path)
    r = export_cli(repo_root, "--weights", path, "--img", 160)
    assert r.returncode == 0, r.stderr
    return path, r


def test_files_names_shapes_and_metadata(upstream):
    path, r = upstream
    ts_file, onnx_file = path.with_suffix(".torchscript.pt"), path.with_suffix(".onnx")
    assert ts_file.is_file() and onnx_file.is_file()
    assert f"saved as {onnx_file}" in r.stdout and f"saved as {ts_file}" in r.stdout
    m = onnx.load(str(onnx_file))
    onnx.checker.check_model(m)
    assert m.opset_import[0].version == 13  # v6.0 CLI default
    assert [i.name for i in m.graph.input] == ["images"]
    assert [o.name for o in m.graph.output] == ["output"]
    dims = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 3 * (20 * 20 + 10 * 10 + 5 * 5), 85]
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["stride"] == "32"
    assert ast.literal_eval(meta["names"]) == [str(i) for i in range(80)]
    assert not any(type(n).__name__ == "SiLU" for n in m.graph.node)  # SiLU became Sigmoid * x
    assert {"Sigmoid", "Mul"} <= {n.op_type for n in m.graph.node}
    extra = {"config.txt": ""}
    torch.jit.load(str(ts_file), _extra_files=extra)
    assert json.loads(extra["config.txt"]) == {"shape": [1, 3, 160, 160], "stride": 32,
                                               "names": [str(i) for i in range(80)]}


def test_our_checkpoint_exports_match_pytorch_within_1e4(ours):
    path, _ = ours
    model = attempt_load(str(path))
    torch.manual_seed(1)
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        expected = model(x)[0]
        ts = torch.jit.load(str(path.with_suffix(".torchscript.pt")))
        got_ts = ts(x)[0]
    _, (got_onnx,) = ort_run(path.with_suffix(".onnx"), x)
    assert expected.shape == (1, 3 * (20 * 28 + 10 * 14 + 5 * 7), 85)
    assert got_onnx.shape == tuple(expected.shape)
    np.testing.assert_allclose(got_ts.numpy(), expected.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got_onnx, expected.numpy(), rtol=0, atol=1e-4)
    assert float(expected[..., :4].abs().max()) > 100  # boxes in pixels: the check has teeth


def test_upstream_checkpoint_exports_are_as_exact_as_pytorch(upstream):
    path, _ = upstream
    model = attempt_load(str(path))
    torch.manual_seed(2)
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        fp32 = model(x)[0].numpy()
        fp64 = copy.deepcopy(model).double()(x.double())[0].numpy()
        got_ts = torch.jit.load(str(path.with_suffix(".torchscript.pt")))(x)[0].numpy()
    _, (got_onnx,) = ort_run(path.with_suffix(".onnx"), x)
    for cols in (slice(0, 4), slice(4, None)):  # boxes (pixels) and scores separately
        torch_err = np.abs(fp32 - fp64)[..., cols].max()
        assert np.abs(got_onnx - fp64)[..., cols].max() <= 2 * torch_err + 1e-6
        assert np.abs(got_ts - fp64)[..., cols].max() <= 2 * torch_err + 1e-6
    np.testing.assert_allclose(got_onnx[..., 4:], fp32[..., 4:], atol=2e-3)  # scores: same detections


def test_dynamic_onnx_takes_other_batch_and_shape(ours, repo_root, tmp_path):
    path = export_copy(repo_root, ours[0], tmp_path / "dyn.pt", "--include", "onnx", "--dynamic")
    model = attempt_load(str(path))
    torch.manual_seed(3)
    x = torch.rand(2, 3, 256, 192)
    with torch.no_grad():
        expected = model(x)[0].numpy()
    session, (got,) = ort_run(path.with_suffix(".onnx"), x)
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert got.shape == (2, 3 * (32 * 24 + 16 * 12 + 8 * 6), 85)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_train_mode_onnx_has_the_raw_levels(ours, repo_root, tmp_path):
    path = export_copy(repo_root, ours[0], tmp_path / "train.pt", "--include", "onnx", "--train")
    model = attempt_load(str(path))
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        raw = model(x)[1]  # eval forward also returns the raw level tensors
    session, got = ort_run(path.with_suffix(".onnx"), x)
    assert [o.name for o in session.get_outputs()] == ["output", "output1", "output2"]
    for g, e in zip(got, raw):
        assert g.shape == tuple(e.shape) == (1, 3, g.shape[2], g.shape[3], 85)
        np.testing.assert_allclose(g, e.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("fmt, words", [("tflite", ["not supported", "ONNX", "MagicMind", "TensorRT"]),
                                        ("saved_model", ["not supported", "ONNX"]),
                                        ("bogus", ["unknown format", "torchscript, onnx"])])
def test_unsupported_format_is_a_clear_error(upstream_checkpoint, repo_root, tmp_path, fmt, words):
    path = tmp_path / "m.pt"
    shutil.copyfile(upstream_checkpoint, path)
    r = export_cli(repo_root, "--weights", path, "--include", "onnx", fmt)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: --include {fmt}:"), r.stderr
    assert all(w in lines[0] for w in words)
    assert not path.with_suffix(".onnx").exists()  # nothing half-written


def test_bad_inputs_exit_2(repo_root, upstream_checkpoint, tmp_path):
    r = export_cli(repo_root, "--weights", tmp_path / "missing.pt")
    assert r.returncode == 2 and "missing.pt: file not found" in r.stderr
    assert "Traceback" not in r.stderr
    r = export_cli(repo_root, "--weights", upstream_checkpoint, "--half", "--device", "cpu")
    assert r.returncode == 2 and "--half" in r.stderr and "GPU" in r.stderr


def test_simplify_without_a_simplifier_warns_and_keeps_the_model(monkeypatch, capsys, ours):
    path, _ = ours
    model = onnx.load(str(path.with_suffix(".onnx")))
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "onnxsim", None)
    set_logging()  # the warning goes through the yolov5 logger, as under export.py
    assert simplify_onnx(model) is model
    out = capsys.readouterr().out
    assert "neither onnxslim nor onnxsim is installed" in out and "unsimplified" in out

