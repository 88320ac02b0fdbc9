"""Validation of a detector over one split: inference, NMS, matching, mAP, plots, COCO json.

`run()` keeps v6.0 val.run's signature and return value, so the trainer (which passes its EMA
model, val loader, loss and a Device) and scripts written for upstream both call it:

    (mp, mr, map50, map, box, obj, cls), maps, (t_pre, t_inf, t_nms) = run(...)

Differences from v6.0, on purpose:
- predictions match labels separately at each IoU threshold (v6.2 fix, see utils/metrics.py);
- NMS never drops detections silently when slow (utils/nms.py);
- NMS runs where the device layer says (CPU for MLU, as in Cambricon's MLU port);
- in training, reduced precision comes from the device's autocast instead of converting the EMA
  model to fp16 in place (v6.0 rounded EMA weights to fp16 once per epoch as a side effect);
- --save-json takes an explicit annotation file (run(anno_json=...) or the data yaml key
  `anno_json`), maps class names to the file's category ids when they all match, and scores only
  the images of the validated split (v6.0 did that for COCO only);
- standalone runs (weights loaded here) infer under torch.inference_mode, and on CPU with the
  model and batch in channels_last layout (oneDNN's preferred convolution layout).
"""
import time
from pathlib import Path

import torch
from tqdm import tqdm

from utils.boxes import scale_coords, xywh2xyxy, xyxy2xywh
from utils.errors import UserError
from utils.image_size import check_img_size
from utils.model_files import find_weights
from utils.metrics import ConfusionMatrix, match_predictions, summarize_stats
from utils.nms import non_max_suppression
from utils.plots import output_to_target, plot_images
from utils.printable import printable
from utils.progress import progress_kwargs
from utils.train_imgsz import resolve_imgsz

YOLO_ROOT = Path(__file__).resolve().parents[1]
HEADER = ("%20s" + "%11s" * 6) % ("Class", "Images", "Labels", "P", "R", "mAP@.5", "mAP@.5:.95")
ROW = "%20s" + "%11i" * 2 + "%11.3g" * 4
IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # mAP@0.5:0.95
PLOTTED_BATCHES = 3  # val_batch{0,1,2}_{labels,pred}.jpg
CHANNELS_LAST_ON_CPU = True  # standalone CPU inference layout
# Accelerators validate in reduced precision by default (v6.0: half=True on CUDA). Setting this
# variable to 1 keeps them in fp32, so a validation on MLU/CUDA computes what one on CPU computes
# (the stand-in MLU equivalence tests compare like with like).
FP32_VALIDATION_ENV = "YOLOV5_FP32_VALIDATION"


def reduced_precision_on_accelerators() -> bool:
    import os
    return os.environ.get(FP32_VALIDATION_ENV, "") != "1"


def _device_of(device, model, batch_size=None):
    """A Device for the trainer's model (passed through) or for a --device string."""
    from utils.devices import Device, select_device
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


def _is_coco(data):
    val = data.get("val")
    return isinstance(val, str) and val.replace("\\", "/").endswith("coco/val2017.txt")


def _standalone_setup(data, weights, batch_size, imgsz, task, dev, single_cls, half, workers, project, name,
                      exist_ok, save_txt):
    """Load weights, data and loader for `python val.py` (the trainer brings its own)."""
    from models.experimental import attempt_load
    from utils.data_config import load_data_config
    from utils.loaders import create_dataloader
    from utils.run_dir import increment_path

    if not weights:
        raise UserError("val.py needs --weights (a .pt checkpoint)")
    weights = [find_weights(w) for w in (weights if isinstance(weights, (list, tuple)) else [weights])]
    data = dict(data) if isinstance(data, dict) else load_data_config(data, require=())
    split = task if task in ("train", "val", "test") else "val"
    if not data.get(split):
        raise UserError(f"{data.get('yaml_file', 'data yaml')}: no '{split}' split to validate (task {task!r})")
    model = attempt_load(weights, map_location=dev.torch_device)
    gs = max(int(model.stride.max()), 32)
    imgsz = check_img_size(resolve_imgsz(imgsz, model, "val.py"), s=gs)
    if half:
        model.half()
    elif dev.kind == "cpu" and CHANNELS_LAST_ON_CPU:
        model.to(memory_format=torch.channels_last)
    nc = 1 if single_cls else int(data["nc"])
    loader = create_dataloader(data[split], imgsz, batch_size, gs, single_cls, pad=0.5, rect=True,
                               workers=workers, prefix=f"{split}: ", nc=nc, pin_memory=dev.pin_memory)[0]
    if dev.world_size > 1:  # torchrun: each rank validates a share of the batches (utils/dist_val.py)
        loader, save_dir = _distributed_setup(dev, loader, project, name, exist_ok, save_txt)
    else:
        save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    return model, data, loader, save_dir, nc, imgsz


