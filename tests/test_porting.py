"""apply_patch.sh / tools/porting: porting a YOLOv5-shaped tree to MLU in place.

The trees are written by tests/porting_tree.py (our own small files with the statements the tool
looks for); the ported trees are run in subprocesses and print what they did. A real upstream
checkout is used only when YOLOV5_UPSTREAM_DIR names one.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from porting_tree import write_tree

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / 'tools' / 'porting'))
from textedit import mark, statement_end  # noqa: E402

MARK = '[mlu-port]'


def port(path, *args):
    return subprocess.run(['bash', str(REPO / 'apply_patch.sh'), *[str(a) for a in (path, *args) if a is not None]],
                          capture_output=True, text=True, timeout=120)


def run_py(tree, script, *args, env=None):
    """Run a script of the tree from its folder; returns (returncode, RESULT dict or None, output)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'BENCHMARK_LOG')}
    full_env.update(env or {})
    p = subprocess.run([sys.executable, script, *args], cwd=tree, capture_output=True, text=True,
                       timeout=120, env=full_env)
    found = re.search(r'^RESULT (.*)$', p.stdout, re.M)
    return p.returncode, json.loads(found.group(1)) if found else None, p.stdout + p.stderr


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob('*'))
            if p.is_file() and '__pycache__' not in p.parts}


@pytest.fixture
def tree60(tmp_path):
    root = tmp_path / 'yolov5'
    write_tree(root)
    return root


@pytest.fixture
def tree70(tmp_path):
    root = tmp_path / 'yolov5'
    write_tree(root, 'v7.0')
    return root


# --- each change ---------------------------------------------------------------------------
def test_v60_shape_gets_every_change(tree60):
    before = snapshot(tree60)
    p = port(tree60)
    assert p.returncode == 0, p.stdout + p.stderr
    train = (tree60 / 'train.py').read_text()
    # device gates: DataParallel only on CUDA, DDP/SyncBN on accelerators
    assert "    cuda = device.type == 'cuda'" in train
    assert "    use_device = device.type in ('cuda', 'mlu')" in train
    assert 'if opt.sync_bn and use_device and RANK != -1:' in train
    assert 'if use_device and RANK != -1:' in train
    assert 'DDP(model, **mlu_port.ddp_kwargs(LOCAL_RANK))' in train
    # checkpoint on the CPU
    assert "torch.load(weights, map_location='cpu')" in train
    # AMP for the device
    assert "use_amp = mlu_port.amp_enabled(device, getattr(opt, 'pyamp', False))" in train
    assert 'scaler = mlu_port.grad_scaler(device, enabled=use_amp)' in train
    assert 'with mlu_port.autocast(device, enabled=use_amp):' in train
    # options and benchmark hooks
    for flag in ("'--pyamp'", "'--iters'", "'--skip'"):
        assert train.count(flag) == 1
    assert train.count('if bench.step():') == 1 and train.count('bench.epoch_end()') == 1
    assert train.count('bench.finish()') == 1
    # DDP set-up: MLU branch first, the original lines kept under else:
    assert re.search(r"if device\.type == 'mlu':.*\n\s+device = mlu_port\.init_distributed\(device, LOCAL_RANK\)"
                     r".*\n\s+else:.*\n\s+torch\.cuda\.set_device\(LOCAL_RANK\)\n", train)
    assert 'mlu_port.device_count(device) > LOCAL_RANK' in train
    assert train.count('from utils import mlu_port') == 1
    tu = (tree60 / 'utils/torch_utils.py').read_text()
    assert tu.count('dist.barrier(**mlu_port.barrier_kwargs(') == 2
    assert 'if mlu_port.wants_mlu(device):' in tu and 'return mlu_port.select_mlu(device, batch_size)' in tu
    val = (tree60 / 'val.py').read_text()
    assert 'out = non_max_suppression(mlu_port.to_device(out, pdev), 0.25, 0.45)' in val
    assert 'iouv = torch.linspace(0.5, 0.95, 10).to(mlu_port.postprocess_device(device))' in val
    assert 'device=pdev)' in val and 'device=device)' not in val.split('# NMS')[1]
    assert 'mlu_port.move_checkpoint(torch.load(attempt_download(weights), map_location=\'cpu\'), map_location)' \
        in (tree60 / 'models/experimental.py').read_text()
    # every changed or added line of an existing file carries the marker, except the re-indented DDP lines
    patch = (tree60 / 'yolov5_mlu.patch').read_text()
    added = [l[1:] for l in patch.splitlines() if l.startswith('+') and not l.startswith('+++')]
    unmarked = [l for l in added if MARK not in l]
    support = (REPO / 'tools/porting/runtime/mlu_port.py').read_text().splitlines()
    unmarked = [l for l in unmarked if l not in support]
    others = set((REPO / 'utils_mlu/metric.py').read_text().splitlines()) | set(
        (REPO / 'utils_mlu/configs.json').read_text().splitlines())
    unmarked = [l for l in unmarked if l not in others and not l.startswith('"""MetricCollector')]
    assert sorted(l.strip() for l in unmarked) == sorted([
        'torch.cuda.set_device(LOCAL_RANK)', "device = torch.device('cuda', LOCAL_RANK)",
        'dist.init_process_group(backend="nccl" if dist.is_nccl_available() else "gloo")'])
    # backups hold the originals, byte for byte
    for rel in ('train.py', 'val.py', 'utils/torch_utils.py', 'models/experimental.py'):
        assert (tree60 / '.mlu_port/original' / rel).read_bytes() == before[rel]
    assert (tree60 / 'utils/mlu_port.py').read_text() == (REPO / 'tools/porting/runtime/mlu_port.py').read_text()
    assert (tree60 / 'utils_mlu/metric.py').read_text() == (REPO / 'utils_mlu/metric.py').read_text()


