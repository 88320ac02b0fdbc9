"""train.py's command line: every v6.0 option with its default, the MLU port's additions, and --resume.

Upstream v6.0 train.py options keep their names, defaults and meaning. Additions:
  --pyamp      mixed precision on any device (CUDA uses AMP by default anyway, as upstream)
  --iters N    stop after exactly N training iterations (batches) in total, counted across a resume
  --skip       no validation and no checkpoint writes (benchmarks)
  --seed N     global seed (v6.2's option; default 0 as there)
Options kept for compatibility but without a use here say so when given (see `warn_unused`).
"""
import argparse
import glob
import os
from pathlib import Path

import yaml

from utils.errors import UserError

YOLO_ROOT = Path(__file__).resolve().parents[2]


def build_parser():
    p = argparse.ArgumentParser(description="Train a YOLOv5 model (MLU, CUDA or CPU).")
    p.add_argument("--weights", type=str, default="yolov5s.pt", help="initial weights path; '' = from scratch")
    p.add_argument("--cfg", type=str, default="", help="model.yaml path or name (e.g. yolov5m.yaml)")
    p.add_argument("--data", type=str, default="data/coco128.yaml", help="dataset.yaml path or name")
    p.add_argument("--hyp", type=str, default="data/hyps/hyp.scratch.yaml", help="hyperparameters path")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16, help="total batch size for all devices; -1: AutoBatch (largest that fits 90%% of device memory)")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train, val image size (pixels)")
    p.add_argument("--rect", action="store_true", help="rectangular training")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume most recent training")
    p.add_argument("--nosave", action="store_true", help="only save final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable autoanchor check")
    p.add_argument("--evolve", type=int, nargs="?", const=300, help="evolve hyperparameters for x generations")
    p.add_argument("--bucket", type=str, default="", help="gsutil bucket (not supported here: see warn_unused)")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help='--cache images in "ram" (default) or "disk"')
    p.add_argument("--image-weights", action="store_true", help="use weighted image selection for training")
    p.add_argument("--device", default="", help="'' (auto), cpu, 0 or 0,1,2,3 (CUDA), cuda:N, mlu, mlu:N")
    p.add_argument("--multi-scale", action="store_true", help="vary img-size +/- 50%%")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--adam", action="store_true", help="use torch.optim.Adam() optimizer")
    p.add_argument("--sync-bn", action="store_true", help="use SyncBatchNorm, only available in DDP mode")
    p.add_argument("--workers", type=int, default=8, help="maximum number of dataloader workers")
    p.add_argument("--project", default=str(Path("runs") / "train"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--quad", action="store_true", help="quad dataloader")
    p.add_argument("--linear-lr", action="store_true", help="linear LR")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="Label smoothing epsilon")
    p.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", type=int, default=0, help="Number of layers to freeze. backbone=10, all=24")
    p.add_argument("--save-period", type=int, default=-1, help="Save checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--local_rank", type=int, default=-1, help="DDP parameter, do not modify")
    # Weights & Biases arguments (accepted; W&B logging runs only when wandb is installed)
    p.add_argument("--entity", default=None, help="W&B: Entity")
    p.add_argument("--upload_dataset", action="store_true", help="W&B: Upload dataset as artifact table")
    p.add_argument("--bbox_interval", type=int, default=-1, help="W&B: Set bounding-box image logging interval")
    p.add_argument("--artifact_alias", type=str, default="latest", help="W&B: Version of dataset artifact to use")
    # The MLU port's additions
    p.add_argument("--pyamp", action="store_true", help="mixed precision on any device (MLU, CPU; CUDA has it on)")
    p.add_argument("--iters", type=int, default=-1, help="stop after N training iterations (batches)")
    p.add_argument("--skip", action="store_true", help="skip validation and checkpoint writes (benchmark)")
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    p.add_argument("--channels-last", action="store_true",
                   help="model and batches in channels_last (NHWC) layout on CUDA/MLU (recommended on MLU)")
    p.add_argument("--augment-device", choices=("cpu", "device"), default="cpu",
                   help="where training images are augmented: cpu (loader workers, OpenCV) or device "
                        "(workers only load; mosaic, perspective, HSV and flips run on the training device)")
    return p


def parse_opt(argv=None):
    return build_parser().parse_args(argv)


def check_values(opt):
    """Reject option values that can only fail later, with a message naming the option."""
    checks = [
        (opt.epochs < 1 and not opt.resume, "--epochs must be at least 1"),
        (opt.batch_size < 1 and opt.batch_size != -1, "--batch-size must be at least 1, or -1 for AutoBatch"),
        (opt.imgsz < 32, "--imgsz must be at least 32"),
        (opt.workers < 0, "--workers cannot be negative"),
        (opt.cache not in (None, "ram", "disk"), f"--cache {opt.cache!r}: use --cache ram or --cache disk"),
        (opt.iters == 0 or opt.iters < -1, "--iters N needs N >= 1"),
        (opt.freeze < 0, "--freeze cannot be negative"),
        (not 0.0 <= opt.label_smoothing < 1.0, "--label-smoothing must be in [0, 1)"),
        (opt.patience < 0, "--patience cannot be negative (0 disables early stopping)"),
        (opt.evolve is not None and opt.evolve < 1, "--evolve N needs N >= 1 generations"),
    ]
    for failed, message in checks:
        if failed:
            raise UserError(message)
    if not opt.resume and not opt.cfg and not opt.weights:
        raise UserError("either --cfg or --weights must be given (e.g. --weights '' --cfg yolov5s.yaml)")
    if opt.weights and not str(opt.weights).endswith(".pt"):
        raise UserError(f"--weights {opt.weights}: expected a .pt file (or '' to train from scratch)")


def warn_unused(opt, log=print):
    """Say clearly when an accepted option has no effect here, instead of silently ignoring it."""
    if opt.bucket:
        log(f"WARNING: --bucket {opt.bucket}: syncing evolve.csv with a gsutil bucket is not supported; "
            "the file stays in the run directory.")
    if opt.local_rank != -1:
        log("NOTE: --local_rank is ignored; the rank comes from torchrun's LOCAL_RANK environment variable.")
    if opt.entity or opt.upload_dataset or opt.bbox_interval != -1 or opt.artifact_alias != "latest":
        try:
            import wandb  # noqa: F401
            log("WARNING: W&B options were given, but W&B logging is not built into this trainer; "
                "results are in results.csv and TensorBoard.")
        except ImportError:
            log("WARNING: W&B options were given but wandb is not installed (pip install wandb); ignoring them.")


def find_last_checkpoint(search_dir="."):
    """The most recently written last*.pt below search_dir (v6.0's bare --resume)."""
    candidates = glob.glob(f"{search_dir}/**/last*.pt", recursive=True)
    return max(candidates, key=os.path.getctime) if candidates else ""


def resolve_resume(opt):
    """Replace the options by those of the run being resumed (v6.0: opt.yaml next to weights/).

    Returns the new namespace. The run's own options come back whole, except that the command
    line's --device and --workers win when given (differ from their defaults), so a run can move to
    another machine, and save_dir is the run directory holding the checkpoint (opt.yaml may record
    a path relative to another working directory).
    """
    ckpt = opt.resume if isinstance(opt.resume, str) else find_last_checkpoint()
    if not ckpt:
        raise UserError("--resume: no last.pt found below the working directory; "
                        "give the path, e.g. --resume runs/train/exp/weights/last.pt")
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise UserError(f"--resume {ckpt}: file not found")
    opt_file = ckpt.parent.parent / "opt.yaml"
    if not opt_file.is_file():
        raise UserError(f"--resume {ckpt}: {opt_file} is missing, so the run's options are unknown; "
                        "start a new run with --weights instead")
    try:
        saved = yaml.safe_load(opt_file.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--resume: cannot read {opt_file}: {e}") from None
    defaults = vars(build_parser().parse_args([]))
    merged = {**defaults, **saved}
    merged.update(cfg="", weights=str(ckpt), resume=True, save_dir=str(ckpt.parent.parent))
    for key in ("device", "workers"):
        if getattr(opt, key) != defaults[key]:
            merged[key] = getattr(opt, key)
    return argparse.Namespace(**merged)


def save_options(opt, path):
    """opt.yaml: every option as plain yaml, so --resume can restore the run."""
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opt).items()}
    from utils.io.disk_writes import write_text
    write_text(path, yaml.safe_dump(data, sort_keys=False))  # atomic: a resume must never find it cut short
