"""Label verification and cache: counts on real COCO images, a corpus of bad inputs, cache reuse/invalidation."""
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from utils.data import label_cache
from utils.data.detection_dataset import LoadImagesAndLabels
from utils.errors import UserError
from utils.data.image_files import img2label_path, list_files, read_image
from utils.data.label_cache import scan_labels

NON_UTF8 = os.fsdecode(b"caf\xe9_latin1")  # a file name that is not valid UTF-8


pytestmark = pytest.mark.usefixtures("user_cache")  # caches stay in tmp_path


def coco_jpeg(real_images_dir, name="000000000009.jpg") -> bytes:
    return (real_images_dir / "images" / "train2017" / name).read_bytes()


def make_corpus(root: Path, real_images_dir: Path) -> Path:
    """22 images with known outcomes; returns the images folder."""
    im_dir, lb_dir = root / "images" / "train", root / "labels" / "train"
    im_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    jpg = coco_jpeg(real_images_dir)
    ok_label = "0 0.5 0.5 0.2 0.3\n3 0.25 0.25 0.1 0.1\n"

    def add(stem, data, label=ok_label, suffix=".jpg"):
        (im_dir / f"{stem}{suffix}").write_bytes(data)
        if label is not None:
            (lb_dir / f"{stem}.txt").write_text(label)

    def png(arr):
        ok, buf = cv2.imencode(".png", arr)
        return buf.tobytes()

    add("a01_good", jpg)
    add("a02_missing_label", jpg, label=None)
    add("a03_empty_label", jpg, label="")
    add("a04_zero_bytes", b"")
    add("a05_text", b"this is not an image\n")
    add("a06_tiny", png(np.zeros((5, 5, 3), np.uint8)), suffix=".png")
    add("a07_truncated", jpg[: len(jpg) // 2])
    add("a08_trailing_garbage", jpg + b"\x00garbage")
    add("a09_four_columns", jpg, label="0 0.5 0.5 0.2\n")
    add("a10_six_columns", jpg, label="0 0.5 0.5 0.2 0.2 0.1\n")
    add("a11_above_one", jpg, label="0 0.5 0.5 1.2 0.2\n")
    add("a12_negative", jpg, label="0 0.5 -0.5 0.2 0.2\n")
    add("a13_nan", jpg, label="0 0.5 nan 0.2 0.2\n")
    add("a14_duplicates", jpg, label=ok_label + "0 0.5 0.5 0.2 0.3\n")
    add(NON_UTF8, jpg)
    add("a16_segments", jpg, label="2 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6\n")
    gray16 = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)
    add("a17_gray", png(np.full((30, 40), 90, np.uint8)), suffix=".png")
    add("a18_rgba", png(np.dstack([np.full((30, 40, 3), 200, np.uint8), np.full((30, 40), 7, np.uint8)])),
        suffix=".PNG")
    pal = Image.fromarray(np.full((30, 40, 3), (255, 0, 0), np.uint8)).convert("P")
    pal.save(root / "pal.png")
    add("a19_palette", (root / "pal.png").read_bytes(), suffix=".png")
    add("a20_16bit", png(gray16), suffix=".png")
    exif_im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # stored 40 wide x 20 high
    exif = exif_im.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 20 wide x 40 high
    exif_im.save(root / "exif.jpg", exif=exif)
    add("a21_exif_rotated", (root / "exif.jpg").read_bytes())
    add("a22_class_99", jpg, label="0 0.5 0.5 0.2 0.2\n99 0.5 0.5 0.1 0.1\n")
    return im_dir


def test_real_image_counts(tmp_path, real_image_set):
    root = tmp_path / "set"  # a writable copy: the cache goes beside the labels, as upstream puts it
    shutil.copytree(real_image_set.root / "images", root / "images")
    shutil.copytree(real_image_set.root / "labels", root / "labels")
    for folder in (root / "labels", root / "labels" / "train2017"):
        folder.chmod(0o755)  # copytree copied the source's read-only mode
    src = str(root / "images" / "train2017")
    files = list_files(src)
    scan = scan_labels(src, files, [img2label_path(f) for f in files])
    n, empty = real_image_set.images, real_image_set.empty
    assert scan.summary("x").endswith(f"{n} found, 0 missing, {len(empty)} empty, 0 corrupt")
    assert len(scan.im_files) == n and sum(len(x) for x in scan.labels) == real_image_set.boxes
    assert sorted(Path(f).name for f, lb in zip(scan.im_files, scan.labels) if len(lb) == 0) == empty
    assert len({int(c) for lb in scan.labels for c in lb[:, 0]}) == real_image_set.classes
    for name in real_image_set.gray:  # stored with one channel, read as three
        assert cv2.imread(str(root / "images" / "train2017" / name), cv2.IMREAD_UNCHANGED).ndim == 2
        assert read_image(str(root / "images" / "train2017" / name)).shape[2] == 3
    assert scan.cache_file == str(root / "labels" / "train2017.cache") and Path(scan.cache_file).is_file()


def test_in_repository_images_get_no_cache_written_beside_them(real_images_dir, user_cache):
    src = str(real_images_dir / "images" / "train2017")
    files = list_files(src)
    scan = scan_labels(src, files, [img2label_path(f) for f in files])
    assert scan.cache_file.startswith(str(user_cache))
    assert not (real_images_dir / "labels" / "train2017.cache").exists()


def test_bad_input_corpus(tmp_path, real_images_dir, caplog):
    im_dir = make_corpus(tmp_path / "ds", real_images_dir)
    original_trailing = (im_dir / "a08_trailing_garbage.jpg").read_bytes()
    ds = LoadImagesAndLabels(str(im_dir), img_size=64, batch_size=4)
    scan = ds.scan
    assert (scan.found, scan.missing, scan.empty, scan.corrupt, scan.total) == (17, 1, 1, 9, 22)
    assert scan.summary("d").endswith("17 found, 1 missing, 1 empty, 9 corrupt")
    names = {Path(f).stem: i for i, f in enumerate(ds.img_files)}
    corrupt = {"a04_zero_bytes", "a05_text", "a06_tiny", "a07_truncated", "a09_four_columns", "a10_six_columns",
               "a11_above_one", "a12_negative", "a13_nan"}
    assert len(ds) == 13 and not corrupt & set(names)
    msgs = "\n".join(scan.msgs)
    for stem, why in [("a06_tiny", "under 10 pixels"), ("a07_truncated", "truncated"),
                      ("a09_four_columns", "line 1: labels need 5 columns (class x y w h), got 4"),
                      ("a10_six_columns", "got 6"), ("a11_above_one", "normalised"),
                      ("a12_negative", "negative"), ("a13_nan", "non-finite")]:
        line = next(m for m in scan.msgs if stem in m)
        assert why in line, line
    # duplicates dropped with a warning, first occurrences kept in order
    assert np.allclose(ds.labels[names["a14_duplicates"]], [[0, 0.5, 0.5, 0.2, 0.3], [3, 0.25, 0.25, 0.1, 0.1]])
    assert "1 duplicate label rows removed" in msgs and "duplicate" in caplog.text
    # polygon -> box (extent of the points)
    assert np.allclose(ds.labels[names["a16_segments"]], [[2, 0.3, 0.35, 0.4, 0.5]])
    assert len(ds.segments[names["a16_segments"]]) == 1
    # missing label = background image; the non-UTF-8 name works end to end
    assert ds.labels[names["a02_missing_label"]].shape == (0, 5)
    im, labels, path, _ = ds[names[Path(NON_UTF8).stem]]
    assert im.shape[0] == 3 and labels.shape == (2, 6)
    # trailing bytes after the JPEG end: original untouched, a lossless copy is read instead
    assert (im_dir / "a08_trailing_garbage.jpg").read_bytes() == original_trailing
    copy = ds.repaired[str(im_dir / "a08_trailing_garbage.jpg")]
    assert Path(copy).read_bytes() == original_trailing[: original_trailing.rfind(b"\xff\xd9") + 2]
    assert "restored" in msgs
    assert np.array_equal(ds.load_image(names["a08_trailing_garbage"])[0], ds.load_image(names["a01_good"])[0])
    assert Path(copy).suffix == ".repaired"  # never listed as a training image itself
    # grayscale / RGBA / palette / 16-bit all become 8-bit 3-channel BGR
    for stem, pixel in [("a17_gray", [90, 90, 90]), ("a18_rgba", [200, 200, 200]), ("a19_palette", [0, 0, 255]),
                        ("a20_16bit", None)]:
        img, _, _ = ds.load_image(names[stem])
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        if pixel:
            assert img[5, 5].tolist() == pixel
    # EXIF orientation: size and pixels are the displayed (rotated) ones
    i = names["a21_exif_rotated"]
    assert ds.shapes[i].tolist() == [20, 40]
    assert ds.load_image(i)[1] == (40, 20)


def test_class_id_out_of_range_names_file_and_line(tmp_path, real_images_dir):
    im_dir = make_corpus(tmp_path / "ds", real_images_dir)
    with pytest.raises(UserError) as e:
        LoadImagesAndLabels(str(im_dir), img_size=64, nc=80)
    assert f"{tmp_path / 'ds' / 'labels' / 'train' / 'a22_class_99.txt'}:2: class id 99" in str(e.value)
    assert "nc=80" in str(e.value)
    assert len(LoadImagesAndLabels(str(im_dir), img_size=64, nc=80, single_cls=True)) == 13  # single-cls: all 0
    assert all((x[:, 0] == 0).all() for x in LoadImagesAndLabels(str(im_dir), img_size=64, single_cls=True).labels)


def test_zero_usable_images_is_an_error(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"")
    (d / "b.png").write_text("nope")
    with pytest.raises(UserError, match="no usable images .* 2 checked, 2 corrupt"):
        LoadImagesAndLabels(str(d), img_size=64)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images found"):
        LoadImagesAndLabels(str(tmp_path / "empty"), img_size=64)
    with pytest.raises(UserError, match="does not exist"):
        LoadImagesAndLabels(str(tmp_path / "nowhere"), img_size=64)


def count_verify_calls(monkeypatch):
    calls = []
    real = label_cache.verify_image_label

    def counting(args):
        calls.append(args[0])
        return real(args)

    monkeypatch.setattr(label_cache, "verify_image_label", counting)
    return calls


def scan_dir(im_dir):
    files = list_files(str(im_dir))
    return scan_labels(str(im_dir), files, [img2label_path(f) for f in files])


def small_dataset(root, real_images_dir, n=4):
    im_dir, lb_dir = root / "images" / "train", root / "labels" / "train"
    im_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    src = sorted((real_images_dir / "images" / "train2017").glob("*.jpg"))[:n]
    for f in src:
        shutil.copy(f, im_dir / f.name)
        shutil.copy(real_images_dir / "labels" / "train2017" / f"{f.stem}.txt", lb_dir / f"{f.stem}.txt")
    return im_dir, lb_dir


def test_cache_reused_and_invalidated(tmp_path, real_images_dir, monkeypatch):
    im_dir, lb_dir = small_dataset(tmp_path, real_images_dir)
    calls = count_verify_calls(monkeypatch)
    first = scan_dir(im_dir)
    assert len(calls) == 4 and not first.from_cache
    assert first.cache_file == str(tmp_path / "labels" / "train.cache")  # upstream location, writable here
    second = scan_dir(im_dir)
    assert len(calls) == 4 and second.from_cache  # nothing verified again
    assert [x.tolist() for x in second.labels] == [x.tolist() for x in first.labels]
    assert second.shapes.tolist() == first.shapes.tolist()

    label = next(lb_dir.iterdir())
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # touched
    assert not scan_dir(im_dir).from_cache and len(calls) == 8
    assert scan_dir(im_dir).from_cache and len(calls) == 8

    label.write_text("5 0.5 0.5 0.5 0.5\n")  # edited
    third = scan_dir(im_dir)
    assert len(calls) == 12 and third.labels[third.im_files.index(str(im_dir / f"{label.stem}.jpg"))].tolist() == [
        [5, 0.5, 0.5, 0.5, 0.5]]

    shutil.copy(next(im_dir.iterdir()), im_dir / "extra.jpg")  # file list changed
    assert len(scan_dir(im_dir).im_files) == 5 and len(calls) == 17

    monkeypatch.setattr(label_cache, "CACHE_VERSION", "some-other-version")  # format changed
    assert not scan_dir(im_dir).from_cache and len(calls) == 22


def test_damaged_or_foreign_cache_is_rebuilt_not_executed(tmp_path, real_images_dir, monkeypatch):
    im_dir, _ = small_dataset(tmp_path, real_images_dir, n=2)
    calls = count_verify_calls(monkeypatch)
    cache = Path(scan_dir(im_dir).cache_file)
    cache.write_bytes(b"garbage")
    assert not scan_dir(im_dir).from_cache and len(calls) == 4
    # an upstream-style pickled cache: must be ignored (loading pickles from datasets could run code)
    with open(cache, "wb") as f:
        np.save(f, np.array({"version": 0.6, "hash": "x"}, dtype=object), allow_pickle=True)
    assert not scan_dir(im_dir).from_cache and len(calls) == 6


def test_read_only_label_folder_uses_user_cache(tmp_path, real_images_dir, user_cache):
    im_dir, lb_dir = small_dataset(tmp_path, real_images_dir, n=2)
    os.chmod(lb_dir.parent, 0o555)
    try:
        scan = scan_dir(im_dir)
        assert scan.cache_file.startswith(str(user_cache)) and not (lb_dir.parent / "train.cache").exists()
        assert scan_dir(im_dir).from_cache
    finally:
        os.chmod(lb_dir.parent, 0o755)


def test_txt_list_cache_beside_list(tmp_path, real_images_dir):
    im_dir, _ = small_dataset(tmp_path, real_images_dir, n=3)
    lst = tmp_path / "train.txt"
    lst.write_text("".join(f"./images/train/{f.name}\n" for f in sorted(im_dir.iterdir())[:2]))
    files = list_files(str(lst))
    assert files == [str(f) for f in sorted(im_dir.iterdir())[:2]]
    scan = scan_labels(str(lst), files, [img2label_path(f) for f in files])
    assert scan.cache_file == str(tmp_path / "train.cache") and len(scan.im_files) == 2
