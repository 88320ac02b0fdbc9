"""prepare.sh end to end against a local HTTP server serving stand-in archives with the real layout.

The archives are built here from a handful of ../shared coco128 images and an excerpt of its
instances JSON (train2017.zip holds train2017/*.jpg, annotations_trainval2017.zip holds
annotations/instances_*.json, coco2017labels.zip holds coco/labels/..., coco128.zip holds
coco128/...); the weights are ../shared/fixtures/yolov5n_upstream_ckpt.pt, an upstream-format checkpoint. A manifest with the stand-ins'
sizes and MD5s replaces the real one, so the checksum path is exercised too.
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from range_http_server import RangeServer, closed_port

TRAIN = 6  # images in the stand-in train2017 (one of them without boxes), val2017 gets 3
VAL = 3
NO_PROXY = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}  # talk to our server directly


def _zip(entries):
    """{name: bytes or None (a folder entry)} -> zip bytes, in the order given."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            if data is None:
                z.writestr(zipfile.ZipInfo(name), b"")
            else:
                z.writestr(name, data)
    return buf.getvalue()


def _instances(full, names):
    ids = {im["id"] for im in full["images"] if im["file_name"] in names}
    return {"info": full["info"], "licenses": full["licenses"], "categories": full["categories"],
            "images": [im for im in full["images"] if im["id"] in ids],
            "annotations": [a for a in full["annotations"] if a["image_id"] in ids]}


@pytest.fixture(scope="module")
def standins(real_images_dir, upstream_checkpoint, tmp_path_factory):
    """Server paths -> bytes, plus the names of the train/val images and a manifest file."""
    images = sorted((real_images_dir / "images/train2017").iterdir())
    full = json.loads((real_images_dir / "annotations/instances_train2017.json").read_text())
    crowd = {a["image_id"] for a in full["annotations"] if a["iscrowd"]}
    by_name = {im["file_name"]: im["id"] for im in full["images"]}
    # train: an image with a crowd region, the box-less 000000000250.jpg, and the first others
    train = [next(p.name for p in images if by_name[p.name] in crowd), "000000000250.jpg"]
    train = sorted(train + [p.name for p in images if p.name not in train][:TRAIN - 2])
    val = [p.name for p in images if p.name not in train][:VAL]
    assert len(train) == TRAIN and len(val) == VAL
    img = {p.name: p.read_bytes() for p in images if p.name in train + val}
    labels = {n: (real_images_dir / "labels/train2017" / n).with_suffix(".txt").read_bytes() for n in train + val}
    ann = {s: json.dumps(_instances(full, names)).encode() for s, names in (("train2017", train), ("val2017", val))}
    files = {
        "/coco/annotations/annotations_trainval2017.zip": _zip(
            {"annotations/": None, **{f"annotations/instances_{s}.json": b for s, b in ann.items()}}),
        "/coco/zips/train2017.zip": _zip({"train2017/": None, **{f"train2017/{n}": img[n] for n in train}}),
        "/coco/zips/val2017.zip": _zip({"val2017/": None, **{f"val2017/{n}": img[n] for n in val}}),
        "/gh/v1.0/coco2017labels.zip": _zip({
            **{f"coco/labels/train2017/{n[:-4]}.txt": labels[n] for n in train},
            **{f"coco/labels/val2017/{n[:-4]}.txt": labels[n] for n in val},
            "coco/train2017.txt": "".join(f"./images/train2017/{n}\n" for n in train).encode(),
            "coco/val2017.txt": "".join(f"./images/val2017/{n}\n" for n in val).encode(),
            "coco/test-dev2017.txt": b"./images/test2017/000000000001.jpg\n",
            "coco/annotations/instances_val2017.json": ann["val2017"]}),
        "/gh/v1.0/coco128.zip": _zip({
            **{f"coco128/images/train2017/{n}": img[n] for n in train},
            **{f"coco128/labels/train2017/{n[:-4]}.txt": labels[n] for n in train}}),
        "/gh/v6.0/yolov5n.pt": (upstream_checkpoint).read_bytes(),
    }
    files["/gh/v6.0/yolov5s.pt"] = files["/gh/v6.0/yolov5n.pt"]
    manifest = tmp_path_factory.mktemp("manifest") / "manifest.txt"
    manifest.write_text("".join(
        f"{Path(p).name} {len(files[p])} {hashlib.md5(files[p]).hexdigest()} {3 * len(files[p])}\n"
        for p in ("/coco/annotations/annotations_trainval2017.zip", "/coco/zips/train2017.zip",
                  "/coco/zips/val2017.zip")) + "coco2017labels.zip - - 100000\ncoco128.zip - - -\n")
    return {"files": files, "train": train, "val": val, "manifest": manifest}


