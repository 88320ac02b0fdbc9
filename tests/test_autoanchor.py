"""utils/autoanchor: BPR / anchors-per-target, k-means + genetic anchors, replacement only when better."""
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import models.yolo as yolo
import utils.training.autoanchor as autoanchor
from utils.training.autoanchor import anchor_metrics, check_anchors, kmean_anchors, label_wh

P5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def detect_model(strides=(8, 16, 32), anchors=P5_ANCHORS):
    """A module whose last layer is a real Detect with pixel anchors converted to grid units."""
    det = yolo.Detect(nc=80, anchors=anchors, ch=(4, 4, 4))
    det.stride = torch.tensor(strides, dtype=torch.float32)
    det.anchors /= det.stride.view(-1, 1, 1)
    model = nn.Module()
    model.model = nn.Sequential(det)
    return model


def pixel_anchors(model):
    det = model.model[-1]
    return (det.anchors * det.stride.view(-1, 1, 1)).view(-1, 2)


def dataset_of(boxes_px, counts, image_wh=(1280, 640), img_size=640):
    """One label per image; images 1280x640 scale to 640x320 at training size."""
    scaled = np.array(image_wh, dtype=float) * img_size / max(image_wh)
    labels = []
    for (w, h), n in zip(boxes_px, counts):
        labels += [np.array([[0, 0.5, 0.5, w / scaled[0], h / scaled[1]]])] * n
    return SimpleNamespace(shapes=np.tile(image_wh, (len(labels), 1)), labels=labels)


def test_bpr_and_anchors_per_target_known_answer():
    """150 px boxes fit exactly 5 P5 anchors even with the U(0.9, 1.1) jitter; 2 px boxes fit none."""
    data = dataset_of([(150, 150), (2, 2)], [300, 100])
    anchors = np.array(P5_ANCHORS, dtype=float).reshape(-1, 2)
    np.testing.assert_allclose(label_wh(data, 640), [[150, 150]] * 300 + [[2, 2]] * 100)
    for seed in range(3):
        wh = label_wh(data, 640, rng=np.random.default_rng(seed))
        assert not np.allclose(wh[:300], 150)  # the random scale is applied
        assert anchor_metrics(anchors, wh, thr=4.0) == (0.75, 3.75)
    # a looser threshold lets the 2 px boxes reach the (10, 13) anchor: ratio 6.5 < 8 (jitter stays < 8)
    assert anchor_metrics(anchors, label_wh(data, 640, np.random.default_rng(0)), thr=8.0)[0] == 1.0


def test_good_fit_leaves_anchors_alone(caplog):
    model = detect_model()
    before = model.model[-1].anchors.clone()
    with caplog.at_level(logging.INFO, logger="yolov5"):
        assert check_anchors(dataset_of([(150, 150)], [50]), model) is False
    assert "AutoAnchor: 5.00 anchors/target, 1.000 Best Possible Recall (BPR). Current anchors are a good fit" \
        in caplog.text
    assert torch.equal(model.model[-1].anchors, before)


def elongated_dataset():
    return dataset_of([(600, 20), (20, 600), (100, 100)], [60, 60, 60])


def test_poor_fit_gets_better_anchors_in_grid_units(caplog):
    data = elongated_dataset()
    model = detect_model()
    det = model.model[-1]
    det.grid = [torch.ones(1, 3, 2, 2, 2)] * 3  # stale cache from an earlier eval forward
    wh = label_wh(data, 640, np.random.default_rng(0))
    old_bpr = anchor_metrics(pixel_anchors(model).numpy(), wh)[0]
    assert old_bpr == pytest.approx(1 / 3)  # only the 100 px squares fit the default anchors
    with caplog.at_level(logging.INFO, logger="yolov5"):
        assert check_anchors(data, model) is True
    assert "0.333 Best Possible Recall (BPR). Anchors are a poor fit" in caplog.text
    assert "new anchors saved to model" in caplog.text
    new = pixel_anchors(model).numpy()
    assert anchor_metrics(new, wh)[0] == 1.0
    areas = new.prod(1)
    assert np.all(np.diff(areas) >= 0)  # sorted by area: small anchors on the stride-8 level
    assert all(g.numel() == 1 for g in det.grid)  # cached grids dropped
    # grid units: pixel anchors / stride of their level
    torch.testing.assert_close(det.anchors * det.stride.view(-1, 1, 1), torch.from_numpy(new).view(3, 3, 2))


def test_level_order_follows_descending_strides():
    model = detect_model(strides=(32, 16, 8), anchors=P5_ANCHORS[::-1])
    assert check_anchors(elongated_dataset(), model) is True
    mean_area = pixel_anchors(model).view(3, 3, 2).prod(-1).mean(-1)
    assert mean_area[0] > mean_area[1] > mean_area[2]  # biggest anchors on the stride-32 level


def test_too_few_distinct_boxes_still_give_fitting_anchors(caplog):
    """2 distinct sizes cannot give 9 k-means centres: the centres found are padded with jittered copies."""
    data = dataset_of([(150, 150), (2, 2)], [30, 10])
    model = detect_model()
    with caplog.at_level(logging.INFO, logger="yolov5"):
        assert check_anchors(data, model) is True
    assert "only 2 distinct box-size clusters for 9 anchors" in caplog.text
    new = pixel_anchors(model).numpy()
    assert new.min() >= 2.0 - 1e-5
    assert anchor_metrics(new, label_wh(data, 640, np.random.default_rng(0)))[0] == 1.0


