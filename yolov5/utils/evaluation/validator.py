"""Validation of a detector over one split: inference, NMS, matching, mAP, plots, COCO json.

`run()` keeps v6.0 val.run's signature and return value, so the trainer (which passes its EMA
model, val loader, loss and a Device) and scripts written for upstream both call it:

    (mp, mr, map50, map, box, obj, cls), maps, (t_pre, t_inf, t_nms) = run(...)

`run()` turns its parameters into one ValOptions (utils/evaluation/val_options.py) and hands it to
_ValidationPass, whose `run` method is the outline: per batch pre-process, inference, loss and NMS,
then each image's matching and outputs; at the end metrics, logs, plots and the COCO score.

Differences from v6.0, on purpose:
- predictions match labels separately at each IoU threshold (v6.2 fix, see utils/evaluation/metrics.py);
- NMS never drops detections silently when slow (utils/evaluation/nms.py);
- NMS runs where the device layer says (CPU for MLU, as in Cambricon's MLU port);
- in training, reduced precision comes from the device's autocast instead of converting the EMA
  model to fp16 in place (v6.0 rounded EMA weights to fp16 once per epoch as a side effect);
- --save-json takes an explicit annotation file (run(anno_json=...) or the data yaml key
  `anno_json`), maps class names to the file's category ids when they all match, and scores only
  the images of the validated split (v6.0 did that for COCO only);
- standalone runs (weights loaded here) infer under torch.inference_mode, and on CPU with the
  model and batch in channels_last layout (oneDNN's preferred convolution layout).
"""
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from utils.boxes import scale_coords, xywh2xyxy, xyxy2xywh
from utils.evaluation.coco_json import CocoExport, is_coco_val
from utils.errors import UserError
from utils.image_size import check_img_size
from utils.io.model_files import find_weights
from utils.evaluation.metrics import ConfusionMatrix, match_predictions, summarize_stats
from utils.evaluation.nms import non_max_suppression
from utils.plots import output_to_target, plot_images
from utils.printable import printable
from utils.progress import progress_kwargs
from utils.io.train_imgsz import resolve_imgsz
from utils.upstream_call import upstream_positions
from utils.evaluation.val_options import ValInputs, ValOptions

LOGGER = logging.getLogger("yolov5")
YOLO_ROOT = Path(__file__).resolve().parents[2]
HEADER = ("%20s" + "%11s" * 6) % ("Class", "Images", "Labels", "P", "R", "mAP@.5", "mAP@.5:.95")
ROW = "%20s" + "%11i" * 2 + "%11.3g" * 4
IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # mAP@0.5:0.95
PLOTTED_BATCHES = 3  # val_batch{0,1,2}_{labels,pred}.jpg
CHANNELS_LAST_ON_CPU = True  # standalone CPU inference layout
# Accelerators validate in reduced precision by default (v6.0: half=True on CUDA). Setting this
# variable to 1 keeps them in fp32, so a validation on MLU/CUDA computes what one on CPU computes
# (the stand-in MLU equivalence tests compare like with like).
FP32_VALIDATION_ENV = "YOLOV5_FP32_VALIDATION"
# v6.0 val.run's parameters in order: scripts written for it pass them by position. Ours adds
# workers, amp and anno_json, by keyword only (v6.0's val.run has no workers parameter).
V60_RUN_POSITIONS = ("data", "weights", "batch_size", "imgsz", "conf_thres", "iou_thres", "task", "device",
                     "single_cls", "augment", "verbose", "save_txt", "save_hybrid", "save_conf", "save_json",
                     "project", "name", "exist_ok", "half", "model", "dataloader", "save_dir", "plots", "callbacks",
                     "compute_loss")


def reduced_precision_on_accelerators() -> bool:
    import os
    return os.environ.get(FP32_VALIDATION_ENV, "") != "1"


def _device_of(device, model, batch_size=None):
    """A Device for the trainer's model (passed through) or for a --device string."""
    from utils.device.devices import Device, select_device
    if isinstance(device, Device):
        return device
    if model is not None and device in (None, ""):
        p = next(model.parameters(), None)
        device = "cpu" if p is None or p.device.type == "cpu" else f"{p.device.type}:{p.device.index or 0}"
    return select_device(device or "", batch_size=batch_size, log=model is None)


