"""utils/optim: parameter groups, SGD/Adam, accumulation, weight-decay scaling, LR lambdas, warmup."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import models.yolo as yolo
from utils.errors import UserError
from utils.training.optim import (accumulate_steps, build_lr_lambda, build_optimizer, build_scheduler, linear, one_cycle,
                         scaled_weight_decay, split_parameters, warmup, warmup_iterations)

HYP = {"lr0": 0.01, "lrf": 0.1, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
       "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}


@pytest.fixture(scope="module")
def yolov5s(repo_root):
    return yolo.Model(str(repo_root / "yolov5" / "models" / "yolov5s.yaml"))


def conv_bn(c1, c2):
    return nn.Sequential(nn.Conv2d(c1, c2, 3, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


def tiny_detector():
    """Same layer kinds as YOLOv5: Conv(no bias)+BN blocks and a biased 1x1 head conv."""
    return nn.Sequential(conv_bn(3, 8), conv_bn(8, 8), conv_bn(8, 16), nn.Conv2d(16, 255, 1))


def ids(params):
    return {id(p) for p in params}


def test_yolov5s_group_sizes_match_v6(yolov5s):
    bn, weights, biases = split_parameters(yolov5s)
    assert (len(bn), len(weights), len(biases)) == (57, 60, 60)
    assert ids(bn) | ids(weights) | ids(biases) == ids(yolov5s.parameters())
    opt = build_optimizer(yolov5s, HYP, batch_size=16, accumulate=4)
    assert [len(g["params"]) for g in opt.param_groups] == [57, 60, 60]


def test_tiny_detector_groups_and_sgd_settings():
    model = tiny_detector()
    bn, weights, biases = split_parameters(model)
    assert ids(bn) == {id(model[i][1].weight) for i in range(3)}
    assert ids(weights) == {id(model[i][0].weight) for i in range(3)} | {id(model[3].weight)}
    assert ids(biases) == {id(model[i][1].bias) for i in range(3)} | {id(model[3].bias)}
    opt = build_optimizer(model, HYP, batch_size=16, accumulate=4)
    assert isinstance(opt, torch.optim.SGD)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0005, 0.0]
    for g in opt.param_groups:
        assert g["lr"] == 0.01 and g["momentum"] == 0.937 and g["nesterov"] is True


def test_adam_uses_momentum_as_beta1():
    opt = build_optimizer(tiny_detector(), HYP, batch_size=40, accumulate=2, adam=True)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["betas"] == (0.937, 0.999)
    assert "momentum" not in opt.param_groups[0]
    assert opt.param_groups[1]["weight_decay"] == pytest.approx(0.0005 * 40 * 2 / 64)


def test_every_parameter_lands_in_a_group_v7_fix():
    """Parameters not called weight/bias (MultiheadAttention's in_proj_*) are optimized too."""
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.MultiheadAttention(8, 2), nn.GroupNorm(2, 8))
    bn, weights, biases = split_parameters(model)
    mha = model[2]
    assert ids(bn) == {id(model[1].weight), id(model[3].weight)}
    assert id(mha.in_proj_weight) in ids(weights) and id(mha.out_proj.weight) in ids(weights)
    assert id(mha.in_proj_bias) in ids(biases)
    assert len(bn) + len(weights) + len(biases) == len(list(model.parameters()))


@pytest.mark.parametrize("bs, acc", [(1, 64), (16, 4), (24, 3), (32, 2), (40, 2), (64, 1), (128, 1), (256, 1)])
def test_accumulate_is_round_64_over_bs_bankers_rounding(bs, acc):
    assert accumulate_steps(bs) == acc


@pytest.mark.parametrize("bs, factor", [(16, 1.0), (24, 1.125), (32, 1.0), (40, 1.25), (64, 1.0), (128, 2.0)])
def test_weight_decay_scaling(bs, factor):
    assert scaled_weight_decay(0.0005, bs, accumulate_steps(bs)) == pytest.approx(0.0005 * factor, rel=1e-12)


def test_lr_lambdas_at_start_middle_end():
    epochs, lrf = 300, 0.1
    cos = build_lr_lambda(lrf, epochs)
    assert (cos(0), cos(150), cos(300)) == (pytest.approx(1.0), pytest.approx(0.55), pytest.approx(0.1))
    assert cos(75) == pytest.approx(((1 - math.cos(math.pi / 4)) / 2) * (lrf - 1) + 1)
    lin = build_lr_lambda(lrf, epochs, linear_lr=True)
    assert (lin(0), lin(150), lin(300)) == (pytest.approx(1.0), pytest.approx(0.55), pytest.approx(0.1))
    assert lin(100) == pytest.approx(1 - 100 / 300 * 0.9)
    assert linear(0.2, 1)(0) == 1.0  # --epochs 1 works (v6.0's epochs - 1 denominator divided by zero)
    assert one_cycle(0.0, 1.0, 10)(5) == pytest.approx(0.5)