def test_v70_shape_amp_and_smart_ddp(tree70):
    p = port(tree70)
    assert p.returncode == 0, p.stdout + p.stderr
    train = (tree70 / 'train.py').read_text()
    assert ("amp = check_amp(model) if device.type == 'cuda' else "
            "mlu_port.amp_enabled(device, getattr(opt, 'pyamp', False))") in train
    assert 'scaler = mlu_port.grad_scaler(device, enabled=amp)' in train
    assert 'with mlu_port.autocast(device, enabled=amp):' in train
    assert 'mlu_port.Benchmark(opt, device, len(train_loader), start_epoch, epochs, amp=amp)' in train
    assert 'return DDP(model, **mlu_port.ddp_kwargs(LOCAL_RANK))' in (tree70 / 'utils/torch_utils.py').read_text()
    assert re.search(r'not needed +train\.py: pretrained weights', p.stdout)
    assert re.search(r'skipped +train\.py: DDP device_ids on CUDA only', p.stdout)
    val = (tree70 / 'val.py').read_text()
    assert 'iouv = torch.linspace(0.5, 0.95, 10, device=mlu_port.postprocess_device(device))' in val
    assert 'torch.tensor((width, height, width, height), device=pdev)' in val


# --- the ported trees run --------------------------------------------------------------------
@pytest.mark.parametrize('version', ['v6.0', 'v7.0'])
def test_ported_tree_trains_same_weights_and_stops_at_iters(tmp_path, version):
    plain, ported = tmp_path / 'plain', tmp_path / 'ported'
    write_tree(plain, version)
    write_tree(ported, version)
    assert port(ported).returncode == 0
    rc, ref, out = run_py(plain, 'train.py', '--device', 'cpu', '--epochs', '2', '--batches', '3')
    assert rc == 0, out
    rc, got, out = run_py(ported, 'train.py', '--device', 'cpu', '--epochs', '2', '--batches', '3')
    assert rc == 0, out
    assert got == ref  # on CPU without the new flags the port changes nothing: same 6 steps, same weights
    assert got['iterations'] == 6 and got['scaler_enabled'] is False
    # --iters 4 with 3 batches per epoch: epochs raised/cut to ceil(4/3) = 2, exactly 4 steps
    rc, got, out = run_py(ported, 'train.py', '--device', 'cpu', '--epochs', '9', '--batches', '3', '--iters', '4')
    assert rc == 0, out
    assert (got['iterations'], got['epochs'], got['validations'], got['saves']) == (4, 2, 2, 2)
    rc, got, out = run_py(ported, 'train.py', '--device', 'cpu', '--batches', '3', '--iters', '2', '--skip')
    assert rc == 0, out
    assert (got['iterations'], got['epochs'], got['validations'], got['saves']) == (2, 1, 0, 0)


