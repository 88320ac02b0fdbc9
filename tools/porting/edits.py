"""The changes that port a YOLOv5 (v6.0 to v7.0) tree to MLU, each found by what the code does.

This list is the content of `yolov5_mlu.patch`: the patch a user gets is generated from it on their
own tree. Each edit names the file(s) it works on, what it does, and a function that takes the
file's text and returns an Outcome (applied, already, not needed, or missing with the reason).
Edits in one `group` succeed together if any one of them finds its place (the same job sits in
different files in different upstream versions).
"""
import re

from textedit import (ALREADY, APPLIED, MISSING, NOT_NEEDED, Outcome, block_end, body_indent,
                      find_line, indent_of, insert_lines, join, mark, split, statement_end, sub_lines)


class Edit:
    def __init__(self, key, files, what, fn, required=True, modernize=False, group=None):
        self.key, self.files, self.what, self.fn = key, files, what, fn
        self.required, self.modernize, self.group = required and not modernize, modernize, group


AMP_FLAG = "getattr(opt, 'pyamp', False)"


# --- train.py --------------------------------------------------------------------------------
def accelerator_gate(text, ctx):
    return sub_lines(
        text, r"^(\s*)cuda = device\.type != 'cpu'.*$",
        lambda m: (f"{m.group(1)}cuda = device.type == 'cuda'  # {'[mlu-port]'} DataParallel only on CUDA\n"
                   f"{m.group(1)}use_device = device.type in ('cuda', 'mlu')  # [mlu-port] DDP/SyncBN"),
        done=r"use_device = device\.type in", missing="no line `cuda = device.type != 'cpu'` in train()")


def checkpoint_on_cpu(text, ctx):
    if re.search(r"(?:torch\.load|mlu_port\.torch_load)\(\s*weights\s*,\s*map_location=['\"]cpu['\"]", text):
        return Outcome(NOT_NEEDED, text, 'pretrained weights already load on the CPU')
    return sub_lines(text, r"torch\.load\(\s*weights\s*,\s*map_location=device\s*\)",
                     "torch.load(weights, map_location='cpu')",
                     missing='no `torch.load(weights, map_location=...)` for the pretrained weights')


def sync_bn_gate(text, ctx):
    return sub_lines(text, r"(if opt\.sync_bn and )cuda( and RANK != -1)", r"\1use_device\2",
                     done=r"opt\.sync_bn and use_device",
                     missing='no `if opt.sync_bn and cuda and RANK != -1:`')


def ddp_gate(text, ctx):
    return sub_lines(text, r"^(\s*)if cuda and RANK != -1:", r"\1if use_device and RANK != -1:",
                     done=r"if use_device and RANK != -1:", missing='no DDP gate `if cuda and RANK != -1:`')


def ddp_kwargs(text, ctx):
    return sub_lines(text, r"device_ids=\[LOCAL_RANK\],\s*output_device=LOCAL_RANK",
                     "**mlu_port.ddp_kwargs(LOCAL_RANK)", done=r"mlu_port\.ddp_kwargs\(",
                     missing='no `DDP(model, device_ids=[LOCAL_RANK], output_device=LOCAL_RANK ...)`')


def grad_scaler(text, ctx):
    found = re.search(r"mlu_port\.grad_scaler\(device, enabled=(\w+)\)", text)
    if found:
        ctx['amp'] = found.group(1)
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^\s*scaler = (?:torch\.cuda\.)?amp\.GradScaler\(enabled=(\w+)\)")
    if i is None:
        return Outcome(MISSING, text, 'no `scaler = amp.GradScaler(enabled=...)`')
    ind = indent_of(lines[i])
    flag = re.search(r"enabled=(\w+)", lines[i]).group(1)
    new = []
    if flag == 'cuda':  # v6.0/v6.1: AMP followed the device; now CUDA or --pyamp
        flag = 'use_amp'
        new.append(f"use_amp = mlu_port.amp_enabled(device, {AMP_FLAG})")
    else:  # v6.2+: `amp = check_amp(model)` decides on CUDA; elsewhere --pyamp does
        j = find_line(lines, rf"^\s*{flag} = check_amp\(model\)")
        if j is None:
            return Outcome(MISSING, text, f'no `{flag} = check_amp(model)` before the GradScaler')
        lines[j] = mark(lines[j].split('#')[0].rstrip() +
                        f" if device.type == 'cuda' else mlu_port.amp_enabled(device, {AMP_FLAG})")
    new.append(f"scaler = mlu_port.grad_scaler(device, enabled={flag})")
    lines[i:i + 1] = [mark(ind + s) for s in new]
    ctx['amp'] = flag
    return Outcome(APPLIED, join(lines), f'AMP flag `{flag}`')


