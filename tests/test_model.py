"""YOLOv5n parity with upstream v6.0 (fixtures/yolov5n_*), and the state of a freshly built model.

Numerical note: the fixtures were produced on a CPU without AVX-512. Run with the same instruction sets
(ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, 2 threads), our eval and train-mode outputs are
bit-identical to upstream's, which shows the same ops run in the same order; `test_parity_bit_exact_on_avx2`
checks that in a subprocess. On other instruction sets fp32 rounding differs by ~1 ulp per op and grows
through the 60 layers, so the in-process tests use the fixture README's tolerance (rtol=atol=1e-3).
"""
import json
import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from models.common import Conv
from models.yolo import Detect, Model

README_TOL = dict(rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def io(fixtures_dir):
    return dict(np.load(fixtures_dir / "yolov5n_io.npz"))


@pytest.fixture(scope="module")
def state_dict(upstream_state_dict):
    return upstream_state_dict


def loaded_model(state_dict):
    model = Model("yolov5n.yaml")
    model.load_state_dict(state_dict, strict=True)
    return model


@pytest.fixture(scope="module")
def eval_out(state_dict, io):
    """(model in eval mode with the fixture weights, y, raw) for the fixture input; computed once."""
    model = loaded_model(state_dict).eval()
    with torch.no_grad():
        y, raw = model(torch.from_numpy(io["x"]))
    return model, y, raw


def bn_stats(model, names):
    modules = dict(model.named_modules())
    return [np.concatenate([getattr(modules[n], attr).numpy() for n in names])
            for attr in ("running_mean", "running_var")]


def test_state_dict_keys_and_shapes_equal_upstream(state_dict):
    ours = Model("yolov5n.yaml").state_dict()
    assert list(ours) == list(state_dict)  # same names, same order
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state_dict.items()}
    assert "model.24.anchors" in ours and "model.2.m.0.cv1.conv.weight" in ours
    # pickles name classes by module path: these must be the upstream paths
    assert (Model.__module__, Detect.__module__, Conv.__module__) == ("models.yolo", "models.yolo", "models.common")


def test_eval_output_matches_upstream(eval_out, io, fixture_manifest):
    model, y, raw = eval_out
    assert y.shape == tuple(fixture_manifest["model"]["y_eval_shape"])
    np.testing.assert_allclose(y.numpy(), io["y_eval"], **README_TOL)
    for i in range(3):  # eval also returns the raw per-level logits, same as train-mode outputs up to BN mode
        assert raw[i].shape == io[f"train_out_{i}"].shape
    assert model.stride.tolist() == [8.0, 16.0, 32.0] == io["stride"].tolist()
    np.testing.assert_array_equal(model.model[-1].anchors.numpy(), io["anchors"])


