"""Model yaml handling: cfg name resolution, nc/anchors overrides, bad yaml, anchor order, TTA."""
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import utils.io.model_files as model_files
from models.yolo import Model
from utils.errors import UserError
from utils.io.model_files import find_yaml


@pytest.fixture(scope="module")
def n_cfg(repo_root):
    with open(repo_root / "yolov5" / "models" / "yolov5n.yaml") as f:
        return yaml.safe_load(f)


def write_yaml(path, d):
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------- resolution

def test_bare_names_resolve_inside_the_project(repo_root):
    models_dir = repo_root / "yolov5" / "models"
    assert find_yaml("yolov5s.yaml") == str(models_dir / "yolov5s.yaml")
    assert find_yaml("yolov5s6.yaml") == str(models_dir / "hub" / "yolov5s6.yaml")
    # yolov5_model/ keeps a byte-identical copy of yolov5m.yaml: counts as one match, package copy wins
    assert (repo_root / "yolov5_model" / "yolov5m.yaml").read_bytes() == (models_dir / "yolov5m.yaml").read_bytes()
    assert find_yaml("yolov5m.yaml") == str(models_dir / "yolov5m.yaml")
    assert Model("yolov5m.yaml").yaml_file == "yolov5m.yaml"


def test_existing_path_is_used_as_is(tmp_path, n_cfg):
    path = write_yaml(tmp_path / "custom.yaml", {**n_cfg, "nc": 7})
    assert find_yaml(str(path)) == str(path)
    model = Model(str(path))
    assert model.yaml_file == "custom.yaml" and model.yaml["nc"] == 7 and model.model[-1].nc == 7
    assert find_yaml("") == ""


def test_missing_cfg_lists_where_it_looked(repo_root):
    with pytest.raises(UserError) as e:
        Model("yolov5q.yaml")
    msg = str(e.value)
    assert "'yolov5q.yaml' not found" in msg
    for d in ("yolov5/models", "yolov5/data", "yolov5/utils", "yolov5_model"):
        assert str(repo_root / d) in msg


