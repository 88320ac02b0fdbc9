"""utils/run_dir.increment_path: exp, exp2, exp3 ... never overwriting an earlier run."""
from utils.io.run_dir import increment_path


def test_new_path_is_used_as_is_and_not_created(tmp_path):
    p = increment_path(tmp_path / "runs" / "exp")
    assert p == tmp_path / "runs" / "exp"
    assert not p.exists()


def test_mkdir_creates_the_returned_directory(tmp_path):
    p = increment_path(tmp_path / "runs" / "exp", mkdir=True)
    assert p.is_dir()
    p2 = increment_path(tmp_path / "runs" / "exp", mkdir=True)
    assert p2 == tmp_path / "runs" / "exp2" and p2.is_dir()


def test_numbering_starts_at_2_and_continues_after_the_highest(tmp_path):
    (tmp_path / "exp").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp3"
    (tmp_path / "exp10").mkdir()  # numeric, not lexical, maximum
    assert increment_path(tmp_path / "exp") == tmp_path / "exp11"


def test_exist_ok_returns_the_existing_path(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp2").mkdir()
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"


def test_separator_and_unrelated_siblings(tmp_path):
    for name in ("exp", "exp_2", "exp_old", "exp3_backup", "expert"):
        (tmp_path / name).mkdir()
    assert increment_path(tmp_path / "exp", sep="_") == tmp_path / "exp_3"
    # with sep '' only exp<digits> counts: exp_2, exp3_backup, expert are other names
    assert increment_path(tmp_path / "exp") == tmp_path / "exp2"


def test_existing_file_keeps_its_suffix(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")
    assert increment_path(tmp_path / "last.pt") == tmp_path / "last2.pt"
    (tmp_path / "last2.pt").write_bytes(b"x")
    assert increment_path(tmp_path / "last.pt") == tmp_path / "last3.pt"


def test_directory_with_period_and_regex_characters(tmp_path):
    (tmp_path / "run.v1").mkdir()  # a directory: '.v1' is part of the name, not a suffix
    assert increment_path(tmp_path / "run.v1") == tmp_path / "run.v12"
    (tmp_path / "a+(b)").mkdir()
    (tmp_path / "a+(b)4").mkdir()
    (tmp_path / "aab9").mkdir()  # an unescaped pattern a+(b)(\d+) would match this and give 10
    assert increment_path(tmp_path / "a+(b)") == tmp_path / "a+(b)5"