def save_one_txt(predn, save_conf, shape, file):
    """Detections as YOLO txt rows (class x y w h [conf]) normalised by the original image size."""
    predn = predn.detach().cpu().float()
    gain = torch.tensor(shape, dtype=torch.float32)[[1, 0, 1, 0]]  # shape is (h, w)
    xywh = xyxy2xywh(predn[:, :4]) / gain
    rows = torch.cat((predn[:, 5:6], xywh) + ((predn[:, 4:5],) if save_conf else ()), 1)
    with open(file, "a") as f:
        for row in rows.tolist():
            f.write(("%g " * len(row)).rstrip() % tuple(row) + "\n")


def _precision(training, dev, half, amp):
    """(half, amp). Training keeps the EMA model fp32 and uses the device's autocast (see the module
    docstring); a standalone model is converted to FP16 on accelerators."""
    if training:
        return False, (dev.kind != "cpu" and reduced_precision_on_accelerators() if amp is None else amp)
    if half and dev.kind == "cpu":
        LOGGER.info("Note: --half is ignored on CPU (FP16 convolutions are slow there); validating in FP32")
    return dev.kind != "cpu" and (reduced_precision_on_accelerators() if half is None else bool(half)), False


def _standalone_setup(data, weights, opts, dev):
    """Load weights, data and loader for `python val.py` (the trainer brings its own): ValInputs."""
    from models.experimental import attempt_load
    from utils.data.data_config import load_data_config
    from utils.data.loaders import create_dataloader
    from utils.io.run_dir import increment_path

    if not weights:
        raise UserError("val.py needs --weights (a .pt checkpoint)")
    files = [find_weights(w) for w in (weights if isinstance(weights, (list, tuple)) else [weights])]
    data = dict(data) if isinstance(data, dict) else load_data_config(data, require=())
    task = opts.task
    split = task if task in ("train", "val", "test") else "val"
    if not data.get(split):
        raise UserError(f"{data.get('yaml_file', 'data yaml')}: no '{split}' split to validate (task {task!r})")
    model = attempt_load(files, map_location=dev.torch_device)
    gs = max(int(model.stride.max()), 32)
    imgsz = check_img_size(resolve_imgsz(opts.imgsz, model, "val.py"), s=gs)
    if opts.half:
        model.half()
    elif dev.kind == "cpu" and CHANNELS_LAST_ON_CPU:
        model.to(memory_format=torch.channels_last)
    nc = 1 if opts.single_cls else int(data["nc"])
    loader = create_dataloader(data[split], imgsz, opts.batch_size, gs, opts.single_cls, pad=0.5, rect=True,
                               workers=opts.workers, prefix=f"{split}: ", nc=nc, pin_memory=dev.pin_memory)[0]
    if dev.world_size > 1:  # torchrun: each rank validates a share of the batches (utils/evaluation/dist_val.py)
        loader, save_dir = _distributed_setup(dev, loader, opts)
    else:
        save_dir = increment_path(Path(opts.project) / opts.name, exist_ok=opts.exist_ok)
    (save_dir / "labels" if opts.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    return ValInputs(model, loader, data, nc, save_dir, imgsz, weights)


def _distributed_setup(dev, loader, opts):
    """The process group, this rank's share of the loader, and rank 0's run directory for all."""
    import torch.distributed as dist
    from utils.evaluation.dist_val import shard_loader
    from utils.io.run_dir import increment_path
    from utils.training.ddp_failures import collective_timeout
    if not dist.is_initialized():
        dev.init_distributed(timeout_s=collective_timeout())
    rank = dist.get_rank()
    where = [None]
    if rank == 0:
        where[0] = increment_path(Path(opts.project) / opts.name, exist_ok=opts.exist_ok)
        (where[0] / "labels" if opts.save_txt else where[0]).mkdir(parents=True, exist_ok=True)
    dist.broadcast_object_list(where, 0)
    return shard_loader(loader, rank, dev.world_size), Path(where[0])


@upstream_positions(*V60_RUN_POSITIONS)
def run(data, *, weights=None, batch_size=32, imgsz=None, conf_thres=0.001, iou_thres=0.6, task="val", device="",
        workers=8, single_cls=False, augment=False, verbose=False, save_txt=False, save_hybrid=False,
        save_conf=False, save_json=False, project=YOLO_ROOT / "runs" / "val", name="exp", exist_ok=False,
        half=None, model=None, dataloader=None, save_dir=Path(""), plots=True, callbacks=None,
        compute_loss=None, amp=None, anno_json=None):
    """Validate `model` (training) or `weights` (standalone) and return v6.0's tuple.

    Positional arguments follow v6.0's order (V60_RUN_POSITIONS); workers, amp and anno_json are
    keyword-only. half: None (default) means FP16 on CUDA/MLU and FP32 on CPU, which is what v6.0's
    `half=True` default did (FP32 everywhere when YOLOV5_FP32_VALIDATION=1); an explicit True on CPU
    is ignored with a note. anno_json: COCO annotation file for --save-json (default: the data
    yaml's `anno_json`, else <path>/annotations/instances_val2017.json). imgsz: None (default) means
    the training size stored in the checkpoint, else 640.
    """
    training = model is not None
    dev = _device_of(device, model, batch_size)
    half, amp = _precision(training, dev, half, amp)
    opts = ValOptions(conf_thres=conf_thres, iou_thres=iou_thres, task=task, single_cls=single_cls, augment=augment,
                      verbose=verbose, save_txt=save_txt, save_hybrid=save_hybrid, save_conf=save_conf,
                      save_json=save_json, anno_json=anno_json, plots=plots, training=training, half=half, amp=amp,
                      batch_size=batch_size, imgsz=imgsz, workers=workers, project=project, name=name,
                      exist_ok=exist_ok)
    if training:
        nc = 1 if single_cls else int(data["nc"])
        inputs = ValInputs(model, dataloader, data, nc, Path(save_dir), imgsz, weights)
    else:
        if save_json and dev.world_size > 1:
            raise UserError("--save-json is not supported under torchrun (the COCO json needs every rank's "
                            "detections): run val.py as a single process for it")
        inputs = _standalone_setup(data, weights, opts, dev)
    # The trainer's EMA model lives on (and is saved): plain no_grad there. Our own model may
    # use inference_mode, which also skips version-counter bookkeeping.
    with torch.no_grad() if training else torch.inference_mode():
        return _ValidationPass(inputs, opts, dev, callbacks, compute_loss).run()


class _ValidationPass:
    """One pass over the loader. `run` is the outline; the steps share the running state: timings,
    per-image statistics, losses, the confusion matrix and, under DDP, this rank's share of them."""

    def __init__(self, inputs, opts, dev, callbacks, compute_loss):
        self.inputs, self.opts, self.dev = inputs, opts, dev
        self.model, self.save_dir = inputs.model, inputs.save_dir
        self.callbacks, self.compute_loss = callbacks, compute_loss
        self.model.eval()
        names = getattr(self.model, "names", None) or inputs.data.get("names") or [str(i) for i in range(inputs.nc)]
        self.names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else names
        self.confusion_matrix = ConfusionMatrix(nc=inputs.nc)
        self.coco = CocoExport(inputs.data, opts.anno_json, is_coco_val(inputs.data)) if opts.save_json else None
        channels_last = not opts.training and not opts.half and dev.kind == "cpu" and CHANNELS_LAST_ON_CPU
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        if opts.save_txt:
            (self.save_dir / "labels").mkdir(parents=True, exist_ok=True)
        self.loss = torch.zeros(3, device=dev.torch_device)
        self.dt, self.seen, self.stats, self.lap_start = [0.0, 0.0, 0.0], 0, [], 0.0
        # DDP: this rank runs its share of the batches (utils/evaluation/dist_val.py); statistics are combined at the end
        self.shard = getattr(inputs.dataloader, "shard", None)
        self.main = self.shard is None or self.shard.rank == 0
        self.keys, self.batch_losses = [], []  # per-image (batch, index) and per-batch losses, when sharded

    def run(self):
        """Every batch (inference, NMS, per-image matching and outputs), then metrics, logs, json, plots."""
        self._callback("on_val_start")
        for batch_i, (im, targets, paths, shapes) in enumerate(self._progress_bar()):
            self._batch(batch_i, im, targets, paths, shapes)
        return self._finish()

    def _callback(self, event, *args):
        if self.callbacks:
            self.callbacks.run(event, *args)

    def _progress_bar(self):
        # The bar's description is the table header: per-epoch validations in training clear it, the final
        # one (verbose, with the per-class table) keeps it, as a standalone run does.
        leave = not self.opts.training or self.opts.verbose
        return tqdm(self.inputs.dataloader, desc=HEADER, disable=not self.main, **progress_kwargs(leave=leave))

    def _lap(self, stage):
        """Add the time since the last lap (after the device finished its queued work) to dt[stage]."""
        self.dev.synchronize()
        now = time.perf_counter()
        self.dt[stage] += now - self.lap_start
        self.lap_start = now

    def _batch(self, batch_i, im, targets, paths, shapes):
        """Pre-process, inference, loss and NMS on one batch; then each image; then the batch plots."""
        self._callback("on_val_batch_start")
        self.lap_start = time.perf_counter()
        im = self.dev.move(im, non_blocking=True)
        # one pass: new tensor in the inference dtype and layout, then scaled in place
        im = im.to(torch.float16 if self.opts.half else torch.float32, memory_format=self.layout, copy=True).div_(255)
        self._lap(0)
        with self.dev.autocast(enabled=self.opts.amp):
            out, train_out = self.model(im, augment=self.opts.augment)
        self._lap(1)
        targets, out = self._loss_and_nms(out, train_out, targets, im.shape)
        self._lap(2)
        for si, pred in enumerate(out):
            self._image(batch_i, si, pred, targets, im[si], paths[si], shapes[si])
        if self.opts.plots and self.main and batch_i < PLOTTED_BATCHES:
            plot_images(im, targets, paths, self.save_dir / f"val_batch{batch_i}_labels.jpg", self.names)
            plot_images(im, output_to_target(out), paths, self.save_dir / f"val_batch{batch_i}_pred.jpg", self.names)
        self._callback("on_val_batch_end")

    def _loss_and_nms(self, out, train_out, targets, shape):
        """Loss items on the raw outputs (when asked); targets in pixels on the post-processing device; NMS."""
        nb, _, height, width = shape
        if self.compute_loss:
            items = self.compute_loss([x.float() for x in train_out], self.dev.move(targets))[1]
            if self.shard is not None:
                self.batch_losses.append(items)
            else:
                self.loss += items
        pp_device = self.dev.postprocess_device
        targets = targets.to(pp_device, torch.float32, copy=True)
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=pp_device)
        hybrid = [targets[targets[:, 0] == i, 1:] for i in range(nb)] if self.opts.save_hybrid else []
        out = non_max_suppression(out.to(pp_device, torch.float32), self.opts.conf_thres, self.opts.iou_thres,
                                  labels=hybrid, multi_label=True, agnostic=self.opts.single_cls)
        return targets, out

    def _image(self, batch_i, si, pred, targets, image, path, shapes):
        """One image: labels and detections in original pixels, matched and recorded; its outputs written."""
        labels = targets[targets[:, 0] == si, 1:]
        tcls, path, shape = labels[:, 0].tolist(), Path(path), shapes[0]
        self.seen += 1
        labelsn = None
        if len(labels):
            tbox = xywh2xyxy(labels[:, 1:5])
            scale_coords(image.shape[1:], tbox, shape, shapes[1])
            labelsn = torch.cat((labels[:, 0:1], tbox), 1)
        if not len(pred):
            if labelsn is not None:
                self._record(batch_i, si, torch.zeros(0, len(IOU_THRESHOLDS), dtype=torch.bool), torch.zeros(0),
                             torch.zeros(0), tcls)
                if self.opts.plots:
                    self.confusion_matrix.process_batch(None, labelsn)
            return
        if self.opts.single_cls:
            pred[:, 5] = 0
        predn = pred.clone()
        scale_coords(image.shape[1:], predn[:, :4], shape, shapes[1])
        correct = self._match(predn, labelsn)
        self._record(batch_i, si, correct.cpu(), pred[:, 4].cpu(), pred[:, 5].cpu(), tcls)
        self._save_image(pred, predn, path, shape, image)

    def _match(self, predn, labelsn):
        """(n, 10) bool: detection i is correct at IoU threshold j; the confusion matrix counts them too."""
        if labelsn is None:
            return torch.zeros(predn.shape[0], len(IOU_THRESHOLDS), dtype=torch.bool)
        correct = match_predictions(predn, labelsn, IOU_THRESHOLDS)
        if self.opts.plots:
            self.confusion_matrix.process_batch(predn, labelsn)
        return correct

    def _record(self, batch_i, si, *stat):
        """One image's (correct, conf, pred_cls, target_cls), keyed by its place in the whole loader."""
        self.stats.append(stat)
        self.keys.append((self.shard.batches[batch_i], si) if self.shard is not None else None)

    def _save_image(self, pred, predn, path, shape, image):
        """--save-txt rows, --save-json records and the on_val_image_end hook of one image."""
        if self.opts.save_txt:
            save_one_txt(predn, self.opts.save_conf, shape, file=self.save_dir / "labels" / (path.stem + ".txt"))
        if self.coco is not None:
            self.coco.writer.add(path, predn)
        self._callback("on_val_image_end", pred, predn, path, self.names, image)

    def _finish(self):
        """Metrics over every image (of all ranks), logs, plots and the COCO score: v6.0's return tuple."""
        stats, seen, n_batches, plots = self._gather()
        summary = summarize_stats(stats, self.inputs.nc, plot=plots, save_dir=self.save_dir, names=self.names)
        if self.main:
            self._log_metrics(summary, seen)
        per_image_ms = tuple(x / max(self.seen, 1) * 1e3 for x in self.dt)  # this rank's images and times
        if not self.opts.training and self.main:
            shape = (self.opts.batch_size, 3, self.inputs.imgsz, self.inputs.imgsz)
            LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {shape}"
                        % per_image_ms)
        if plots:
            self.confusion_matrix.plot(save_dir=self.save_dir, names=list(self.names.values()))
        self._callback("on_val_end")
        map50, map_ = self._coco_score(summary)
        self.model.float()
        if not self.opts.training and self.main:
            labels = f", {len(list(self.save_dir.glob('labels/*.txt')))} labels" if self.opts.save_txt else ""
            LOGGER.info(f"Results saved to {printable(self.save_dir)}" + labels)
        val_losses = (self.loss.cpu() / max(n_batches, 1)).tolist()
        return (float(summary.mp), float(summary.mr), float(map50), float(map_), *val_losses), summary.maps, \
            per_image_ms

    def _gather(self):
        """(stats, images, batches, plots?) of the whole loader: DDP shards combine in single-process order."""
        if self.shard is None:
            return self.stats, self.seen, len(self.inputs.dataloader), self.opts.plots
        from utils.evaluation.dist_val import combine
        stats, seen, self.loss, self.confusion_matrix.matrix = combine(
            self.shard, self.stats, self.keys, self.seen, self.batch_losses, self.confusion_matrix.matrix)
        return stats, seen, self.shard.total_batches, self.opts.plots and self.main

    def _log_metrics(self, summary, seen):
        """The 'all' row, the per-class rows (standalone with < 50 classes, or verbose), a no-labels warning."""
        nc, opts = self.inputs.nc, self.opts
        LOGGER.info(ROW % ("all", seen, summary.nt.sum(), summary.mp, summary.mr, summary.map50, summary.map))
        if (opts.verbose or (nc < 50 and not opts.training)) and nc > 1 and len(summary.ap_class):
            for i, c in enumerate(summary.ap_class):
                LOGGER.info(ROW % (self.names[c], seen, summary.nt[c], summary.p[i], summary.r[i], summary.ap50[i],
                                   summary.ap[i]))
        if summary.nt.sum() == 0:
            LOGGER.warning(f"WARNING: no labels found in the {opts.task} set, cannot compute metrics without labels")

    def _coco_score(self, summary):
        """(mAP@.5, mAP@.5:.95): pycocotools' on the saved json with --save-json, else ours."""
        if self.coco is None:
            return summary.map50, summary.map
        weights = self.inputs.weights
        stem = Path(weights[0] if isinstance(weights, (list, tuple)) else weights).stem if weights else ""
        split_files = getattr(getattr(self.inputs.dataloader, "dataset", None), "img_files", None) or []
        map_, map50 = self.coco.evaluate(self.save_dir / f"{stem}_predictions.json", split_files) or \
            (summary.map, summary.map50)
        return map50, map_
