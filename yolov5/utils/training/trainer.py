"""The training loop: batches -> loss -> optimizer steps -> EMA, then validation, logs and checkpoints.

`Trainer(opt, hyp, device, callbacks).fit()` runs one training (one generation when evolving) and
returns v6.0's results tuple (P, R, mAP@.5, mAP@.5:.95, val box, obj, cls). Set-up pieces live in
utils/training/train_setup.py, the resumable checkpoint in utils/training/train_state.py, early stops in
utils/training/train_interrupts.py; device questions go to the Device object (utils/device/devices.py), the only
code that names device kinds.

Exact resume: a run stopped at the end of epoch k (signal or callback) and resumed with --resume
ends with the same weights as an uninterrupted run on CPU with a fixed seed and --workers 0.
last.pt carries fp32 weights, optimizer, GradScaler, early-stopping and accumulation state
(train_state.py), and every epoch re-seeds Python, numpy, torch and the loader's sampler from
(seed, epoch, rank), so an epoch's data order and augmentation do not depend on what ran before.
With dataloader workers, augmentation runs in worker processes whose random streams continue
across epochs, so resumed runs then differ slightly. A stop in the middle of an epoch saves the
weights reached and the resumed run repeats that epoch from them (close, not bit-identical).

Differences from v6.0 on purpose: a non-finite loss stops training with a clear error instead of
silently producing NaN weights (noticed at the next progress refresh, utils/training/loop_monitor.py: no
host sync per iteration); under DDP, stop requests and non-finite losses are agreed on by all
ranks at those refresh points, so no rank is left waiting in a collective, the logged and
results.csv train losses are the mean over ranks, and batches that only accumulate gradients
skip DDP's all-reduce (no_sync). Under DDP every rank validates its share of the validation
batches with rank 0's EMA weights (utils/evaluation/dist_val.py), with the metrics of a single process;
a stop request during it is agreed on at validation-batch starts and abandons it on every rank.
"""
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from utils.data.augment_pack import AugmentBatch
from utils.training.callbacks import Callbacks
from utils.io.checkpoint import remove_stale_temp_files, save_checkpoint, strip_optimizer
from utils.training.cpu_speed import optimise_for_training
from utils.io.disk_writes import write_text
from utils.data.device_augment import augment_batch
from utils.training.early_stop import EarlyStopping
from utils.training.ema import ModelEMA
from utils.errors import UserError
from utils.image_size import check_img_size
from utils.training.loss import ComputeLoss, scale_loss_gains
from utils.evaluation.metrics import fitness
from utils.training.optim import (accumulate_steps, build_lr_lambda, build_optimizer, build_scheduler, nominal_batch_size,
                         warmup, warmup_iterations)
from utils.training.loop_monitor import LoopMonitor
from utils.device.parallel import de_parallel, global_rank, grad_sync
from utils.progress import is_terminal, progress_kwargs
from utils.training.results_log import append_results, plot_results, truncate_results
from utils.training.seeds import epoch_seed, init_seeds
from utils.io.train_imgsz import TRAIN_IMGSZ_KEY
from utils.training.train_interrupts import StopRequest, ValidationAbandoned, abandon_validation_on_stop, stop_on_signals
from utils.training.train_state import restore_loop, restore_training, resumable_checkpoint, resume_start_epoch

LOGGER = logging.getLogger("yolov5")


class NonFiniteLoss(UserError):
    """Training diverged: the loss became inf or NaN."""


