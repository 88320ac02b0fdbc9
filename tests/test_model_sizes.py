"""Sizes of the five v6.0 P5 models (and yolov5s6) against the published / computed v6.0 numbers.

Upstream v6.0 `model.info()` figures: module counts, parameter counts (unfused and fused),
state_dict sizes, and the README GFLOPs at 640, which upstream measured on the fused model (our fused counts round to exactly those
values); the unfused summary also counts BatchNorm work and lands within 2 %.
"""
import logging

import pytest
import torch

from models.yolo import Model

V60 = {  # modules, params, fused modules, fused params, README params (M), README GFLOPs, state_dict keys
    "n": (270, 1872157, 213, 1867405, 1.9, 4.5, 349),
    "s": (270, 7235389, 213, 7225885, 7.2, 16.5, 349),
    "m": (369, 21190557, 290, 21172173, 21.2, 49.0, 481),
    "l": (468, 46563709, 367, 46533693, 46.5, 109.1, 613),
    "x": (567, 86749405, 444, 86705005, 86.7, 205.7, 745),
}
# Output channels of layer 0, the P5 output (layer 23), and C3 repeats of layers 2/4/6, per model.
CHANNELS = {"n": (16, 256, 1, 2, 3), "s": (32, 512, 1, 2, 3), "m": (48, 768, 2, 4, 6),
            "l": (64, 1024, 3, 6, 9), "x": (80, 1280, 4, 8, 12)}


@pytest.mark.parametrize("size", list(V60))
def test_v60_model_sizes(size, caplog):
    modules, params, f_modules, f_params, readme_m, readme_gflops, n_keys = V60[size]
    with caplog.at_level(logging.INFO, logger="yolov5"):
        model = Model(f"yolov5{size}.yaml")
    n_layers, n_p, n_g, gflops = model.info()
    assert (n_layers, n_p, n_g) == (modules, params, params)
    assert abs(gflops - readme_gflops) / readme_gflops < 0.02
    assert f"Model Summary: {modules} layers, {params} parameters, {params} gradients, " in caplog.text
    sd = model.state_dict()
    assert len(sd) == n_keys
    c0, c23, r2, r4, r6 = CHANNELS[size]
    assert sd["model.0.conv.weight"].shape == (c0, 3, 6, 6)
    assert model.model[23].cv3.conv.out_channels == c23
    assert [len(model.model[i].m) for i in (2, 4, 6)] == [r2, r4, r6]
    assert model.model[-1].m[0].weight.shape[0] == 255
    assert model.save == [4, 6, 10, 14, 17, 20, 23]
    assert [m.type for m in model.model][:3] == ["models.common.Conv"] * 2 + ["models.common.C3"]
    assert model.model[11].type == "torch.nn.modules.upsampling.Upsample"

    n_layers, n_p, _, gflops = model.fuse().info()
    assert (n_layers, n_p) == (f_modules, f_params)
    assert round(n_p / 1e6, 1) == readme_m
    assert round(gflops, 1) == readme_gflops


def test_flop_probe_scales_exactly_with_image_area():
    from utils.flops import gflops_at
    model = Model("yolov5n.yaml")
    model.info()
    assert all(g.shape == (1,) for g in model.model[-1].grid)  # info() leaves no probe-sized grids behind
    at_32 = gflops_at(model, 3, 32, 640)
    at_64 = gflops_at(model, 3, 64, 640)
    assert at_32 == pytest.approx(at_64, rel=1e-9)
    assert gflops_at(model, 3, 64, (320, 640)) == pytest.approx(at_64 / 2, rel=1e-9)


def test_flop_counter_counts_convolution_macs_by_hand():
    from utils.flops import count_macs
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 1, 1, bias=True), torch.nn.BatchNorm2d(8),
                              torch.nn.SiLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 10)).train()
    macs = count_macs(net, torch.zeros(1, 3, 4, 4))
    conv = 8 * 4 * 4 * (3 * 9 + 1)
    bn = 2 * 8 * 4 * 4
    linear = 10 * 8 * 16
    assert macs == conv + bn + linear
    assert net.training and all(m.training for m in net)  # modes restored


def test_p6_model_from_hub_folder():
    model = Model("yolov5s6.yaml")
    detect = model.model[-1]
    assert model.stride.tolist() == [8.0, 16.0, 32.0, 64.0] and detect.nl == 4
    assert (detect.anchors[3] * 64).tolist() == [[436.0, 615.0], [739.0, 380.0], [925.0, 792.0]]
    assert model.save == [4, 6, 8, 12, 16, 20, 23, 26, 29, 32]
    _, n_p, _, gflops = model.fuse().info()
    assert round(n_p / 1e6, 1) == 12.6 and round(gflops, 1) == 16.8  # v6.0 README: 12.6M params, 16.8 GFLOPs
