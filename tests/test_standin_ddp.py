"""Two ranks under torchrun on the stand-in mlu device, with the backend our device layer picks for
MLU ('cncl', the stand-in's: collectives through gloo on host copies): each rank drives its own
card, DDP averages the gradients, and both ranks end with the same weights."""
import json
import subprocess
import sys
import textwrap

from train_helpers import YOLO_DIR, cli_env
from utils.io.checkpoint import load_checkpoint

WRAPPER = textwrap.dedent("""
    import hashlib, json, os, sys
    sys.path.insert(0, {yolo_dir!r})
    import torch.distributed as dist
    import train
    from utils.training.callbacks import Callbacks
    from utils.device.parallel import de_parallel

    rank, seen = int(os.environ["RANK"]), {{}}
    callbacks = Callbacks()

    def batch_end(ni, model, *args):
        seen["model"] = model

    def train_end(*args):
        bare = de_parallel(seen["model"])
        params = [p.detach() for p in bare.parameters()]
        digest = hashlib.sha256(b"".join(p.cpu().numpy().tobytes() for p in params)).hexdigest()
        with open(os.path.join({out_dir!r}, f"rank{{rank}}.json"), "w") as f:
            json.dump({{"params": digest, "devices": sorted({{str(p.device) for p in params}}),
                       "ddp": type(seen["model"]).__name__, "backend": dist.get_backend()}}, f)

    callbacks.register_action("on_train_batch_end", "record", batch_end)
    callbacks.register_action("on_train_end", "record", train_end)
    train.main(sys.argv[1:], callbacks=callbacks)
""")


def test_two_ranks_on_two_standin_cards_end_with_equal_weights(standin_mlu, tmp_path):
    from utils.data.demo_data import generate_demo_dataset
    generate_demo_dataset(tmp_path / "demo", n_train=16, n_val=8, imgsz=96, seed=0)
    script = tmp_path / "ddp_train.py"
    script.write_text(WRAPPER.format(yolo_dir=str(YOLO_DIR), out_dir=str(tmp_path)))
    args = ["--data", tmp_path / "demo" / "demo.yaml", "--cfg", "yolov5n.yaml", "--weights", "", "--img", "64",
            "--batch-size", "8", "--epochs", "2", "--iters", "3", "--device", "mlu", "--workers", "0",
            "--noautoanchor", "--project", tmp_path / "runs", "--name", "ddp"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), *map(str, args)], cwd=YOLO_DIR, env=cli_env(YOLOV5_STANDIN_MLU=1),
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["ddp"] for r in ranks] == ["DistributedDataParallel"] * 2
    assert [r["backend"] for r in ranks] == ["cncl"] * 2
    assert [r["devices"] for r in ranks] == [["mlu:0"], ["mlu:1"]]  # one card per rank
    assert ranks[0]["params"] == ranks[1]["params"]
    last = load_checkpoint(tmp_path / "runs" / "ddp" / "weights" / "last.pt")
    assert last["epoch"] == -1 and last["model"].nc == 6
    assert "stand-in on host memory" in run.stdout + run.stderr