def autocast(text, ctx):
    if 'mlu_port.autocast(' in text:
        return Outcome(ALREADY, text)
    flag = ctx.get('amp', 'use_amp')
    return sub_lines(text, r"with (?:torch\.cuda\.)?amp\.autocast\((?:enabled=)?\w+\):",
                     f"with mlu_port.autocast(device, enabled={flag}):",
                     missing='no `with amp.autocast(...)` around the forward pass')


def benchmark_setup(text, ctx):
    if 'mlu_port.Benchmark(' in text:
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^\s*for epoch in range\(start_epoch, epochs\):")
    if i is None:
        return Outcome(MISSING, text, 'no epoch loop `for epoch in range(start_epoch, epochs):`')
    flag = ctx.get('amp', 'use_amp')
    insert_lines(lines, i, indent_of(lines[i]), [
        f"bench = mlu_port.Benchmark(opt, device, len(train_loader), start_epoch, epochs, amp={flag})"
        "  # --iters, --skip, MetricCollector",
        "epochs = bench.epochs"])
    return Outcome(APPLIED, join(lines))


def benchmark_step(text, ctx):
    if 'bench.step()' in text:
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^\s*for i, \(.*\) in (?:enumerate\()?pbar\)?:")
    if i is None:
        return Outcome(MISSING, text, 'no batch loop `for i, (imgs, targets, ...) in pbar:`')
    if lines[statement_end(lines, i)].split('#')[0].rstrip()[-1:] != ':':  # `for ...: body` on one line
        return Outcome(MISSING, text, 'the batch loop has its body on the `for` line; split it first')
    insert_lines(lines, statement_end(lines, i) + 1, body_indent(lines, i),
                 ["if bench.step():  # --iters reached", "    break"])
    return Outcome(APPLIED, join(lines))


def benchmark_epoch_end(text, ctx):
    if 'bench.epoch_end()' in text:
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^\s*lr = \[x\['lr'\] for x in optimizer\.param_groups\]")
    if i is None:
        return Outcome(MISSING, text, "no `lr = [x['lr'] for x in optimizer.param_groups]` after the batch loop")
    insert_lines(lines, i, indent_of(lines[i]), ["bench.epoch_end()"])
    return Outcome(APPLIED, join(lines))


def skip_validation(text, ctx):
    return sub_lines(text, r"if not noval or final_epoch:", "if (not noval or final_epoch) and not bench.skip:",
                     done=r"\(not noval or final_epoch\) and not bench\.skip",
                     missing='no per-epoch validation `if not noval or final_epoch:`')


def skip_checkpoints(text, ctx):
    return sub_lines(text, r"if \(not nosave\) or \(final_epoch and not evolve\):",
                     "if ((not nosave) or (final_epoch and not evolve)) and not bench.skip:",
                     done=r"and not evolve\)\) and not bench\.skip",
                     missing='no checkpoint block `if (not nosave) or (final_epoch and not evolve):`')


def benchmark_finish(text, ctx):
    if 'bench.finish()' in text:
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^\s*# end training")
    if i is None:
        return Outcome(MISSING, text, 'no `# end training` comment after the epoch loop')
    insert_lines(lines, i, indent_of(lines[i]), ["bench.finish()  # benchmark log (BENCHMARK_LOG)"])
    return Outcome(APPLIED, join(lines))


