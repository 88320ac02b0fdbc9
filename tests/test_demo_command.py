"""The README's main command (scripts/demo.sh), shortened: one tiny epoch on the demo data."""
import os
import re
import subprocess

import yaml


def test_demo_command_trains_validates_and_reports(repo_root, tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "DEMO_EPOCHS": "1", "DEMO_IMGSZ": "64", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(repo_root / "scripts" / "demo.sh"), "--project", str(tmp_path),
                           "--workers", "0"], env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    match = re.search(r"Final mAP@0.5 ([0-9.]+), mAP@0.5:0.95 ([0-9.]+) \(results in (\S+)\)", out)
    assert match, out[-2000:]
    map50, map50_95 = float(match.group(1)), float(match.group(2))
    assert 0.0 <= map50_95 <= map50 <= 1.0
    run = tmp_path / "exp"
    assert match.group(3) == str(run)
    for name in ("weights/best.pt", "weights/last.pt", "results.csv", "opt.yaml", "hyp.yaml"):
        assert (run / name).is_file(), name
    opt = yaml.safe_load((run / "opt.yaml").read_text())
    assert opt["cfg"].endswith("yolov5n.yaml") and opt["weights"] == "" and opt["imgsz"] == 64
    assert yaml.safe_load((run / "hyp.yaml").read_text())["nbs"] == 16
    # the dataset the command generated is the documented one
    data = repo_root / "datasets" / "demo"
    assert len(list((data / "images" / "train").glob("*.jpg"))) == 256
    assert len(list((data / "images" / "val").glob("*.jpg"))) == 64
