"""A tiny YOLOv5-shaped tree, written for the porting tool's tests.

It is not YOLOv5: a linear model on fixed numbers, a few lines per file. What it shares with an
upstream checkout (v6.0 shape, or v7.0 shape with `version='v7.0'`) is the layout and the kind of
statement each port change looks for (device gates, GradScaler/autocast, DDP set-up, the batch
loop, the NMS call in val/detect). train.py and val.py run and print one `RESULT {json}` line that
says what happened, so the ported tree's behaviour can be asserted, not only its text.
`old_stack=True` adds the constructs `--modernize` fixes (np.int, pkg_resources, a float clamp
bound, a font download, pip auto-install, Pillow's removed getsize).
"""
from pathlib import Path
from textwrap import dedent

TORCH_UTILS = '''\
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

LOCAL_RANK = int(os.getenv('LOCAL_RANK', -1))


@contextmanager
def torch_distributed_zero_first(local_rank: int):
    if local_rank not in [-1, 0]:
        dist.barrier(device_ids=[local_rank])
    yield
    if local_rank == 0:
        dist.barrier(device_ids=[0])


def select_device(device='', batch_size=None):
    # '' or 'cpu' or '0'
    device = str(device).strip().lower().replace('cuda:', '')
    if device in ('cpu', ''):
        return torch.device('cpu')
    if not torch.cuda.is_available():
        raise SystemExit(f'--device {device}: no CUDA here')
    return torch.device('cuda:0')
'''

SMART_DDP = '''

def smart_DDP(model):
    return DDP(model, device_ids=[LOCAL_RANK], output_device=LOCAL_RANK)
'''

GENERAL = '''\
import torch


def check_amp(model):
    return next(model.parameters()).device.type == 'cuda'


def non_max_suppression(prediction, conf_thres=0.25, iou_thres=0.45):
    return [p[p[:, 0] > conf_thres] for p in prediction]
'''

GENERAL_OLD_STACK = '''\
import numpy as np
import pkg_resources as pkg
import torch


def check_version(current='0.0.0', minimum='0.0.0'):
    current, minimum = (pkg.parse_version(x) for x in (current, minimum))
    return current >= minimum


def check_requirements(requirements=(), exclude=(), install=True):
    return install


def check_font(font='Arial.ttf', progress=False):
    torch.hub.download_url_to_file('https://example.invalid/' + font, font, progress=progress)


def class_counts(labels):
    return labels.astype(np.int)


def check_amp(model):
    return next(model.parameters()).device.type == 'cuda'


def non_max_suppression(prediction, conf_thres=0.25, iou_thres=0.45):
    return [p[p[:, 0] > conf_thres] for p in prediction]
'''

LOSS_OLD_STACK = '''\
import torch


def build_indices(gj, gi, gain):
    return gj.clamp_(0, gain[3] - 1), gi.clamp_(0, gain[2] - 1)
'''

PLOTS_OLD_STACK = '''\
from utils.general import check_font


class Annotator:
    def __init__(self, font):
        self.font = font

    def text_width(self, text):
        w, h = self.font.getsize(text)  # text width, height
        return w
'''

EXPERIMENTAL = '''\
import torch

from utils.downloads import attempt_download


def attempt_load(weights, map_location=None):
    ckpt = torch.load(attempt_download(weights), map_location=map_location)  # load
    return ckpt['model']
'''

TRAIN_HEAD = '''\
import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
{amp_import}from torch.nn.parallel import DistributedDataParallel as DDP

ROOT = Path(__file__).resolve().parent
sys.path.append(str(ROOT))
{extra_import}from utils.torch_utils import select_device, torch_distributed_zero_first

LOCAL_RANK = int(os.getenv('LOCAL_RANK', -1))
RANK = int(os.getenv('RANK', -1))
WORLD_SIZE = int(os.getenv('WORLD_SIZE', 1))


def train(hyp, opt, device, callbacks=None):
    noval, nosave, evolve = opt.noval, opt.nosave, False
    cuda = device.type != 'cpu'
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).to(device)
    weights = opt.weights
    if weights:
        ckpt = torch.load(weights, map_location={load_to})  # load checkpoint
        model.load_state_dict(ckpt['model'])
'''

TRAIN_BODY_V60 = '''\
    if cuda and RANK == -1 and torch.cuda.device_count() > 1:
        model = torch.nn.DataParallel(model)
    if opt.sync_bn and cuda and RANK != -1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
    if cuda and RANK != -1:
        model = DDP(model, device_ids=[LOCAL_RANK], output_device=LOCAL_RANK)
    train_loader = [(torch.full((2, 4), float(k)), torch.ones(2, 2)) for k in range(opt.batches)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    start_epoch, epochs = 0, opt.epochs
    scaler = amp.GradScaler(enabled=cuda)
'''

TRAIN_BODY_V70 = '''\
    amp = check_amp(model)  # check AMP
    if cuda and RANK == -1 and torch.cuda.device_count() > 1:
        model = torch.nn.DataParallel(model)
    if opt.sync_bn and cuda and RANK != -1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
    if cuda and RANK != -1:
        model = smart_DDP(model)
    train_loader = [(torch.full((2, 4), float(k)), torch.ones(2, 2)) for k in range(opt.batches)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    start_epoch, epochs = 0, opt.epochs
    scaler = torch.cuda.amp.GradScaler(enabled=amp)
'''

