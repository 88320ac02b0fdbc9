"""Train a YOLOv5 model on a custom dataset (MLU, CUDA or CPU).

    python train.py --data coco128.yaml --cfg yolov5m.yaml --weights '' --device mlu     # from scratch
    python train.py --data coco.yaml --weights ../yolov5_model/yolov5m.pt --device mlu   # from pretrained
    python train.py --resume                                                           # resume
    torchrun --nproc_per_node 4 train.py --data coco.yaml --cfg yolov5m.yaml --device mlu  # several cards

Options follow upstream v6.0 (see utils/training/train_options.py for the additions: --pyamp, --iters, --skip,
--seed). Benchmark logs: export BENCHMARK_LOG=path before running (utils_mlu/metric.py).

Exit codes: 0 done (also after a callback set callbacks.stop_training); 2 a user error (bad option,
data or checkpoint, or a non-finite loss), printed as one line; 130 / 143 stopped by SIGINT /
SIGTERM after saving a resumable last.pt (`--resume` continues it), the shell's 128 + signal.
"""
import logging
import os
import sys
import time
from copy import deepcopy
from pathlib import Path

YOLO_ROOT = Path(__file__).resolve().parent
if str(YOLO_ROOT) not in sys.path:
    sys.path.insert(0, str(YOLO_ROOT))

from utils.training.callbacks import Callbacks  # noqa: E402
from utils.cli import print_args, set_logging  # noqa: E402
from utils.errors import UserError, exit_on_user_error  # noqa: E402
from utils.training.train_options import check_values, parse_opt, resolve_resume, warn_unused  # noqa: E402

LOGGER = logging.getLogger("yolov5")


def resolve_files(opt):
    """Check and resolve --data, --cfg, --hyp, --weights and make the run directory name."""
    from utils.data.data_config import resolve_data_file
    from utils.io.model_files import find_yaml
    from utils.io.run_dir import increment_path
    from utils.training.train_setup import check_weights_file

    opt.data = str(resolve_data_file(opt.data))
    opt.cfg = find_yaml(opt.cfg, "--cfg") if opt.cfg else ""
    opt.hyp = find_yaml(opt.hyp, "--hyp")
    opt.weights = check_weights_file(opt.weights)
    if opt.evolve:
        if opt.project == str(Path("runs") / "train"):
            opt.project = str(Path("runs") / "evolve")
        opt.exist_ok, opt.resume = bool(opt.resume), False
    opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
    return opt


def ensure_demo_data(opt):
    """`--data demo.yaml`: generate the embedded demo dataset on first use (seconds, no download)."""
    if Path(opt.data).name != "demo.yaml":
        return
    from utils.data.data_config import resolve_data_file
    from utils.data.demo_data import ensure_demo_dataset
    import yaml
    shipped = resolve_data_file("demo.yaml") if not Path(opt.data).is_file() else Path(opt.data)
    root = yaml.safe_load(Path(shipped).read_text()).get("path", "../datasets/demo")
    root = Path(root) if Path(root).is_absolute() else (Path(shipped).parent / root).resolve()
    ensure_demo_dataset(root)
    opt.data = str(shipped)


def attach_benchmark(callbacks, opt, device):
    """MetricCollector on every iteration when BENCHMARK_LOG is set (Cambricon's benchmark tooling)."""
    from utils.training.benchmark_hooks import BenchmarkHooks
    hooks = BenchmarkHooks(opt, device)
    if hooks.enabled:
        hooks.register(callbacks)
    return hooks


def attach_loggers(callbacks, opt, device):
    """TensorBoard on the main process (not when evolving, as v6.0); results.csv is the trainer's own."""
    if int(os.environ.get("RANK", device.local_rank)) in (-1, 0) and not opt.evolve:
        from utils.training.tb_logger import attach_tensorboard
        attach_tensorboard(callbacks, opt.save_dir)


def train_once(opt, hyp, device, callbacks):
    """Run one training; returns the Trainer (.results; .interrupted and .stop after an early stop)."""
    from utils.training.trainer import Trainer
    trainer = Trainer(opt, hyp, device, callbacks)
    trainer.fit()
    return trainer


