"""Validation of a detector over one split: inference, NMS, matching, mAP, plots, COCO json.

`run()` keeps v6.0 val.run's signature and return value, so the trainer (which passes its EMA
model, val loader, loss and a Device) and scripts written for upstream both call it:

    (mp, mr, map50, map, box, obj, cls), maps, (t_pre, t_inf, t_nms) = run(...)

Differences from v6.0, on purpose:
- predictions match labels separately at each IoU threshold (v6.2 fix, see utils/metrics.py);
- NMS never drops detections silently when slow (utils/nms.py);
- NMS runs where the device layer says (CPU for MLU, as the seed's port);
- in training, reduced precision comes from the device's autocast instead of converting the EMA
  model to fp16 in place (v6.0 rounded EMA weights to fp16 once per epoch as a side effect).
"""
import time
from pathlib import Path

import torch
from tqdm import tqdm

from utils.boxes import scale_coords, xywh2xyxy, xyxy2xywh
from utils.errors import UserError
from utils.image_size import check_img_size
from utils.metrics import ConfusionMatrix, match_predictions, summarize_stats
from utils.nms import non_max_suppression
from utils.plots import output_to_target, plot_images
from utils.progress import progress_kwargs

YOLO_ROOT = Path(__file__).resolve().parents[1]
HEADER = ("%20s" + "%11s" * 6) % ("Class", "Images", "Labels", "P", "R", "mAP@.5", "mAP@.5:.95")
ROW = "%20s" + "%11i" * 2 + "%11.3g" * 4


def _device_of(device, model):
    """A Device for the trainer's model (passed through) or for a --device string."""
    from utils.devices import Device, select_device
    if isinstance(device, Device):
        return device
    if model is not None and device in (None, ""):
        p = next(model.parameters()).device
        device = "cpu" if p.type == "cpu" else f"{p.type}:{p.index or 0}"
    return select_device(device or "", log=model is None)


def save_one_txt(predn, save_conf, shape, file):
    """Detections as YOLO txt rows (class x y w h [conf]) normalised by the original image size."""
    gain = torch.tensor(shape)[[1, 0, 1, 0]]
    with open(file, "a") as f:
        for *xyxy, conf, cls in predn.tolist():
            xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gain).view(-1).tolist()
            line = (cls, *xywh, conf) if save_conf else (cls, *xywh)
            f.write(("%g " * len(line)).rstrip() % line + "\n")


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
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    model = attempt_load(weights, map_location=dev.torch_device)
    gs = max(int(model.stride.max()), 32)
    imgsz = check_img_size(imgsz, s=gs)
    if half:
        model.half()
    data = load_data_config(data, require=())
    split = task if task in ("train", "val", "test") else "val"
    if not data.get(split):
        raise UserError(f"{data.get('yaml_file', 'data yaml')}: no '{split}' split to validate (task {task!r})")
    nc = 1 if single_cls else int(data["nc"])
    loader = create_dataloader(data[split], imgsz, batch_size, gs, single_cls, pad=0.5, rect=True,
                               workers=workers, prefix=f"{split}: ", nc=nc, pin_memory=dev.pin_memory)[0]
    return model, data, loader, save_dir, nc


