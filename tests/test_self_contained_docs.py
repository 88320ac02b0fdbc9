"""Comments, docstrings and docs state their facts instead of pointing to documents a clone lacks.

A fresh clone has nothing beside it, so a pointer such as "compat-v6.md 7.3", "see MLU.md", "the
seed's port" (Cambricon's MLU port, as old notes called it) or "issue 3" (an issue tracker outside the
repository) leaves the reader with nothing. Each must be replaced by the fact in one line, optionally
pointing to a document inside the repository (README.md, docs/*.md). Data folders beside the
checkout (../shared/data, ../shared/fixtures) are inputs of optional tests, not documents, and are
not matched.
"""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".json", ".cfg", ".toml", ".txt", ".ipynb"}
POINTERS = re.compile(
    r"compat-v6|\bMLU\.md\b|(?-i:\bARCHITECTURE\b)|cambricon-yolov5-mlu-lab|shared[ /]docs"
    r"|\bseed's\b|\bthe seed (did|does|wrote|shipped|used|had|port|code|lab|patch)\b"
    r"|(\b(as|from|than|like|unlike|in) |\()the seed\b(?=[).,;:]|$)"
    r"|\bissues? #?\d+\b",
    re.IGNORECASE)
THIS_FILE = Path(__file__).resolve().relative_to(REPO).as_posix()


def tracked_text_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked archive)
        names = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*")
                 if p.is_file() and not {".git", ".venv", "runs", "datasets"} & set(p.relative_to(REPO).parts)]
    return [n for n in names if Path(n).suffix in TEXT_SUFFIXES and (REPO / n).is_file()]


def pointers_in(text):
    """(line number, line) of every line that points to a document outside the repository."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if POINTERS.search(line)]


def test_no_pointers_to_documents_outside_the_repository():
    found = []
    for name in tracked_text_files():
        if name == THIS_FILE:
            continue
        text = (REPO / name).read_text(encoding="utf-8", errors="replace")
        found += [f"{name}:{i}: {line}" for i, line in pointers_in(text)]
    assert not found, ("state the fact instead of pointing to a document outside the repository:\n"
                       + "\n".join(found))


def test_pointer_patterns():
    bad = ["Behaviour of upstream v6.0 (compat-v6.md 7.14):", "see shared docs MLU.md 1.4", "(ARCHITECTURE.md)",
           "gates DDP as the seed's port does", "# as the seed: enough epochs", "quoted in issue 3",
           "see ../shared/docs/MLU.md", "what the seed did", "(the seed)", "Issue #12"]
    good = ["torch.manual_seed(seed)", "the same seed, epoch and rank", "a numpy Generator seeded by `seed`",
            "derived from the seed value", "bigger sets in ../shared/fixtures", "see docs/architecture.md", "--data-dir ../shared/data/coco128",
            "post-v6.0 fix (upstream v7.0, #9056)", "no issues found"]
    assert [s for s in bad if not POINTERS.search(s)] == []
    assert [s for s in good if POINTERS.search(s)] == []
    assert pointers_in("ok\n# compat-v6.md 1.2\nok\n") == [(2, "# compat-v6.md 1.2")]