def test_benchmark_log_has_one_record_of_the_iterations(tree60, tmp_path):
    assert port(tree60).returncode == 0
    log = tmp_path / 'bench.log'
    rc, got, out = run_py(tree60, 'train.py', '--device', 'cpu', '--batches', '4', '--epochs', '3', '--iters', '5',
                          '--batch-size', '6', '--cfg', 'models/yolov5x.yaml',
                          env={'BENCHMARK_LOG': str(log), 'MLU_ADAPTIVE_STRATEGY_COUNT': '1'})
    assert rc == 0, out
    assert got['iterations'] == 5
    records = [json.loads(l) for l in log.read_text().splitlines()]
    assert len(records) == 1
    r = records[0]
    assert (r['net'], r['batch_size'], r['cards'], r['precision'], r['DPF_mode']) == ('yolov5x', 6, 1, 'fp32', 'single')
    assert r['iterations'] == 4 and r['warmup_iterations'] == 1  # 5 samples, first dropped as warm-up
    assert r['throughput'] == pytest.approx(6 / r['batch_time_avg'], rel=1e-3)


def test_pyamp_on_cpu_uses_bf16_autocast_without_scaler(tree60):
    assert port(tree60).returncode == 0
    code = ("import sys, torch; sys.path.insert(0, '.'); from utils import mlu_port\n"
            "d = torch.device('cpu')\n"
            "print('RESULT', __import__('json').dumps([mlu_port.amp_enabled(d, False), mlu_port.amp_enabled(d, True),"
            " mlu_port.grad_scaler(d, True).is_enabled(), str(mlu_port.amp_dtype(d)),"
            " mlu_port.amp_enabled(torch.device('cuda'), False),"
            " str(mlu_port.to_device([torch.ones(1, dtype=torch.half)], d)[0].dtype)]))\n"
            "with mlu_port.autocast(d, True):\n"
            "    assert torch.get_autocast_dtype('cpu') == torch.bfloat16 and torch.is_autocast_enabled('cpu')\n")
    (tree60 / 'probe.py').write_text(code)
    rc, got, out = run_py(tree60, 'probe.py')
    assert rc == 0, out
    assert got == [False, True, False, 'torch.bfloat16', True, 'torch.float32']  # NMS on CPU needs fp32


def test_mlu_without_torch_mlu_is_one_line_and_exit_2(tree60):
    assert port(tree60).returncode == 0
    for script in ('train.py', 'val.py'):
        rc, got, out = run_py(tree60, script, '--device', 'mlu')
        assert rc == 2 and got is None
        assert 'ERROR: --device mlu: torch_mlu is not installed' in out
        assert 'Traceback' not in out