@pytest.fixture()
def server(standins):
    with RangeServer(standins["files"]) as srv:
        yield srv


def prepare(repo_root, tmp_path, server_url, standins, *args, env=None):
    full = {k: v for k, v in os.environ.items() if k not in ("DATASET_ROOT", "MODEL_ROOT", "COCO128_DIR")}
    full.update(COCO_MIRROR=f"{server_url}/coco", WEIGHTS_MIRROR=f"{server_url}/gh",
                PREPARE_MANIFEST=str(standins["manifest"]), PREPARE_PYTHON=sys.executable,
                PYTHON=sys.executable, PREPARE_TIMEOUT="5", PREPARE_RETRIES="0", **NO_PROXY)
    full.update(env or {})
    cmd = ["bash", str(repo_root / "prepare.sh"), "--data-root", str(tmp_path / "data"),
           "--weights-dir", str(tmp_path / "weights"), *args]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=120)
    out.seconds = time.time() - t0
    out.text = out.stdout + out.stderr
    return out


def tree(root):
    """{relative path: (size, mtime_ns)} of everything under root."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))} if root.exists() else {}


def rows(path):
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()]).reshape(-1, 5)


def assert_labels_match(label_dir, names, real_images_dir):
    """Label files equal the reference YOLO labels of ../shared coco128 (to the printed precision)."""
    assert sorted(p.name for p in label_dir.iterdir()) == sorted(n[:-4] + ".txt" for n in names)
    for n in names:
        got = rows(label_dir / (n[:-4] + ".txt"))
        ref = rows(real_images_dir / "labels/train2017" / (n[:-4] + ".txt"))
        assert got.shape == ref.shape, n
        np.testing.assert_allclose(got[np.lexsort(got.T[::-1])], ref[np.lexsort(ref.T[::-1])], atol=2e-6)


def test_interrupted_download_resumes_then_layout_labels_weights_and_noop(
        repo_root, tmp_path, server, standins, real_images_dir):
    coco, train_zip = tmp_path / "data/coco", standins["files"]["/coco/zips/train2017.zip"]
    half = len(train_zip) // 2
    server.drop["/coco/zips/train2017.zip"] = [half]
    first = prepare(repo_root, tmp_path, server.url, standins, "--models", "n,s")
    assert first.returncode == 1, first.text
    assert "Run prepare.sh again to resume" in first.text
    part = tmp_path / "data/downloads/train2017.zip.part"
    assert part.stat().st_size == half
    assert not (coco / "images/train2017").exists() and not (coco / "train2017.txt").exists()
    assert (coco / "images/val2017").is_dir() and (coco / "val2017.txt").is_file()  # val came first
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["yolov5n.pt", "yolov5s.pt"]

    server.requests.clear()
    second = prepare(repo_root, tmp_path, server.url, standins, "--models", "n,s")
    assert second.returncode == 0, second.text
    gets = [r for r in server.requests if r[1] == "/coco/zips/train2017.zip" and r[2] != "bytes=0-0"]
    assert gets == [("GET", "/coco/zips/train2017.zip", f"bytes={half}-", 206)]  # continued, not restarted
    for split, names in (("train2017", standins["train"]), ("val2017", standins["val"])):
        assert sorted(p.name for p in (coco / "images" / split).iterdir()) == sorted(names)
        assert (coco / f"{split}.txt").read_text() == "".join(f"./images/{split}/{n}\n" for n in sorted(names))
        assert_labels_match(coco / "labels" / split, names, real_images_dir)
    assert (coco / "labels/train2017/000000000250.txt").read_text() == ""  # no boxes: empty label file
    assert sorted(p.name for p in (coco / "annotations").iterdir()) == ["instances_train2017.json",
                                                                        "instances_val2017.json"]
    assert not (tmp_path / "data/downloads").exists() and not (tmp_path / "weights/downloads").exists()
    # the dataset yaml written for this data root resolves to the new files
    from utils.data.data_config import load_data_config
    cfg = load_data_config(str(coco / "coco.yaml"))
    assert cfg["train"] == str(coco / "train2017.txt") and cfg["nc"] == 80
    assert f"--data {coco / 'coco.yaml'}" in second.text

    before, server.requests[:] = tree(tmp_path), []
    third = prepare(repo_root, tmp_path, server.url, standins, "--models", "n,s")
    assert third.returncode == 0, third.text
    assert "everything is present: nothing to do" in third.text
    assert server.requests == [] and tree(tmp_path) == before


def test_labels_download_mode_and_coco128_with_automatic_resume(repo_root, tmp_path, server, standins):
    labels_zip = standins["files"]["/gh/v1.0/coco2017labels.zip"]
    server.drop["/gh/v1.0/coco2017labels.zip"] = [len(labels_zip) // 3]
    out = prepare(repo_root, tmp_path, server.url, standins, "--only", "coco,coco128", "--labels", "download",
                  env={"PREPARE_RETRIES": "1"})
    assert out.returncode == 0, out.text
    resumed = [r for r in server.requests if r[1] == "/gh/v1.0/coco2017labels.zip" and r[3] == 206]
    assert resumed[-1][2] == f"bytes={len(labels_zip) // 3}-"
    coco = tmp_path / "data/coco"
    assert not (coco / "annotations/instances_train2017.json").exists()  # the JSON was not needed
    assert (coco / "annotations/instances_val2017.json").is_file() and (coco / "test-dev2017.txt").is_file()
    assert sorted(p.name for p in (coco / "labels/train2017").iterdir()) == \
        sorted(n[:-4] + ".txt" for n in standins["train"])
    assert (coco / "val2017.txt").read_text().splitlines() == [f"./images/val2017/{n}" for n in standins["val"]]
    c128 = tmp_path / "data/coco128"
    assert sorted(p.name for p in (c128 / "images/train2017").iterdir()) == sorted(standins["train"])
    assert len(list((c128 / "labels/train2017").iterdir())) == TRAIN
    assert not any(r[1].startswith("/coco/annotations") for r in server.requests)


def test_corrupt_archive_with_checksum_is_rejected(repo_root, tmp_path, server, standins):
    good = standins["files"]["/coco/zips/val2017.zip"]
    server.files["/coco/zips/val2017.zip"] = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]
    out = prepare(repo_root, tmp_path, server.url, standins, "--only", "coco")
    assert out.returncode == 1
    assert "val2017.zip" in out.text and "is corrupt: MD5" in out.text and "run prepare.sh again" in out.text
    coco = tmp_path / "data/coco"
    assert not (coco / "images/val2017").exists() and not (coco / "val2017.txt").exists()
    assert sorted(p.name for p in (tmp_path / "data/downloads").iterdir()) == ["coco-val2017.txt"]


def _flip_member_byte(data):
    """The zip with one byte of its last member's data inverted: the layout stays valid, the CRC not."""
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[-1]
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("damage", [lambda d: d[:-300], _flip_member_byte], ids=["truncated", "bad-crc"])
def test_damaged_zip_without_checksum_is_rejected(repo_root, tmp_path, server, standins, damage):
    server.files["/gh/v1.0/coco128.zip"] = damage(standins["files"]["/gh/v1.0/coco128.zip"])
    out = prepare(repo_root, tmp_path, server.url, standins, "--only", "coco128")
    assert out.returncode == 1
    assert "coco128.zip is damaged or not a zip archive" in out.text and "was deleted" in out.text
    assert "Traceback" not in out.text
    assert not (tmp_path / "data/coco128").exists() and not (tmp_path / "data/downloads").exists()


