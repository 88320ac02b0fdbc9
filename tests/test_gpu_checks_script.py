"""tests/gpu/run_gpu_checks.py rehearsed on CPU (--quick) on real coco128 images, plus its failures.

The script itself is for CUDA machines; here it runs the same steps with tiny settings and bf16
autocast, so its parsing, checks, table and exit status are exercised by CI.
"""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = ("tests", "gpu", "run_gpu_checks.py")


def run(repo_root, args, timeout=400):
    env = {k: v for k, v in os.environ.items() if k not in ("BENCHMARK_LOG", "MLU_ADAPTIVE_STRATEGY_COUNT")}
    return subprocess.run([sys.executable, str(repo_root.joinpath(*SCRIPT)), *args], capture_output=True,
                          text=True, env=dict(env, CUDA_VISIBLE_DEVICES=""), timeout=timeout, cwd=repo_root)


def test_collection_skips_the_gpu_folder(repo_root):
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/gpu"],
                         capture_output=True, text=True, cwd=repo_root, timeout=120)
    assert "no tests collected" in out.stdout or "no tests ran" in out.stdout, out.stdout
    assert "run_gpu_checks" not in out.stdout


def test_quick_cpu_rehearsal(repo_root, real_images_dir, tmp_path):
    res = run(repo_root, ["--device", "cpu", "--quick", "--images", "16", "--data-dir", str(real_images_dir),
                          "--out", str(tmp_path)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "## GPU checks: yolov5s, 16 coco128 images at 128 px, batch 8, 1 epoch(s) = 2 iterations (1 warm-up)" in out
    assert out.rstrip().endswith("ALL CHECKS PASSED")
    assert "| CPU fp32 (reference) |" in out and "| cpu autocast bf16 |" in out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| cpu fp32 |") or line.startswith("| cpu amp |")}
    records = [json.loads(x) for x in (tmp_path / "benchmark_log").read_text().splitlines()]
    assert [r["precision"] for r in records] == ["fp32", "amp"]
    for record, name in zip(records, ("cpu fp32", "cpu amp")):
        assert (record["iterations"], record["warmup_iterations"], record["batch_size"]) == (1, 1, 8)
        assert record["throughput"] == round(8 / record["batch_time_avg"], 2)
        assert record["dataset"] == "coco128" and record["net"] == "yolov5s"
        throughput, batch_time = rows[name][0], rows[name][1]
        assert float(throughput) == pytest.approx(record["throughput"], rel=1e-3)
        assert float(batch_time) == pytest.approx(record["batch_time_avg"], rel=1e-3)
        losses = [float(x) for x in rows[name][3].split("/")]
        assert len(losses) == 3 and all(x > 0 for x in losses)
    assert (tmp_path / "gpu_checks.md").read_text().strip() == out[out.index("## GPU checks"):].strip()
    assert (tmp_path / "fp32" / "weights" / "best.pt").is_file()
    assert (tmp_path / "amp" / "opt.yaml").read_text().count("pyamp: true") == 1


def test_failed_runs_exit_1_with_the_reason(repo_root, real_images_dir, tmp_path):
    res = run(repo_root, ["--device", "cpu", "--quick", "--images", "16", "--data-dir", str(real_images_dir),
                          "--out", str(tmp_path), "--timeout", "1"])
    assert res.returncode == 1
    assert "FAILED:\n- fp32: train.py ended with timeout" in res.stdout
    assert "- amp: train.py ended with timeout" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["--device", "cuda"], "CUDA is not available"),
    (["--data-dir", "/nonexistent/coco128"], "no coco128 at /nonexistent/coco128"),
    (["--device", "cpu", "--epochs", "1", "--images", "8", "--warmup", "1"], "1 iterations with 1 warm-up"),
    (["--device", "cpu", "--batch", "0"], "must be at least 1"),
])
def test_bad_input_exits_2(repo_root, real_images_dir, tmp_path, args, message):
    full = ["--data-dir", str(real_images_dir), "--out", str(tmp_path / "out"), *args]
    res = run(repo_root, full, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    assert not (tmp_path / "out" / "benchmark_log").exists()