MLU_PROBE = '''
import json, sys, warnings
sys.path.insert(0, {tests!r}); sys.path.insert(0, '.')
from mlu_double import MluDouble
double = MluDouble(api={api!r}, device_count=2, register_backend={register}).install()
from utils import mlu_port
from utils.torch_utils import select_device
out = {{}}
if {register}:
    dev = select_device('mlu:1', batch_size=8)
    out['device'] = str(dev)
    out['scaler'] = [type(mlu_port.grad_scaler(dev, e)).__module__ for e in (True, False)]
    out['scaler_on'] = mlu_port.grad_scaler(dev, True).is_enabled()
    out['post'] = str(mlu_port.postprocess_device(dev))
    with mlu_port.autocast(dev, True):
        out['autocast'] = torch_ok = True
else:
    import torch, types
    mlu_port._torch_amp_scaler = lambda: False  # as on torch 1.x, which has no torch.amp.GradScaler
    dev = types.SimpleNamespace(type='mlu', index=0)
    s = mlu_port.grad_scaler(dev, True)
    out['scaler'] = [type(s).__qualname__.split('.')[-1], s.is_enabled()]
    out['module'] = mlu_port.mlu_module().__name__
out['set_device'] = [a for a, k in double.called('set_device')]
out['kwargs'] = [mlu_port.ddp_kwargs(1), mlu_port.barrier_kwargs(1)]
print('RESULT', json.dumps(out))
'''


def test_mlu_selection_and_amp_with_torch_mlu_2x_double(tree60):
    assert port(tree60).returncode == 0
    (tree60 / 'probe.py').write_text(MLU_PROBE.format(tests=str(TESTS), api='2.x', register=True))
    rc, got, out = run_py(tree60, 'probe.py')
    assert rc == 0, out
    assert got['device'] == 'mlu:1' and got['set_device'] == [[1]]
    assert got['scaler'] == ['torch.amp.grad_scaler', 'torch.amp.grad_scaler'] and got['scaler_on'] is True
    assert got['post'] == 'cpu' and got['autocast'] is True
    assert got['kwargs'] == [{}, {}]  # no process group: no NCCL-only arguments


def test_mlu_amp_with_torch_mlu_1x_double(tree60):
    assert port(tree60).returncode == 0
    (tree60 / 'probe.py').write_text(MLU_PROBE.format(tests=str(TESTS), api='1.x', register=False))
    rc, got, out = run_py(tree60, 'probe.py')
    assert rc == 0, out
    assert got['scaler'] == ['GradScaler', True]  # torch.mlu.amp.GradScaler of the catch-era module
    assert got['module'] == 'torch.mlu' or got['module'].startswith('torch_mlu')


def test_mlu_card_out_of_range_exits_2(tree60):
    assert port(tree60).returncode == 0
    code = MLU_PROBE.format(tests=str(TESTS), api='2.x', register=True).replace("'mlu:1'", "'mlu:2'")
    (tree60 / 'probe.py').write_text(code)
    rc, got, out = run_py(tree60, 'probe.py')
    assert rc == 2 and got is None
    assert 'ERROR: --device mlu:2: MLU 2 requested but only 2 visible; choose 0..1.' in out


def test_val_postprocessing_still_runs_on_cpu(tree70):
    assert port(tree70).returncode == 0
    rc, got, out = run_py(tree70, 'val.py', '--device', 'cpu', '--batches', '3')
    assert rc == 0, out
    assert got == {'seen': 6, 'postprocess_devices': ['cpu'], 'iouv_device': 'cpu'}


# --- idempotence, --check, --revert, all or nothing -----------------------------------------
def test_second_run_changes_nothing(tree60):
    assert port(tree60).returncode == 0
    first = snapshot(tree60)
    p = port(tree60)
    assert p.returncode == 0
    assert 'is already ported; nothing changed' in p.stdout
    assert 'applied' not in p.stdout
    assert snapshot(tree60) == first


def test_check_prints_the_diff_and_writes_nothing(tree60):
    before = snapshot(tree60)
    p = port(tree60, '--check')
    assert p.returncode == 0
    assert snapshot(tree60) == before
    assert '--- a/train.py\n+++ b/train.py\n' in p.stdout
    assert "+    use_device = device.type in ('cuda', 'mlu')  # [mlu-port] DDP/SyncBN\n" in p.stdout
    assert '--- /dev/null\n+++ b/utils/mlu_port.py\n' in p.stdout
    # the diff --check shows is the patch the port then writes
    assert port(tree60).returncode == 0
    assert (tree60 / 'yolov5_mlu.patch').read_text() in p.stdout


