"""bench/side_by_side.py: the placeholders for upstream's optional packages, and the --upstream checks
every side-by-side bench script makes before it starts any work."""
import os
import subprocess
import sys

import pytest

from train_helpers import REPO_ROOT

sys.path.append(str(REPO_ROOT / "bench"))
import side_by_side  # noqa: E402

SCRIPTS = ("train_step.py", "dataloader.py", "val_speed.py")


def test_placeholder_package_imports_in_a_new_interpreter(tmp_path):
    """A process started with the folder on PYTHONPATH (as upstream's Pool workers are) imports the
    placeholder; attribute writes work, calls fail loudly; installed packages get none."""
    side_by_side._write_placeholders(tmp_path, names=("no_such_package_20", "numpy"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_such_package_20"]
    code = ("import importlib.util, no_such_package_20 as p\n"
            "assert importlib.util.find_spec('no_such_package_20') is not None\n"
            "p.options.display.max_columns = 10\n"
            "assert p.options.display.max_columns == 10\n"
            "try:\n    p.read_csv('x')\nexcept RuntimeError as e:\n    print(e)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ("no_such_package_20.read_csv is not installed; "
                                  "the benchmark did not expect to call it")


@pytest.mark.parametrize("script", SCRIPTS)
def test_upstream_that_is_not_a_checkout_is_one_line_and_exit_2(script, tmp_path):
    (tmp_path / "train.py").write_text("")
    run = subprocess.run([sys.executable, f"bench/{script}", "--upstream", str(tmp_path)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"--upstream {tmp_path}: not a YOLOv5 checkout (missing val.py, models/yolo.py, "
                                  f"utils/datasets.py, utils/loss.py, utils/general.py); pass the folder that holds "
                                  f"upstream's train.py")


def test_upstream_that_is_this_repository_is_refused(tmp_path):
    run = subprocess.run([sys.executable, "bench/dataloader.py", "--upstream", str(REPO_ROOT / "yolov5")],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "that is this repository; pass an upstream YOLOv5 checkout" in run.stderr
    assert "Traceback" not in run.stderr


OUR_STAGE_PACKAGES = ("data", "training", "evaluation", "inference", "device", "io")


def _imports_in(function):
    import ast
    import inspect
    import textwrap
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_upstream_side_uses_only_v60_paths():
    """Code that runs inside upstream's checkout names upstream's modules, never our stage packages
    (a layout change of ours must not leak into what the upstream side imports or checks)."""
    import train_step
    import val_speed
    ours = tuple(f"utils/{p}/" for p in OUR_STAGE_PACKAGES)
    assert not [f for f in side_by_side.UPSTREAM_FILES if f.startswith(ours)]
    assert "utils/loss.py" in side_by_side.UPSTREAM_FILES
    for function in (train_step.Step._upstream_setup, val_speed.Validation.run):  # upstream-only / both sides
        names = _imports_in(function)
        assert not [n for n in names if n.startswith(tuple(f"utils.{p}" for p in OUR_STAGE_PACKAGES))], names
