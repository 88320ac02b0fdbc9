"""scripts/setup_env.sh options: which requirement files each mode installs, and bad options.

The venv's interpreter is a stand-in script that says torch is importable and records each call,
so the tests see exactly what the set-up asks pip for without installing anything."""
import os
import subprocess

import pytest

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "{log}"
exit 0
"""


@pytest.fixture
def fake_venv(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON.format(log=tmp_path / "calls.log"))
    python.chmod(0o755)
    return venv


def _setup(repo_root, venv, *args):
    env = dict(os.environ, VENV=str(venv))
    return subprocess.run(["bash", str(repo_root / "scripts" / "setup_env.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _pip_calls(venv):
    log = venv.parent / "calls.log"
    return [line.split() for line in log.read_text().splitlines() if line.startswith("-m pip install")]


@pytest.mark.parametrize("args, files, stamp", [
    ((), ["requirements_mlu.txt"], ".requirements.sha256"),
    (("--notebook",), ["requirements_mlu.txt", "requirements-notebook.txt"], ".requirements-notebook.sha256"),
    (("--dev", "--notebook"), ["requirements_mlu.txt", "requirements-dev.txt", "requirements-export.txt",
                               "requirements-notebook.txt"], ".requirements-dev-notebook.sha256"),
])
def test_each_mode_installs_its_requirement_files(repo_root, fake_venv, args, files, stamp):
    run = _setup(repo_root, fake_venv, *args)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(fake_venv / "bin" / "python")
    (call,) = _pip_calls(fake_venv)
    requested = [call[i + 1] for i, a in enumerate(call) if a == "-r"]
    assert requested == [str(repo_root / f) for f in files]
    assert (fake_venv / stamp).is_file()
    again = _setup(repo_root, fake_venv, *args)  # unchanged files: pip is not run again
    assert again.returncode == 0 and len(_pip_calls(fake_venv)) == 1


def test_notebook_requirements_name_the_jupyter_packages(repo_root):
    lines = [line.split(">=")[0] for line in (repo_root / "requirements-notebook.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines == ["notebook", "nbconvert", "ipykernel"]


def test_unknown_option_is_refused(repo_root, fake_venv):
    run = _setup(repo_root, fake_venv, "--notebok")
    assert run.returncode == 2
    assert run.stderr.strip() == "[setup] unknown option --notebok (use --dev and/or --notebook)"
    assert not (fake_venv.parent / "calls.log").exists()