def test_ambiguous_name_asks_for_exact_path(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    (a / "sub" / "net.yaml").write_text("nc: 1\n")
    (b / "net.yaml").write_text("nc: 2\n")
    monkeypatch.setattr(model_files, "search_dirs", lambda: [a, b])
    with pytest.raises(UserError, match="ambiguous") as e:
        find_yaml("net.yaml")
    assert str(a / "sub" / "net.yaml") in str(e.value) and str(b / "net.yaml") in str(e.value)
    (b / "net.yaml").write_text("nc: 1\n")  # identical copies are one file
    assert find_yaml("net.yaml") == str(a / "sub" / "net.yaml")


def test_suffix_and_url_are_rejected():
    with pytest.raises(UserError, match=r"must end with \.yaml or \.yml"):
        find_yaml("yolov5s.txt")
    with pytest.raises(UserError, match="downloading"):
        find_yaml("https://example.com/yolov5s.yaml")


# ---------------------------------------------------------------------------------------- bad yaml

def test_weights_by_bare_name_come_from_the_prepare_folders(tmp_path, monkeypatch, upstream_checkpoint):
    """--weights yolov5s.pt (v6.0's default, which v6.0 downloaded) is looked up where prepare.sh puts
    weights: $MODEL_ROOT, then <repo>/yolov5_model. Paths with another folder are never redirected."""
    from utils.io.model_files import find_weights
    root = tmp_path / "models_root"
    root.mkdir()
    (root / "yolov5s.pt").write_bytes(upstream_checkpoint.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODEL_ROOT", str(root))
    assert find_weights("") == ""
    assert find_weights("yolov5s.pt") == str(root / "yolov5s.pt")
    assert find_weights(model_files.YOLOV5_ROOT / "yolov5s.pt") == str(root / "yolov5s.pt")  # detect's default
    (tmp_path / "yolov5s.pt").write_bytes(b"local")
    assert find_weights("yolov5s.pt") == "yolov5s.pt"  # an existing path wins
    with pytest.raises(UserError, match=r"--weights elsewhere/yolov5s.pt: file not found \(also looked in "):
        find_weights("elsewhere/yolov5s.pt")
    monkeypatch.delenv("MODEL_ROOT")
    with pytest.raises(UserError, match=r"not_released.pt: file not found .*yolov5_model\). Fetch the released weights "
                                        r"with `bash prepare.sh --only weights`, .* or train one with train.py"):
        find_weights("not_released.pt")


def test_missing_key_names_file_and_key(tmp_path, n_cfg):
    cfg = dict(n_cfg)
    del cfg["head"]
    path = write_yaml(tmp_path / "nohead.yaml", cfg)
    with pytest.raises(UserError) as e:
        Model(str(path))
    assert str(path) in str(e.value) and "missing key(s) head" in str(e.value)


def test_invalid_yaml_syntax_reports_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("nc: 80\ndepth_multiple: 0.33\nbackbone: [[-1, 1, Conv, [64, 6, 2, 2]]\n")
    with pytest.raises(UserError, match=r"broken\.yaml, line \d+: invalid yaml"):
        Model(str(path))


@pytest.mark.parametrize("layer, row, expected", [
    (3, [-1, 1, "Conv9", [256, 3, 2]], "layer 3: unknown module 'Conv9'"),
    (4, [7, 1, "C3", [256]], "layer 4: 'from' refers to [7]"),
    (2, [-1, 0, "C3", [128]], "layer 2: 'number' must be a positive int"),
    (1, [-1, 1, "Conv"], "layer 1: each row must be [from, number, module, args]"),
    (1, [-1, 1, "Conv", ["wide", 3, 2]], "layer 1: cannot build Conv"),
])
def test_bad_rows_name_the_layer(tmp_path, n_cfg, layer, row, expected):
    cfg = {**n_cfg, "backbone": list(n_cfg["backbone"])}
    cfg["backbone"][layer] = row
    path = write_yaml(tmp_path / "bad.yaml", cfg)
    with pytest.raises(UserError) as e:
        Model(str(path))
    assert str(path) in str(e.value) and expected in str(e.value)


def test_bad_top_level_values(n_cfg):
    with pytest.raises(UserError, match="'anchors' must be"):
        Model({**n_cfg, "anchors": [[10, 13, 16], [30, 61, 62, 45]]})
    with pytest.raises(UserError, match="'width_multiple' must be a positive number"):
        Model({**n_cfg, "width_multiple": "wide"})


# ---------------------------------------------------------------------------------------- overrides

def test_nc_override(n_cfg, caplog):
    with caplog.at_level(logging.INFO, logger="yolov5"):
        model = Model(n_cfg, nc=3)
    assert "Overriding model yaml nc=80 with nc=3" in caplog.text
    detect = model.model[-1]
    assert [conv.out_channels for conv in detect.m] == [3 * (3 + 5)] * 3
    assert (detect.nc, detect.no) == (3, 8) and model.yaml["nc"] == 3 and model.names == ["0", "1", "2"]
    assert n_cfg["nc"] == 80 and "ch" not in n_cfg  # the caller's dict is not modified
    assert model.yaml_file is None  # built from a dict


def test_anchor_count_override_gives_placeholders(n_cfg):
    model = Model(n_cfg, anchors=2.0)  # hyp 'anchors' is a float in hyp yamls
    detect = model.model[-1]
    assert detect.na == 2 and detect.m[0].out_channels == 2 * 85 and model.yaml["anchors"] == 2
    pixels = detect.anchors * detect.stride.view(-1, 1, 1)
    assert pixels.tolist() == [[[0.0, 1.0], [2.0, 3.0]]] * 3


def test_anchor_list_override(n_cfg):
    anchors = [[5, 6, 7, 8, 9, 10], [20, 22, 24, 26, 28, 30], [50, 60, 70, 80, 90, 100]]
    model = Model(n_cfg, anchors=anchors)
    detect = model.model[-1]
    assert (detect.anchors * detect.stride.view(-1, 1, 1)).flatten(1).tolist() == anchors


def test_anchor_order_check_in_pixel_space(n_cfg):
    # Levels given largest first: reversed to match the increasing strides.
    reversed_cfg = {**n_cfg, "anchors": n_cfg["anchors"][::-1]}
    model = Model(reversed_cfg)
    pixels = model.model[-1].anchors * model.stride.view(-1, 1, 1)
    assert pixels.flatten(1).tolist() == n_cfg["anchors"]
    # Well-ordered but close sizes (largest/smallest area < 16): v6.0's grid-space check would have
    # reversed these; the v6.2 pixel-space check keeps them.
    close = [[10, 10, 12, 12, 14, 14], [16, 16, 18, 18, 20, 20], [22, 22, 24, 24, 26, 26]]
    model = Model({**n_cfg, "anchors": close})
    pixels = model.model[-1].anchors * model.stride.view(-1, 1, 1)
    assert pixels.flatten(1).tolist() == close


# ---------------------------------------------------------------------------------------- inference

def test_test_time_augmentation(fixtures_dir, upstream_state_dict):
    io = np.load(fixtures_dir / "yolov5n_io.npz")
    model = Model("yolov5n.yaml")
    model.load_state_dict(upstream_state_dict)
    model.eval()
    x = torch.from_numpy(io["x"])
    h, w = x.shape[2:]

    def rows(h, w, levels=(8, 16, 32)):
        return sum(3 * (h // s) * (w // s) for s in levels)

    def padded(n, ratio):
        return math.ceil(n * ratio / 32) * 32

    with torch.no_grad():
        y_tta, second = model(x, augment=True)
        y = model(x)[0]
        # middle pass by hand: flip left-right, resize by 0.83, pad to multiples of 32 with 0.447
        hs, ws = int(h * 0.83), int(w * 0.83)
        xs = F.interpolate(x.flip(3), size=(hs, ws), mode="bilinear", align_corners=False)
        xs = F.pad(xs, [0, padded(w, 0.83) - ws, 0, padded(h, 0.83) - hs], value=0.447)
        y_mid = model(xs)[0]
    assert second is None
    full = rows(h, w, (8, 16))  # full scale without P5 rows
    mid = rows(padded(h, 0.83), padded(w, 0.83))
    small = rows(padded(h, 0.67), padded(w, 0.67), (16, 32))  # 0.67 scale without P3 rows
    assert y.shape[1] == rows(h, w)
    assert y_tta.shape == (2, full + mid + small, 85)
    assert torch.equal(y_tta[:, :full], y[:, :full])
    y_mid[..., :4] /= 0.83
    y_mid[..., 0] = w - y_mid[..., 0]
    assert torch.allclose(y_tta[:, full:full + mid], y_mid, atol=1e-4)


def test_profile_logs_every_layer(caplog):
    model = Model("yolov5n.yaml")
    with caplog.at_level(logging.INFO, logger="yolov5"):
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 64, 64), profile=True)
    lines = [r.getMessage() for r in caplog.records]
    assert sum(line.endswith("models.common.C3") for line in lines) == 8
    assert any(line.endswith("Total") for line in lines)
    assert [o.shape for o in out] == [(1, 3, 8, 8, 85), (1, 3, 4, 4, 85), (1, 3, 2, 2, 85)]
    bn = model.model[0].bn  # profiling runs in eval mode: no BN update from the 10 timed calls
    assert bn.num_batches_tracked.item() == 2 and math.isclose(bn.momentum, 0.03)


def test_every_layer_kind_builds_runs_and_fuses():
    cfg = {
        "nc": 4, "depth_multiple": 0.33, "width_multiple": 0.25,
        "anchors": [[10, 13, 16, 30], [30, 61, 62, 45]],
        "backbone": [
            [-1, 1, "Focus", [64, 3]],  # 0 /2
            [-1, 1, "Conv", [128, 3, 2]],  # 1 /4
            [-1, 3, "BottleneckCSP", [128]],  # 2
            [-1, 1, "GhostConv", [256, 3, 2]],  # 3 /8
            [-1, 3, "C3Ghost", [256]],  # 4
            [-1, 1, "DWConv", [512, 3, 2]],  # 5 /16
            [-1, 1, "GhostBottleneck", [512, 3, 1]],  # 6
            [-1, 1, "Conv", [1024, 3, 2]],  # 7 /32
            [-1, 1, "SPP", [1024, [5, 9, 13]]],  # 8
            [-1, 3, "C3TR", [1024, False]],  # 9
            [-1, 1, "C3SPP", [1024, [5, 9, 13]]],  # 10
        ],
        "head": [
            [-1, 1, "Conv", [512, 1, 1]],  # 11
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],  # 12 /16
            [[-1, 6], 1, "Concat", [1]],  # 13
            [-1, 3, "C3", [512, False]],  # 14
            [-1, 1, "Contract", [2]],  # 15 /32
            [-1, 1, "Expand", [2]],  # 16 /16
            [-1, 1, "nn.BatchNorm2d", []],  # 17
            [[17, 10], 1, "Detect", ["nc", "anchors"]],  # 18
        ],
    }
    model = Model(cfg)
    layers = model.model
    assert model.stride.tolist() == [16.0, 32.0] and model.save == [6, 10, 17]
    assert len(layers[2].m) == 1 and len(layers[9].m.tr) == 1  # 3 * 0.33 -> 1 repeat, passed inside
    assert layers[15].type == "models.common.Contract" and layers[17].type == "torch.nn.modules.batchnorm.BatchNorm2d"
    assert layers[16].np == 0 and layers[17].num_features == 128
    assert [conv.out_channels for conv in layers[-1].m] == [2 * 9, 2 * 9]
    model.eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        y = model(x)[0]
        assert y.shape == (1, 2 * (4 * 6 + 2 * 3), 9)
        y_fused = model.fuse()(x)[0]
    assert torch.allclose(y, y_fused, rtol=1e-3, atol=1e-3)


def test_visualize_saves_one_picture_per_stage(tmp_path):
    model = Model("yolov5n.yaml").eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64), visualize=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 24 and "stage0_Conv_features.png" in files and "stage9_SPPF_features.png" in files
