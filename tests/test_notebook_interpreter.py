"""The notebook's benchmark cell runs bench/benchmark_train.sh with the kernel's own Python.

The script otherwise takes <repo>/.venv/bin/python, else `python3` from PATH. Here the notebook runs from
a copied checkout that has no .venv, and PATH starts with a `python3` (and `python`) that only records
being called and fails, as the interpreter of a system or conda install without torch would. The
parameters, set-up, data and benchmark cells of the committed notebook run in a kernel; the benchmark
script must succeed and append its own log line.
"""
import json
import shutil
import sys

import pytest

from test_notebook import inject_parameters, load, outputs_text

nbformat = pytest.importorskip("nbformat")


def _cell_with(nb, text):
    found = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    assert len(found) == 1, f"expected one code cell containing {text!r}, found {len(found)}"
    return found[0]


@pytest.mark.slow
def test_benchmark_cell_uses_the_kernel_python_in_a_checkout_without_venv(repo_root, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    checkout = tmp_path / "checkout"
    shutil.copytree(repo_root, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", "datasets", "runs", "tests", "__pycache__", ".pytest_cache", "*.pt"))
    assert not (checkout / ".venv").exists()

    fake_bin, called = tmp_path / "fake_bin", tmp_path / "fake_python_called"
    fake_bin.mkdir()
    for name in ("python3", "python"):
        fake = fake_bin / name
        fake.write_text(f"#!/bin/sh\necho \"$0 $*\" >> '{called}'\necho 'not the kernel Python' >&2\nexit 1\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:/usr/bin:/bin")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    for var in ("BENCHMARK_LOG", "AVG_LOG", "MLU_ADAPTIVE_STRATEGY_COUNT", "CUDA_VISIBLE_DEVICES", "PYTHON",
                "VIRTUAL_ENV"):
        monkeypatch.delenv(var, raising=False)

    full = load(checkout)
    project = tmp_path / "runs"
    inject_parameters(full, dict(
        DEVICE="cpu", MODEL_CFG="yolov5n.yaml", EPOCHS=1, FINETUNE_EPOCHS=1, RESUME_EPOCHS=2, IMGSZ=64, BATCH=8,
        WORKERS=0, HYP="", DATA_DIR=str(tmp_path / "demo"), DEMO_TRAIN=16, DEMO_VAL=8, DEMO_IMGSZ=96,
        DETECT_IMAGES=1, BENCH_ITERS=3, BENCH_WARMUP=1, PROJECT=str(project), QUICK=False))
    parameters = next(c for c in full.cells if "parameters" in c.metadata.get("tags", []))
    nb = nbformat.v4.new_notebook(metadata=full.metadata)
    nb.cells = [parameters, _cell_with(full, "def run_cmd"), _cell_with(full, "ensure_demo_dataset("),
                _cell_with(full, "benchmark_train.sh")]
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(checkout)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, str(tmp_path / "executed.ipynb"))  # for a look after a failure
    text = outputs_text(nb)

    assert not called.exists(), called.read_text()
    assert f"PYTHON={sys.executable} bash {checkout / 'bench' / 'benchmark_train.sh'}" in text
    assert "throughput: " in text  # the script's own summary line
    records = [json.loads(line) for line in (project / "benchmark_log").read_text().splitlines()]
    # train.py at fp32 and amp, then the script's fp32 run
    assert [(r["precision"], r["status"]) for r in records] == [("fp32", "ok"), ("amp", "ok"), ("fp32", "ok")]
    assert all(r["net"] == "yolov5n" and r["batch_size"] == 8 for r in records)
