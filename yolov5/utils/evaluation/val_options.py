"""What a validation pass is told (ValOptions) and what it runs on (ValInputs).

`validator.run` takes v6.0's long parameter list once and builds these two; every step of the pass
reads its settings from them instead of passing two dozen values along.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional


@dataclass(frozen=True)
class ValOptions:
    """How to validate: thresholds, outputs, precision and (standalone runs) the loader and run directory."""
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    task: str = "val"  # which split of the data yaml (train, val or test)
    single_cls: bool = False
    augment: bool = False
    verbose: bool = False  # per-class rows even while training
    save_txt: bool = False
    save_hybrid: bool = False
    save_conf: bool = False
    save_json: bool = False
    anno_json: Optional[Any] = None
    plots: bool = True
    training: bool = False  # the trainer's model and loader (no loading, no run directory, no speed line)
    half: bool = False  # model and batch in FP16 (standalone runs on accelerators)
    amp: bool = False  # autocast (validation during training on accelerators)
    batch_size: int = 32
    imgsz: Optional[int] = None  # None: the training size stored in the checkpoint, else 640
    workers: int = 8
    project: Any = Path("runs/val")
    name: str = "exp"
    exist_ok: bool = False


class ValInputs(NamedTuple):
    """The model, the batches and where results go: the trainer's, or loaded by a standalone run."""
    model: Any
    dataloader: Any
    data: dict
    nc: int
    save_dir: Path
    imgsz: Optional[int]
    weights: Any = None  # names the COCO json (<stem>_predictions.json)