def _distributed_setup(dev, loader, project, name, exist_ok, save_txt):
    """The process group, this rank's share of the loader, and rank 0's run directory for all."""
    import torch.distributed as dist
    from utils.dist_val import shard_loader
    from utils.run_dir import increment_path
    from utils.ddp_failures import collective_timeout
    if not dist.is_initialized():
        dev.init_distributed(timeout_s=collective_timeout())
    rank = dist.get_rank()
    where = [None]
    if rank == 0:
        where[0] = increment_path(Path(project) / name, exist_ok=exist_ok)
        (where[0] / "labels" if save_txt else where[0]).mkdir(parents=True, exist_ok=True)
    dist.broadcast_object_list(where, 0)
    return shard_loader(loader, rank, dev.world_size), Path(where[0])


def run(data, weights=None, batch_size=32, imgsz=None, conf_thres=0.001, iou_thres=0.6, task="val", device="",
        workers=8, single_cls=False, augment=False, verbose=False, save_txt=False, save_hybrid=False,
        save_conf=False, save_json=False, project=YOLO_ROOT / "runs" / "val", name="exp", exist_ok=False,
        half=None, model=None, dataloader=None, save_dir=Path(""), plots=True, callbacks=None,
        compute_loss=None, amp=None, anno_json=None):
    """Validate `model` (training) or `weights` (standalone) and return v6.0's tuple.

    half: None (default) means FP16 on CUDA/MLU and FP32 on CPU, which is what v6.0's `half=True`
    default did (FP32 everywhere when YOLOV5_FP32_VALIDATION=1); an explicit True on CPU is ignored with a note. anno_json: COCO annotation file for
    --save-json (default: the data yaml's `anno_json`, else <path>/annotations/instances_val2017.json).
    imgsz: None (default) means the training size stored in the checkpoint, else 640.
    """
    training = model is not None
    dev = _device_of(device, model, batch_size)
    if training:
        half = False  # reduced precision through autocast instead (see module docstring)
        amp = dev.kind != "cpu" and reduced_precision_on_accelerators() if amp is None else amp
        nc = 1 if single_cls else int(data["nc"])
    else:
        if half and dev.kind == "cpu":
            print("Note: --half is ignored on CPU (FP16 convolutions are slow there); validating in FP32")
        half = dev.kind != "cpu" and (reduced_precision_on_accelerators() if half is None else bool(half))
        amp = False
        if save_json and dev.world_size > 1:
            raise UserError("--save-json is not supported under torchrun (the COCO json needs every rank's "
                            "detections): run val.py as a single process for it")
        model, data, dataloader, save_dir, nc, imgsz = _standalone_setup(
            data, weights, batch_size, imgsz, task, dev, single_cls, half, workers, project, name, exist_ok,
            save_txt)
    # The trainer's EMA model lives on (and is saved): plain no_grad there. Our own model may
    # use inference_mode, which also skips version-counter bookkeeping.
    with torch.no_grad() if training else torch.inference_mode():
        return _validate(model, dataloader, data, nc, dev, half, amp, training, conf_thres, iou_thres, single_cls,
                         augment, verbose, save_txt, save_hybrid, save_conf, save_json, Path(save_dir), plots,
                         callbacks, compute_loss, weights, anno_json, task, batch_size, imgsz)


