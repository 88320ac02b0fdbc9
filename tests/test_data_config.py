"""Data yaml loading: path resolution, names/nc checks, clear errors, shipped yamls."""
from pathlib import Path

import pytest
import yaml

from utils.cli import set_logging
from utils.data.data_config import DATA_DIR, load_data_config, resolve_data_file
from utils.errors import UserError


def write_yaml(path: Path, d: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def test_coco128_absolute_path(tmp_path, real_images_dir):
    f = write_yaml(tmp_path / "c.yaml", {"path": str(real_images_dir), "train": "images/train2017",
                                          "val": "images/train2017", "nc": 80, "names": [f"n{i}" for i in range(80)]})
    d = load_data_config(str(f))
    assert d["train"] == d["val"] == str(real_images_dir / "images" / "train2017")
    assert d["test"] is None and d["nc"] == 80 and d["names"][79] == "n79"


def test_relative_path_prefers_yaml_folder_then_cwd(tmp_path, monkeypatch):
    (tmp_path / "cfg" / "ds" / "images").mkdir(parents=True)
    f = write_yaml(tmp_path / "cfg" / "d.yaml", {"path": "ds", "train": "images", "val": "images", "nc": 1})
    monkeypatch.chdir(tmp_path)  # cwd has no 'ds': the yaml's folder wins
    d = load_data_config(str(f))
    assert d["path"] == str(tmp_path / "cfg" / "ds") and d["train"] == str(tmp_path / "cfg" / "ds" / "images")
    # a root that only exists relative to the working directory
    (tmp_path / "work" / "other" / "imgs").mkdir(parents=True)
    f2 = write_yaml(tmp_path / "cfg" / "e.yaml", {"path": "other", "train": "imgs", "val": ["imgs"], "nc": 1})
    monkeypatch.chdir(tmp_path / "work")
    d2 = load_data_config(str(f2))
    assert d2["train"] == str(tmp_path / "work" / "other" / "imgs")
    assert d2["val"] == [str(tmp_path / "work" / "other" / "imgs")]
    assert d2["names"] == ["class0"]


def test_names_mapping_and_txt_split(tmp_path):
    (tmp_path / "train.txt").write_text("./images/a.jpg\n")
    f = write_yaml(tmp_path / "d.yaml", {"train": "train.txt", "val": "train.txt", "names": {0: "cat", 1: "dog"}})
    d = load_data_config(str(f))
    assert d["nc"] == 2 and d["names"] == ["cat", "dog"] and d["train"] == str(tmp_path / "train.txt")


@pytest.mark.parametrize("content, key", [
    ({"val": "x", "nc": 1}, "'train'"),
    ({"train": "x", "nc": 1}, "'val'"),
    ({"train": "x", "val": "x", "nc": 3, "names": ["a", "b"]}, "'nc' is 3 but 'names' has 2"),
    ({"train": "x", "val": "x", "nc": "two"}, "'nc' must be a positive integer"),
    ({"train": "x", "val": "x"}, "missing key 'nc'"),
    ({"train": "x", "val": "x", "nc": 2, "names": {0: "a", 2: "b"}}, "keys 0..1"),
    ({"train": "x", "val": "x", "names": "abc"}, "'names' must be a list"),
    ({"train": "does_not_exist", "val": "x", "nc": 1}, "does not exist"),
    ({"train": 5, "val": "x", "nc": 1}, "key 'train' must be"),
])
def test_errors_name_file_and_key(tmp_path, content, key):
    (tmp_path / "x").mkdir()
    f = write_yaml(tmp_path / "bad.yaml", content)
    with pytest.raises(UserError) as e:
        load_data_config(str(f))
    assert str(f) in str(e.value) and key in str(e.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="nothere.yaml: file not found"):
        load_data_config("nothere.yaml")
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_data_config(str(tmp_path / "broken.yaml"))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_data_config(str(tmp_path / "list.yaml"))


def test_download_key_ignored_with_hint(tmp_path, capsys):
    set_logging()  # the note goes through the yolov5 logger; its handler prints on stdout
    (tmp_path / "im").mkdir()
    f = write_yaml(tmp_path / "d.yaml", {"train": "im", "val": "im", "nc": 1, "download": "https://x/y.zip"})
    d = load_data_config(str(f))
    assert "download" not in d and "prepare.sh" in capsys.readouterr().out


def test_short_names_resolve_to_shipped_yamls():
    assert resolve_data_file("coco128.yaml") == DATA_DIR / "coco128.yaml"
    d = load_data_config("coco128.yaml", check_exists=False)
    assert d["nc"] == 80 and len(d["names"]) == 80 and d["names"][0] == "person" and d["names"][79] == "toothbrush"
    assert d["train"] == d["val"] and d["train"].endswith(str(Path("datasets/coco128/images/train2017")))
    c = load_data_config("coco.yaml", check_exists=False)
    assert c["train"].endswith(str(Path("datasets/coco/train2017.txt")))
    assert c["val"].endswith("val2017.txt") and c["test"].endswith("test-dev2017.txt")
    assert c["names"] == d["names"]
