"""What a resumable last.pt holds beyond upstream's keys, and how a resumed run puts it back.

Upstream v6.0 checkpoints carry fp16 copies of the model and EMA plus the optimizer state, so a
run resumed from them continues from rounded weights with a fresh GradScaler and early-stopping
counter. Our last.pt adds one key, 'resume_state', which upstream tools ignore and
strip_optimizer drops:

  model_fp32, ema_fp32   the exact weights (CPU state_dicts)
  scaler                 GradScaler state (mixed precision)
  stopper                EarlyStopping counters
  iterations_done        batches trained so far (--iters counts across a resume)
  last_opt_step          global batch index of the last optimizer step (gradient accumulation)
  interrupted            True when saved in the middle of an epoch

'epoch' keeps upstream's meaning, the last finished epoch, so a checkpoint saved in the middle of
epoch e says e - 1 (-1 during the first epoch) and the resumed run repeats epoch e, starting from
the weights reached when it stopped. Epoch -1 without 'resume_state' is a finished (stripped) file.
Upstream last.pt files without the key still resume, as in v6.0.
"""
from pathlib import Path

import numpy as np

from utils.io.checkpoint import build_checkpoint
from utils.errors import UserError
from utils.device.parallel import de_parallel

RESUME_KEY = "resume_state"


def _cpu_state(module):
    return {k: v.detach().cpu().clone() for k, v in de_parallel(module).state_dict().items()}


def resumable_checkpoint(model, ema, optimizer, epoch, best_fitness, opt, loop, interrupted=False):
    """The checkpoint dict train.py writes to last.pt: upstream keys + 'opt' + 'resume_state'.

    `loop`: dict with scaler, stopper, iterations_done and last_opt_step of the trainer.
    """
    ckpt = build_checkpoint(model, ema, optimizer, epoch=epoch, best_fitness=best_fitness)
    ckpt["opt"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opt).items()}
    ckpt[RESUME_KEY] = {
        "model_fp32": _cpu_state(model),
        "ema_fp32": _cpu_state(ema.ema) if ema is not None else None,
        "scaler": loop["scaler"].state_dict(),
        "stopper": loop["stopper"].state_dict(),
        "iterations_done": int(loop["iterations_done"]),
        "last_opt_step": int(loop["last_opt_step"]),
        "interrupted": bool(interrupted),
    }
    return ckpt


def resume_start_epoch(ckpt, weights, epochs):
    """The epoch a resumed run starts at; UserError when the checkpoint has nothing left to train."""
    state = ckpt.get(RESUME_KEY)
    epoch = int(ckpt.get("epoch", -1) if ckpt.get("epoch") is not None else -1)
    if ckpt.get("optimizer") is None or (epoch < 0 and not state):
        raise UserError(f"--resume {weights}: this run already finished (its weights were stripped for use), "
                        f"so there is nothing to resume. To train further, start a new run from it: "
                        f"python train.py --weights {weights} --epochs N")
    start_epoch = epoch + 1
    if start_epoch > epochs:
        raise UserError(f"--resume {weights}: this run already finished all {epochs} epochs; to train "
                        f"further, start a new run: python train.py --weights {weights} --epochs N")
    # start_epoch == epochs: every epoch was trained and saved, but the run stopped before its finish
    # step (optimizer stripping, final validation of best.pt); the resumed run does only that step
    return start_epoch


def restore_training(ckpt, model, ema, optimizer):
    """Load weights, EMA and optimizer state from a resumable checkpoint; returns best fitness."""
    state = ckpt.get(RESUME_KEY) or {}
    if state.get("model_fp32") is not None:  # exact fp32 weights (ckpt['model'] is fp16)
        de_parallel(model).load_state_dict(state["model_fp32"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None:
        source = state.get("ema_fp32") if state.get("ema_fp32") is not None else ckpt.get("ema")
        if source is not None:
            ema.restore(source, ckpt.get("updates") or 0)
    return float(np.asarray(ckpt.get("best_fitness") or 0.0, dtype=np.float64).reshape(-1)[0])


def restore_loop(ckpt, scaler, stopper, start_epoch, batches_per_epoch):
    """GradScaler and early-stopping state; (iterations_done, last_opt_step) for the loop."""
    state = ckpt.get(RESUME_KEY) or {}
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if state.get("stopper"):
        stopper.load_state_dict(state["stopper"])
    fresh_epoch = start_epoch * batches_per_epoch - 1  # as if the last step ended the previous epoch
    last_opt_step = fresh_epoch if state.get("interrupted") else int(state.get("last_opt_step", fresh_epoch))
    return int(state.get("iterations_done", 0)), last_opt_step
