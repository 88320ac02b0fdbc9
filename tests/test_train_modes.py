"""train.py options that change the run: --iters, --skip, --evolve, --bucket, and the data/optimizer
variants (--rect --quad --cache --adam --linear-lr --label-smoothing, --image-weights --multi-scale)."""
import shutil

import numpy as np
import pytest
import yaml

from train_helpers import OneThread, make_data_yaml, train_args, train_in_process
from utils.training.callbacks import Callbacks
from utils.io.checkpoint import load_checkpoint
from utils.training.results_log import read_results


@pytest.fixture(autouse=True)
def one_thread():
    with OneThread():
        yield


def _record_batches():
    """Callbacks recording (ni, image batch shape) of every training batch."""
    callbacks, batches = Callbacks(), []
    callbacks.register_action("on_train_batch_end", "record",
                              lambda ni, model, imgs, *a: batches.append((ni, tuple(imgs.shape))))
    return callbacks, batches


def test_iters_stops_exactly_and_skip_writes_no_checkpoint_nor_validates(tmp_path, real_images_dir):
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    callbacks, batches = _record_batches()
    results = train_in_process(train_args(data, tmp_path, "it", 64, 4, 5, "--iters", "3", "--skip",
                                          "--noautoanchor"), callbacks)
    assert [ni for ni, _ in batches] == [0, 1, 2]  # 2 batches per epoch: stops in the middle of epoch 1
    run = tmp_path / "it"
    assert not list((run / "weights").iterdir())
    columns, values = read_results(run / "results.csv")
    assert list(values[:, 0]) == [0, 1]
    assert (values[:, 4:11] == 0).all()  # no validation: metrics and val losses stay 0
    assert not list(run.glob("val_batch*")) and not (run / "confusion_matrix.png").exists()
    assert results is None or tuple(results) == (0, 0, 0, 0, 0, 0, 0)


def test_evolve_two_generations_and_bucket_warning(tmp_path, real_images_dir, capsys):
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    train_in_process(train_args(data, tmp_path, "evo", 64, 4, 1, "--evolve", "2", "--noautoanchor", "--seed", "1",
                                "--bucket", "my-bucket"))
    out = capsys.readouterr().out
    assert out.count("WARNING: --bucket my-bucket: syncing evolve.csv with a gsutil bucket is not supported") == 1
    run = tmp_path / "evo"
    lines = (run / "evolve.csv").read_text().splitlines()
    header = [c.strip() for c in lines[0].split(",")]
    assert len(lines) == 3 and header[:4] == ["metrics/precision", "metrics/recall", "metrics/mAP_0.5",
                                              "metrics/mAP_0.5:0.95"]
    rows = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    assert "lr0" in header and (rows[:, header.index("lr0")] > 0).all()
    assert (rows[0, 7:] != rows[1, 7:]).any()  # the second generation trained a mutation
    best = yaml.safe_load((run / "hyp_evolve.yaml").read_text())
    assert set(header[7:]) <= set(best) and best["lr0"] in rows[:, header.index("lr0")]
    assert "Hyperparameter evolution finished 2 generations" in out
    assert not list(run.rglob("*.pt"))  # evolving saves no checkpoints


def test_rect_quad_cache_adam_linear_lr_label_smoothing(tmp_path, real_images_dir, capsys):
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    callbacks, batches = _record_batches()
    kept = tmp_path / "kept.pt"
    callbacks.register_action("on_model_save", "keep", lambda last, *a: shutil.copy(last, kept))
    train_in_process(train_args(data, tmp_path, "x", 128, 4, 1, "--rect", "--quad", "--cache", "ram", "--adam",
                                "--linear-lr", "--label-smoothing", "0.1", "--noautoanchor"), callbacks)
    out = capsys.readouterr()
    # --rect: images sorted by aspect ratio, the 4 widest share a 96x128 shape, the rest need 128x128;
    # --quad: each batch of 4 becomes one image at twice the size
    assert [shape for _, shape in batches] == [(1, 3, 192, 256), (1, 3, 256, 256)]
    assert "Caching images" in out.out + out.err
    ckpt = load_checkpoint(kept)  # before the final strip
    assert "exp_avg" in next(iter(ckpt["optimizer"]["state"].values()))  # Adam
    assert ckpt["ema"].hyp["label_smoothing"] == 0.1 and ckpt["opt"]["linear_lr"]
    lr = read_results(tmp_path / "x" / "results.csv")[1][0, 11:14]
    assert lr[1] > 0  # logged learning rates of the Adam groups


def test_image_weights_and_multi_scale(tmp_path, real_images_dir):
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    callbacks, batches = _record_batches()
    train_in_process(train_args(data, tmp_path, "y", 128, 2, 2, "--image-weights", "--multi-scale", "--iters", "8",
                                "--skip", "--noautoanchor", "--seed", "5"), callbacks)
    sizes = {shape[2:] for _, shape in batches}
    assert len(batches) == 8 and len(sizes) > 1  # a new size per batch
    assert all(64 <= h <= 192 and h % 32 == 0 and w % 32 == 0 for h, w in sizes)