def test_weights_that_do_not_load_are_rejected(repo_root, tmp_path, server, standins):
    server.files["/gh/v6.0/yolov5n.pt"] = b"<html>proxy login page</html>"
    out = prepare(repo_root, tmp_path, server.url, standins, "--only", "weights", "--models", "n,s")
    assert out.returncode == 1
    assert "yolov5n.pt: FAILED" in out.text and "1 weight file(s) did not load and were deleted" in out.text
    assert sorted(p.name for p in (tmp_path / "weights").rglob("*")) == ["yolov5s.pt"]


def test_not_enough_disk_space_stops_before_downloading(repo_root, tmp_path, server, standins):
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(standins["manifest"].read_text() + "val2017.zip - - 1000000000000000000\n")
    out = prepare(repo_root, tmp_path, server.url, standins, "--only", "coco",
                  env={"PREPARE_MANIFEST": str(manifest)})
    assert out.returncode == 1 and "not enough free space in" in out.text
    assert {r[2] for r in server.requests} == {"bytes=0-0"}  # sizes asked, nothing downloaded
    assert not (tmp_path / "data").exists()


def test_unreachable_host_fails_fast_naming_url_and_mirrors(repo_root, tmp_path, standins):
    url = f"http://127.0.0.1:{closed_port()}"
    out = prepare(repo_root, tmp_path, url, standins)
    assert out.returncode == 3, out.text
    assert out.seconds < 30
    assert f"cannot reach {url}/gh/v6.0/yolov5n.pt" in out.text  # weights are asked for first
    assert "COCO_MIRROR" in out.text and "WEIGHTS_MIRROR" in out.text
    assert tree(tmp_path / "data") == {} and tree(tmp_path / "weights") == {}


