"""File writing that never leaves a half-written file behind.

Everything is written to a temporary file in the destination folder and renamed onto the
final name only when complete (``os.replace`` is atomic on POSIX and Windows), so an
interrupted or failed command leaves either the old file or nothing.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import BadInput


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"cannot write {str(dest)!r}: folder {str(folder)!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise BadInput(f"cannot write {str(dest)!r}: {e.strerror}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        with contextlib.suppress(OSError):
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def check_writable(*paths: str | os.PathLike | None) -> None:
    """Refuse, before any work starts, outputs that :func:`atomic_path` could not write.

    A command computes for minutes and then writes; checking here means a typo in a path
    costs nothing, and a command with several outputs never writes some of them and fails
    on the next. ``None`` (an output not asked for) and ``-`` (stdout) are skipped.
    """
    given = [Path(p) for p in paths if p is not None and str(p) != "-"]
    seen: set[Path] = set()
    for dest in given:
        key = Path(os.path.abspath(dest))
        if key in seen:
            raise BadInput(f"cannot write {str(dest)!r} twice: two outputs name the same file")
        seen.add(key)
        if dest.is_dir():
            raise BadInput(f"cannot write {str(dest)!r}: it is a folder")
        folder = dest.parent
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise BadInput(f"cannot write {str(dest)!r}: folder {str(folder)!r} {what}")
        _probe(folder, dest)


def check_folder(path: str | os.PathLike) -> None:
    """Refuse, before any work starts, a run folder that could not be created or written into."""
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"cannot write into {str(dest)!r}: it is a file, not a folder")
    base = dest
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise BadInput(f"cannot create {str(dest)!r}: {str(base)!r} is a file, not a folder")
    _probe(base, dest)


def _probe(folder: Path, dest: Path) -> None:
    # Permission bits say nothing for root or on a read-only mount: try what atomic_path does.
    try:
        fd, tmp = tempfile.mkstemp(prefix=".qnas-probe.", dir=folder)
    except OSError as e:
        where = "" if folder == dest.parent else f" (in {str(folder)!r})"
        raise BadInput(f"cannot write {str(dest)!r}: {e.strerror}{where}") from None
    os.close(fd)
    os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically; ``-`` writes to standard output."""
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")