def test_new_anchors_are_used_only_if_better(monkeypatch, caplog):
    model = detect_model()
    before = model.model[-1].anchors.clone()
    monkeypatch.setattr(autoanchor, "kmean_anchors", lambda *a, **k: np.full((9, 2), 5000.0))
    with caplog.at_level(logging.INFO, logger="yolov5"):
        assert check_anchors(elongated_dataset(), model) is False
    assert "original anchors are better" in caplog.text
    assert torch.equal(model.model[-1].anchors, before)


CENTRES = np.array([[10, 12], [20, 40], [40, 25], [60, 80], [90, 60], [120, 160], [200, 150], [300, 380],
                    [500, 420]], dtype=float)


def clustered_dataset(seed=0, per_cluster=40):
    rng = np.random.default_rng(seed)
    boxes = [c * rng.uniform(0.98, 1.02, 2) for c in CENTRES for _ in range(per_cluster)]
    return dataset_of(boxes, [1] * len(boxes), image_wh=(640, 640))


def test_kmeans_recovers_known_clusters():
    k = kmean_anchors(clustered_dataset(), n=9, img_size=640, gen=0, verbose=False)
    assert k.shape == (9, 2)
    np.testing.assert_allclose(k, CENTRES, rtol=0.02)  # sorted by area, as CENTRES are


def test_kmeans_and_evolution_reproducible_with_seed():
    data = clustered_dataset(seed=1)
    a = kmean_anchors(data, gen=200, verbose=False, seed=5)
    b = kmean_anchors(data, gen=200, verbose=False, seed=5)
    np.testing.assert_array_equal(a, b)
    c = kmean_anchors(data, gen=200, verbose=False, seed=6)
    assert not np.array_equal(a, c)


def test_genetic_search_never_lowers_fitness():
    data = dataset_of([(600, 20), (20, 600), (100, 100), (30, 30)], [40, 40, 40, 40])
    wh = label_wh(data, 640)

    def fitness(k):
        x = np.minimum(wh[:, None] / k[None], k[None] / wh[:, None]).min(2).max(1)
        return (x * (x > 0.25)).mean()
    start = kmean_anchors(data, gen=0, verbose=False, seed=0)
    evolved = kmean_anchors(data, gen=300, verbose=False, seed=0)
    assert fitness(evolved) >= fitness(start) - 1e-6


def test_no_labels_and_bad_shapes():
    empty = SimpleNamespace(shapes=np.array([[640, 480]]), labels=[np.zeros((0, 5))])
    model = detect_model()
    assert check_anchors(empty, model) is False
    with pytest.raises(ValueError, match="no labels of at least 2 pixels"):
        kmean_anchors(empty, verbose=False)
    bad = SimpleNamespace(shapes=np.array([640, 480]), labels=[np.zeros((1, 5))])
    with pytest.raises(ValueError, match="dataset.shapes must be"):
        check_anchors(bad, model)
    with pytest.raises(ValueError, match="no Detect layer"):
        check_anchors(empty, nn.Sequential(nn.Conv2d(3, 3, 1)))


def coco128(coco128_dir):
    shapes, labels = [], []
    for im in sorted((coco128_dir / "images" / "train2017").glob("*.jpg")):
        with Image.open(im) as f:
            shapes.append(f.size)
        lp = coco128_dir / "labels" / "train2017" / f"{im.stem}.txt"
        text = lp.read_text() if lp.exists() else ""
        labels.append(np.array(text.split(), dtype=float).reshape(-1, 5))
    return SimpleNamespace(shapes=np.array(shapes), labels=labels)


def test_coco128_default_anchors_fit_like_upstream(coco128_dir, repo_root, caplog):
    """Upstream v6.0 prints 'anchors/target = 4.27, Best Possible Recall (BPR) = 0.9935' for coco128 at 640."""
    data = coco128(coco128_dir)
    wh = label_wh(data, 640, np.random.default_rng(0))
    assert len(wh) == 929
    bpr, aat = anchor_metrics(np.array(P5_ANCHORS, dtype=float).reshape(-1, 2), wh)
    assert 0.99 < bpr < 0.997 and 4.2 < aat < 4.35
    model = yolo.Model(str(repo_root / "yolov5" / "models" / "yolov5n.yaml"))
    before = model.model[-1].anchors.clone()
    with caplog.at_level(logging.INFO, logger="yolov5"):
        assert check_anchors(data, model, thr=4.0, imgsz=640) is False
    assert "Current anchors are a good fit" in caplog.text
    assert torch.equal(model.model[-1].anchors, before)


def test_fewer_labels_than_anchors():
    data = dataset_of([(40, 30), (200, 100), (2.5, 1.5)], [1, 1, 1], image_wh=(640, 640))
    k = kmean_anchors(data, n=9, gen=100, verbose=False)
    assert k.shape == (9, 2) and k.min() >= 2.0
    assert np.all(np.diff(k.prod(1)) >= 0)
    assert anchor_metrics(k, label_wh(data, 640))[0] == 1.0
