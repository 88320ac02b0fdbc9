"""utils_mlu/common_utils.sh: platform name, visible cards, iteration rule, log field reading."""
import json
import os
import shutil
import subprocess

import pytest


def sh(repo_root, body, env=None, proc_root=None):
    script = f'. "{repo_root}/utils_mlu/common_utils.sh"\n{body}'
    full = {k: v for k, v in os.environ.items()
            if k not in ("CN_VISIBLE_DEVICES", "MLU_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES",
                         "CATCH_MODEL_TOTAL_ITERS")}
    full["PROC_DRIVER_ROOT"] = str(proc_root) if proc_root else "/nonexistent"
    full.update(env or {})
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=full, timeout=60)
    return out.returncode, out.stdout.strip(), out.stderr.strip()


def driver_tree(root, vendor, devices, line):
    for i in range(devices):
        d = root / vendor / ("mlus" if vendor == "cambricon" else "gpus") / f"0000:{i:02x}:00.0"
        d.mkdir(parents=True)
        (d / "information").write_text(f"Other: x\n{line}\n")
    return root


def test_shellcheck_clean(repo_root):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", "-s", "bash", str(repo_root / "utils_mlu/common_utils.sh")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_platform_names(repo_root, tmp_path):
    mlu = driver_tree(tmp_path / "m", "cambricon", 2, "Device name                : MLU370-X8")
    assert sh(repo_root, "get_platform; get_platform_with_flag_name", proc_root=mlu)[1] == \
        "MLU370\nMLU370"
    gpu = driver_tree(tmp_path / "g", "nvidia", 1, "Model: \t\t NVIDIA H100 80GB HBM3")
    assert sh(repo_root, "get_platform; get_platform_with_flag_name", proc_root=gpu)[1] == \
        "NVIDIA H100 80GB HBM3\nNVIDIA_H100_80GB_HBM3"
    assert sh(repo_root, "get_platform")[1] == "CPU"


@pytest.mark.parametrize("env,count", [
    ({"MLU_VISIBLE_DEVICES": "0,1,2,3"}, "4"),
    ({"CN_VISIBLE_DEVICES": "2", "MLU_VISIBLE_DEVICES": "0,1"}, "1"),
    ({"CUDA_VISIBLE_DEVICES": "0, 1"}, "2"),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, "0"),
    ({"CUDA_VISIBLE_DEVICES": "0,-1,2"}, "1"),
    ({"MLU_VISIBLE_DEVICES": ""}, "0"),
    ({}, "3"),  # unset: count what the driver publishes
])
def test_visible_cards(repo_root, tmp_path, env, count):
    tree = driver_tree(tmp_path, "cambricon", 3, "Device name: MLU370-S4")
    assert sh(repo_root, "get_visible_cards", env=env, proc_root=tree)[1] == count


def test_perf_iters_rule(repo_root):
    show = 'perf_iters_rule "$P"; echo "$BENCHMARK_TOTAL_ITERS $MLU_ADAPTIVE_STRATEGY_COUNT"'
    assert sh(repo_root, show, env={"P": "MLU370"})[1] == "60 20"
    assert sh(repo_root, show, env={"P": "MLU290"})[1] == "300 100"
    assert sh(repo_root, show, env={"P": "MLU290", "CATCH_MODEL_TOTAL_ITERS": "5"})[1] == "5 1"
    rc, _, err = sh(repo_root, 'perf_iters_rule MLU370 || exit $?', env={"CATCH_MODEL_TOTAL_ITERS": "0"})
    assert rc == 2 and "[ERROR] CATCH_MODEL_TOTAL_ITERS='0' must be a positive integer" in err


def test_benchmark_log_field_reads_collector_output(repo_root, tmp_path):
    log = tmp_path / "benchmark_log"
    records = [{"date": "2024-05-01 10:00:00", "net": "yolov5s", "throughput": 101.5},
               {"date": "2024-05-01 11:00:00", "net": "yolov5m", "throughput": 88.25,
                "status": "too few iterations: 1 recorded"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    body = f'benchmark_log_field "{log}" throughput; benchmark_log_field "{log}" net; ' \
           f'benchmark_log_field "{log}" date'
    assert sh(repo_root, body)[1].splitlines() == ["88.25", "yolov5m", "2024-05-01 11:00:00"]
    rc, _, err = sh(repo_root, f'benchmark_log_field "{log}" missing || exit $?')
    assert rc == 1 and "no 'missing'" in err
    rc, _, err = sh(repo_root, f'benchmark_log_field "{tmp_path}/nope" net || exit $?')
    assert rc == 2 and "not found" in err