def test_dry_run_changes_nothing(repo_root, tmp_path, server, standins):
    (tmp_path / "data/downloads").mkdir(parents=True)
    (tmp_path / "data/downloads/val2017.zip.part").write_bytes(b"x" * 999)
    before = tree(tmp_path)
    out = prepare(repo_root, tmp_path, server.url, standins, "--dry-run", "--only", "coco,coco128,weights")
    assert out.returncode == 0, out.text
    assert tree(tmp_path) == before and server.requests == []
    assert "would download train2017.zip" in out.text and "would download and check" in out.text
    assert "999 B already downloaded" in out.text and "nothing was changed" in out.text


def test_coco128_from_local_folder(repo_root, tmp_path, standins, real_images_dir):
    out = prepare(repo_root, tmp_path, "http://127.0.0.1:9", standins, "--only", "coco128",
                  "--coco128-dir", str(real_images_dir))
    assert out.returncode == 0, out.text
    dest = tmp_path / "data/coco128"
    assert len(list((dest / "images/train2017").iterdir())) == 16
    assert (dest / "labels/train2017/000000000009.txt").read_bytes() == \
        (real_images_dir / "labels/train2017/000000000009.txt").read_bytes()
    assert os.access(dest / "images/train2017", os.W_OK)
    from utils.data.data_config import load_data_config
    assert load_data_config(str(dest / "coco128.yaml"))["train"] == str(dest / "images/train2017")


def fetch(repo_root, standins, *args):
    env = {**os.environ, "PREPARE_MANIFEST": str(standins["manifest"]), "PREPARE_RETRIES": "0", **NO_PROXY}
    return subprocess.run([sys.executable, str(repo_root / "scripts/fetch.py"), *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_fetch_finishes_a_complete_part_and_restarts_a_changed_file(repo_root, tmp_path, server, standins):
    data = standins["files"]["/gh/v1.0/coco128.zip"]
    dest = tmp_path / "coco128.zip"
    Path(f"{dest}.part").write_bytes(data)  # complete, but its size record was lost
    out = fetch(repo_root, standins, "get", server.url + "/gh/v1.0/coco128.zip", str(dest))
    assert out.returncode == 0, out.stderr
    assert dest.read_bytes() == data and server.requests[-1][3] == 416
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco128.zip"]

    # a partial download of an older version of the file: If-Range fails, the server sends it all
    dest = tmp_path / "yolov5n.pt"
    Path(f"{dest}.part").write_bytes(b"old version")
    Path(f"{dest}.part.json").write_text(json.dumps({"total": 100, "validator": '"old-etag"'}))
    out = fetch(repo_root, standins, "get", server.url + "/gh/v6.0/yolov5n.pt", str(dest))
    assert out.returncode == 0, out.stderr
    assert dest.read_bytes() == standins["files"]["/gh/v6.0/yolov5n.pt"] and server.requests[-1][3] == 200
    assert "starting over" in out.stderr

    out = fetch(repo_root, standins, "get", server.url + "/gh/v6.0/yolov5x.pt", str(tmp_path / "x.pt"))
    assert out.returncode == 1 and "HTTP 404" in out.stderr and "WEIGHTS_MIRROR" in out.stderr
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.pt.part").exists()


@pytest.mark.parametrize("args, message", [
    (["--only", "cocoa"], "unknown part 'cocoa'"),
    (["--labels", "fetch"], "--labels must be convert or download"),
    (["--models", "z"], "unknown model 'z'"),
    (["--data-root"], "--data-root needs a value"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
])
def test_bad_options_exit_2(repo_root, tmp_path, standins, args, message):
    out = subprocess.run(["bash", str(repo_root / "prepare.sh"), *args], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "COCO_MIRROR": "http://127.0.0.1:9"})
    assert out.returncode == 2 and message in out.stderr


def test_bad_mirror_url_exit_2(repo_root):
    out = subprocess.run(["bash", str(repo_root / "prepare.sh"), "--dry-run"], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "WEIGHTS_MIRROR": "ftp.example.com/assets"})
    assert out.returncode == 2 and "WEIGHTS_MIRROR='ftp.example.com/assets' must be an http" in out.stderr


def test_shell_scripts_are_shellcheck_clean(repo_root):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (Debian: apt-get install -y shellcheck); CI should install it")
    scripts = [repo_root / "prepare.sh", repo_root / "utils_mlu/common_utils.sh",
               *sorted((repo_root / "scripts").glob("*.sh"))]
    out = subprocess.run(["shellcheck", "-x", "-s", "bash", *map(str, scripts)], capture_output=True,
                         text=True, cwd=repo_root)
    assert out.returncode == 0, out.stdout
