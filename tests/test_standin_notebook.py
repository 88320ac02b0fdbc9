"""The walkthrough notebook's steps with DEVICE='mlu' on the stand-in device (YOLOV5_STANDIN_MLU=1):
every training, validation, benchmark, detection and export step runs on the mlu code path."""
import json

import pytest

from test_notebook import inject_parameters, load, outputs_text


@pytest.mark.slow
def test_notebook_steps_on_the_standin_mlu(standin_mlu, repo_root, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("onnx")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    for var in ("BENCHMARK_LOG", "AVG_LOG", "MLU_ADAPTIVE_STRATEGY_COUNT", "YOLOV5_FP32_VALIDATION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("YOLOV5_STANDIN_MLU", "1")  # the kernel and the scripts it starts inherit it
    nb = load(repo_root)
    project = tmp_path / "runs"
    inject_parameters(nb, dict(
        DEVICE="mlu", MODEL_CFG="yolov5n.yaml", EPOCHS=1, FINETUNE_EPOCHS=1, RESUME_EPOCHS=2, IMGSZ=64, BATCH=8,
        WORKERS=0, HYP="", DATA_DIR=str(tmp_path / "demo"), DEMO_TRAIN=16, DEMO_VAL=8, DEMO_IMGSZ=96,
        DETECT_IMAGES=2, BENCH_ITERS=4, BENCH_WARMUP=1, PROJECT=str(project), QUICK=True))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(repo_root)}})
    try:
        client.execute()
    finally:
        import nbformat
        nbformat.write(nb, str(tmp_path / "executed.ipynb"))
    text = outputs_text(nb)
    summary = json.loads((project / "notebook_summary.json").read_text())
    assert summary["device"] == "mlu"
    assert "MLU:0 (standin-mlu) stand-in on host memory (test device, not a Cambricon card)" in text
    for run in ("scratch", "finetune", "resume"):
        assert (project / "train" / run / "weights" / "last.pt").is_file()
    assert summary["interrupted_exit_status"] == 130 and summary["resume_epochs_logged"] == [0, 1]
    records = [json.loads(line) for line in (project / "benchmark_log").read_text().splitlines()]
    assert [(r["precision"], r["device"], r["status"]) for r in records] == [
        ("fp32", "standin-mlu", "ok"), ("amp", "standin-mlu", "ok")]
    assert len(list((project / "detect" / "demo").glob("*.jpg"))) == 2
    assert (project / "train" / "scratch" / "weights" / "best.onnx").is_file()
