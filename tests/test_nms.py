"""NMS parity with upstream v6.0 (fixtures/nms.npz) and the options around it."""
import logging

import numpy as np
import pytest
import torch

import utils.evaluation.nms as nms_module
from utils.evaluation.nms import non_max_suppression, time_budget_s


@pytest.fixture(scope="module")
def nms_case(fixtures_dir):
    return dict(np.load(fixtures_dir / "nms.npz"))


@pytest.fixture(scope="module")
def model_pred(fixtures_dir):
    return torch.from_numpy(np.load(fixtures_dir / "yolov5n_io.npz")["y_eval"])


def _canonical(rows):
    """Sort rows by score (desc), then class and coordinates: removes order within exact ties."""
    rows = np.asarray(rows, dtype=np.float64)
    keys = [rows[:, k] for k in (3, 2, 1, 0, 5)] + [-rows[:, 4]]
    return rows[np.lexsort(keys)]


def _assert_same_detections(ours, ref, exact=False):
    """Same rows up to order within ties; `exact` for upstream's float32 fixtures (bit-identical ops)."""
    ours, ref = _canonical(ours.numpy()), _canonical(ref)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours[:, 5], ref[:, 5])
    if exact:
        np.testing.assert_array_equal(ours, ref)
    np.testing.assert_allclose(ours[:, :5], ref[:, :5], rtol=1e-6, atol=1e-5)  # float32 vs float64 refs


def _reference_nms(image_pred, conf_thres, iou_thres, multi_label=True, agnostic=False, max_det=300):
    """Plain greedy NMS in float64, written independently of utils.evaluation.nms (no truncation: small inputs only)."""
    p = image_pred.numpy().astype(np.float64)
    p = p[p[:, 4] > conf_thres]
    scores = p[:, 5:] * p[:, 4:5]
    boxes = np.concatenate((p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2), 1)
    if multi_label:
        i, j = np.nonzero(scores > conf_thres)
        cand = np.concatenate((boxes[i], scores[i, j, None], j[:, None]), 1)
    else:
        j = scores.argmax(1)
        cand = np.concatenate((boxes, scores.max(1, keepdims=True), j[:, None]), 1)
        cand = cand[cand[:, 4] > conf_thres]
    cand = cand[np.argsort(-cand[:, 4], kind="stable")]
    kept = []
    for row in cand:
        if len(kept) >= max_det:
            break
        clash = False
        for k in kept:
            if not agnostic and k[5] != row[5]:
                continue
            w = max(0.0, min(k[2], row[2]) - max(k[0], row[0]))
            h = max(0.0, min(k[3], row[3]) - max(k[1], row[1]))
            inter = w * h
            union = (k[2] - k[0]) * (k[3] - k[1]) + (row[2] - row[0]) * (row[3] - row[1]) - inter
            if inter / union > iou_thres:
                clash = True
                break
        if not clash:
            kept.append(row)
    return np.array(kept).reshape(-1, 6)


def test_matches_upstream_on_synthetic_batch(nms_case, fixture_manifest):
    """Image 0 exercises the 30000-candidate truncation and max_det; image 1 is a small case."""
    conf, iou, max_det = nms_case["settings_conf_iou_maxdet"]
    pred = torch.from_numpy(nms_case["pred"])
    out = non_max_suppression(pred, conf, iou, max_det=int(max_det), multi_label=True)
    assert len(out) == 2
    assert [len(o) for o in out] == [case["n_out"] for case in fixture_manifest["nms"]["synthetic"]]
    _assert_same_detections(out[0], nms_case["out_0"], exact=True)
    _assert_same_detections(out[1], nms_case["out_1"], exact=True)
    assert torch.all(out[0][:-1, 4] >= out[0][1:, 4])  # score-sorted, as upstream returns it


def test_matches_upstream_on_model_output(nms_case, model_pred):
    out = non_max_suppression(model_pred, 0.001, 0.6, max_det=300, multi_label=True)
    _assert_same_detections(out[0], nms_case["model_out_0"], exact=True)
    _assert_same_detections(out[1], nms_case["model_out_1"], exact=True)


def test_input_is_not_modified(nms_case):
    pred = torch.from_numpy(nms_case["pred"][1:2].copy())
    before = pred.clone()
    non_max_suppression(pred, 0.001, 0.6, multi_label=True)
    assert torch.equal(pred, before)


