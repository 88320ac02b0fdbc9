"""utils/evolve: v6.0 limits table, seeded mutation within limits, evolve.csv / hyp_evolve.yaml."""
import numpy as np
import pytest
import yaml
from PIL import Image

from utils.errors import UserError
from utils.training.evolve import (META, RESULT_COLUMNS, clip_to_limits, evolve_generation, evolve_meta, mutate,
                          plot_evolve, prepare_hyp, read_evolve_csv, record_generation, select_parent)

# hyp.scratch.yaml (v6.0 default), in file order
SCRATCH = {"lr0": 0.01, "lrf": 0.1, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
           "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0,
           "obj_pw": 1.0, "iou_t": 0.2, "anchor_t": 4.0, "fl_gamma": 0.0, "hsv_h": 0.015, "hsv_s": 0.7,
           "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0,
           "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0}
FROZEN = ("iou_t", "fl_gamma", "perspective", "fliplr")  # gain 0 in v6.0


def test_meta_table_is_v6():
    assert set(META) == set(SCRATCH) | {"anchors"} and len(META) == 29
    assert META["lr0"] == (1, 1e-5, 0.1) and META["momentum"] == (0.3, 0.6, 0.98)
    assert META["anchors"] == (2, 2.0, 10.0) and META["shear"] == (1, 0.0, 10.0)
    assert META["degrees"] == (1, 0.0, 45.0) and META["perspective"] == (0, 0.0, 0.001)
    assert [k for k, v in META.items() if v[0] == 0] == list(FROZEN)
    assert all(lo <= hi for _, lo, hi in META.values())


def test_prepare_hyp_and_noautoanchor():
    hyp = prepare_hyp(SCRATCH)
    assert hyp["anchors"] == 3 and "anchors" not in SCRATCH
    assert prepare_hyp({**SCRATCH, "anchors": 4.0})["anchors"] == 4.0
    assert "anchors" not in prepare_hyp({**SCRATCH, "anchors": 4.0}, noautoanchor=True)
    assert "anchors" not in evolve_meta(noautoanchor=True) and "anchors" in evolve_meta()


def test_clip_to_limits_clamps_and_rounds():
    hyp = prepare_hyp(SCRATCH)
    hyp.update(lr0=0.5, momentum=0.1, degrees=-3.0, hsv_h=0.0123456789)
    out = clip_to_limits(hyp, META)
    assert (out["lr0"], out["momentum"], out["degrees"], out["hsv_h"]) == (0.1, 0.6, 0.0, 0.01235)
    assert hyp["lr0"] == 0.5  # input untouched
    with pytest.raises(UserError, match="lack anchors"):
        clip_to_limits(SCRATCH, META)


def test_mutation_is_seeded_and_frozen_keys_stay():
    hyp = prepare_hyp(SCRATCH)
    a = mutate(hyp, META, np.random.default_rng(1))
    b = mutate(hyp, META, np.random.default_rng(1))
    c = mutate(hyp, META, np.random.default_rng(2))
    assert a == b and a != c
    assert all(a[k] == hyp[k] for k in FROZEN)
    changed = [k for k in hyp if a[k] != hyp[k]]
    assert changed and all(META[k][0] > 0 for k in changed)
    for k in hyp:  # factors are clipped to [0.3, 3]
        if hyp[k]:
            assert 0.3 - 1e-12 <= a[k] / hyp[k] <= 3.0 + 1e-12


def test_generations_always_respect_limits(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    rng = np.random.default_rng(0)
    extreme = {k: (hi if i % 2 else lo) for i, (k, (_, lo, hi)) in enumerate(META.items())}
    for gen in range(40):
        new = evolve_generation(hyp, tmp_path / "evolve.csv", rng)
        for k, (_, lo, hi) in META.items():
            assert lo <= new[k] <= hi, (gen, k, new[k])
            assert new[k] == round(new[k], 5)
        results = rng.random(7)
        record_generation(results, extreme if gen == 0 else new, tmp_path)
    assert read_evolve_csv(tmp_path / "evolve.csv")[1].shape == (40, 7 + 29)


def test_first_generation_trains_the_given_hyp(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    assert evolve_generation(hyp, tmp_path / "evolve.csv", np.random.default_rng(0)) == hyp


def test_evolve_generation_deterministic_with_seed(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    for i, fit in enumerate([0.1, 0.5, 0.3]):
        record_generation([0.5, 0.5, fit, fit, 0.01, 0.02, 0.03], {**hyp, "lr0": 0.01 * (i + 1)}, tmp_path)
    a = evolve_generation(hyp, tmp_path / "evolve.csv", np.random.default_rng(42))
    b = evolve_generation(hyp, tmp_path / "evolve.csv", np.random.default_rng(42))
    assert a == b and a != hyp


def test_csv_format_and_round_trip(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    record_generation([0.1, 0.2, 0.3, 0.15, 0.05, 0.04, 0.0123456], hyp, tmp_path)
    lines = (tmp_path / "evolve.csv").read_text().splitlines()
    assert lines[0].startswith("   metrics/precision,      metrics/recall,     metrics/mAP_0.5,"
                               "metrics/mAP_0.5:0.95,        val/box_loss,")
    assert lines[0].endswith(",               mixup,          copy_paste,             anchors")
    assert lines[1].startswith("                 0.1,                 0.2,                 0.3,"
                               "                0.15,                0.05,                0.04,            0.012346,"
                               "                0.01,                 0.1,               0.937,              0.0005,")
    assert all(len(f) == 20 for line in lines for f in line.split(","))
    columns, rows = read_evolve_csv(tmp_path / "evolve.csv")
    assert columns == list(RESULT_COLUMNS) + list(hyp)
    assert dict(zip(columns[7:], rows[0, 7:])) == pytest.approx(hyp)


def test_hyp_evolve_yaml_holds_the_best_generation_v61_fix(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    gens = [(0.2, 0.011), (0.6, 0.022), (0.4, 0.033)]  # (mAP, lr0): generation 1 is the best
    for fit, lr0 in gens:
        best = record_generation([0.5, 0.5, fit, fit, 0, 0, 0], {**hyp, "lr0": lr0}, tmp_path)
    assert best == 1
    text = (tmp_path / "hyp_evolve.yaml").read_text()
    assert "# Best generation: 1\n" in text and "# Last generation: 2\n" in text
    saved = yaml.safe_load(text)
    assert saved["lr0"] == 0.022  # v6.0 wrote the LAST generation's 0.033 here
    assert list(saved) == list(hyp)


def test_parent_selection_single_and_weighted(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    for fit, lr0 in [(0.5, 0.02), (0.1, 0.05)]:
        record_generation([0, 0, fit, fit, 0, 0, 0], {**hyp, "lr0": lr0}, tmp_path)
    csv = tmp_path / "evolve.csv"
    rng = np.random.default_rng(0)
    # weights = fitness - min + 1e-6: the worse row has weight 1e-6, so "single" takes the better
    assert {select_parent(csv, list(hyp), rng)["lr0"] for _ in range(50)} == {0.02}
    w = np.array([0.4 + 1e-6, 1e-6])
    assert select_parent(csv, list(hyp), rng, parent="weighted")["lr0"] == pytest.approx(
        (0.02 * w[0] + 0.05 * w[1]) / w.sum())
    with pytest.raises(ValueError, match="single"):
        select_parent(csv, list(hyp), rng, parent="best")


def test_only_top_five_rows_can_be_parents(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    for i in range(8):  # fitness rises with i; rows 3..7 are the top five
        record_generation([0, 0, 0.1 * i, 0.1 * i, 0, 0, 0], {**hyp, "lr0": 0.001 * (i + 1)}, tmp_path)
    rng = np.random.default_rng(3)
    picked = {round(select_parent(tmp_path / "evolve.csv", list(hyp), rng)["lr0"], 6) for _ in range(300)}
    assert picked <= {0.005, 0.006, 0.007, 0.008} and len(picked) >= 3  # row 3 has weight 1e-6


def test_bad_evolve_csv_is_a_user_error(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    csv = tmp_path / "evolve.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not an evolve.csv"):
        read_evolve_csv(csv)
    csv.unlink()
    record_generation([0] * 7, hyp, tmp_path)
    with pytest.raises(UserError, match="no column for hyperparameter"):
        select_parent(csv, list(hyp) + ["new_key"], np.random.default_rng(0))
    with pytest.raises(UserError, match="columns for other hyperparameters"):
        record_generation([0] * 7, {**hyp, "new_key": 1.0}, tmp_path)
    with open(csv, "a") as f:
        f.write("1,2,x\n")
    with pytest.raises(UserError, match="evolve.csv:3: bad evolve.csv row"):
        read_evolve_csv(csv)


def test_plot_evolve_writes_png(tmp_path):
    hyp = prepare_hyp(SCRATCH)
    rng = np.random.default_rng(0)
    for _ in range(5):
        record_generation(rng.random(7), evolve_generation(hyp, tmp_path / "evolve.csv", rng), tmp_path)
    png = plot_evolve(tmp_path / "evolve.csv")
    assert png == tmp_path / "evolve.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (2400, 2640)  # 5 x 6 panels for 29 keys
