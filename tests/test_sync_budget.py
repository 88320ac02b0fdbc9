"""bench/sync_budget.py: the host-synchronisation budget of the training loop, counted on the
stand-in mlu device. Between progress refreshes the loop reads nothing back from the device (it
had 2 device->host copies per iteration before: the non-finite-loss check and the progress bar's
loss values); a refresh reads the loss means and the non-finite flag back in one copy."""
import re
import subprocess
import sys

from train_helpers import REPO_ROOT, cli_env


def test_sync_budget_script_reports_the_loop_within_budget(standin_mlu):
    run = subprocess.run([sys.executable, "bench/sync_budget.py", "--img", "64", "--batch", "4", "--iters", "14",
                          "--warmup", "2"], cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    counted = int(re.fullmatch(r"iterations counted: (\d+)", lines[-7]).group(1))
    # 8 batches per epoch, refreshes at batches 0, 4 and 7 of each: iterations 2-12 start a counted
    # interval, less 7 and 8 around the epoch boundary and the refreshes at 4 and 12
    assert counted == 7
    assert lines[-9] == "progress refresh every 4 iterations; iterations with a refresh counted: 2"
    assert lines[-8] == "device->host copies per refresh iteration: 1"
    assert re.fullmatch(r"host->device copies per steady-state iteration: [\d.]+", lines[-6])
    assert re.fullmatch(r"synchronize calls per steady-state iteration: 0", lines[-5])
    assert lines[-3] == "bytes device->host per steady-state iteration: 0"
    assert lines[-1] == "device->host copies per steady-state iteration: 0"


def test_sync_budget_rejects_too_few_iterations():
    run = subprocess.run([sys.executable, "bench/sync_budget.py", "--iters", "5", "--warmup", "3"], cwd=REPO_ROOT,
                         env=cli_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--iters 5 leaves too few iterations after --warmup 3: use at least 7" in run.stderr
