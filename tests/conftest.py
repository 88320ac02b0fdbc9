"""Shared test fixtures: where the repository and ../shared live, writable copies of coco128 images,
a per-test user cache folder and the default hyperparameters."""
import shutil
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
HYP_DIR = REPO_ROOT / "yolov5" / "data" / "hyps"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found beside the checkout (looked at {SHARED})")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir) -> Path:
    return shared_dir / "fixtures"


@pytest.fixture(scope="session")
def coco128_dir(shared_dir) -> Path:
    return shared_dir / "data" / "coco128"


@pytest.fixture
def coco128_copy(tmp_path, coco128_dir):
    """copy(n, images_dir) -> images_dir: the first n coco128 images and their labels copied to
    images_dir and its sibling labels folder (.../images/x -> .../labels/x), writable for caches."""
    def copy(n, images_dir):
        images_dir = Path(images_dir)
        labels_dir = images_dir.parent.parent / "labels" / images_dir.name
        images_dir.mkdir(parents=True)
        labels_dir.mkdir(parents=True)
        for f in sorted((coco128_dir / "images" / "train2017").glob("*.jpg"))[:n]:
            shutil.copy(f, images_dir)
            shutil.copy(coco128_dir / "labels" / "train2017" / f"{f.stem}.txt", labels_dir)
        return images_dir
    return copy


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """YOLOV5_CACHE_DIR inside the test's tmp_path, so caches for read-only data never reach ~/.cache."""
    monkeypatch.setenv("YOLOV5_CACHE_DIR", str(tmp_path / "user_cache"))
    return tmp_path / "user_cache"


@pytest.fixture
def hyp() -> dict:
    """data/hyps/hyp.scratch.yaml (v6.0's default), a fresh dict per test."""
    return yaml.safe_load((HYP_DIR / "hyp.scratch.yaml").read_text())


# The stand-in mlu device's fixtures (standin_mlu, standin_counters) and test ordering.
pytest_plugins = ["standin_mlu.pytest_plugin"]
