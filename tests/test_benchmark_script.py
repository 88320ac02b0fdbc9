"""bench/benchmark_train.sh: a real (tiny) CPU benchmark run, its log line, and its option checks.

The runs train yolov5s on the generated demo data at 128 px for a handful of iterations, then
check the printed throughput against the log line the MetricCollector appended:
throughput = batch_size x cards / batch_time_avg (rounded to 2 decimals, as Cambricon's logs).
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

THROUGHPUT_LINE = re.compile(
    r"^throughput: (?P<throughput>[\d.]+) images/s \(net (?P<net>\S+), precision (?P<precision>\S+), "
    r"batch_size (?P<batch>\d+) x (?P<cards>\d+) card\(s\), batch_time_avg (?P<avg>[\d.]+) s, "
    r"(?P<iters>\d+) iterations timed after (?P<warmup>\d+) warm-up, device (?P<device>.+), "
    r"log (?P<log>\S+)\)$")


def run_script(repo_root, args, env=None, timeout=300):
    full = {k: v for k, v in os.environ.items()
            if k not in ("BENCHMARK_LOG", "MLU_ADAPTIVE_STRATEGY_COUNT", "CATCH_MODEL_TOTAL_ITERS",
                         "CN_VISIBLE_DEVICES", "MLU_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES",
                         "LOCAL_RANK", "RANK", "WORLD_SIZE", "DATASET_NAME")}
    full["PROC_DRIVER_ROOT"] = "/nonexistent"  # platform: CPU, whatever this machine has
    full.setdefault("PYTHON", sys.executable)  # the interpreter running the tests, wherever its venv is
    full.update(env or {})
    return subprocess.run(["bash", str(repo_root / "bench/benchmark_train.sh"), *args],
                          capture_output=True, text=True, env=full, timeout=timeout)


def log_fields(repo_root):
    return json.loads((repo_root / "utils_mlu/configs.json").read_text())["BENCHMARK_LOG"]


def check_run(res, log, fields, batch, cards, iterations, warmup):
    """The printed line and the last log line agree and obey the throughput formula."""
    assert res.returncode == 0, res.stderr[-3000:]
    printed = [m for m in map(THROUGHPUT_LINE.match, res.stdout.splitlines()) if m]
    assert len(printed) == 1, res.stdout[-2000:]
    line = printed[0]
    records = [json.loads(x) for x in log.read_text().splitlines()]
    record = records[-1]
    assert list(record)[:len(fields) + 1] == ["date", *fields]  # configs.json order
    assert record["status"] == "ok"
    assert (record["net"], record["precision"], record["batch_size"], record["cards"]) == \
        ("yolov5s", "fp32", batch, cards)
    assert record["DPF_mode"] == ("ddp" if cards > 1 else "single")
    assert (record["iterations"], record["warmup_iterations"]) == (iterations, warmup)
    assert record["dataset"] == "demo"
    assert record["batch_time_avg"] > 0
    assert record["throughput"] == round(batch * cards / record["batch_time_avg"], 2)
    assert float(line["throughput"]) == record["throughput"]
    assert float(line["avg"]) == record["batch_time_avg"]
    assert (int(line["batch"]), int(line["cards"]), int(line["iters"]), int(line["warmup"])) == \
        (batch, cards, iterations, warmup)
    assert line["net"] == "yolov5s" and line["precision"] == "fp32" and line["log"] == str(log)
    assert line["device"] == record["device"]
    return records


def test_shellcheck_clean(repo_root):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", "-x", str(repo_root / "bench/benchmark_train.sh")],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stdout


def test_cpu_run_prints_throughput_from_the_log(repo_root, tmp_path):
    log = tmp_path / "logs" / "benchmark_log"
    log.parent.mkdir()
    earlier = {"date": "2020-01-01 00:00:00", "net": "older", "throughput": 999.0, "status": "ok"}
    log.write_text(json.dumps(earlier) + "\n")  # the log is appended to; the new line must be read
    res = run_script(repo_root, ["--device", "cpu", "--data", "demo.yaml", "--img", "128", "--batch", "4",
                                 "--iters", "5", "--log", str(log), "--project", str(tmp_path / "runs"),
                                 "--", "--workers", "0"],
                     env={"MLU_ADAPTIVE_STRATEGY_COUNT": "2"})
    records = check_run(res, log, log_fields(repo_root), batch=4, cards=1, iterations=3, warmup=2)
    assert len(records) == 2 and records[0] == earlier
    assert "--iters 5: reached 5 iterations" in res.stdout
    run_dir = tmp_path / "runs" / "yolov5s_fp32_cpu_1c_b4"
    assert (run_dir / "opt.yaml").is_file()
    assert not (run_dir / "weights" / "last.pt").exists()  # --skip: no checkpoints


def test_two_processes_through_torchrun(repo_root, tmp_path):
    log = tmp_path / "benchmark_log"
    res = run_script(repo_root, ["--device", "cpu", "--cards", "2", "--data", "demo.yaml", "--img", "128",
                                 "--batch", "2", "--iters", "3", "--log", str(log),
                                 "--project", str(tmp_path / "runs"), "--", "--workers", "0"],
                     env={"MLU_ADAPTIVE_STRATEGY_COUNT": "1"})
    assert "torch.distributed.run --standalone --nproc_per_node 2" in res.stderr
    assert "--batch-size 4" in res.stderr  # train.py's batch is the total over the cards
    records = check_run(res, log, log_fields(repo_root), batch=2, cards=2, iterations=2, warmup=1)
    assert len(records) == 1  # written by rank 0 only


@pytest.mark.parametrize("args,env,message", [
    (["--precision", "fp16"], {}, "--precision 'fp16': use fp32 or amp"),
    (["--device", "npu"], {}, "--device 'npu': use cpu, cuda or mlu"),
    (["--batch", "0"], {}, "--batch '0' must be a positive integer"),
    (["--model", "../x"], {}, "--model '../x' must be a cfg name"),
    (["--frobnicate"], {}, "unknown option '--frobnicate' (train.py options go after --)"),
    (["--iters"], {}, "--iters needs a value"),
    (["--device", "cuda", "--precision", "fp32"], {}, "train.py always uses AMP on CUDA"),
    (["--device", "cpu", "--iters", "20"], {}, "--iters 20 leaves nothing to time after 20 warm-up"),
    (["--device", "cpu", "--iters", "5"], {"MLU_ADAPTIVE_STRATEGY_COUNT": "5"}, "after 5 warm-up"),
    (["--device", "cpu"], {"MLU_ADAPTIVE_STRATEGY_COUNT": "x"}, "MLU_ADAPTIVE_STRATEGY_COUNT='x'"),
    (["--device", "cpu"], {"CATCH_MODEL_TOTAL_ITERS": "0"}, "CATCH_MODEL_TOTAL_ITERS='0'"),
    (["--device", "mlu", "--cards", "3"], {"MLU_VISIBLE_DEVICES": "0,1"},
     "--cards 3 but only 2 mlu card(s) are visible"),
])
def test_bad_options_exit_2_before_training(repo_root, tmp_path, args, env, message):
    res = run_script(repo_root, ["--log", str(tmp_path / "log"), *args], env=env, timeout=60)
    assert res.returncode == 2
    assert message in res.stderr
    assert "running:" not in res.stderr and not (tmp_path / "log").exists()


def test_platform_picks_the_device_and_train_errors_pass_through(repo_root, tmp_path):
    """On an MLU machine (driver tree faked) the default device is mlu; without torch_mlu here,
    train.py's one-line error and exit status 2 come back unchanged."""
    for i in range(2):
        d = tmp_path / "proc" / "cambricon" / "mlus" / f"0000:0{i}:00.0"
        d.mkdir(parents=True)
        (d / "information").write_text("Device name                : MLU370-X8\n")
    res = run_script(repo_root, ["--iters", "25", "--data", "demo.yaml", "--log", str(tmp_path / "log"),
                                 "--project", str(tmp_path / "runs")],
                     env={"PROC_DRIVER_ROOT": str(tmp_path / "proc")}, timeout=120)
    assert "platform MLU370; yolov5s fp32 on 1 x mlu, batch 16 per card, 25 iterations (20 warm-up)" in res.stderr
    assert "--device mlu" in res.stderr and "--batch-size 16" in res.stderr
    assert res.returncode == 2
    assert "ERROR: --device 'mlu': torch_mlu is not installed" in res.stderr
    assert "train.py failed (exit 2); no benchmark result" in res.stderr
    assert not (tmp_path / "log").exists()
