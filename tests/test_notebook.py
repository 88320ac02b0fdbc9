"""The walkthrough notebook pytorch_yolov5_train.ipynb: committed without outputs, and it runs end to end.

The run executes a copy of the notebook with nbclient (the committed file is never written), its
`parameters` cell replaced by a tiny setting: a 16-image demo dataset at 64 px, one epoch per
training, outputs in tmp_path. The checks read the files the notebook's commands wrote (weights,
results.csv, the layer table behind the diagram, detect outputs, the ONNX file, the benchmark log).
"""
import ast
import csv
import json
import re

import cv2
import nbclient
import nbformat
import onnx
import pytest

NOTEBOOK = "pytorch_yolov5_train.ipynb"


def load(repo_root):
    return nbformat.read(str(repo_root / NOTEBOOK), as_version=4)


def parameters_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{NOTEBOOK}: expected one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def assigned_names(source):
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def inject_parameters(nb, values):
    """Replace the parameters cell by `values` (name -> Python value); every name must already exist there."""
    cell = parameters_cell(nb)
    unknown = set(values) - assigned_names(cell.source)
    if unknown:
        raise KeyError(f"{NOTEBOOK} has no parameter(s) {sorted(unknown)}")
    cell.source = "\n".join(f"{k} = {v!r}" for k, v in values.items())


def test_committed_notebook_has_no_outputs_and_one_parameters_cell(repo_root):
    nb = load(repo_root)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and code[0] is parameters_cell(nb)  # first code cell, so it can be replaced before anything runs
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"code cells {dirty} carry outputs: clear them before saving"
    # bilingual headings: every section heading has Chinese first, then English after ' / '
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if re.match(r"#{2,3} ", line)]
    assert len(headings) >= 10
    for h in headings:
        zh, _, en = h.partition(" / ")
        assert re.search(r"[\u4e00-\u9fff]", zh) and re.search(r"[A-Za-z]", en), h


def test_parameter_injection_rejects_unknown_names(repo_root):
    nb = load(repo_root)
    with pytest.raises(KeyError, match="EPOCHZ"):
        inject_parameters(nb, {"EPOCHS": 1, "EPOCHZ": 1})
    del nb.cells[[c.metadata.get("tags") == ["parameters"] for c in nb.cells].index(True)].metadata["tags"]
    with pytest.raises(ValueError, match="found 0"):
        parameters_cell(nb)