def test_patch_applies_to_the_original_tree(tree60, tmp_path):
    if shutil.which('patch') is None:
        pytest.skip('no `patch` program on this machine')
    copy = tmp_path / 'copy'
    shutil.copytree(tree60, copy)
    assert port(tree60).returncode == 0
    p = subprocess.run(['patch', '-p1', '-s', '-i', str(tree60 / 'yolov5_mlu.patch')], cwd=copy,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    ported = {k: v for k, v in snapshot(tree60).items() if not k.startswith('.mlu_port') and k != 'yolov5_mlu.patch'}
    assert snapshot(copy) == ported


def test_revert_restores_the_original_bytes(tree60):
    before = snapshot(tree60)
    assert port(tree60, '--modernize').returncode == 0
    p = port(tree60, '--revert')
    assert p.returncode == 0, p.stdout + p.stderr
    assert snapshot(tree60) == before
    assert not (tree60 / 'utils_mlu').exists() and not (tree60 / '.mlu_port').exists()


def test_revert_refuses_when_a_ported_file_was_edited_after(tree60):
    assert port(tree60).returncode == 0
    (tree60 / 'train.py').write_text((tree60 / 'train.py').read_text() + '# my change\n')
    after = snapshot(tree60)
    p = port(tree60, '--revert')
    assert p.returncode == 2
    assert 'changed after the port' in p.stdout and 'train.py' in p.stdout
    assert snapshot(tree60) == after


def test_revert_of_an_unported_tree_exits_2(tree60):
    p = port(tree60, '--revert')
    assert p.returncode == 2 and 'not ported by this tool' in p.stderr


def test_all_or_nothing_when_a_place_is_missing(tree60):
    train = tree60 / 'train.py'
    text = train.read_text()
    text = text.replace('        torch.cuda.set_device(LOCAL_RANK)\n', '')  # a user's own DDP set-up
    text = text.replace('    scaler = amp.GradScaler(enabled=cuda)\n', '    scaler = MyScaler()\n')
    train.write_text(text)
    before = snapshot(tree60)
    p = port(tree60)
    assert p.returncode == 2
    missing = [l for l in p.stdout.splitlines() if l.strip().startswith('missing')]
    assert len(missing) == 2
    assert any('train.py: no DDP set-up' in l for l in missing)
    assert any('train.py: no `scaler = amp.GradScaler(enabled=...)`' in l for l in missing)
    assert 'Nothing was changed' in p.stdout
    assert snapshot(tree60) == before


def test_user_modified_tree_still_ports(tree60):
    train = tree60 / 'train.py'
    text = train.read_text()
    text = text.replace("    cuda = device.type != 'cpu'\n",
                        "    # my team: keep an eye on the device\n    cuda = device.type != 'cpu'  # accelerator?\n")
    text = text.replace('    for epoch in range(start_epoch, epochs):',
                        '    my_custom_counter = 0\n    for epoch in range(start_epoch, epochs):')
    text = text.replace("        lr = [x['lr']", "        my_custom_counter += 1\n        lr = [x['lr']")
    train.write_text(text)
    p = port(tree60)
    assert p.returncode == 0, p.stdout
    rc, got, out = run_py(tree60, 'train.py', '--device', 'cpu', '--iters', '3', '--batches', '2', '--epochs', '4')
    assert rc == 0, out
    assert got['iterations'] == 3
    assert "    cuda = device.type == 'cuda'  # [mlu-port] DataParallel only on CUDA" in train.read_text()


def test_a_change_that_would_not_compile_is_refused(tree60, monkeypatch):
    import edits
    import port_yolov5
    from textedit import Outcome, APPLIED
    broken = edits.Edit('broken', ['train.py'], 'a change gone wrong',
                        lambda text, ctx: Outcome(APPLIED, text.replace('def train(', 'def train((', 1)))
    monkeypatch.setattr(port_yolov5, 'EDITS', [broken])
    plan = port_yolov5.Plan(tree60, False, {})
    plan.build()
    assert len(plan.missing) == 1
    assert plan.missing[0].startswith('train.py:') and 'the port would not be valid Python here' in plan.missing[0]


def test_one_line_batch_loop_is_not_guessed(tree60):
    train = tree60 / 'train.py'
    text = train.read_text()
    loop = text[text.index('        for i, (imgs, targets) in pbar:'):text.index("            log['iterations'] += 1\n")]
    train.write_text(text.replace(loop, '        for i, (imgs, targets) in pbar: log.update(step=i)\n'))
    before = snapshot(tree60)
    p = port(tree60)
    assert p.returncode == 2
    assert 'train.py: the batch loop has its body on the `for` line; split it first' in p.stdout
    assert snapshot(tree60) == before


def test_support_file_not_written_by_us_is_not_overwritten(tree60):
    (tree60 / 'utils_mlu').mkdir()
    (tree60 / 'utils_mlu/metric.py').write_text('# the lab copy a user kept\n')
    before = snapshot(tree60)
    p = port(tree60)
    assert p.returncode == 2
    assert 'utils_mlu/metric.py: exists and was not written by this tool' in p.stdout
    assert snapshot(tree60) == before


# --- --modernize -----------------------------------------------------------------------------
def test_modernize_lists_and_fixes_old_stack_constructs(tmp_path):
    root = tmp_path / 'old'
    write_tree(root, old_stack=True)
    p = port(root, '--modernize')
    assert p.returncode == 0, p.stdout + p.stderr
    for what in ('numpy: np.int', 'no pkg_resources', 'weights_only=False', 'build_targets clamps',
                 'no font download offline', 'no pip auto-install', 'Pillow >= 10'):
        assert re.search(rf'applied +\S+: .*{re.escape(what)}', p.stdout), what
    general = (root / 'utils/general.py').read_text()
    assert 'labels.astype(int)' in general and 'np.int' not in general
    assert 'from utils import pkg_compat as pkg' in general and 'import pkg_resources' not in general
    assert 'def check_requirements(requirements=(), exclude=(), install=False):' in general
    assert 'if mlu_port.skip_download(font):' in general
    assert 'gj.clamp_(0, int(gain[3]) - 1), gi.clamp_(0, int(gain[2]) - 1)' in (root / 'utils/loss.py').read_text()
    assert 'mlu_port.torch_load(weights' in (root / 'train.py').read_text()
    code = ("import sys, json; sys.path.insert(0, '.')\n"
            "from utils import general, pkg_compat\n"
            "from utils.loss import build_indices\n"
            "from utils.plots import Annotator\n"
            "from PIL import ImageFont\n"
            "font = ImageFont.load_default()\n"
            "import torch\n"
            "gj, gi = build_indices(torch.tensor([-1, 5, 99]), torch.tensor([3, 40]), torch.tensor([1., 1., 32., 16.]))\n"
            "try:\n    pkg_compat.require('surely-not-installed-pkg>=1')\n    missing = False\n"
            "except pkg_compat.DistributionNotFound:\n    missing = True\n"
            "print('RESULT', json.dumps([general.check_version('1.10.0', '1.9.2'), general.check_version('1.8', '1.9'),"
            " gj.tolist(), gi.tolist(), missing, general.check_requirements(),"
            " [r.name for r in pkg_compat.parse_requirements('numpy>=1.18  # arrays\\n# c\\n-r x.txt\\ntorch')],"
            " type(general.check_font('NoSuchFont.ttf')).__name__,"
            " Annotator(font).text_width('abc'), font.getbbox('abc')[2]]))\n")
    (root / 'probe.py').write_text(code)
    rc, got, out = run_py(root, 'probe.py', env={'YOLOV5_OFFLINE': '1'})
    assert rc == 0, out
    assert got[:6] == [True, False, [0, 5, 15], [3, 31], True, False]
    assert got[6] == ['numpy', 'torch']
    assert got[7] in ('FreeTypeFont', 'ImageFont')  # PIL's built-in font, nothing downloaded
    assert not (root / 'NoSuchFont.ttf').exists()
    assert got[8] == got[9] > 0  # text width from getbbox, where Pillow >= 10 has no getsize


def test_modernize_is_not_applied_without_the_flag(tmp_path):
    root = tmp_path / 'old'
    write_tree(root, old_stack=True)
    assert port(root).returncode == 0
    assert 'import pkg_resources as pkg' in (root / 'utils/general.py').read_text()
    assert not (root / 'utils/pkg_compat.py').exists()


# --- entry points and recognition -------------------------------------------------------------
def test_no_path_explains_this_repository_is_ready():
    p = subprocess.run(['bash', str(REPO / 'apply_patch.sh')], capture_output=True, text=True)
    assert p.returncode == 0
    assert "This repository's yolov5/ is already MLU-ready" in p.stdout
    assert 'bash apply_patch.sh /path/to/your/yolov5 --revert' in p.stdout


def test_this_repositorys_trainer_is_not_ported():
    before = snapshot(REPO / 'yolov5' / 'utils')
    p = port(REPO / 'yolov5')
    assert p.returncode == 0 and 'already MLU-ready' in p.stdout
    assert snapshot(REPO / 'yolov5' / 'utils') == before


@pytest.mark.parametrize('layout, message', [
    ({}, 'does not look like a YOLOv5 checkout'),
    ({'train.py': 'print(1)\n', 'val.py': '', 'models/yolo.py': '', 'utils/torch_utils.py': '',
      'utils/general.py': ''}, 'has no train() and parse_opt()'),
])
def test_unrecognised_tree_is_refused(tmp_path, layout, message):
    for rel, text in layout.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    before = snapshot(tmp_path)
    p = port(tmp_path)
    assert p.returncode == 2 and message in p.stderr
    assert snapshot(tmp_path) == before


def test_mark_keeps_backslash_continuations_and_comments():
    assert mark('x = 1') == 'x = 1  # [mlu-port]'
    assert mark('x = 1  # note') == 'x = 1  # note [mlu-port]'
    assert mark('x = a + \\') == 'x = a + \\'
    assert statement_end(['f(a,', '  b)', 'g()'], 0) == 1


# --- a real upstream checkout, when one is given --------------------------------------------
UPSTREAM = os.environ.get('YOLOV5_UPSTREAM_DIR')


@pytest.mark.skipif(not UPSTREAM, reason='set YOLOV5_UPSTREAM_DIR to an upstream YOLOv5 v6.0-v7.0 checkout')
def test_upstream_checkout_ports_idempotently_and_reverts(tmp_path):
    root = tmp_path / 'up'
    shutil.copytree(UPSTREAM, root, ignore=shutil.ignore_patterns('.git', '.mlu_port', 'yolov5_mlu.patch'))
    before = snapshot(root)
    p = port(root, '--modernize')
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'missing' not in p.stdout
    ported = snapshot(root)
    assert port(root, '--modernize').returncode == 0 and snapshot(root) == ported
    for rel in ('train.py', 'val.py', 'utils/torch_utils.py'):
        compile((root / rel).read_text(), rel, 'exec')
    assert port(root, '--revert').returncode == 0
    assert snapshot(root) == before


@pytest.mark.parametrize('double_kwargs, message', [
    ("import_error='libcnrt.so: cannot open shared object file'",
     'ERROR: --device mlu: torch_mlu is installed but cannot be imported (ImportError: libcnrt.so'),
    ('device_count=0', 'ERROR: --device mlu: torch_mlu sees no MLU'),
])
def test_broken_or_cardless_torch_mlu_exits_2(tree60, double_kwargs, message):
    assert port(tree60).returncode == 0
    (tree60 / 'probe.py').write_text(
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); sys.path.insert(0, '.')\n"
        f"from mlu_double import MluDouble\nMluDouble({double_kwargs}).install()\n"
        "from utils.torch_utils import select_device\nselect_device('mlu')\nprint('RESULT {}')\n")
    rc, got, out = run_py(tree60, 'probe.py')
    assert rc == 2 and got is None
    assert message in out and 'Traceback' not in out
