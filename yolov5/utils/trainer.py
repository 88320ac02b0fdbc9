"""The training loop: batches -> loss -> optimizer steps -> EMA, then validation, logs and checkpoints.

`Trainer(opt, hyp, device, callbacks).fit()` runs one training (one generation when evolving) and
returns v6.0's results tuple (P, R, mAP@.5, mAP@.5:.95, val box, obj, cls). Set-up lives in
utils/train_setup.py, the per-epoch bookkeeping in utils/train_state.py; device questions go to the
Device object (utils/devices.py), which is the only code that names device kinds.

Resume is exact on CPU with a fixed seed: last.pt also carries fp32 weights, the scheduler, the
GradScaler, the early-stopping state and the random-number state (under the extra key
'resume_state', which upstream tools ignore and strip_optimizer drops), and every epoch re-seeds the
data order and augmentation from (seed, epoch). With dataloader workers, augmentation runs in
worker processes whose random streams continue from epoch to epoch: use --workers 0 when a
resumed run must match an uninterrupted one bit for bit.
"""
import logging
import math
import random
import signal
import time
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from utils.callbacks import Callbacks
from utils.checkpoint import build_checkpoint, save_checkpoint, strip_optimizer
from utils.early_stop import EarlyStopping
from utils.ema import ModelEMA
from utils.errors import UserError
from utils.image_size import check_img_size
from utils.loss import ComputeLoss, scale_loss_gains
from utils.metrics import fitness
from utils.optim import accumulate_steps, build_lr_lambda, build_optimizer, build_scheduler, warmup, \
    warmup_iterations
from utils.parallel import de_parallel
from utils.progress import progress_kwargs
from utils.results_log import append_results, plot_results
from utils.seeds import capture_rng_state, init_seeds, restore_rng_state

LOGGER = logging.getLogger("yolov5")
SEED_STRIDE = 1_000_003  # keeps per-epoch seeds of different base seeds apart


class NonFiniteLoss(UserError):
    """Training diverged: the loss became inf or NaN."""


@contextmanager
def stop_on_signals(flag):
    """SIGINT / SIGTERM set flag['stop'] so the loop saves last.pt and exits cleanly."""
    def handler(signum, frame):
        if flag.get("stop"):  # second signal: give up at once
            raise KeyboardInterrupt
        flag["stop"] = signal.Signals(signum).name
        LOGGER.warning(f"\n{flag['stop']} received: finishing this batch, saving last.pt, then stopping "
                       "(send it again to stop at once)")
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handlers
        previous = {}
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


