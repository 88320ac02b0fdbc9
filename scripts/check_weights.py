"""Check downloaded weights by loading them through the project's safe loader (used by prepare.sh).

    python scripts/check_weights.py FILE [FILE ...]

A file passes when utils.io.checkpoint.load_checkpoint reads it (no code from the file runs) and a
YOLOv5 model comes out of it. Each passing path is printed on stdout, one per line; the reason
for each failure goes to stderr. Exit code 0 when all pass, 1 otherwise.
"""
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "yolov5"))  # the import root

from utils.io.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from utils.errors import UserError  # noqa: E402


def check(path):
    """One line describing the model in `path`; raises UserError when it is not usable."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, source=str(path))
    detect = model.model[-1] if hasattr(model, "model") else None
    if detect is None or not hasattr(detect, "nc"):
        raise UserError(f"{path} holds a {type(model).__name__} without a YOLOv5 Detect head")
    params = sum(p.numel() for p in model.parameters())
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    return f"{params / 1e6:.2f}M parameters, {detect.nc} classes, epoch {epoch}"


def main(paths):
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the passing paths
                summary = check(path)
        except UserError as e:
            print(f"[weights] {Path(path).name}: FAILED: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"[weights] {Path(path).name}: loads ({summary})", file=sys.stderr)
        print(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