class Trainer:
    def __init__(self, opt, hyp, device, callbacks=None, data=None):
        self.opt, self.hyp, self.device = opt, dict(hyp), device
        self.callbacks = callbacks or Callbacks()
        self.world_size = max(device.world_size, 1)
        self.rank = global_rank(device.local_rank, self.world_size)  # the same as local on one node
        self.main_process = self.rank in (-1, 0)
        self.save_dir = Path(opt.save_dir)
        self.weights_dir = self.save_dir / "weights"
        self.last, self.best = self.weights_dir / "last.pt", self.weights_dir / "best.pt"
        self.data = data
        self.stop = StopRequest()
        self.interrupted = False  # the loop ended early on a stop request (signal or callback)
        self.saved_last = False

    # ------------------------------------------------------------------ set-up
    def _setup(self):
        """Everything before the first epoch; the run directory is made only once the data checked out."""
        self.callbacks.run("on_pretrain_routine_start")
        self.plots = not self.opt.evolve and not self.opt.skip  # --skip: benchmark runs time nothing but training
        self._setup_data()
        resume = bool(self.opt.resume)
        ckpt = self._setup_model(resume)
        self._setup_batch_size()
        self._setup_optimizer()
        if resume:
            self._restore_training(ckpt)
        self.scheduler.last_epoch = self.start_epoch - 1  # keeps the restored learning rates
        self._setup_parallel()
        self._setup_loaders(resume)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.model = DDP(self.model, **self.device.ddp_kwargs())
        self._setup_loss()
        self._setup_loop(ckpt if resume else None)
        self.callbacks.run("on_params_update", dict(self.hyp))
        self.callbacks.run("on_pretrain_routine_end")
        LOGGER.info(f"Image sizes {self.imgsz} train, {self.imgsz} val\n"
                    f"Using {self.train_loader.num_workers} dataloader workers\n"
                    f"Logging results to {self.save_dir}\nStarting training for {self.epochs} epochs...")

    def _setup_data(self):
        """Seeds of this rank, the data yaml (read by each node's local rank 0 first) and its classes."""
        from utils.data.data_config import load_data_config
        from utils.training.train_setup import dataset_classes

        opt, dev = self.opt, self.device
        init_seeds(opt.seed + 1 + self.rank, deterministic=False)
        dev.seed(opt.seed + 1 + self.rank)
        with dev.local_zero_first():
            self.data = self.data or load_data_config(opt.data)
        self.nc, self.names = dataset_classes(self.data, opt.single_cls)

    def _setup_model(self, resume):
        """The model on the device (frozen layers, memory layout) and the checkpoint it came from."""
        from utils.training.train_setup import build_model, freeze_layers

        opt, dev = self.opt, self.device
        model, ckpt = build_model(opt.cfg, opt.weights, self.nc, self.hyp, resume)
        self.start_epoch, self.best_fitness, self.epochs = 0, 0.0, opt.epochs
        if resume:  # nothing is written before this: a finished run stays untouched
            self.start_epoch = resume_start_epoch(ckpt, opt.weights, self.epochs)
            if self.main_process:  # rows of epochs last.pt does not hold are logged again
                truncate_results(self.save_dir / "results.csv", self.start_epoch)
                remove_stale_temp_files(self.weights_dir)
        self.model = optimise_for_training(dev.move(model), dev)  # CPU: keep freed memory (no page faults)
        freeze_layers(self.model, opt.freeze)
        # NHWC suits MLU (CNNL convolutions prefer it). On CPU it is refused: torch's CPU BatchNorm
        # computes NHWC batch statistics differently, so losses drift from NCHW (about 1% by step 3)
        self.layout = torch.contiguous_format
        if getattr(opt, "channels_last", False) and not dev.is_accelerator:
            LOGGER.warning("WARNING: --channels-last is ignored on CPU (its BatchNorm statistics differ from NCHW "
                           "there); training in NCHW")
        elif getattr(opt, "channels_last", False):
            self.model = self.model.to(memory_format=torch.channels_last)
            self.layout = torch.channels_last
        return ckpt

    def _setup_batch_size(self):
        """Grid size, image size, the batch size (AutoBatch for -1), per rank, and gradient accumulation."""
        opt = self.opt
        self.gs = max(int(self.model.stride.max()), 32)
        self.imgsz = check_img_size(opt.imgsz, self.gs, floor=self.gs * 2)
        if opt.batch_size == -1:  # AutoBatch (utils/training/autobatch.py); opt.yaml records the size chosen
            if self.world_size > 1:
                raise UserError("--batch-size -1 (AutoBatch) works with one device; under torchrun give the "
                                "total batch size")
            from utils.training.autobatch import autobatch
            opt.batch_size = autobatch(self.model, self.device, self.imgsz)
        self.batch_size = opt.batch_size // self.world_size
        self.accumulate = accumulate_steps(opt.batch_size, nominal_batch_size(self.hyp))

    def _setup_optimizer(self):
        """Optimizer, LR schedule, EMA (rank 0), early stopping and mixed precision with its GradScaler."""
        opt, hyp, dev = self.opt, self.hyp, self.device
        self.optimizer = build_optimizer(self.model, hyp, opt.batch_size, self.accumulate, adam=opt.adam)
        self.lf = build_lr_lambda(hyp["lrf"], opt.epochs, opt.linear_lr)
        self.scheduler = build_scheduler(self.optimizer, self.lf)  # before the optimizer state is loaded
        self.ema = ModelEMA(self.model) if self.main_process else None
        self.stopper = EarlyStopping(patience=opt.patience)
        self.amp = dev.amp_default(opt.pyamp)
        if self.amp and dev.is_accelerator:  # fp32 vs autocast on a fixed input (utils/training/amp_check.py)
            from utils.training.amp_check import check_amp
            self.amp = check_amp(self.model, dev)
        self.scaler = dev.make_grad_scaler(enabled=self.amp)

    def _restore_training(self, ckpt):
        """--resume: weights, EMA and optimizer state of last.pt, and the best fitness so far."""
        opt = self.opt
        self.best_fitness = restore_training(ckpt, self.model, self.ema, self.optimizer)
        if self.start_epoch < self.epochs:
            LOGGER.info(f"Resuming training from {opt.weights} at epoch {self.start_epoch} of {self.epochs}")
        else:
            LOGGER.info(f"Resuming training from {opt.weights}: all {self.epochs} epochs were trained; "
                        "finishing the run (optimizer stripped, best.pt validated)")

    def _setup_parallel(self):
        """DataParallel over several devices without torchrun; SyncBatchNorm under DDP when asked."""
        opt, dev = self.opt, self.device
        if len(dev.indices) > 1 and self.rank == -1:  # several CUDA devices without torchrun
            LOGGER.warning("WARNING: DataParallel is slower than DDP; use torchrun --nproc_per_node N train.py")
            self.model = torch.nn.DataParallel(self.model, device_ids=list(dev.indices))
        if self.world_size > 1 and opt.sync_bn and not dev.is_accelerator:
            LOGGER.warning("WARNING: --sync-bn needs CUDA or MLU devices (PyTorch's SyncBatchNorm); "
                           "training on CPU with plain BatchNorm")
        elif self.world_size > 1 and opt.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            LOGGER.info("Using SyncBatchNorm()")

    def _setup_loaders(self, resume):
        """Training loader, then (data checked out) the run directory, then the validation loader."""
        from utils.data.loaders import create_dataloader
        from utils.training.train_options import save_options

        opt, hyp, dev = self.opt, self.hyp, self.device
        with dev.local_zero_first():
            self.train_loader, self.dataset = create_dataloader(
                self.data["train"], self.imgsz, self.batch_size, self.gs, opt.single_cls, hyp=hyp, augment=True,
                cache=opt.cache, rect=opt.rect, rank=self.rank, workers=opt.workers,
                image_weights=opt.image_weights, quad=opt.quad, prefix="train: ", shuffle=True,
                pin_memory=dev.pin_memory, seed=opt.seed, nc=self.nc, world_size=self.world_size,
                augment_device=getattr(opt, "augment_device", "cpu") == "device")
        self.nb = len(self.train_loader)
        self.val_loader = None
        if self.main_process:  # the data checked out: now the run directory is made
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.save_dir / "hyp.yaml", yaml.safe_dump(hyp, sort_keys=False))
            save_options(opt, self.save_dir / "opt.yaml")
            if not resume:
                self._first_start_checks()
        if not opt.skip:  # under DDP every rank validates a share of the batches (utils/evaluation/dist_val.py)
            with dev.local_zero_first():
                if self.main_process or self.world_size > 1:
                    self.val_loader = create_dataloader(
                        self.data["val"], self.imgsz, self.batch_size * 2, self.gs, opt.single_cls, hyp=hyp,
                        cache=None if opt.noval else opt.cache, rect=True, rank=-1, workers=opt.workers, pad=0.5,
                        prefix="val: ", pin_memory=dev.pin_memory, nc=self.nc)[0]

    def _setup_loss(self):
        """Loss gains scaled to the model and image size, class weights, the loss, warmup length."""
        from utils.data.loaders import labels_to_class_weights

        hyp, bare, nc = self.hyp, de_parallel(self.model), self.nc
        self.hyp = scale_loss_gains(hyp, bare.model[-1].nl, nc, self.imgsz, self.opt.label_smoothing)
        bare.nc, bare.hyp, bare.names = nc, self.hyp, self.names
        bare.class_weights = labels_to_class_weights(self.dataset.labels, nc).to(self.device.torch_device) * nc
        self.compute_loss = ComputeLoss(bare)
        self.nw = warmup_iterations(hyp["warmup_epochs"], self.nb)

    def _setup_loop(self, ckpt):
        """Loop counters (restored from `ckpt` on resume) and the number of epochs --iters needs."""
        opt = self.opt
        self.monitor = LoopMonitor(self.device, self.world_size)
        self.iterations_done, self.last_opt_step = 0, -1
        if ckpt is not None:
            self.iterations_done, self.last_opt_step = restore_loop(ckpt, self.scaler, self.stopper,
                                                                    self.start_epoch, self.nb)
        if opt.iters > 0:  # as Cambricon's MLU port: enough epochs to reach --iters (the LR schedule keeps --epochs)
            needed = self.start_epoch + math.ceil(max(opt.iters - self.iterations_done, 0) / self.nb)
            self.epochs = max(self.epochs, needed)

    def _first_start_checks(self):
        """Not on resume (v6.0): labels.jpg, AutoAnchor, then weights rounded to fp16 precision once."""
        opt, bare = self.opt, de_parallel(self.model)
        labels = np.concatenate(self.dataset.labels, 0) if len(self.dataset.labels) else np.zeros((0, 5))
        if self.plots:
            from utils.plots import plot_labels
            plot_labels(labels, self.names, self.save_dir)
        if not opt.noautoanchor:
            from utils.training.autoanchor import check_anchors
            check_anchors(self.dataset, bare, thr=self.hyp["anchor_t"], imgsz=self.imgsz, seed=opt.seed)
        bare.half().float()  # v6.0 "pre-reduce anchor precision": every weight rounded to fp16 once
        if self.ema is not None:  # the EMA was copied before AutoAnchor: give it the model's anchors
            self.ema.ema.model[-1].anchors.copy_(bare.model[-1].anchors)

    # ------------------------------------------------------------------ loop
    def fit(self):
        with stop_on_signals(self.stop):
            self._setup()
            return self._fit()

    def _fit(self):
        self.results, self.maps = (0, 0, 0, 0, 0, 0, 0), np.zeros(self.nc)
        t0, epoch = time.time(), self.start_epoch - 1
        finished = 0  # epochs of this run that ended normally (a stop mid-epoch leaves its epoch unfinished)
        self.callbacks.run("on_train_start")
        for epoch in range(self.start_epoch, self.epochs):
            outcome = self._train_epoch(epoch)  # None, 'iters' or 'stop'
            finished += self._end_epoch(epoch, complete=outcome != "stop", iters_reached=outcome == "iters")
            # rank 0 alone asks the early stopper, so its verdict is shared with the other ranks here
            stop_now = outcome == "stop"
            if not stop_now:
                stop_now, self.stop_early = self._agree(self._stop_wanted(), self.stop_early)
            if stop_now:
                self.stop.set("callback")  # keeps a signal's reason when there was one
                self.interrupted = True
                break
            if outcome == "iters" or self.stop_early:
                break
        if self.main_process:
            LOGGER.info(f"\n{finished} epoch{'' if finished == 1 else 's'} completed in "
                        f"{(time.time() - t0) / 3600:.3f} hours.")
            if self.interrupted:
                if self.saved_last:
                    LOGGER.info(f"Stopped early ({self.stop.reason}); {self.last} saved. Resume with:  "
                                f"python train.py --resume {self.last}")
            else:
                self._finish()
        self.callbacks.run("on_train_end", self.last, self.best, self.plots, epoch, self.results)
        self.callbacks.run("teardown")
        return self.results

    def _stop_wanted(self):
        return bool(self.stop) or bool(getattr(self.callbacks, "stop_training", False))

    def _agree(self, *flags):
        """Under DDP: each flag becomes True on every rank if it is True on any (one tiny all_reduce)."""
        if self.world_size == 1:
            return flags if len(flags) > 1 else flags[0]
        import torch.distributed as dist
        t = torch.tensor([float(f) for f in flags], device=self.device.torch_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        agreed = tuple(bool(x) for x in t.tolist())
        return agreed if len(agreed) > 1 else agreed[0]

    def _seed_epoch(self, epoch):
        """Data order and augmentation of an epoch depend only on (seed, epoch, rank): resume is exact."""
        seed = epoch_seed(self.opt.seed, epoch, self.rank)
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)
        self.train_loader.set_epoch(epoch)  # sample order: the loader's business (workers prefetch ahead)

    def _train_epoch(self, epoch):
        """One pass over the training data; returns None, 'iters' (--iters reached) or 'stop'."""
        self._start_epoch(epoch)
        batches, self.bar_live = enumerate(self.train_loader), is_terminal()
        self.bar = tqdm(batches, total=self.nb, **progress_kwargs()) if self.main_process else batches
        self.accumulate_now, outcome = self.accumulate, None  # warmup raises it batch by batch
        try:
            for i, (imgs, targets, paths, _) in self.bar:
                outcome = self._train_batch(epoch, i, imgs, targets, paths)
                if outcome is not None:
                    break
        finally:
            if self.main_process:
                self.bar.close()
            self.bar = None  # an epoch left early lets a plain loader's workers go now, as v6.0's loop does
        self.callbacks.run("on_train_epoch_end", epoch=epoch)
        return outcome

    def _start_epoch(self, epoch):
        """Train mode, the epoch's seeds, --image-weights resampling, the loss monitor and the header."""
        self.model.train()
        self._seed_epoch(epoch)
        if self.opt.image_weights:
            from utils.data.loaders import update_image_weights
            update_image_weights(self.dataset, de_parallel(self.model).class_weights.cpu().numpy(), self.maps,
                                 self.nc)
        self.callbacks.run("on_train_epoch_start", epoch)
        self.monitor.start_epoch()
        self.epoch_loss = [0.0, 0.0, 0.0]  # rank-mean box, obj, cls of the epoch, as of the last refresh
        self.optimizer.zero_grad()  # v6.0: a partial accumulation from the last epoch is dropped
        if self.main_process:
            LOGGER.info(("\n" + "%10s" * 7) % ("Epoch", "dev_mem", "box", "obj", "cls", "labels", "img_size"))

    def _train_batch(self, epoch, i, imgs, targets, paths):
        """Forward, backward and (every accumulate batches) an optimizer step; None, 'iters' or 'stop'."""
        opt = self.opt
        self.callbacks.run("on_train_batch_start")
        ni = i + self.nb * epoch
        imgs = self._batch_images(imgs, ni, epoch)
        step = ni - self.last_opt_step >= self.accumulate_now
        stop = self._stop_wanted()  # asked before this batch's backward
        self._backward(imgs, targets, paths, i, step)
        if step:
            self._optimizer_step(ni)
        self.iterations_done += 1
        iters_reached = opt.iters > 0 and self.iterations_done >= opt.iters
        # One rank alone may not leave the loop: under DDP stop requests count at refresh points
        leaving = iters_reached or (stop and self.world_size == 1)
        stop = self._refresh(epoch, i, stop, leaving, imgs, targets)
        if self.main_process and self.plots and ni < 3:
            from utils.plots import plot_images
            plot_images(imgs, targets, paths, self.save_dir / f"train_batch{ni}.jpg")
        self.callbacks.run("on_train_batch_end", ni, self.model, imgs, targets, paths, self.plots,
                           opt.sync_bn)  # upstream loggers' signature
        if iters_reached:
            LOGGER.info(f"\n--iters {opt.iters}: reached {self.iterations_done} iterations, stopping")
            return "iters"
        if stop and i < self.nb - 1:  # at the last batch the epoch completes normally
            return "stop"
        return None

    def _batch_images(self, imgs, ni, epoch):
        """The batch as float 0..1 on the device (pixels made there with --augment-device device); warmup
        of the learning rates and accumulation; --multi-scale resizing."""
        dev = self.device
        if isinstance(imgs, AugmentBatch):  # --augment-device device: pixels made here
            imgs = augment_batch(imgs, dev.torch_device, non_blocking=True)
        imgs = dev.move(imgs, non_blocking=True).to(torch.float32, memory_format=self.layout) / 255
        if ni <= self.nw:
            self.accumulate_now = warmup(ni, self.nw, self.optimizer, epoch, self.lf, self.hyp, self.opt.batch_size)
        if self.opt.multi_scale:
            imgs = self._rescale(imgs)
        return imgs

    def _backward(self, imgs, targets, paths, i, step):
        """Loss of the batch (recorded by the monitor without a host sync) and its scaled gradients."""
        dev = self.device
        with grad_sync(self.model, step):  # DDP all-reduces only on the batches that step
            with dev.autocast(enabled=self.amp):
                pred = self.model(imgs)
                loss, loss_items = self.compute_loss(pred, dev.move(targets))
            self.monitor.record(i, loss, loss_items, paths)
            if self.world_size > 1:
                loss = loss * self.world_size  # DDP averages gradients over ranks
            if self.opt.quad:
                loss = loss * 4
            self.scaler.scale(loss).backward()

    def _optimizer_step(self, ni):
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.callbacks.run("optimizer_step")
        self.callbacks.run("on_before_zero_grad")
        self.optimizer.zero_grad()
        if self.ema is not None:
            self.ema.update(self.model)
        self.last_opt_step = ni

    def _refresh(self, epoch, i, stop, leaving, imgs, targets):
        """At the monitor's refresh points: check the losses, agree on stopping, update the bar.
        Returns whether to stop (under DDP a request counts only once agreed at a refresh point)."""
        if self.monitor.due(i, last=leaving or i == self.nb - 1):
            seen = self.monitor.refresh(i, stop)
            if seen.diverged:
                raise self._non_finite(seen.bad, epoch, i)
            self.epoch_loss = seen.mloss
            if self.main_process:
                mem = self.device.memory_reserved()
                mem = f"{mem / 1e9:.3g}G" if mem is not None else "-"
                self.bar.set_description(("%10s" * 2 + "%10.4g" * 5) % (
                    f"{epoch}/{self.epochs - 1}", mem, *seen.mloss, targets.shape[0], imgs.shape[-1]),
                    refresh=self.bar_live)
            return seen.stop
        return False if self.world_size > 1 else stop  # DDP: agreed at the next refresh point

    def _non_finite(self, bad, epoch, i):
        before = f" The last checkpoint written before this is {self.last}." if self.last.exists() else ""
        if bad is None:  # another rank saw it; that rank's message names the batch
            where = f"inf or NaN on another rank in epoch {epoch}, by iteration {i} of {self.nb}"
        else:
            where = (f"{bad.loss} at epoch {epoch}, iteration {bad.iteration} of {self.nb} (global iteration "
                     f"{bad.iteration + self.nb * epoch}; box, obj, cls = {[round(x, 4) for x in bad.items]})")
        images = f" of this batch: {', '.join(Path(p).name for p in bad.paths)}" if bad is not None else ""
        return NonFiniteLoss(
            f"loss became {where}; training stopped and nothing was saved from this state.{before} Hint: lower "
            f"lr0 in the --hyp yaml{' or train without mixed precision (--pyamp / AMP)' if self.amp else ''}, "
            f"and check the labels{images}")

    def _rescale(self, imgs):
        """--multi-scale: a random size in [0.5, 1.5] x imgsz (multiple of gs) for this batch."""
        sz = random.randrange(int(self.imgsz * 0.5), int(self.imgsz * 1.5) + self.gs) // self.gs * self.gs
        sf = sz / max(imgs.shape[2:])
        if sf == 1:
            return imgs
        ns = [math.ceil(x * sf / self.gs) * self.gs for x in imgs.shape[2:]]
        return torch.nn.functional.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------ epoch end
    def _end_epoch(self, epoch, complete=True, iters_reached=False):
        """Validate, log and save a finished epoch; returns whether the epoch counts as finished."""
        opt = self.opt
        lr = [x["lr"] for x in self.optimizer.param_groups]  # of the last batch, as v6.0 logs them
        if complete:
            self.scheduler.step()
        self.stop_early = False
        may_save = not opt.skip and not opt.evolve
        if complete and self.world_size > 1:
            try:
                self._validate_distributed(epoch, iters_reached)
            except ValidationAbandoned:  # every rank left the validation at the same batch
                if self.main_process:
                    self.ema.update_attr(self.model)
                self._abandon_epoch(epoch, lr, may_save and self.main_process)
                return False
        if not self.main_process:
            return complete
        self.ema.update_attr(self.model)
        if not complete:  # stopped in the middle: save where we are, labelled with the last full epoch
            if may_save:
                self._save(epoch - 1, is_best=False, interrupted=True)
            return False
        final_epoch = epoch + 1 == self.epochs or self.stopper.possible_stop or iters_reached
        if self.world_size == 1 and not opt.skip and (not opt.noval or final_epoch):
            from utils.evaluation.validator import run as validate
            try:
                with abandon_validation_on_stop(self.callbacks, self._stop_wanted):
                    self.results, self.maps, _ = validate(
                        self.data, batch_size=self.batch_size * 2, imgsz=self.imgsz, model=self.ema.ema,
                        single_cls=opt.single_cls, dataloader=self.val_loader, save_dir=self.save_dir,
                        plots=False, callbacks=self.callbacks, compute_loss=self.compute_loss, device=self.device)
            except ValidationAbandoned:
                self._abandon_epoch(epoch, lr, may_save)
                return False
        fi = float(fitness(np.array(self.results).reshape(1, -1))[0])
        self.best_fitness = max(self.best_fitness, fi)
        # v6.0 asks the stopper after saving; asking before lets last.pt hold its state for resume
        self.stop_early = self.stopper(epoch=epoch, fitness=fi)
        values = list(self.epoch_loss) + list(self.results) + lr
        append_results(self.save_dir / "results.csv", epoch, values)
        self.callbacks.run("on_fit_epoch_end", values, epoch, self.best_fitness, fi)
        if may_save and (not opt.nosave or final_epoch or self._stop_wanted()):
            self._save(epoch, is_best=fi == self.best_fitness)
            self.callbacks.run("on_model_save", self.last, epoch, final_epoch, self.best_fitness, fi)
        return True

    def _abandon_epoch(self, epoch, lr, may_save):
        """Stop requested during validation: save as if stopped at the epoch's last batch (the resumed run
        repeats the epoch from the weights reached, at the learning rates it trained with)."""
        LOGGER.info(f"\nValidation of epoch {epoch} abandoned: stopping now (the resumed run repeats epoch {epoch})")
        for group, rate in zip(self.optimizer.param_groups, lr):
            group["lr"] = rate  # undo this epoch's scheduler step
        if may_save:
            self._save(epoch - 1, is_best=False, interrupted=True)

    def _validate_distributed(self, epoch, iters_reached):
        """DDP: every rank validates its share of the batches with rank 0's EMA weights; all ranks get
        the metrics a single process would compute. Runs on every rank or on none."""
        opt = self.opt
        final_epoch = epoch + 1 == self.epochs or self.stopper.possible_stop or iters_reached
        if opt.skip or not self._agree(not opt.noval or final_epoch):
            return
        from utils.evaluation.dist_val import broadcast_weights, shard_loader
        from utils.evaluation.validator import run as validate
        if self.main_process:
            model = self.ema.ema
        else:  # rank 0 holds the EMA: a copy of the model receives its weights
            if getattr(self, "_val_model", None) is None:
                import copy
                self._val_model = copy.deepcopy(de_parallel(self.model)).eval()
            model = self._val_model
        broadcast_weights(model)
        if getattr(self, "_val_shard", None) is None:
            self._val_shard = shard_loader(self.val_loader, self.rank, self.world_size)
        # user callbacks run on rank 0 only; the other ranks carry just the stop check
        callbacks = self.callbacks if self.main_process else Callbacks()
        shard = self._val_shard.shard
        with abandon_validation_on_stop(callbacks, self._stop_wanted, agree=self._agree,
                                        agreed_batches=shard.total_batches // shard.world_size):
            self.results, self.maps, _ = validate(
                self.data, batch_size=self.batch_size * 2, imgsz=self.imgsz, model=model, single_cls=opt.single_cls,
                dataloader=self._val_shard, save_dir=self.save_dir, plots=False, callbacks=callbacks,
                compute_loss=self.compute_loss, device=self.device)

    def _save(self, epoch, is_best, interrupted=False):
        loop = {"scaler": self.scaler, "stopper": self.stopper, "iterations_done": self.iterations_done,
                "last_opt_step": self.last_opt_step}
        ckpt = resumable_checkpoint(self.model, self.ema, self.optimizer, epoch, self.best_fitness, self.opt,
                                    loop, interrupted=interrupted)
        ckpt[TRAIN_IMGSZ_KEY] = int(self.imgsz)  # val.py and detect.py default to it
        # last.pt goes last: it is what --resume continues from, so whatever a kill interrupts before
        # it (best.pt, epoch{N}.pt) is written again when the resumed run repeats the epoch.
        if is_best:
            save_checkpoint({k: v for k, v in ckpt.items() if k != "resume_state"}, self.best)
        if epoch >= 0 and self.opt.save_period > 0 and epoch % self.opt.save_period == 0 and not interrupted:
            save_checkpoint(ckpt, self.weights_dir / f"epoch{epoch}.pt")
        save_checkpoint(ckpt, self.last)
        self.saved_last = True

    def _finish(self):
        """Strip the optimizer from last.pt and best.pt, re-validate best.pt with plots, plot results."""
        opt = self.opt
        for f in (self.last, self.best):
            if f.exists():
                strip_optimizer(f)
        if self.best.exists() and not opt.skip and not opt.evolve:
            from models.experimental import attempt_load
            from utils.evaluation.validator import run as validate
            LOGGER.info(f"\nValidating {self.best}...")
            is_coco = str(opt.data).endswith("coco.yaml") and self.nc == 80
            model = attempt_load(self.best, map_location=self.device.torch_device)
            self.results, _, _ = validate(
                self.data, weights=str(self.best), batch_size=self.batch_size * 2, imgsz=self.imgsz, model=model,
                iou_thres=0.65 if is_coco else 0.60, single_cls=opt.single_cls, dataloader=self.val_loader,
                save_dir=self.save_dir, save_json=is_coco, verbose=True, plots=self.plots,
                callbacks=self.callbacks, compute_loss=self.compute_loss, device=self.device)
        if self.plots and (self.save_dir / "results.csv").exists():
            plot_results(self.save_dir / "results.csv")
        LOGGER.info(f"Results saved to {self.save_dir}")