TRAIN_LOOP = '''\
    log = {{'iterations': 0, 'epochs': 0, 'validations': 0, 'saves': 0}}
    for epoch in range(start_epoch, epochs):  # epoch ----------------------------------------
        pbar = enumerate(train_loader)
        for i, (imgs, targets) in pbar:  # batch ---------------------------------------------
            {autocast}
                loss = ((model(imgs.to(device)) - targets.to(device)) ** 2).mean()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            log['iterations'] += 1

        lr = [x['lr'] for x in optimizer.param_groups]  # for loggers
        log['epochs'] += 1
        final_epoch = epoch + 1 == epochs
        if not noval or final_epoch:  # Calculate mAP
            log['validations'] += 1
        if (not nosave) or (final_epoch and not evolve):  # if save
            log['saves'] += 1
    # end training ---------------------------------------------------------------------------
    log['scaler_enabled'] = scaler.is_enabled()
    log['device'] = str(device)
    log['weight'] = model.weight.detach().cpu().flatten().tolist()
    return log


def parse_opt():
    parser = argparse.ArgumentParser()
    parser.add_argument('--weights', type=str, default='')
    parser.add_argument('--cfg', type=str, default='tiny.yaml')
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--batches', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--noval', action='store_true')
    parser.add_argument('--nosave', action='store_true')
    parser.add_argument('--sync-bn', action='store_true')
    parser.add_argument('--device', default='', help='cuda device, i.e. 0 or 0,1,2,3 or cpu')
    parser.add_argument('--local_rank', type=int, default=-1, help='DDP parameter, do not modify')
    return parser.parse_args()


def main(opt):
    device = select_device(opt.device, batch_size=opt.batch_size)
    if LOCAL_RANK != -1:
        assert torch.cuda.device_count() > LOCAL_RANK, 'insufficient CUDA devices for DDP command'
        torch.cuda.set_device(LOCAL_RANK)
        device = torch.device('cuda', LOCAL_RANK)
        dist.init_process_group(backend="nccl" if dist.is_nccl_available() else "gloo")
    print('RESULT', json.dumps(train(None, opt, device)))


if __name__ == "__main__":
    main(parse_opt())
'''

VAL = '''\
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from utils.general import non_max_suppression
from utils.torch_utils import select_device


def run(device='', batches=2):
    device = select_device(device)
    iouv = torch.linspace(0.5, 0.95, 10{iouv_device})  # iou vector
    seen, devices = 0, set()
    dataloader = [(torch.rand(2, 3), torch.tensor([[0, 1, .5, .5, .2, .2], [1, 2, .4, .4, .1, .1]]))
                  for _ in range(batches)]
    for batch_i, (im, targets) in enumerate(dataloader):
        im = im.to(device)
        targets = targets.to(device)
        out = torch.stack([im, im])  # stands in for the model's raw predictions
        height, width = 64, 32

        # NMS
        targets[:, 2:] *= torch.tensor((width, height, width, height){to_pixels})  # to pixels
        out = non_max_suppression(out, 0.25, 0.45)
        for si, pred in enumerate(out):
            labels = targets[targets[:, 0] == si, 1:]
            correct = torch.zeros(pred.shape[0], iouv.numel(), dtype=torch.bool, device=device)
            devices.update({{str(pred.device), str(labels.device), str(correct.device)}})
            seen += 1
    return {{'seen': seen, 'postprocess_devices': sorted(devices), 'iouv_device': str(iouv.device)}}


def parse_opt():
    parser = argparse.ArgumentParser()
    parser.add_argument('--device', default='', help='cuda device, i.e. 0 or 0,1,2,3 or cpu')
    parser.add_argument('--batches', type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    print('RESULT', json.dumps(run(**vars(parse_opt()))))
'''

DETECT = '''\
import sys
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from utils.general import non_max_suppression
from utils.torch_utils import select_device


def run(device=''):
    device = select_device(device)
    pred = torch.rand(1, 3, 6, device=device)
    pred = non_max_suppression(pred, 0.25, 0.45)
    return pred
'''


def _val(v7):
    if v7:
        return VAL.format(iouv_device=', device=device', to_pixels=', device=device')
    text = VAL.format(iouv_device='', to_pixels='')
    text = text.replace('10)  # iou vector', '10).to(device)  # iou vector')
    return text.replace('height))  # to pixels', 'height)).to(device)  # to pixels')


def write_tree(root, version='v6.0', old_stack=False):
    """Write the tree under `root`; returns {relative path: text} of what was written."""
    root = Path(root)
    v7 = version == 'v7.0'
    files = {
        'utils/__init__.py': '',
        'utils/downloads.py': 'def attempt_download(file):\n    return file\n',
        'utils/torch_utils.py': TORCH_UTILS + (SMART_DDP if v7 else ''),
        'utils/general.py': GENERAL_OLD_STACK if old_stack else GENERAL,
        'models/__init__.py': '',
        'models/yolo.py': 'import torch\n\n\nclass Model(torch.nn.Module):\n    pass\n',
        'models/experimental.py': EXPERIMENTAL,
        'val.py': _val(v7),
        'detect.py': DETECT,
        'train.py': TRAIN_HEAD.format(
            amp_import='' if v7 else 'from torch.cuda import amp\n',
            extra_import='from utils.general import check_amp\n' if v7 else '',
            load_to="'cpu'" if v7 else 'device')
        + (TRAIN_BODY_V70 if v7 else TRAIN_BODY_V60)
        + TRAIN_LOOP.format(autocast='with torch.cuda.amp.autocast(amp):' if v7 else
                            'with amp.autocast(enabled=cuda):'),
    }
    if v7:
        files['train.py'] = files['train.py'].replace(
            'from utils.torch_utils import select_device, torch_distributed_zero_first',
            'from utils.torch_utils import select_device, smart_DDP, torch_distributed_zero_first')
    if old_stack:
        files['utils/loss.py'] = LOSS_OLD_STACK
        files['utils/plots.py'] = PLOTS_OLD_STACK
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return files