def test_class_filter_keeps_exactly_those_classes(nms_case):
    """Class-aware NMS treats classes independently, so filtering equals selecting upstream's rows."""
    pred = torch.from_numpy(nms_case["pred"][1:2])
    ref = nms_case["out_1"]
    wanted = sorted(set(ref[:, 5].astype(int).tolist()))[:3]
    out = non_max_suppression(pred, 0.001, 0.6, classes=wanted, multi_label=True)[0]
    assert set(out[:, 5].int().tolist()) == set(wanted)
    _assert_same_detections(out, ref[np.isin(ref[:, 5], wanted)])
    assert len(non_max_suppression(pred, 0.001, 0.6, classes=[999], multi_label=True)[0]) == 0


@pytest.mark.parametrize("multi_label,agnostic", [(True, True), (False, False), (False, True)])
def test_options_match_reference_greedy_nms(nms_case, multi_label, agnostic):
    pred = torch.from_numpy(nms_case["pred"][1:2])
    out = non_max_suppression(pred, 0.001, 0.6, multi_label=multi_label, agnostic=agnostic)[0]
    ref = _reference_nms(pred[0], 0.001, 0.6, multi_label=multi_label, agnostic=agnostic)
    _assert_same_detections(out, ref)
    if not multi_label:  # one class per box: no two outputs share a box
        assert len(torch.unique(out[:, :4], dim=0)) == len(out)
    if agnostic:  # no surviving pair overlaps above the threshold, whatever the classes
        from utils.boxes import box_iou
        iou = box_iou(out[:, :4], out[:, :4]).fill_diagonal_(0)
        assert iou.max() <= 0.6


def test_agnostic_suppresses_across_classes():
    pred = torch.zeros((1, 2, 5 + 3))
    pred[0, 0, :5] = torch.tensor([50, 50, 20, 20, 0.9])
    pred[0, 1, :5] = torch.tensor([51, 50, 20, 20, 0.8])
    pred[0, 0, 5 + 0] = 1.0  # class 0
    pred[0, 1, 5 + 2] = 1.0  # class 2, same place
    assert len(non_max_suppression(pred, 0.25, 0.45)[0]) == 2
    out = non_max_suppression(pred, 0.25, 0.45, agnostic=True)[0]
    assert out.tolist() == [[40.0, 40.0, 60.0, 60.0, pytest.approx(0.9), 0.0]]


def test_more_than_30000_candidates_keeps_only_the_highest_scores():
    """30000 stacked boxes outscore one isolated box: truncation drops it before NMS (upstream rule)."""
    pred = torch.zeros((1, 30001, 5 + 1))
    pred[0, :, :4] = torch.tensor([50.0, 50.0, 20.0, 20.0])
    pred[0, :, 4] = torch.linspace(0.9, 0.5, 30001)
    pred[0, :, 5] = 1.0
    pred[0, -1, :4] = torch.tensor([300.0, 300.0, 20.0, 20.0])  # lowest score, overlaps nothing
    out = non_max_suppression(pred, 0.25, 0.45)[0]
    assert out[:, :4].tolist() == [[40.0, 40.0, 60.0, 60.0]]
    pred[0, 0, 5] = 0.0  # one candidate fewer: now the isolated box is within the 30000 and survives
    assert len(non_max_suppression(pred, 0.25, 0.45)[0]) == 2


def test_max_det_keeps_the_highest_scores(nms_case):
    pred = torch.from_numpy(nms_case["pred"][1:2])
    out = non_max_suppression(pred, 0.001, 0.6, multi_label=True, max_det=10)[0]
    _assert_same_detections(out, nms_case["out_1"][:10])


def test_time_budget_exceeded_warns_once_and_keeps_every_detection(nms_case, monkeypatch, caplog):
    """v6.0 silently returned no detections for the remaining images; we warn and finish."""
    ticks = iter(range(0, 10_000, 100))  # every clock reading is 100 s later than the last
    monkeypatch.setattr(nms_module, "_clock", lambda: float(next(ticks)))
    pred = torch.from_numpy(nms_case["pred"])
    with caplog.at_level(logging.WARNING, logger="utils.evaluation.nms"):
        out = non_max_suppression(pred, 0.001, 0.6, max_det=300, multi_label=True)
    warnings = [r for r in caplog.records if "time budget" in r.getMessage()]
    assert len(warnings) == 1
    assert "10.06s" in warnings[0].getMessage()
    _assert_same_detections(out[0], nms_case["out_0"], exact=True)
    _assert_same_detections(out[1], nms_case["out_1"], exact=True)


