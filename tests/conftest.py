"""Shared test fixtures: where the repository and its test data live, writable copies of real images,
a per-test user cache folder and the default hyperparameters.

Every test runs on a fresh clone with nothing beside it: the upstream parity fixtures
(tests/fixtures/upstream_v60) and 16 real COCO photographs (tests/data/coco16) are in the repository.
A `../shared` folder beside the checkout adds bigger cases: the parity tests then also run on its larger
fixture set, and the few tests that need all of coco128 run instead of being skipped. Tests that use
`../shared` carry the `shared` marker (`pytest -m shared` runs just those).
"""
import json
import shutil
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
HYP_DIR = REPO_ROOT / "yolov5" / "data" / "hyps"
IN_REPO_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "upstream_v60"
SHARED_FIXTURES = SHARED / "fixtures"
COCO16 = REPO_ROOT / "tests" / "data" / "coco16"
SHARED_COCO128 = SHARED / "data" / "coco128"

# The large set joins the parameters only where it exists, so a clone without ../shared skips nothing.
FIXTURE_SETS = [pytest.param(IN_REPO_FIXTURES, id="fx-repo")]
if (SHARED_FIXTURES / "MANIFEST.json").is_file():
    FIXTURE_SETS.append(pytest.param(SHARED_FIXTURES, id="fx-shared", marks=pytest.mark.shared))


class RealImageSet:
    """A folder of real COCO photographs in coco128's layout, with its known counts."""

    def __init__(self, root, images, boxes, classes, annotations, crowd, empty, gray):
        self.root, self.images, self.boxes, self.classes = Path(root), images, boxes, classes
        self.annotations, self.crowd, self.empty, self.gray = annotations, crowd, empty, gray


# Counts taken once from the files and COCO's instances json (boxes in YOLO labels, classes present,
# instances json annotations and crowd regions, empty label files, grayscale images).
COCO16_SET = RealImageSet(COCO16, images=16, boxes=95, classes=28, annotations=97, crowd=2,
                          empty=["000000000250.jpg"], gray=["000000000086.jpg"])
COCO128_SET = RealImageSet(SHARED_COCO128, images=128, boxes=929, classes=71, annotations=939, crowd=10,
                           empty=["000000000250.jpg", "000000000508.jpg"], gray=["000000000086.jpg"])
REAL_IMAGE_SETS = [pytest.param(COCO16_SET, id="coco16")]
if SHARED_COCO128.is_dir():
    REAL_IMAGE_SETS.append(pytest.param(COCO128_SET, id="coco128", marks=pytest.mark.shared))

# Fixtures whose use makes a test need ../shared.
SHARED_FIXTURE_NAMES = {"shared_dir", "coco128_dir"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SHARED_FIXTURE_NAMES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


def _need_shared(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"needs {what}: put ../shared beside the checkout ({path} not found)")
    return path


@pytest.fixture(scope="session", autouse=True)
def real_images_read_only():
    """The in-repository images are shared by all tests: their labels folder is made read-only for the
    session (without write bits, which the label cache honours even for root), so no test writes a
    cache or a repaired copy into the checkout; such writes go to the user cache folder."""
    labels = COCO16 / "labels"
    mode = labels.stat().st_mode & 0o777
    labels.chmod(0o555)
    try:
        yield
    finally:
        labels.chmod(mode)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need_shared(SHARED, "the ../shared folder")


@pytest.fixture(scope="session", params=FIXTURE_SETS)
def fixtures_dir(request) -> Path:
    """A folder of upstream v6.0 outputs: the in-repository set, and also ../shared/fixtures where present."""
    return request.param


@pytest.fixture(scope="session")
def upstream_checkpoint() -> Path:
    """Upstream v6.0's fp16 yolov5n checkpoint (seeded random weights) from the in-repository set, for
    tests that need a real upstream-format file rather than parity figures."""
    return IN_REPO_FIXTURES / "yolov5n_upstream_ckpt.pt"


@pytest.fixture(scope="session")
def fixture_manifest(fixtures_dir) -> dict:
    """The reference figures of the fixture set in use (they differ between the sets)."""
    return json.loads((fixtures_dir / "MANIFEST.json").read_text())


@pytest.fixture(scope="session")
def upstream_state_dict(fixtures_dir) -> dict:
    """The fixture model's fp32 state dict. The in-repository set ships only the fp16 upstream checkpoint,
    whose weights are fp16-representable, so converting it back to fp32 is exact."""
    from utils.io.checkpoint import load_checkpoint
    ckpt = load_checkpoint(fixtures_dir / "yolov5n_upstream_ckpt.pt")
    return {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].state_dict().items()}


@pytest.fixture(scope="session")
def real_images_dir() -> Path:
    """16 real COCO photographs with YOLO labels and their COCO instances file, in the repository
    (images/train2017, labels/train2017, annotations/instances_train2017.json)."""
    return COCO16


@pytest.fixture(scope="session", params=REAL_IMAGE_SETS)
def real_image_set(request) -> RealImageSet:
    """The in-repository coco16, and also all of coco128 where ../shared has it."""
    return request.param


@pytest.fixture(scope="session")
def coco128_dir() -> Path:
    """All of coco128 from ../shared, for the tests whose figures need the whole set."""
    return _need_shared(SHARED_COCO128, "the 128-image coco128 set at ../shared/data/coco128")


@pytest.fixture
def coco128_copy(tmp_path, real_images_dir):
    """copy(n, images_dir) -> images_dir: the first n real images and their labels copied to
    images_dir and its sibling labels folder (.../images/x -> .../labels/x), writable for caches."""
    def copy(n, images_dir):
        images_dir = Path(images_dir)
        labels_dir = images_dir.parent.parent / "labels" / images_dir.name
        images_dir.mkdir(parents=True)
        labels_dir.mkdir(parents=True)
        sources = sorted((real_images_dir / "images" / "train2017").glob("*.jpg"))
        assert n <= len(sources), f"only {len(sources)} real images in the repository"
        for f in sources[:n]:
            shutil.copy(f, images_dir)
            shutil.copy(real_images_dir / "labels" / "train2017" / f"{f.stem}.txt", labels_dir)
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
