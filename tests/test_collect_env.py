"""collect_env: a real report of this machine, runnable as a script, with or without torch_mlu."""
import json
import os
import platform
import subprocess
import sys
from importlib import metadata

import numpy
import pytest
import torch
import torchvision

from mlu_double import MluDouble
from utils_mlu import collect_env


def run_script(repo_root, cwd, *args, env_extra=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", **(env_extra or {}))
    env.pop("PYTHONPATH", None)  # the script must find yolov5/ on its own
    return subprocess.run([sys.executable, str(repo_root / "utils_mlu" / "collect_env.py"), *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_json_report_matches_this_interpreter(repo_root, tmp_path):
    fake_home = tmp_path / "neuware"
    (fake_home / "lib64").mkdir(parents=True)
    for name in ("libcnrt.so", "libcnrt.so.6", "libcnrt.so.6.2.1", "libcnnl.so.1.25.0"):
        (fake_home / "lib64" / name).write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cnmon = bin_dir / "cnmon"
    cnmon.write_text("#!/bin/sh\necho 'CNMON v5.10.22   Driver v5.10.22'\n")
    cnmon.chmod(0o755)
    out = run_script(repo_root, tmp_path, "--json", env_extra={
        "NEUWARE_HOME": str(fake_home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["pytorch"]["torch"] == torch.__version__
    assert report["pytorch"]["torchvision"] == metadata.version("torchvision")
    assert torchvision.__version__.startswith(report["pytorch"]["torchvision"])
    assert report["pytorch"]["cuda_build"] == (torch.version.cuda or
                                               "none (CPU or other accelerator build)")
    assert report["system"]["python"].startswith(platform.python_version())
    assert report["packages"]["numpy"] == numpy.__version__
    assert report["cambricon"]["torch_mlu"] == "not installed"
    assert report["cambricon"]["torch_mlu_status"].startswith("missing")
    assert report["cambricon"]["cntoolkit_libraries"] == "cnrt 6.2.1, cnnl 1.25.0"
    assert report["cambricon"]["mlu_driver"] == "v5.10.22"
    assert report["devices"]["cuda_devices"] == "0, CUDA_VISIBLE_DEVICES=''"
    assert report["devices"]["mlu_devices"].startswith("0, ")


def test_text_report(repo_root, tmp_path):
    out = run_script(repo_root, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "[pytorch]" in lines and "[cambricon]" in lines
    torch_line = next(ln for ln in lines if ln.strip().startswith("torch "))
    assert torch_line.split(" : ")[1] == torch.__version__


@pytest.mark.parametrize("api", ["2.x", "1.x"])
def test_report_with_torch_mlu_double(api, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with MluDouble(api=api, device_count=2) as double:
        report = collect_env.collect()
    assert report["cambricon"]["torch_mlu"] == double.version
    assert report["cambricon"]["torch_mlu_status"] == "ok"
    name = "MLU370-X8 49152MB" if api == "2.x" else "MLU 0MB"
    assert report["devices"]["mlu_devices"].startswith(f"2 (MLU:0 {name}; MLU:1 {name})")