def test_train_outputs_and_bn_updates_match_upstream(state_dict, io):
    model = loaded_model(state_dict).train()  # fresh copy: a train forward changes the BN statistics
    with torch.no_grad():
        p = model(torch.from_numpy(io["x"]))
    assert isinstance(p, list) and len(p) == 3
    for i in range(3):
        np.testing.assert_allclose(p[i].numpy(), io[f"train_out_{i}"], **README_TOL)
    mean, var = bn_stats(model, list(io["bn_names"]))
    np.testing.assert_allclose(mean, io["bn_running_mean_after_train_fwd"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, io["bn_running_var_after_train_fwd"], rtol=1e-5, atol=1e-6)
    tracked = [m.num_batches_tracked.item() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert tracked == io["bn_num_batches_tracked_after_train_fwd"].tolist()


def test_fused_output_matches_upstream(state_dict, io):
    model = loaded_model(state_dict).eval().fuse()
    assert not any(hasattr(m, "bn") for m in model.modules() if isinstance(m, Conv))
    assert len(list(model.modules())) == 213
    with torch.no_grad():
        y, _ = model(torch.from_numpy(io["x"]))
    ref = io["y_eval"][0:1] + io["y_eval_fused_minus_y_eval_img0"]
    np.testing.assert_allclose(y[0:1].numpy(), ref, **README_TOL)


def test_eval_decoding_follows_the_v6_formulas(eval_out, io):
    model, y, raw = eval_out
    rows = []
    for i, (p, stride) in enumerate(zip(raw, (8, 16, 32))):
        s = 1 / (1 + np.exp(-p.double().numpy()))  # (bs, na, ny, nx, 85)
        ny, nx = s.shape[2:4]
        gx, gy = np.meshgrid(np.arange(nx), np.arange(ny))
        xy = (2 * s[..., :2] - 0.5 + np.stack((gx, gy), -1)) * stride
        wh = (2 * s[..., 2:4]) ** 2 * io["anchors_pixels"][i][None, :, None, None, :]
        rows.append(np.concatenate((xy, wh, s[..., 4:]), -1).reshape(2, -1, 85))
    np.testing.assert_allclose(y.numpy(), np.concatenate(rows, 1), rtol=1e-5, atol=1e-4)
    model.model[-1].inplace = False  # the out-of-place branch gives the same values
    try:
        with torch.no_grad():
            y2, _ = model(torch.from_numpy(io["x"]))
    finally:
        model.model[-1].inplace = True
    assert torch.equal(y, y2)


PARITY_SCRIPT = r"""
import json, sys
import numpy as np, torch
torch.set_num_threads(2)
from models.yolo import Model
fx = sys.argv[1]
io = np.load(fx + '/yolov5n_io.npz')
from utils.io.checkpoint import load_checkpoint
sd = {k: v.float() if v.is_floating_point() else v
      for k, v in load_checkpoint(fx + '/yolov5n_upstream_ckpt.pt')['model'].state_dict().items()}
x = torch.from_numpy(io['x'])
out = {'capability': getattr(torch.backends.cpu, 'get_cpu_capability', lambda: 'unknown')()}
m = Model('yolov5n.yaml'); m.load_state_dict(sd, strict=True); m.eval()
with torch.no_grad():
    out['y_eval'] = float(np.abs(m(x)[0].numpy() - io['y_eval']).max())
    m.fuse()
    yf = m(x)[0][0:1].numpy()
out['y_fused'] = float(np.abs(yf - (io['y_eval'][0:1] + io['y_eval_fused_minus_y_eval_img0'])).max())
m = Model('yolov5n.yaml'); m.load_state_dict(sd, strict=True); m.train()
with torch.no_grad():
    p = m(x)
out['train'] = max(float(np.abs(p[i].numpy() - io['train_out_%d' % i]).max()) for i in range(3))
mods = dict(m.named_modules())
names = list(io['bn_names'])
for attr in ('running_mean', 'running_var'):
    ours = np.concatenate([getattr(mods[n], attr).numpy() for n in names])
    out['bn_' + attr] = float(np.abs(ours - io['bn_%s_after_train_fwd' % attr]).max())
print(json.dumps(out))
"""


def _has_avx2():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _has_avx2(), reason="bit-exact parity needs an x86-64 CPU with AVX2 (fixture machine)")
def test_parity_bit_exact_on_avx2(repo_root, shared_dir):
    """Same instruction set and thread count as the fixture run: eval, train and BN updates are exact.

    Only the large set is checked: its outputs were made with the kernels this machine picks when pinned
    to AVX2. The in-repository set's are not reproduced bit for bit here (measured: 0.17 px on boxes,
    2.4e-4 on logits, within the tolerance the other tests use), so for it the tolerance tests are the
    check. If this fails on a new machine while the tolerance-based tests pass, oneDNN picked different
    blocking for that CPU; the tolerance tests remain the correctness check."""
    fixtures_dir = shared_dir / "fixtures"
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", OMP_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(repo_root / "yolov5"), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", PARITY_SCRIPT, str(fixtures_dir)], cwd=repo_root / "yolov5",
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    err = json.loads(run.stdout.strip().splitlines()[-1])
    if err["capability"] != "AVX2":
        pytest.skip(f"could not pin PyTorch to AVX2 kernels (capability {err['capability']})")
    assert err["y_eval"] <= 1e-4 and err["train"] <= 1e-4, err
    assert err["bn_running_mean"] <= 1e-6 and err["bn_running_var"] <= 1e-6, err
    # Fusing is not bit-exact even here (measured max 0.064 px on boxes up to ~1500 px; the README
    # documents up to 0.145 px between fused and unfused upstream outputs): README tolerance.
    assert err["y_fused"] <= 0.15, err