def options(text, ctx):
    if re.search(r"add_argument\(\s*['\"]--pyamp['\"]", text):
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^\s*parser\.add_argument\(['\"]--local_rank['\"]")
    if i is None:
        return Outcome(MISSING, text, "no `parser.add_argument('--local_rank', ...)` in parse_opt()")
    insert_lines(lines, statement_end(lines, i) + 1, indent_of(lines[i]), [
        "parser.add_argument('--pyamp', action='store_true', help='mixed precision on MLU/CPU (CUDA: always)')",
        "parser.add_argument('--iters', type=int, default=-1, help='stop after N iterations (benchmark)')",
        "parser.add_argument('--skip', action='store_true', help='no per-epoch validation or checkpoints')"])
    return Outcome(APPLIED, join(lines))


def device_help(text, ctx):
    return sub_lines(text, r"(help='cuda device, i\.e\. 0 or 0,1,2,3 or cpu)'", r"\1 or mlu or mlu:N'",
                     done=r"or cpu or mlu or mlu:N", missing='--device help text differs')


def ddp_device_count(text, ctx):
    return sub_lines(text, r"torch\.cuda\.device_count\(\) > LOCAL_RANK", "mlu_port.device_count(device) > LOCAL_RANK",
                     done=r"mlu_port\.device_count\(device\) > LOCAL_RANK",
                     missing='no DDP check `torch.cuda.device_count() > LOCAL_RANK` in main()')


def ddp_init(text, ctx):
    if 'mlu_port.init_distributed(' in text:
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^\s*torch\.cuda\.set_device\(LOCAL_RANK\)\s*(#.*)?$")
    j = find_line(lines, r"dist\.init_process_group\(", i or 0, (i or 0) + 6) if i is not None else None
    if i is None or j is None:
        return Outcome(MISSING, text, 'no DDP set-up `torch.cuda.set_device(LOCAL_RANK)` ... '
                                      '`dist.init_process_group(...)` in main()')
    end = statement_end(lines, j)
    ind = indent_of(lines[i])
    block = [ind + '    ' + s[len(ind):] if s.strip() else s for s in lines[i:end + 1]]
    lines[i:end + 1] = [mark(f"{ind}if device.type == 'mlu':  # one process per MLU, CNCL backend"),
                        mark(f"{ind}    device = mlu_port.init_distributed(device, LOCAL_RANK)"),
                        mark(f"{ind}else:")] + block
    return Outcome(APPLIED, join(lines))


# --- utils/torch_utils.py --------------------------------------------------------------------
def select_device(text, ctx):
    if 'mlu_port.wants_mlu(' in text:
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^def select_device\(")
    if i is None:
        return Outcome(MISSING, text, 'no `def select_device(` at module level')
    head = ' '.join(lines[i:statement_end(lines, i) + 1])
    at = statement_end(lines, i) + 1
    while at < len(lines) and not lines[at].strip():
        at += 1
    if lines[at].lstrip().startswith(('"""', "'''")):  # after the docstring
        quote = lines[at].lstrip()[:3]
        at = at if lines[at].count(quote) >= 2 else find_line(lines, re.escape(quote), at + 1)
        at += 1
    size = 'batch_size' if 'batch_size' in head else '0'
    insert_lines(lines, at, body_indent(lines, i), [
        "if mlu_port.wants_mlu(device):  # --device mlu / mlu:N",
        f"    return mlu_port.select_mlu(device, {size})"])
    return Outcome(APPLIED, join(lines))


def barrier(text, ctx):
    return sub_lines(text, r"dist\.barrier\(device_ids=\[(\w+)\]\)", r"dist.barrier(**mlu_port.barrier_kwargs(\1))",
                     done=r"mlu_port\.barrier_kwargs\(",
                     missing='no `dist.barrier(device_ids=[...])` in torch_distributed_zero_first')


# --- val.py / detect.py ----------------------------------------------------------------------
def iou_vector(text, ctx):
    return sub_lines(text, r"^(\s*iouv = torch\.linspace\(.*)\bdevice\b(.*)$",  # the last `device`: the value
                     r"\1mlu_port.postprocess_device(device)\2", done=r"iouv = .*postprocess_device",
                     missing='no `iouv = torch.linspace(...device...)`')


def val_postprocess(text, ctx):
    if 'pdev = mlu_port.postprocess_device(device)' in text:
        return Outcome(ALREADY, text)
    lines = split(text)
    i = find_line(lines, r"^\s*targets\[:, 2:\] \*= ")
    loop = None
    if i is not None:
        for k in range(i - 1, -1, -1):
            if re.match(r"\s*for .*\bin\b.*(dataloader|pbar)", lines[k]) and \
                    len(indent_of(lines[k])) < len(indent_of(lines[i])):
                loop = k
                break
    if i is None or loop is None:
        return Outcome(MISSING, text, 'no `targets[:, 2:] *= ...` (targets to pixels) inside the batch loop')
    end = block_end(lines, loop)
    nms = find_line(lines, r"non_max_suppression\(\s*\w+", i, end)
    if nms is None:
        return Outcome(MISSING, text, 'no `non_max_suppression(...)` call after the targets-to-pixels line')
    for k in range(i, end):
        new = re.sub(r"device=device\b", "device=pdev", lines[k])
        new = re.sub(r"\.to\(device\)", ".to(pdev)", new)
        if k == nms:
            new = re.sub(r"non_max_suppression\(\s*(\w+)", r"non_max_suppression(mlu_port.to_device(\1, pdev)", new)
        if new != lines[k]:
            lines[k] = mark(new)
    insert_lines(lines, i, indent_of(lines[i]), [
        "pdev = mlu_port.postprocess_device(device)  # NMS and matching on the CPU for MLU",
        "targets = targets.to(pdev)"])
    return Outcome(APPLIED, join(lines))


def detect_nms(text, ctx):
    return sub_lines(text, r"=\s*non_max_suppression\(\s*(\w+)",
                     r"= non_max_suppression(mlu_port.to_device(\1, mlu_port.postprocess_device(device))",
                     done=r"non_max_suppression\(mlu_port\.to_device\(",
                     missing='no `pred = non_max_suppression(pred, ...)`')


# --- models/experimental.py ------------------------------------------------------------------
def attempt_load_on_cpu(text, ctx):
    if 'mlu_port.move_checkpoint(' in text:
        return Outcome(ALREADY, text)
    if re.search(r"(?:torch\.load|mlu_port\.torch_load)\(attempt_download\(\w+\), map_location=['\"]cpu['\"]\)",
                 text):
        return Outcome(NOT_NEEDED, text, 'attempt_load already loads on the CPU')
    return sub_lines(text, r"torch\.load\((attempt_download\(\w+\)), map_location=(\w+)\)",
                     r"mlu_port.move_checkpoint(torch.load(\1, map_location='cpu'), \2)",
                     missing='no `torch.load(attempt_download(w), map_location=...)` in attempt_load')


# --- --modernize ------------------------------------------------------------------------------
def _optional_sub(text, pattern, repl, gone):
    """A fix that is simply not needed where the old code is absent."""
    out = sub_lines(text, pattern, repl)
    if out.status == MISSING:
        return Outcome(NOT_NEEDED, text, gone)
    return out


def numpy_aliases(text, ctx):
    return _optional_sub(text, r"\bnp\.(int|float|bool)\b(?![\w.])", r"\1", 'no np.int/np.float/np.bool')


def no_pkg_resources(text, ctx):
    out = _optional_sub(text, r"^import pkg_resources as pkg\b.*$", "from utils import pkg_compat as pkg",
                        'no pkg_resources import')
    if out.status == APPLIED or 'pkg_compat as pkg' in text:
        ctx['pkg_compat'] = True
    return out


def torch_load_legacy(text, ctx):
    return _optional_sub(text, r"(?<![\w.])torch\.load\(", "mlu_port.torch_load(", 'no torch.load call')


def clamp_int(text, ctx):
    return _optional_sub(text, r"\.clamp_\(0, gain\[(\d)\] - 1\)", r".clamp_(0, int(gain[\1]) - 1)",
                         'build_targets already clamps with ints')


def offline_fonts(text, ctx):
    if 'mlu_port.skip_download(' in text:
        return Outcome(ALREADY, text)
    lines, n = split(text), 0
    for name in ('check_font', 'check_pil_font'):
        i = find_line(lines, rf"^def {name}\((\w+)")
        if i is None:
            continue
        arg = re.match(rf"def {name}\((\w+)", lines[i]).group(1)
        size = 'size' if re.search(r"\bsize\b", lines[i]) else '10'
        insert_lines(lines, statement_end(lines, i) + 1, body_indent(lines, i), [
            f"if mlu_port.skip_download({arg}):  # offline: PIL's built-in font, no download",
            f"    return mlu_port.default_font({size})"])
        n += 1
    if not n:
        return Outcome(NOT_NEEDED, text, 'no font download function here')
    return Outcome(APPLIED, join(lines), f'{n} function(s)')


def no_pip_install(text, ctx):
    return _optional_sub(text, r"^(def check_requirements\(.*\binstall=)True", r"\1False",
                         'check_requirements does not install by default')


def pil_text_size(text, ctx):
    return _optional_sub(text, r"\bself\.font\.getsize\(", "mlu_port.text_size(self.font, ",
                         'no FreeTypeFont.getsize call')


TRAIN, TORCH_UTILS, VAL, DETECT = 'train.py', 'utils/torch_utils.py', 'val.py', 'detect.py'
EXPERIMENTAL, GENERAL = 'models/experimental.py', 'utils/general.py'

EDITS = [
    Edit('device', [TORCH_UTILS], 'select_device: --device mlu / mlu:N with availability check', select_device),
    Edit('device-help', [TRAIN, VAL, DETECT], "--device help mentions mlu", device_help, required=False),
    Edit('ckpt-cpu', [TRAIN], 'pretrained weights loaded with map_location=cpu, then moved', checkpoint_on_cpu),
    Edit('ckpt-cpu-infer', [EXPERIMENTAL], 'attempt_load reads on the CPU, then moves', attempt_load_on_cpu),
    Edit('accel-gate', [TRAIN], 'DataParallel only on CUDA; `use_device` for accelerators', accelerator_gate),
    Edit('syncbn', [TRAIN], 'SyncBatchNorm on any accelerator', sync_bn_gate),
    Edit('ddp', [TRAIN], 'DDP on any accelerator', ddp_gate),
    Edit('ddp-ids', [TRAIN, TORCH_UTILS], 'DDP device_ids on CUDA only', ddp_kwargs, group='ddp-ids'),
    Edit('barrier', [TORCH_UTILS], 'barrier device_ids for NCCL only', barrier),
    Edit('ddp-count', [TRAIN], 'DDP card count of the selected kind', ddp_device_count),
    Edit('ddp-init', [TRAIN], 'DDP on MLU: set_device + cncl backend', ddp_init),
    Edit('scaler', [TRAIN], 'GradScaler for the device; AMP on CUDA or with --pyamp', grad_scaler),
    Edit('autocast', [TRAIN], 'autocast for the device', autocast),
    Edit('options', [TRAIN], '--pyamp, --iters, --skip', options),
    Edit('bench', [TRAIN], '--iters/--skip/MetricCollector set-up before the epoch loop', benchmark_setup),
    Edit('bench-step', [TRAIN], 'one benchmark sample per iteration; stop at --iters', benchmark_step),
    Edit('bench-epoch', [TRAIN], 'close the last sample of the epoch', benchmark_epoch_end),
    Edit('skip-val', [TRAIN], '--skip: no per-epoch validation', skip_validation),
    Edit('skip-save', [TRAIN], '--skip: no checkpoints', skip_checkpoints),
    Edit('bench-finish', [TRAIN], 'write the benchmark log after training', benchmark_finish),
    Edit('nms-val', [VAL], 'val: NMS and matching on the CPU for MLU', val_postprocess),
    Edit('iouv', [VAL], 'val: IoU thresholds on the postprocessing device', iou_vector),
    Edit('nms-detect', [DETECT], 'detect: NMS on the CPU for MLU', detect_nms),
    # --modernize
    Edit('np-aliases', ['**/*.py'], 'numpy: np.int/np.float/np.bool -> int/float/bool', numpy_aliases,
         modernize=True),
    Edit('pkg-resources', ['**/*.py'], 'no pkg_resources (utils/pkg_compat.py)', no_pkg_resources, modernize=True),
    Edit('weights-only', [TRAIN, VAL, DETECT, EXPERIMENTAL, GENERAL],
         'torch.load of pickled checkpoints with weights_only=False (torch >= 2.6 default)',
         torch_load_legacy, modernize=True),
    Edit('clamp', ['utils/loss.py'], 'build_targets clamps long indices with ints', clamp_int, modernize=True),
    Edit('fonts', [GENERAL, 'utils/plots.py'], 'no font download offline', offline_fonts, modernize=True),
    Edit('pil-getsize', ['utils/plots.py'], 'Pillow >= 10: text size from getbbox, not getsize', pil_text_size,
         modernize=True),
    Edit('no-pip', [GENERAL], 'no pip auto-install at run time', no_pip_install, modernize=True),
]
