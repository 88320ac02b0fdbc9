"""utils/ema.ModelEMA: v6.0 decay ramp, averaging of params and float buffers, DP unwrap, resume."""
import math

import pytest
import torch
import torch.nn as nn

import models.yolo as yolo
from utils.training.ema import EMA_ATTRIBUTES, ModelEMA
from utils.device.parallel import de_parallel, is_parallel


def tiny_model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():  # non-trivial running statistics
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    return m


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.dtype.is_floating_point:
                v.add_(torch.randn(v.shape, generator=g))
            else:
                v.add_(1)


def test_decay_ramp_matches_v6_formula():
    ema = ModelEMA(tiny_model())
    assert ema.decay(1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)), rel=1e-12)
    assert ema.decay(1) == pytest.approx(4.99825e-4, rel=1e-5)
    assert ema.decay(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)), rel=1e-12)  # 0.63206
    assert ema.decay(100000) == pytest.approx(0.9999, abs=1e-12)


def test_update_averages_params_and_float_buffers_only():
    model = tiny_model()
    ema = ModelEMA(model)
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    perturb(model, seed=1)
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    after, current = ema.ema.state_dict(), model.state_dict()
    for k, v in after.items():
        if v.dtype.is_floating_point:  # weights, bias, BN weight/bias/running_mean/running_var
            torch.testing.assert_close(v, d * before[k] + (1 - d) * current[k], rtol=1e-6, atol=1e-7)
        else:  # num_batches_tracked: integer, untouched
            assert torch.equal(v, before[k]) and not torch.equal(v, current[k])
    assert ema.updates == 1
    assert "1.running_var" in after and not torch.equal(after["1.running_var"], before["1.running_var"])


def test_ema_copy_is_eval_mode_without_gradients_and_independent():
    model = tiny_model().train()
    ema = ModelEMA(model, updates=5)
    assert ema.updates == 5
    assert not ema.ema.training and model.training
    assert all(not p.requires_grad for p in ema.ema.parameters())
    assert all(p.requires_grad for p in model.parameters())
    w = model[0].weight.detach().clone()
    ema.update(model)
    assert torch.equal(model[0].weight, w)  # the model itself is never modified
    assert ema.ema[0].weight.data_ptr() != model[0].weight.data_ptr()


def test_data_parallel_wrapper_is_unwrapped():
    model = tiny_model()
    wrapped = nn.DataParallel(model)
    assert is_parallel(wrapped) and not is_parallel(model)
    assert de_parallel(wrapped) is model and de_parallel(model) is model
    ema = ModelEMA(wrapped)
    assert isinstance(ema.ema, nn.Sequential)
    perturb(model, seed=2)
    ema.update(wrapped)  # keys of the bare model, no 'module.' prefix problems
    reference = ModelEMA(tiny_model())
    reference.update(model)
    for a, b in zip(ema.ema.state_dict().values(), reference.ema.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_update_attr_copies_only_the_listed_public_attributes():
    model = tiny_model()
    ema = ModelEMA(model)
    model.nc, model.names, model.hyp = 3, ["a", "b", "c"], {"lr0": 0.01}
    model.other, model._private = "no", "no"
    ema.update_attr(nn.DataParallel(model))
    assert (ema.ema.nc, ema.ema.names, ema.ema.hyp) == (3, ["a", "b", "c"], {"lr0": 0.01})
    assert not hasattr(ema.ema, "other") and not hasattr(ema.ema, "_private")
    assert set(EMA_ATTRIBUTES) == {"yaml", "nc", "hyp", "names", "stride", "class_weights"}
    ema.update_attr(model, include=())  # empty include: every public attribute
    assert ema.ema.other == "no" and not hasattr(ema.ema, "_private")


def test_restore_continues_exactly_like_an_uninterrupted_run():
    model = tiny_model()
    straight = ModelEMA(model)
    for step in range(6):
        perturb(model, seed=10 + step)
        straight.update(model)
        if step == 2:  # "checkpoint" after 3 updates: the EMA module and the update count
            saved_state = {k: v.clone() for k, v in straight.ema.state_dict().items()}
            saved_updates = straight.updates
    resumed = ModelEMA(tiny_model(seed=99))  # fresh EMA of a differently initialised model
    resumed.restore(saved_state, saved_updates)
    model_again = tiny_model()
    for step in range(6):
        perturb(model_again, seed=10 + step)
        if step > 2:
            resumed.update(model_again)
    assert resumed.updates == straight.updates == 6
    for k, v in straight.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k


def test_restore_from_fp16_module_converts_to_fp32():
    model = tiny_model()
    ema = ModelEMA(model)
    half = ModelEMA(tiny_model(seed=3)).ema.half()
    ema.restore(half, updates=7)
    assert ema.ema[0].weight.dtype == torch.float32
    torch.testing.assert_close(ema.ema[0].weight, half[0].weight.float())
    assert ema.updates == 7


def test_yolov5n_ema_tracks_detect_anchors(repo_root):
    model = yolo.Model(str(repo_root / "yolov5" / "models" / "yolov5n.yaml"))
    ema = ModelEMA(model)
    with torch.no_grad():
        model.model[-1].anchors.mul_(2.0)  # e.g. AutoAnchor after the EMA was created
    for _ in range(3):
        ema.update(model)
    d = [ema.decay(u) for u in (1, 2, 3)]
    weight_on_old = d[0] * d[1] * d[2]  # share of the original anchors left after three updates
    expected = model.model[-1].anchors * (1 - weight_on_old / 2)
    torch.testing.assert_close(ema.ema.model[-1].anchors, expected, rtol=1e-6, atol=1e-6)


def reference_updates(model, n, seed0):
    """v6.0's per-tensor update written out: avg = avg * d + current * (1 - d), n times."""
    average = {k: v.clone() for k, v in model.state_dict().items()}
    for u in range(1, n + 1):
        perturb(model, seed=seed0 + u)
        d = 0.9999 * (1 - math.exp(-u / 2000))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                average[k].mul_(d).add_(v, alpha=1.0 - d)
    return average


@pytest.mark.parametrize("foreach", [True, False])
def test_update_is_bit_identical_to_the_per_tensor_formula(foreach, monkeypatch):
    import utils.training.ema as ema_module
    if not foreach:  # the loop devices without foreach kernels (an MLU) take
        monkeypatch.setattr(ema_module, "_FOREACH_DEVICES", ())
    expected = reference_updates(tiny_model(seed=3), 3, seed0=10)
    model = tiny_model(seed=3)
    ema = ModelEMA(model)
    for u in range(1, 4):
        perturb(model, seed=10 + u)
        ema.update(model)
    got = ema.ema.state_dict()
    for k, v in expected.items():
        if v.dtype.is_floating_point:
            assert torch.equal(got[k], v), k  # every bit, after 3 updates
        else:
            assert torch.equal(got[k], tiny_model(seed=3).state_dict()[k])  # untouched integer buffer