def test_no_warning_within_budget(nms_case, caplog):
    with caplog.at_level(logging.WARNING, logger="utils.evaluation.nms"):
        non_max_suppression(torch.from_numpy(nms_case["pred"][1:2]), 0.001, 0.6, multi_label=True)
    assert not [r for r in caplog.records if "time budget" in r.getMessage()]


def test_time_budget_rule():
    assert time_budget_s(1) == pytest.approx(10.03)
    assert time_budget_s(32) == pytest.approx(10.96)


def test_hybrid_labels_join_as_score_one_detections():
    pred = torch.zeros((2, 4, 5 + 4))  # nothing above the threshold on its own
    labels = [torch.tensor([[3.0, 100.0, 80.0, 40.0, 20.0]]), torch.zeros((0, 5))]
    out = non_max_suppression(pred, 0.25, 0.45, labels=labels)
    assert out[0].tolist() == [[80.0, 70.0, 120.0, 90.0, 1.0, 3.0]]
    assert out[1].shape == (0, 6)


def test_merge_nms_averages_overlapping_boxes_by_score():
    pred = torch.zeros((1, 3, 5 + 2))
    pred[0, :, :5] = torch.tensor([[5.0, 5, 10, 10, 0.9],    # x1..x2 = 0..10
                                   [6.0, 5, 10, 10, 0.6],    # 1..11, IoU 0.82 with the first
                                   [100.0, 100, 10, 10, 0.8]])  # isolated
    pred[0, :, 5] = 1.0
    out = non_max_suppression(pred, 0.25, 0.45, merge=True)[0]
    # (0 * 0.9 + 1 * 0.6) / 1.5 = 0.4; the isolated box suppressed nothing and is dropped (upstream rule)
    np.testing.assert_allclose(out[:, :4].numpy(), [[0.4, 0.0, 10.4, 10.0]], atol=1e-5)
    assert len(non_max_suppression(pred, 0.25, 0.45)[0]) == 2  # merge is off by default


def test_half_input_gives_float32_output(nms_case):
    pred = torch.from_numpy(nms_case["pred"][1:2]).half()
    out = non_max_suppression(pred, 0.001, 0.6, multi_label=True)[0]
    assert out.dtype == torch.float32
    assert len(out) > 0 and out[:, 5].max() <= 79


def test_empty_and_bad_input():
    out = non_max_suppression(torch.zeros((3, 10, 85)), 0.25, 0.45)
    assert [o.shape for o in out] == [(0, 6)] * 3
    with pytest.raises(ValueError, match="batch, n, 5 \\+ nc"):
        non_max_suppression(torch.zeros((10, 85)))
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(torch.zeros((1, 10, 85)), conf_thres=1.5)


def test_v60_positional_order(nms_case):
    """(prediction, conf_thres, iou_thres, classes, agnostic, multi_label, labels, max_det) by position,
    as v6.0 callers pass them; merge is keyword-only (v6.0 had no ninth parameter)."""
    pred = torch.from_numpy(nms_case["pred"][1:2])
    _assert_same_detections(non_max_suppression(pred, 0.001, 0.6, None, False, True, (), 10)[0],
                            nms_case["out_1"][:10])
    boxes = torch.zeros((1, 2, 5 + 3))
    boxes[0, :, :5] = torch.tensor([[50, 50, 20, 20, 0.9], [51, 50, 20, 20, 0.8]])
    boxes[0, 0, 5 + 0] = boxes[0, 1, 5 + 2] = 1.0  # two classes in the same place
    labels = [torch.tensor([[2.0, 200.0, 200.0, 10.0, 10.0]])]
    out = non_max_suppression(boxes, 0.25, 0.45, [2], True, False, labels, 5)[0]
    assert out.tolist() == [[195.0, 195.0, 205.0, 205.0, 1.0, 2.0], [41.0, 40.0, 61.0, 60.0, pytest.approx(0.8), 2.0]]
    assert len(non_max_suppression(boxes, 0.25, 0.45, None, True, False, (), 300)[0]) == 1  # agnostic
    with pytest.raises(TypeError):
        non_max_suppression(boxes, 0.25, 0.45, None, False, False, (), 300, True)