def test_scheduler_epochs_0_and_1_share_lf0():
    model = tiny_detector()
    opt = build_optimizer(model, HYP, 16, 4)
    lf = build_lr_lambda(HYP["lrf"], 10)
    sched = build_scheduler(opt, lf)
    used = []
    for epoch in range(5):
        used.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    expected = [0.01 * lf(max(e - 1, 0)) for e in range(5)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert all(g["initial_lr"] == 0.01 for g in opt.param_groups)


def test_scheduler_positioned_for_resume():
    opt = build_optimizer(tiny_detector(), HYP, 16, 4)
    lf = build_lr_lambda(HYP["lrf"], 10)
    sched = build_scheduler(opt, lf, start_epoch=4)
    assert sched.last_epoch == 3
    opt.step()
    sched.step()  # end of epoch 4 -> epoch 5 trains at lf(4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * lf(4))


def test_warmup_iterations_minimum_100():
    assert warmup_iterations(3.0, 8) == 100  # coco128 at bs 16: v6.2 minimum
    assert warmup_iterations(3.0, 100) == 300
    assert warmup_iterations(3.0, 8, minimum=1000) == 1000  # v6.0's rule on request
    assert warmup_iterations(0.5, 1001) == 500  # round(500.5) = 500, Python rounding


def test_warmup_ramps_at_start_middle_end():
    model = tiny_detector()
    opt = build_optimizer(model, HYP, batch_size=16, accumulate=4)
    lf = build_lr_lambda(HYP["lrf"], 10)
    build_scheduler(opt, lf)
    nw, epoch = 200, 2
    target = 0.01 * lf(epoch)

    assert warmup(0, nw, opt, epoch, lf, HYP, 16) == 1
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.1]
    assert all(g["momentum"] == pytest.approx(0.8) for g in opt.param_groups)

    # halfway: accumulate = round(interp(100, [0, 200], [1, 4])) = round(2.5) = 2 (half to even)
    assert warmup(100, nw, opt, epoch, lf, HYP, 16) == 2
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == pytest.approx([target / 2, target / 2, (0.1 + target) / 2], rel=1e-12)
    assert opt.param_groups[0]["momentum"] == pytest.approx((0.8 + 0.937) / 2)

    assert warmup(nw, nw, opt, epoch, lf, HYP, 16) == 4
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([target] * 3, rel=1e-12)
    assert opt.param_groups[2]["momentum"] == pytest.approx(0.937)

    for g in opt.param_groups:  # after warmup nothing is touched
        g["lr"] = 0.123
    assert warmup(nw + 1, nw, opt, epoch, lf, HYP, 16) == 4
    assert [g["lr"] for g in opt.param_groups] == [0.123] * 3


def test_warmup_accumulate_ramp_matches_interp_for_bs_8():
    opt = build_optimizer(tiny_detector(), HYP, batch_size=8, accumulate=8)
    lf = build_lr_lambda(HYP["lrf"], 10)
    build_scheduler(opt, lf)
    got = [warmup(ni, 100, opt, 0, lf, HYP, 8) for ni in range(0, 101, 10)]
    assert got == [max(1, int(np.round(np.interp(ni, [0, 100], [1, 8])))) for ni in range(0, 101, 10)]
    assert got[0] == 1 and got[-1] == 8


def test_warmup_leaves_adam_betas_alone():
    opt = build_optimizer(tiny_detector(), HYP, 16, 4, adam=True)
    lf = build_lr_lambda(HYP["lrf"], 10)
    build_scheduler(opt, lf)
    warmup(0, 100, opt, 0, lf, HYP, 16)
    assert opt.param_groups[0]["betas"] == (0.937, 0.999)
    assert opt.param_groups[2]["lr"] == 0.1


def test_missing_hyperparameters_are_a_user_error():
    with pytest.raises(UserError, match="momentum"):
        build_optimizer(tiny_detector(), {"lr0": 0.01, "weight_decay": 0.0005}, 16, 4)
    opt = build_optimizer(tiny_detector(), HYP, 16, 4)
    build_scheduler(opt, build_lr_lambda(0.1, 10))
    with pytest.raises(UserError, match="warmup_bias_lr"):
        warmup(0, 100, opt, 0, build_lr_lambda(0.1, 10), {"momentum": 0.9, "warmup_momentum": 0.8}, 16)


def test_optional_nominal_batch_size_in_hyp():
    """hyp['nbs'] (our addition) changes images per optimizer step; absent, v6.0's 64 applies."""
    from utils.training.optim import accumulate_steps, nominal_batch_size, scaled_weight_decay
    assert nominal_batch_size({}) == 64 and nominal_batch_size(None) == 64
    assert nominal_batch_size({"nbs": 16}) == 16
    assert accumulate_steps(16, nominal_batch_size({"nbs": 16})) == 1
    assert accumulate_steps(4, 16) == 4
    assert scaled_weight_decay(0.0005, 16, 1, 16) == 0.0005


@pytest.mark.parametrize("linear_lr", [True, False])
def test_lr_past_epochs_is_held_at_lrf(linear_lr):
    """--iters can run epochs past --epochs: every iteration there trains at lr0 * lrf (never < 0).

    Follows the trainer per iteration: warmup below nw, one scheduler step per epoch. 3 planned
    epochs of 20 batches (warmup 100 iterations = 5 epochs) then 5 more epochs."""
    epochs, nb, lrf = 3, 20, HYP["lrf"]
    opt = build_optimizer(tiny_detector(), HYP, 16, 4)
    lf = build_lr_lambda(lrf, epochs, linear_lr=linear_lr)
    sched = build_scheduler(opt, lf)
    nw = warmup_iterations(HYP["warmup_epochs"], nb)
    after_planned = []
    for epoch in range(epochs + 5):
        for i in range(nb):
            ni = i + nb * epoch
            if ni <= nw:
                warmup(ni, nw, opt, epoch, lf, HYP, 16)
            lrs = [g["lr"] for g in opt.param_groups]
            assert min(lrs) >= 0, (epoch, i, lrs)
            if epoch > epochs and ni > nw:
                after_planned.append(lrs)
        opt.step()
        sched.step()
    assert after_planned == [[pytest.approx(0.01 * lrf, rel=1e-12)] * 3] * (nb * 3 - 1)
    assert lf(epochs + 50) == pytest.approx(lrf) and lf(epochs) == pytest.approx(lrf)