def outputs_text(nb):
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.get("text", ""))
            else:
                parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def read_results(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return [h.strip() for h in rows[0]], [[float(v) for v in r] for r in rows[1:]]


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_a_tiny_setting(repo_root, tmp_path, monkeypatch):
    from utils.io.checkpoint import load_checkpoint

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # kernel and its scripts: no oversubscribed threads
        monkeypatch.setenv(var, "1")
    for var in ("BENCHMARK_LOG", "AVG_LOG", "MLU_ADAPTIVE_STRATEGY_COUNT", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    nb = load(repo_root)
    project = tmp_path / "runs"
    imgsz, batch, resume_epochs, bench_iters, n_detect = 64, 8, 3, 4, 3
    inject_parameters(nb, dict(
        DEVICE="cpu", MODEL_CFG="yolov5n.yaml", EPOCHS=1, FINETUNE_EPOCHS=1, RESUME_EPOCHS=resume_epochs,
        IMGSZ=imgsz, BATCH=batch, WORKERS=0, HYP="", DATA_DIR=str(tmp_path / "demo"), DEMO_TRAIN=16, DEMO_VAL=8,
        DEMO_IMGSZ=96, DETECT_IMAGES=n_detect, BENCH_ITERS=bench_iters, BENCH_WARMUP=1, PROJECT=str(project),
        QUICK=True))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(repo_root)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, str(tmp_path / "executed.ipynb"))  # for a look after a failure
    text = outputs_text(nb)
    summary = json.loads((project / "notebook_summary.json").read_text())
    assert summary["device"] == "cpu"
    for key in ("model_diagram", "layers_csv", "scratch", "finetune", "resume", "val", "curves", "detect"):
        assert summary[key].startswith(str(project)), (key, summary[key])  # nothing written into the repo

    # section 2: the layer table behind the diagram has yolov5n's shapes at 64 px for 6 classes
    with open(summary["layers_csv"]) as f:
        layers = {int(r["layer"]): r for r in csv.DictReader(f)}
    assert len(layers) == 25
    expect = {0: ("Conv", 16, 32), 2: ("C3", 32, 16), 4: ("C3", 64, 8), 6: ("C3", 128, 4), 9: ("SPPF", 256, 2),
              12: ("Concat", 256, 4), 17: ("C3", 64, 8), 20: ("C3", 128, 4), 23: ("C3", 256, 2),
              24: ("Detect", 11, 8)}
    for i, (module, channels, side) in expect.items():
        row = layers[i]
        assert (row["module"], int(row["channels"]), int(row["height"]), int(row["width"])) == \
            (module, channels, side, side), row
    assert [int(layers[i]["repeats"]) for i in (2, 4, 6, 8)] == [1, 2, 3, 1]  # 3, 6, 9, 3 x depth 0.33
    assert int(layers[24]["params"]) == (64 + 128 + 256) * 33 + 33 * 3  # 1x1 convs to 3 x (5 + 6) outputs
    assert layers[22]["from"] == "[-1, 10]"
    diagram = cv2.imread(summary["model_diagram"])
    assert diagram is not None and diagram.shape[0] > 1000 and diagram.shape[1] > 1000
    assert "Model Summary: " in text and "Transferred " in text
    assert "yolov5x" in text and "0.33" in text  # the depth/width table
    assert cv2.imread(str(project / "demo_labels.jpg")) is not None

    # section 4: the three trainings
    scratch, finetune, resume = (project / "train" / n for n in ("scratch", "finetune", "resume"))
    assert summary["scratch"] == str(scratch)
    for run in (scratch, finetune):
        assert (run / "weights" / "best.pt").is_file() and (run / "weights" / "last.pt").is_file()
        header, rows = read_results(run / "results.csv")
        assert header[0] == "epoch" and [r[0] for r in rows] == [0]
    assert (scratch / "results.png").is_file()
    assert f"Transferred 349/349 items from {scratch / 'weights' / 'best.pt'}" in text
    assert summary["interrupted_exit_status"] == 130
    header, rows = read_results(resume / "results.csv")
    assert [r[0] for r in rows] == list(range(resume_epochs)) == summary["resume_epochs_logged"]
    assert re.search(rf"Resuming training from \S+last.pt at epoch [12] of {resume_epochs}", text)
    assert load_checkpoint(resume / "weights" / "last.pt")["epoch"] == -1  # finished and stripped

    # section 5: validation table and curves
    assert re.search(r"^\s+all\s+8\s+\d+(\s+[\d.]+){4}\s*$", text, re.M), "no 'all' row in val.py's table"
    assert cv2.imread(summary["curves"]) is not None

    # section 7: one benchmark log line per precision, throughput = batch / average iteration time
    records = [json.loads(line) for line in (project / "benchmark_log").read_text().splitlines()]
    assert [r["precision"] for r in records] == ["fp32", "amp"]
    for r in records:
        assert (r["status"], r["net"], r["batch_size"], r["cards"]) == ("ok", "yolov5n", batch, 1)
        assert r["throughput"] == round(batch / r["batch_time_avg"], 2)

    # section 8: annotated detect outputs for each source image, and an ONNX model of the right shape
    detect = project / "detect" / "demo"
    names = sorted(p.name for p in (tmp_path / "demo" / "images" / "val").glob("*.jpg"))[:n_detect]
    assert sorted(p.name for p in detect.glob("*.jpg")) == names
    for name in names:
        assert cv2.imread(str(detect / name)).shape == (96, 96, 3)
    model = onnx.load(str(scratch / "weights" / "best.onnx"))
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (model.graph.input[0], model.graph.output[0])]
    assert dims == [[1, 3, imgsz, imgsz], [1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 11]]
    diff = re.search(r"max \|ONNX - PyTorch\| = ([\d.e+-]+)", text)
    assert diff and float(diff.group(1)) < 1e-3