def _validate(model, dataloader, data, nc, dev, half, amp, training, conf_thres, iou_thres, single_cls, augment,
              verbose, save_txt, save_hybrid, save_conf, save_json, save_dir, plots, callbacks, compute_loss,
              weights, anno_json, task, batch_size, imgsz):
    model.eval()
    is_coco = _is_coco(data)
    iouv = IOU_THRESHOLDS
    names = getattr(model, "names", None) or data.get("names") or [str(i) for i in range(nc)]
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else names
    confusion_matrix = ConfusionMatrix(nc=nc)
    coco = _CocoExport(data, anno_json, is_coco) if save_json else None
    pp_device = dev.postprocess_device
    channels_last = not training and not half and dev.kind == "cpu" and CHANNELS_LAST_ON_CPU
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if save_txt:
        (save_dir / "labels").mkdir(parents=True, exist_ok=True)
    loss = torch.zeros(3, device=dev.torch_device)
    dt, seen, stats = [0.0, 0.0, 0.0], 0, []
    # DDP: this rank runs its share of the batches (utils/dist_val.py); statistics are combined below
    shard = getattr(dataloader, "shard", None)
    main = shard is None or shard.rank == 0
    keys, batch_losses = [], []  # per-image (batch, index) and per-batch losses, when sharded
    if callbacks:
        callbacks.run("on_val_start")

    # The bar's description is the table header: per-epoch validations in training clear it, the final
    # one (verbose, with the per-class table) keeps it, as a standalone run does.
    bar = tqdm(dataloader, desc=HEADER, disable=not main, **progress_kwargs(leave=not training or verbose))
    for batch_i, (im, targets, paths, shapes) in enumerate(bar):
        if callbacks:
            callbacks.run("on_val_batch_start")
        t1 = time.perf_counter()
        im = dev.move(im, non_blocking=True)
        # one pass: new tensor in the inference dtype and layout, then scaled in place
        im = im.to(torch.float16 if half else torch.float32, memory_format=layout, copy=True).div_(255)
        nb, _, height, width = im.shape
        dev.synchronize()
        t2 = time.perf_counter()
        dt[0] += t2 - t1

        with dev.autocast(enabled=amp):
            out, train_out = model(im, augment=augment)
        dev.synchronize()
        t3 = time.perf_counter()
        dt[1] += t3 - t2

        if compute_loss:
            items = compute_loss([x.float() for x in train_out], dev.move(targets))[1]
            if shard is not None:
                batch_losses.append(items)
            else:
                loss += items
        targets = targets.to(pp_device, torch.float32, copy=True)
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=pp_device)
        hybrid = [targets[targets[:, 0] == i, 1:] for i in range(nb)] if save_hybrid else []
        out = non_max_suppression(out.to(pp_device, torch.float32), conf_thres, iou_thres, labels=hybrid,
                                  multi_label=True, agnostic=single_cls)
        dev.synchronize()
        dt[2] += time.perf_counter() - t3

        for si, pred in enumerate(out):
            labels = targets[targets[:, 0] == si, 1:]
            tcls = labels[:, 0].tolist()
            path, shape = Path(paths[si]), shapes[si][0]
            seen += 1
            labelsn = None
            if len(labels):
                tbox = xywh2xyxy(labels[:, 1:5])
                scale_coords(im[si].shape[1:], tbox, shape, shapes[si][1])
                labelsn = torch.cat((labels[:, 0:1], tbox), 1)
            if not len(pred):
                if labelsn is not None:
                    stats.append((torch.zeros(0, len(iouv), dtype=torch.bool), torch.zeros(0), torch.zeros(0), tcls))
                    keys.append((shard.batches[batch_i], si) if shard is not None else None)
                    if plots:
                        confusion_matrix.process_batch(None, labelsn)
                continue
            if single_cls:
                pred[:, 5] = 0
            predn = pred.clone()
            scale_coords(im[si].shape[1:], predn[:, :4], shape, shapes[si][1])
            if labelsn is not None:
                correct = match_predictions(predn, labelsn, iouv)
                if plots:
                    confusion_matrix.process_batch(predn, labelsn)
            else:
                correct = torch.zeros(pred.shape[0], len(iouv), dtype=torch.bool)
            stats.append((correct.cpu(), pred[:, 4].cpu(), pred[:, 5].cpu(), tcls))
            keys.append((shard.batches[batch_i], si) if shard is not None else None)
            if save_txt:
                save_one_txt(predn, save_conf, shape, file=save_dir / "labels" / (path.stem + ".txt"))
            if coco is not None:
                coco.writer.add(path, predn)
            if callbacks:
                callbacks.run("on_val_image_end", pred, predn, path, names, im[si])

        if plots and main and batch_i < PLOTTED_BATCHES:
            plot_images(im, targets, paths, save_dir / f"val_batch{batch_i}_labels.jpg", names)
            plot_images(im, output_to_target(out), paths, save_dir / f"val_batch{batch_i}_pred.jpg", names)
        if callbacks:
            callbacks.run("on_val_batch_end")

    n_batches, local_seen = len(dataloader), seen
    if shard is not None:
        from utils.dist_val import combine
        stats, seen, loss, confusion_matrix.matrix = combine(shard, stats, keys, seen, batch_losses,
                                                             confusion_matrix.matrix)
        n_batches, plots = shard.total_batches, plots and main
    summary = summarize_stats(stats, nc, plot=plots, save_dir=save_dir, names=names)
    if main:
        print(ROW % ("all", seen, summary.nt.sum(), summary.mp, summary.mr, summary.map50, summary.map))
    if main and (verbose or (nc < 50 and not training)) and nc > 1 and len(summary.ap_class):
        for i, c in enumerate(summary.ap_class):
            print(ROW % (names[c], seen, summary.nt[c], summary.p[i], summary.r[i], summary.ap50[i],
                         summary.ap[i]))
    if main and summary.nt.sum() == 0:
        print(f"WARNING: no labels found in the {task} set, cannot compute metrics without labels")

    per_image_ms = tuple(x / max(local_seen, 1) * 1e3 for x in dt)
    if not training and main:
        shape = (batch_size, 3, imgsz, imgsz)
        print(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {shape}" % per_image_ms)
    if plots:
        confusion_matrix.plot(save_dir=save_dir, names=list(names.values()))
    if callbacks:
        callbacks.run("on_val_end")

    mp, mr, map50, map_ = summary.mp, summary.mr, summary.map50, summary.map
    if coco is not None:
        stem = Path(weights[0] if isinstance(weights, (list, tuple)) else weights).stem if weights else ""
        split_files = getattr(getattr(dataloader, "dataset", None), "img_files", None) or []
        map_, map50 = coco.evaluate(save_dir / f"{stem}_predictions.json", split_files) or (map_, map50)

    model.float()
    if not training and main:
        print(f"Results saved to {printable(save_dir)}" + (f", {len(list(save_dir.glob('labels/*.txt')))} labels"
                                                           if save_txt else ""))
    val_losses = (loss.cpu() / max(n_batches, 1)).tolist()
    return (float(mp), float(mr), float(map50), float(map_), *val_losses), summary.maps, per_image_ms


class _CocoExport:
    """--save-json: the annotation file, the class -> category id map, the writer, the evaluation.

    Category ids: COCO 80 -> 91 for COCO (v6.0's rule, see _is_coco); otherwise, when every class
    name of the data yaml is a category name of the annotation file, that file's ids; otherwise the
    class index itself (v6.0's identity map). Image ids come from the annotation file's file names
    when it exists, so non-numeric file names score too.
    """

    def __init__(self, data, anno_json, is_coco):
        from utils.coco_json import CocoPredictionWriter, coco80_to_coco91_class
        explicit = anno_json or data.get("anno_json")
        root = Path(data.get("path") or "../coco")
        self.anno = Path(explicit) if explicit else root / "annotations" / "instances_val2017.json"
        if explicit and not self.anno.is_absolute() and not self.anno.is_file():
            self.anno = root / self.anno
        if explicit and not self.anno.is_file():
            raise UserError(f"COCO annotation file {explicit} not found (looked at {self.anno}); fix "
                            "anno_json or drop --save-json")
        class_map, image_ids, self.known_ids = None, None, None
        if self.anno.is_file():
            import json
            try:  # parsed once here for names and ids; pycocotools reads it again to score
                anno = json.loads(self.anno.read_text())
                categories = {c["name"]: int(c["id"]) for c in anno.get("categories", [])}
                image_ids = {Path(im["file_name"]).stem: int(im["id"]) for im in anno["images"]}
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"{self.anno}: not a COCO annotation file ({type(e).__name__}: {e}); "
                                "it needs 'images' with 'file_name' and 'id', and 'categories'") from None
            names = list(data.get("names") or [])
            if not is_coco and names and all(n in categories for n in names):
                class_map = [categories[n] for n in names]
            self.known_ids = set(image_ids.values())
        if is_coco:
            class_map = coco80_to_coco91_class()
        self.writer = CocoPredictionWriter(class_map=class_map, image_ids=image_ids)

    def evaluate(self, pred_json, split_files):
        """Write the predictions; score them on this split's images; (map, map50) or None."""
        from utils.coco_json import evaluate_coco_json
        pred_json = self.writer.save(pred_json)
        if not self.writer.records:
            print(f"COCO evaluation skipped: no detections (wrote {printable(pred_json)})")
            return None
        if self.known_ids is None:
            print(printable(f"COCO evaluation skipped: {self.anno} not found (predictions saved to {pred_json})"))
            return None
        print(f"\nEvaluating pycocotools mAP... saving {pred_json}...")
        img_ids = sorted({i for i in map(self.writer.image_id, split_files) if i in self.known_ids}) or None
        try:
            return evaluate_coco_json(self.anno, pred_json, img_ids=img_ids)
        except UserError:
            raise
        except Exception as e:  # a broken annotation file must not lose the computed metrics
            print(f"COCO evaluation failed: {e}")
            return None