class Trainer:
    def __init__(self, opt, hyp, device, callbacks=None, data=None):
        self.opt, self.hyp, self.device = opt, dict(hyp), device
        self.callbacks = callbacks or Callbacks()
        self.rank, self.world_size = device.local_rank, max(device.world_size, 1)
        self.main_process = self.rank in (-1, 0)
        self.save_dir = Path(opt.save_dir)
        self.weights_dir = self.save_dir / "weights"
        self.last, self.best = self.weights_dir / "last.pt", self.weights_dir / "best.pt"
        self.data = data
        self.stop_flag = {}

    # ------------------------------------------------------------------ set-up
    def _setup(self):
        from utils.data_config import load_data_config
        from utils.loaders import create_dataloader
        from utils.train_setup import build_model, dataset_classes, freeze_layers

        opt, hyp, dev = self.opt, self.hyp, self.device
        if self.main_process:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
            from utils.train_options import save_options
            save_options(opt, self.save_dir / "opt.yaml")
        self.plots = not opt.evolve
        init_seeds(opt.seed + 1 + self.rank, deterministic=False)
        dev.seed(opt.seed + 1 + self.rank)
        with dev.local_zero_first():
            self.data = self.data or load_data_config(opt.data)
        self.nc, self.names = dataset_classes(self.data, opt.single_cls)

        model, ckpt = build_model(opt.cfg, opt.weights, self.nc, hyp, bool(opt.resume))
        self.ckpt = ckpt if opt.resume else None
        self.model = dev.move(model)
        freeze_layers(self.model, opt.freeze)

        self.gs = max(int(self.model.stride.max()), 32)
        self.imgsz = check_img_size(opt.imgsz, self.gs, floor=self.gs * 2)
        self.batch_size = opt.batch_size // self.world_size
        self.accumulate = accumulate_steps(opt.batch_size)
        self.optimizer = build_optimizer(self.model, hyp, opt.batch_size, self.accumulate, adam=opt.adam)
        self.lf = build_lr_lambda(hyp["lrf"], opt.epochs, opt.linear_lr)
        self.ema = ModelEMA(self.model) if self.main_process else None
        self.start_epoch, self.best_fitness, self.epochs = 0, 0.0, opt.epochs
        self.stopper = EarlyStopping(patience=opt.patience)
        self.amp = dev.amp_default(opt.pyamp)
        self.scaler = dev.make_grad_scaler(enabled=self.amp)
        resume_state = self._restore() if self.ckpt is not None else None
        self.scheduler = build_scheduler(self.optimizer, self.lf, self.start_epoch)

        if self.world_size > 1 and opt.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            LOGGER.info("Using SyncBatchNorm()")

        with dev.local_zero_first():
            self.train_loader, self.dataset = create_dataloader(
                self.data["train"], self.imgsz, self.batch_size, self.gs, opt.single_cls, hyp=hyp, augment=True,
                cache=opt.cache, rect=opt.rect, rank=self.rank, workers=opt.workers,
                image_weights=opt.image_weights, quad=opt.quad, prefix="train: ", shuffle=True,
                pin_memory=dev.pin_memory, seed=opt.seed, nc=self.nc, world_size=self.world_size)
        self.nb = len(self.train_loader)
        if self.main_process:
            self.val_loader = None
            if not opt.skip:
                self.val_loader = create_dataloader(
                    self.data["val"], self.imgsz, self.batch_size * 2, self.gs, opt.single_cls, hyp=hyp,
                    cache=None if opt.noval else opt.cache, rect=True, rank=-1, workers=opt.workers, pad=0.5,
                    prefix="val: ", pin_memory=dev.pin_memory, nc=self.nc)[0]
            if not opt.resume:
                labels = np.concatenate(self.dataset.labels, 0) if len(self.dataset.labels) else np.zeros((0, 5))
                if self.plots:
                    from utils.plots import plot_labels
                    plot_labels(labels, self.names, self.save_dir)
                if not opt.noautoanchor:
                    from utils.autoanchor import check_anchors
                    check_anchors(self.dataset, de_parallel(self.model), thr=hyp["anchor_t"], imgsz=self.imgsz,
                                  seed=opt.seed)
                    if self.ema is not None:  # keep the EMA's anchors equal to the model's
                        self.ema.ema.model[-1].anchors.copy_(de_parallel(self.model).model[-1].anchors)

        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.model = DDP(self.model, **dev.ddp_kwargs())

        bare = de_parallel(self.model)
        nl = bare.model[-1].nl
        self.hyp = scale_loss_gains(hyp, nl, self.nc, self.imgsz, opt.label_smoothing)
        bare.nc, bare.hyp, bare.names = self.nc, self.hyp, self.names
        from utils.loaders import labels_to_class_weights
        bare.class_weights = labels_to_class_weights(self.dataset.labels, self.nc).to(dev.torch_device) * self.nc
        self.compute_loss = ComputeLoss(bare)
        self.nw = warmup_iterations(hyp["warmup_epochs"], self.nb)
        if resume_state is not None:
            self._restore_loop_state(resume_state)
        LOGGER.info(f"Image sizes {self.imgsz} train, {self.imgsz} val\n"
                    f"Using {self.train_loader.num_workers} dataloader workers\n"
                    f"Logging results to {self.save_dir}\nStarting training for {self.epochs} epochs...")

    def _restore(self):
        """Resume: optimizer, EMA, epoch, best fitness from the checkpoint (compat-v6.md 1.4)."""
        ckpt, opt = self.ckpt, self.opt
        extra = ckpt.get("resume_state") or {}
        if extra.get("model_fp32") is not None:  # exact weights (upstream stores fp16 only)
            de_parallel(self.model).load_state_dict(extra["model_fp32"])
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.best_fitness = float(np.asarray(ckpt.get("best_fitness") or 0.0).reshape(-1)[0])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.restore(extra.get("ema_fp32") or ckpt["ema"], ckpt.get("updates") or 0)
        self.start_epoch = int(ckpt["epoch"]) + 1
        if self.start_epoch <= 0:
            raise UserError(f"{opt.weights} is a finished (stripped) checkpoint: nothing to resume. Start a new "
                            f"run with --weights {opt.weights}")
        if self.epochs <= self.start_epoch - 1 or self.start_epoch >= self.epochs:
            raise UserError(f"{opt.weights}: training already finished ({self.start_epoch} of {self.epochs} "
                            f"epochs); to train more, start a new run with --weights {opt.weights} --epochs N")
        LOGGER.info(f"Resuming training from {opt.weights} at epoch {self.start_epoch} of {self.epochs}")
        return extra

    def _restore_loop_state(self, extra):
        if extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        if extra.get("stopper"):
            self.stopper.load_state_dict(extra["stopper"])
        self.iterations_done = int(extra.get("iterations_done", 0))

    # ------------------------------------------------------------------ loop
    def _seed_epoch(self, epoch):
        """Data order and augmentation of an epoch depend only on (seed, epoch): resume is exact."""
        seed = self.opt.seed * SEED_STRIDE + epoch
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)
        generator = getattr(self.train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(seed)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def fit(self):
        with stop_on_signals(self.stop_flag):
            self._setup()
            return self._fit()

    def _fit(self):
        opt, dev = self.opt, self.device
        self.results = (0, 0, 0, 0, 0, 0, 0)
        self.maps = np.zeros(self.nc)
        self.iterations_done = getattr(self, "iterations_done", 0)
        last_opt_step = -1
        t0 = time.time()
        self.callbacks.run("on_train_start")
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, self.epochs):
            stop_reason = self._train_epoch(epoch, last_opt_step)
            self._end_epoch(epoch, interrupted=stop_reason == "signal")
            if stop_reason:
                break
            if self.world_size == 1 and self.stopper(epoch=epoch, fitness=self._fitness_now):
                break
        if self.main_process:
            LOGGER.info(f"\n{epoch - self.start_epoch + 1} epochs completed in {(time.time() - t0) / 3600:.3f} hours.")
            if not self.stop_flag.get("stop"):
                self._finish()
        self.callbacks.run("on_train_end", self.last, self.best, self.plots, epoch, self.results)
        return self.results

    def _train_epoch(self, epoch, last_opt_step):
        """One pass over the training data; returns None, 'iters' or 'signal'."""
        opt, dev, hyp = self.opt, self.device, self.hyp
        self.model.train()
        self._seed_epoch(epoch)
        if opt.image_weights:
            from utils.loaders import update_image_weights
            update_image_weights(self.dataset, de_parallel(self.model).class_weights.cpu().numpy(), self.maps,
                                 self.nc)
        self.callbacks.run("on_train_epoch_start", epoch)
        mloss = torch.zeros(3, device=dev.torch_device)
        self.optimizer.zero_grad()
        self.epoch_loss, self.epoch_batches = mloss, 0
        if self.main_process:
            LOGGER.info(("\n" + "%10s" * 7) % ("Epoch", "dev_mem", "box", "obj", "cls", "labels", "img_size"))
        bar = enumerate(self.train_loader)
        if self.main_process:
            bar = tqdm(bar, total=self.nb, **progress_kwargs())
        accumulate = self.accumulate
        last_opt_step = epoch * self.nb - 1 if last_opt_step < epoch * self.nb - 1 else last_opt_step
        for i, (imgs, targets, paths, _) in bar:
            self.callbacks.run("on_train_batch_start")
            ni = i + self.nb * epoch
            imgs = dev.move(imgs, non_blocking=True).float() / 255
            if ni <= self.nw:
                accumulate = warmup(ni, self.nw, self.optimizer, epoch, self.lf, hyp, opt.batch_size)
            if opt.multi_scale:
                imgs = self._rescale(imgs)
            with dev.autocast(enabled=self.amp):
                pred = self.model(imgs)
                loss, loss_items = self.compute_loss(pred, dev.move(targets))
            if not torch.isfinite(loss).all():
                raise NonFiniteLoss(
                    f"loss became {loss.item()} at epoch {epoch}, iteration {i} (components box, obj, cls = "
                    f"{[round(float(x), 4) for x in loss_items]}); nothing was saved from this state. Lower lr0 "
                    f"in the --hyp yaml{', or train without mixed precision' if self.amp else ''}, and check the "
                    f"labels of this batch: {', '.join(Path(p).name for p in paths[:4])}")
            if self.world_size > 1:
                loss = loss * self.world_size
            if opt.quad:
                loss = loss * 4
            self.scaler.scale(loss).backward()
            if ni - last_opt_step >= accumulate:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad()
                if self.ema is not None:
                    self.ema.update(self.model)
                last_opt_step = ni
            self.iterations_done += 1
            if self.main_process:
                mloss = (mloss * i + loss_items) / (i + 1)
                self.epoch_loss, self.epoch_batches = mloss, i + 1
                mem = dev.memory_reserved()
                mem = f"{mem / 1e9:.3g}G" if mem is not None else "-"
                bar.set_description(("%10s" * 2 + "%10.4g" * 5) % (
                    f"{epoch}/{self.epochs - 1}", mem, *mloss.tolist(), targets.shape[0], imgs.shape[-1]))
                if self.plots and ni < 3:
                    from utils.plots import plot_images
                    plot_images(imgs, targets, paths, self.save_dir / f"train_batch{ni}.jpg")
            self.callbacks.run("on_train_batch_end", ni, self.model, imgs, targets, paths, self.plots)
            if opt.iters > 0 and self.iterations_done >= opt.iters:
                LOGGER.info(f"--iters {opt.iters}: reached {self.iterations_done} iterations, stopping")
                return "iters"
            if self.stop_flag.get("stop") or self.callbacks.stop_training:
                return "signal"
        return None

    def _rescale(self, imgs):
        sz = random.randrange(int(self.imgsz * 0.5), int(self.imgsz * 1.5) + self.gs) // self.gs * self.gs
        sf = sz / max(imgs.shape[2:])
        if sf == 1:
            return imgs
        ns = [math.ceil(x * sf / self.gs) * self.gs for x in imgs.shape[2:]]
        return torch.nn.functional.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------ epoch end
    def _end_epoch(self, epoch, interrupted=False):
        opt = self.opt
        lr = [x["lr"] for x in self.optimizer.param_groups]
        if not interrupted:
            self.scheduler.step()
        self._fitness_now = self.best_fitness
        if not self.main_process:
            return
        self.ema.update_attr(self.model)
        final_epoch = (epoch + 1 == self.epochs) or self.stopper.possible_stop
        if not opt.skip and not interrupted and (not opt.noval or final_epoch):
            from utils.validator import run as validate
            self.results, self.maps, _ = validate(
                self.data, batch_size=self.batch_size * 2, imgsz=self.imgsz, model=self.ema.ema,
                single_cls=opt.single_cls, dataloader=self.val_loader, save_dir=self.save_dir, plots=False,
                callbacks=self.callbacks, compute_loss=self.compute_loss, device=self.device)
        fi = float(fitness(np.array(self.results).reshape(1, -1))[0])
        self._fitness_now = fi
        if fi > self.best_fitness:
            self.best_fitness = fi
        if not interrupted:
            values = list(self.epoch_loss.tolist()) + list(self.results) + lr
            append_results(self.save_dir / "results.csv", epoch, values)
            self.callbacks.run("on_fit_epoch_end", values, epoch, self.best_fitness, fi)
        save_now = not opt.skip and (not opt.nosave or final_epoch or interrupted) and not opt.evolve
        if save_now:
            # an interrupted epoch is not finished: resume repeats it from these weights
            self._save(epoch - 1 if interrupted else epoch, is_best=(fi == self.best_fitness and not interrupted))

    def _save(self, epoch, is_best):
        ckpt = build_checkpoint(self.model, self.ema, self.optimizer, epoch=epoch, best_fitness=self.best_fitness)
        ckpt["opt"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.opt).items()}
        ckpt["resume_state"] = {
            "model_fp32": {k: v.detach().cpu().clone() for k, v in de_parallel(self.model).state_dict().items()},
            "ema_fp32": {k: v.detach().cpu().clone() for k, v in self.ema.ema.state_dict().items()},
            "scaler": self.scaler.state_dict(),
            "stopper": self.stopper.state_dict(),
            "rng": capture_rng_state(),
            "iterations_done": self.iterations_done,
        }
        save_checkpoint(ckpt, self.last)
        if is_best:
            best = deepcopy(ckpt)
            best.pop("resume_state")
            save_checkpoint(best, self.best)
        if epoch >= 0 and self.opt.save_period > 0 and epoch % self.opt.save_period == 0:
            save_checkpoint(ckpt, self.weights_dir / f"epoch{epoch}.pt")
        self.callbacks.run("on_model_save", self.last, epoch, False, self.best_fitness, None)
        if self.stop_flag.get("stop"):
            LOGGER.info(f"Saved {self.last}: resume with  python train.py --resume {self.last}")

    def _finish(self):
        """Strip the optimizer from last.pt and best.pt, re-validate best.pt, plot results."""
        opt = self.opt
        for f in (self.last, self.best):
            if f.exists():
                strip_optimizer(f)
        if self.best.exists() and not opt.skip and not opt.evolve:
            from models.experimental import attempt_load
            from utils.validator import run as validate
            LOGGER.info(f"\nValidating {self.best}...")
            model = attempt_load(self.best, map_location=self.device.torch_device)
            self.results, _, _ = validate(
                self.data, batch_size=self.batch_size * 2, imgsz=self.imgsz, model=model,
                iou_thres=0.65 if str(opt.data).endswith("coco.yaml") else 0.60, single_cls=opt.single_cls,
                dataloader=self.val_loader, save_dir=self.save_dir, save_json=False, verbose=True, plots=self.plots,
                callbacks=self.callbacks, compute_loss=self.compute_loss, device=self.device)
        if self.plots and (self.save_dir / "results.csv").exists():
            plot_results(self.save_dir / "results.csv")
        LOGGER.info(f"Results saved to {self.save_dir}")


def restore_rng(extra):
    if extra and extra.get("rng"):
        restore_rng_state(extra["rng"])