def test_fresh_model_state(tmp_path):
    torch.manual_seed(0)
    model = Model("yolov5n.yaml")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 57
    for bn in bns:  # one train-mode stride probe of zeros with the default momentum 0.1
        assert torch.allclose(bn.running_var, torch.full_like(bn.running_var, 0.9))
        assert torch.count_nonzero(bn.running_mean) == 0
        assert bn.num_batches_tracked.item() == 1
        assert bn.eps == 1e-3 and bn.momentum == 0.03
    detect = model.model[-1]
    assert isinstance(detect, Detect) and (detect.na, detect.nc, detect.nl, detect.no) == (3, 80, 3, 85)
    assert all(g.shape == (1,) for g in detect.grid + detect.anchor_grid)  # never evaluated
    for conv, stride in zip(detect.m, (8, 16, 32)):
        bound = 1 / math.sqrt(conv.in_channels)  # PyTorch's default bias init is U(-bound, bound)
        b = conv.bias.detach().view(3, 85)
        obj_prior = math.log(8 / (640 / stride) ** 2)
        assert ((b[:, 4] - obj_prior).abs() <= bound).all()
        cls_prior = math.log(0.6 / (80 - 0.999999))
        assert ((b[:, 5:] - cls_prior).abs() <= bound).all()
        assert abs(b[:, 5:].mean().item() - cls_prior) < 0.03  # 240 uniform draws around the prior
    assert math.log(8 / (640 / 8) ** 2) == pytest.approx(-6.685, abs=1e-3)
    b8 = detect.m[0].bias.detach().view(3, 85)[:, 4]
    assert b8.mean().item() == pytest.approx(-6.685, abs=0.125)


def test_single_class_bias_prior_uses_v61_fix():
    model = Model("yolov5n.yaml", nc=1)
    b = model.model[-1].m[2].bias.detach().view(3, 6)[:, 5]
    assert ((b - math.log(0.6 / 1e-6)).abs() <= 1 / math.sqrt(256)).all()  # ~ +13.3, i.e. sigmoid ~ 1


def test_upstream_pickled_checkpoint_runs_with_our_classes(fixtures_dir, io):
    ckpt = torch.load(fixtures_dir / "yolov5n_upstream_ckpt.pt", map_location="cpu", weights_only=False)
    model = ckpt["model"]
    assert type(model) is Model and type(model.model[-1]) is Detect
    detect = model.model[-1]
    assert detect.anchors.dtype == torch.float16 and detect.grid[0].dtype == torch.float16
    model = model.float().eval()
    assert detect.stride.dtype == torch.float32 and detect.grid[0].dtype == torch.float32
    with torch.no_grad():
        y, _ = model(torch.from_numpy(io["x"]))
    np.testing.assert_allclose(y.numpy(), io["y_eval"], **README_TOL)
    n_layers, n_p, _, gflops = model.fuse().info()
    assert (n_layers, n_p) == (213, 1867405) and round(gflops, 1) == 4.5


def test_our_model_survives_pickle_and_deepcopy(tmp_path, eval_out, io):
    import copy
    model, y, _ = eval_out
    path = tmp_path / "m.pt"
    torch.save({"model": copy.deepcopy(model).half()}, path)
    back = torch.load(path, weights_only=False)["model"].float().eval()
    assert back.yaml_file == "yolov5n.yaml" and back.save == [4, 6, 10, 14, 17, 20, 23]
    assert back.names == [str(i) for i in range(80)] and back.inplace is True
    with torch.no_grad():  # fixture weights are fp16-representable, so the fp16 round trip is lossless
        assert torch.equal(back(torch.from_numpy(io["x"]))[0], y)


def test_conversions_rebuild_grid_caches(eval_out, io):
    """.to()/.double()/channels_last drop Detect's grid caches; the next call rebuilds them in the new
    dtype (v6.0 converted them, which fails for channels_last: the caches are 5-D)."""
    import copy
    model, y, _ = eval_out
    x = torch.from_numpy(io["x"])
    m = copy.deepcopy(model)
    assert m.model[-1].grid[0].shape[2:4] == (x.shape[2] // 8, x.shape[3] // 8)  # built by the earlier call
    m.to(memory_format=torch.channels_last)
    assert m.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(g.shape == (1,) for g in m.model[-1].grid + m.model[-1].anchor_grid)
    with torch.no_grad():
        np.testing.assert_allclose(m(x.contiguous(memory_format=torch.channels_last))[0].numpy(), y.numpy(),
                                   **README_TOL)  # another layout: float32 rounding differs
        y64 = m.double()(x.double())[0]
    detect = m.model[-1]
    assert detect.grid[2].dtype == detect.anchor_grid[2].dtype == torch.float64
    assert detect.grid[2].shape == (1, 3, x.shape[2] // 32, x.shape[3] // 32, 2)
    np.testing.assert_allclose(y64.numpy(), y.numpy(), **README_TOL)