@torch.no_grad()
def run(data, weights=None, batch_size=32, imgsz=640, conf_thres=0.001, iou_thres=0.6, task="val", device="",
        workers=8, single_cls=False, augment=False, verbose=False, save_txt=False, save_hybrid=False,
        save_conf=False, save_json=False, project=YOLO_ROOT / "runs" / "val", name="exp", exist_ok=False,
        half=True, model=None, dataloader=None, save_dir=Path(""), plots=True, callbacks=None,
        compute_loss=None, amp=None):
    """Validate `model` (training) or `weights` (standalone) and return v6.0's tuple."""
    training = model is not None
    dev = _device_of(device, model)
    if training:
        half = False  # reduced precision through autocast instead (see module docstring)
        amp = dev.kind != "cpu" if amp is None else amp
        nc = 1 if single_cls else int(data["nc"])
    else:
        half = bool(half) and dev.kind != "cpu"
        amp = False
        model, data, dataloader, save_dir, nc = _standalone_setup(
            data, weights, batch_size, imgsz, task, dev, single_cls, half, workers, project, name, exist_ok,
            save_txt)
    model.eval()
    save_dir = Path(save_dir)
    is_coco = _is_coco(data)
    iouv = torch.linspace(0.5, 0.95, 10)
    names = getattr(model, "names", None) or data.get("names") or [str(i) for i in range(nc)]
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else names
    confusion_matrix = ConfusionMatrix(nc=nc)
    json_writer = None
    if save_json:
        from utils.coco_json import CocoPredictionWriter, coco80_to_coco91_class
        json_writer = CocoPredictionWriter(class_map=coco80_to_coco91_class() if is_coco else None)
    pp_device = dev.postprocess_device
    loss = torch.zeros(3, device=dev.torch_device)
    dt, seen, stats = [0.0, 0.0, 0.0], 0, []
    if callbacks:
        callbacks.run("on_val_start")

    bar = tqdm(dataloader, desc=HEADER, **progress_kwargs(leave=not training))
    for batch_i, (im, targets, paths, shapes) in enumerate(bar):
        t1 = time.perf_counter()
        im = dev.move(im, non_blocking=True)
        im = (im.half() if half else im.float()) / 255
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
            loss += compute_loss([x.float() for x in train_out], dev.move(targets))[1]
        targets = targets.to(pp_device).float()
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=pp_device)
        hybrid = [targets[targets[:, 0] == i, 1:] for i in range(nb)] if save_hybrid else []
        out = non_max_suppression(out.float().to(pp_device), conf_thres, iou_thres, labels=hybrid,
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
                    if plots:
                        confusion_matrix.process_batch(None, labelsn)
                continue
            if single_cls:
                pred[:, 5] = 0
            predn = pred.clone()
            scale_coords(im[si].shape[1:], predn[:, :4], shape, shapes[si][1])
            if labelsn is not None:
                correct = match_predictions(predn, labelsn, iouv.to(pp_device))
                if plots:
                    confusion_matrix.process_batch(predn, labelsn)
            else:
                correct = torch.zeros(pred.shape[0], len(iouv), dtype=torch.bool)
            stats.append((correct.cpu(), pred[:, 4].cpu(), pred[:, 5].cpu(), tcls))
            if save_txt:
                save_one_txt(predn, save_conf, shape, file=save_dir / "labels" / (path.stem + ".txt"))
            if json_writer is not None:
                json_writer.add(path, predn)
            if callbacks:
                callbacks.run("on_val_image_end", pred, predn, path, names, im[si])

        if plots and batch_i < 3:
            plot_images(im, targets, paths, save_dir / f"val_batch{batch_i}_labels.jpg", names)
            plot_images(im, output_to_target(out), paths, save_dir / f"val_batch{batch_i}_pred.jpg", names)

    summary = summarize_stats(stats, nc, plot=plots, save_dir=save_dir, names=names)
    print(ROW % ("all", seen, summary.nt.sum(), summary.mp, summary.mr, summary.map50, summary.map))
    if (verbose or (nc < 50 and not training)) and nc > 1 and len(summary.ap_class):
        for i, c in enumerate(summary.ap_class):
            print(ROW % (names[c], seen, summary.nt[c], summary.p[i], summary.r[i], summary.ap50[i],
                         summary.ap[i]))
    if summary.nt.sum() == 0:
        print(f"WARNING: no labels found in the {task} set, cannot compute metrics without labels")

    per_image_ms = tuple(x / max(seen, 1) * 1e3 for x in dt)
    if not training:
        shape = (batch_size, 3, imgsz, imgsz)
        print(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {shape}" % per_image_ms)
    if plots:
        confusion_matrix.plot(save_dir=save_dir, names=list(names.values()))
    if callbacks:
        callbacks.run("on_val_end")

    mp, mr, map50, map_ = summary.mp, summary.mr, summary.map50, summary.map
    if json_writer is not None and json_writer.records:
        map_, map50 = _coco_eval(json_writer, data, weights, save_dir, is_coco, dataloader) or (map_, map50)

    model.float()
    if not training:
        print(f"Results saved to {save_dir}" + (f", {len(list(save_dir.glob('labels/*.txt')))} labels"
                                                if save_txt else ""))
    maps = summary.maps
    val_losses = (loss.cpu() / max(len(dataloader), 1)).tolist()
    return (mp, mr, map50, map_, *val_losses), maps, per_image_ms


def _coco_eval(json_writer, data, weights, save_dir, is_coco, dataloader):
    """Write <weights>_predictions.json and score it with pycocotools; (map, map50) or None."""
    from utils.coco_json import evaluate_coco_json
    stem = Path(weights[0] if isinstance(weights, (list, tuple)) else weights).stem if weights else ""
    pred_json = json_writer.save(save_dir / f"{stem}_predictions.json")
    anno_json = Path(data.get("path", "")) / "annotations" / "instances_val2017.json"
    if not anno_json.is_file():
        print(f"COCO evaluation skipped: {anno_json} not found (predictions saved to {pred_json})")
        return None
    print(f"\nEvaluating pycocotools mAP... saving {pred_json}...")
    img_ids = None
    if is_coco:
        img_ids = sorted({json_writer.image_id(f) for f in dataloader.dataset.img_files})
    try:
        return evaluate_coco_json(anno_json, pred_json, img_ids=img_ids)
    except UserError:
        raise
    except Exception as e:  # a broken annotation file must not lose the computed metrics
        print(f"COCO evaluation failed: {e}")
        return None

