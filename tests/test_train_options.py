"""train.py options: v6.0 defaults, the MLU port's additions, value checks and --resume resolution."""
import argparse

import pytest
import yaml

from utils.errors import UserError
from utils.training.train_options import check_values, parse_opt, resolve_resume, save_options, warn_unused


def test_v60_defaults_and_additions():
    opt = parse_opt([])
    assert (opt.weights, opt.cfg, opt.epochs, opt.batch_size, opt.imgsz) == ("yolov5s.pt", "", 300, 16, 640)
    assert opt.hyp.endswith("hyp.scratch.yaml") and opt.data.endswith("coco128.yaml")
    assert (opt.patience, opt.freeze, opt.save_period, opt.workers, opt.local_rank) == (100, 0, -1, 8, -1)
    assert opt.resume is False and opt.evolve is None and opt.cache is None
    assert (opt.pyamp, opt.iters, opt.skip) == (False, -1, False)
    # bare optional values as upstream
    assert parse_opt(["--resume"]).resume is True
    assert parse_opt(["--evolve"]).evolve == 300
    assert parse_opt(["--cache"]).cache == "ram"
    # aliases and argparse prefixes keep working
    assert parse_opt(["--img", "320"]).imgsz == 320
    assert parse_opt(["--batch", "8"]).batch_size == 8


@pytest.mark.parametrize("argv, fragment", [
    (["--cache", "gpu"], "--cache"),
    (["--iters", "0"], "--iters"),
    (["--batch-size", "0"], "--batch-size"),
    (["--weights", "", "--cfg", ""], "--cfg or --weights"),
    (["--weights", "model.onnx"], ".pt"),
    (["--label-smoothing", "1.5"], "label-smoothing"),
])
def test_bad_values_are_refused_with_the_option_named(argv, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        check_values(parse_opt(argv))


def test_unused_options_are_announced():
    said = []
    warn_unused(parse_opt(["--bucket", "gs://b", "--local_rank", "0"]), log=said.append)
    assert any("--bucket" in s for s in said) and any("local_rank" in s for s in said)
    said.clear()
    warn_unused(parse_opt([]), log=said.append)
    assert said == []


def _make_run(tmp_path, **overrides):
    run = tmp_path / "runs" / "train" / "exp"
    (run / "weights").mkdir(parents=True)
    opt = parse_opt(["--epochs", "7", "--batch-size", "4", "--data", "demo.yaml", "--name", "exp"])
    for k, v in overrides.items():
        setattr(opt, k, v)
    save_options(opt, run / "opt.yaml")
    last = run / "weights" / "last.pt"
    last.write_bytes(b"stand-in; resolve_resume does not read the checkpoint")
    return run, last


def test_resume_restores_the_runs_options(tmp_path, monkeypatch):
    run, last = _make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    opt = resolve_resume(parse_opt(["--resume"]))  # bare: most recent last.pt below the cwd
    assert opt.resume is True and opt.cfg == "" and opt.weights.endswith("last.pt")
    assert (opt.epochs, opt.batch_size, opt.data) == (7, 4, "demo.yaml")
    opt = resolve_resume(parse_opt(["--resume", str(last), "--device", "cpu"]))
    assert opt.device == "cpu" and opt.epochs == 7
    assert yaml.safe_load((run / "opt.yaml").read_text())["epochs"] == 7


def test_resume_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no last.pt found"):
        resolve_resume(parse_opt(["--resume"]))
    with pytest.raises(UserError, match="not found"):
        resolve_resume(parse_opt(["--resume", "nope/last.pt"]))
    run, last = _make_run(tmp_path)
    (run / "opt.yaml").unlink()
    with pytest.raises(UserError, match="opt.yaml is missing"):
        resolve_resume(argparse.Namespace(resume=str(last), device=""))
