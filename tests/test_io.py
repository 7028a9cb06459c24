"""Output paths are checked before any work: missing folders, folders, unwritable places."""
import errno
import tempfile

import pytest

from qnas_deploy._io import check_folder, check_writable
from qnas_deploy.errors import BadInput


def test_check_writable_accepts_new_and_existing_files_and_skips_stdout(tmp_path):
    (tmp_path / "old.json").write_text("{}")
    check_writable(tmp_path / "new.png", tmp_path / "old.json", None, "-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]  # the probe leaves nothing


@pytest.mark.parametrize("case, needle", [
    ("missing folder", "does not exist"),
    ("file as folder", "is not a folder"),
    ("a folder", "it is a folder"),
])
def test_check_writable_refuses_what_cannot_be_written(tmp_path, case, needle):
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    path = {"missing folder": tmp_path / "nodir" / "x.png", "file as folder": tmp_path / "f.txt" / "x.png",
            "a folder": tmp_path / "sub"}[case]
    with pytest.raises(BadInput, match=needle) as e:
        check_writable(tmp_path / "fine.png", path)
    assert str(path) in str(e.value)


def test_check_writable_refuses_one_file_named_twice(tmp_path):
    with pytest.raises(BadInput, match="same file"):
        check_writable(tmp_path / "a.png", str(tmp_path / "a.png"))


def test_read_only_places_are_refused_with_the_path(tmp_path, monkeypatch):
    """Permission bits mean nothing to root or on a read-only mount: the check creates a file."""
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kw):
        if str(dir).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(BadInput, match="Read-only file system") as e:
        check_writable(tmp_path / "x.png")
    assert str(tmp_path / "x.png") in str(e.value)
    with pytest.raises(BadInput, match="Read-only file system") as e:
        check_folder(tmp_path / "run" / "deeper")
    assert str(tmp_path / "run" / "deeper") in str(e.value) and not (tmp_path / "run").exists()


def test_check_folder(tmp_path):
    check_folder(tmp_path / "new" / "run")
    check_folder(tmp_path)
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInput, match="is a file"):
        check_folder(tmp_path / "f")
    with pytest.raises(BadInput, match="is a file"):
        check_folder(tmp_path / "f" / "run")