def evolve(opt, hyp, device):
    """--evolve N: train N generations, each from a mutation of the best so far (as upstream v6.0)."""
    import numpy as np
    from utils.training.evolve import evolve_generation, evolve_meta, plot_evolve, prepare_hyp, record_generation

    opt.noval, opt.nosave = True, True
    meta = evolve_meta(opt.noautoanchor)
    hyp = prepare_hyp(hyp, opt.noautoanchor)
    save_dir = Path(opt.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    evolve_csv = save_dir / "evolve.csv"
    rng = np.random.default_rng(opt.seed if opt.seed else int(time.time()))
    for generation in range(opt.evolve):
        hyp = evolve_generation(hyp, evolve_csv, rng, meta=meta)
        gen_opt = deepcopy(opt)
        gen_opt.save_dir = str(save_dir / f"gen{generation}")
        trainer = train_once(gen_opt, hyp, device, Callbacks())
        if trainer.interrupted:  # an interrupted generation has no valid result: stop evolving
            LOGGER.info(f"Evolution stopped during generation {generation}; evolve.csv keeps the finished ones")
            return trainer.stop
        record_generation(trainer.results, hyp, save_dir)
    plot_evolve(evolve_csv)
    LOGGER.info(f"Hyperparameter evolution finished {opt.evolve} generations\n"
                f"Results saved to {save_dir}\nUse best hyperparameters example: "
                f"$ python train.py --hyp {save_dir / 'hyp_evolve.yaml'}")
    return None


def rank0_value(value):
    """Rank 0's `value` on every rank (torch.distributed must be initialised)."""
    import torch.distributed as dist
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_hyp_file(opt):
    """Resumed runs read the run's own hyp.yaml (the original --hyp file may have changed or moved)."""
    saved = Path(opt.save_dir) / "hyp.yaml"
    return str(saved) if opt.resume and not opt.evolve and saved.is_file() else opt.hyp


def start_devices(opt):
    """The training device(s); under torchrun the options are checked and the process group joined."""
    from utils.device.devices import select_device

    device = select_device(opt.device, batch_size=opt.batch_size if opt.batch_size != -1 else None)
    if opt.batch_size == -1 and (device.world_size > 1 or len(device.indices) > 1):
        raise UserError("--batch-size -1 (AutoBatch) works with one device; with several, give the total "
                        "batch size (a multiple of the device count)")
    if device.world_size > 1:
        if opt.image_weights or opt.evolve:
            raise UserError("--image-weights and --evolve are not supported with several processes (torchrun)")
        if opt.batch_size % device.world_size:
            raise UserError(f"--batch-size {opt.batch_size} must be a multiple of the {device.world_size} processes")
        from utils.training.ddp_failures import collective_timeout
        device.init_distributed(timeout_s=collective_timeout())
        opt.save_dir = rank0_value(opt.save_dir)  # each rank numbered exp{N} itself: use rank 0's
    return device


@exit_on_user_error
def main(argv=None, callbacks=None):
    from utils.training.cpu_speed import limit_openmp_spinning
    limit_openmp_spinning()  # before torch is first imported: libgomp reads it once, at load
    opt = parse_opt(argv)
    local_rank = int(os.environ.get("LOCAL_RANK", -1))
    set_logging(int(os.environ.get("RANK", local_rank)))  # one node's logs only: global rank 0
    if opt.resume and not opt.evolve:
        opt = resolve_resume(opt)
    else:
        check_values(opt)
        ensure_demo_data(opt)
        opt = resolve_files(opt)
    print_args("train", opt)
    warn_unused(opt, log=LOGGER.warning)

    from utils.training.train_setup import load_hyp

    device = start_devices(opt)
    hyp = load_hyp(run_hyp_file(opt))
    print_args("hyperparameters", hyp)
    try:
        if opt.evolve:
            stop = evolve(opt, hyp, device)
            if stop:
                raise SystemExit(stop.exit_code)
            return None
        callbacks = callbacks or Callbacks()
        hooks = attach_benchmark(callbacks, opt, device)
        attach_loggers(callbacks, opt, device)
        trainer = train_once(opt, hyp, device, callbacks)
        hooks.finish()
        if trainer.interrupted:
            if trainer.stop.exit_code:  # stopped by a signal: say so to the shell (130 / 143)
                raise SystemExit(trainer.stop.exit_code)
        elif int(os.environ.get("RANK", device.local_rank)) in (-1, 0) and not opt.skip:
            LOGGER.info(f"Final mAP@0.5 {trainer.results[2]:.4f}, mAP@0.5:0.95 {trainer.results[3]:.4f} "
                        f"(results in {opt.save_dir})")
        return trainer.results
    except RuntimeError as e:  # backend errors of collectives (DistBackendError) are RuntimeErrors
        from utils.training.ddp_failures import peer_failure_message
        message = peer_failure_message(e, int(os.environ.get("RANK", device.local_rank)), device.world_size,
                                       Path(opt.save_dir) / "weights" / "last.pt")
        if message is None:
            raise
        LOGGER.error(f"ERROR: {message}")
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: stopped at once
        LOGGER.warning(f"\nStopped at once. Checkpoints are written atomically: the last one saved, if any, is "
                       f"{Path(opt.save_dir) / 'weights' / 'last.pt'} (resume with --resume)")
        raise SystemExit(130) from None
    finally:
        if device.world_size > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":
    main()
