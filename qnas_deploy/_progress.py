"""Progress bars on standard error, the same for every command.

On only where someone watches: off with ``enabled=False`` (a command's ``--no-progress``)
and whenever standard error is not a terminal, so that logs and captured output hold
error lines, not carriage returns.
"""
from __future__ import annotations


def bar(total: int | None = None, desc: str = "", enabled: bool = True, iterable=None, **kw):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=None if enabled else True, **kw)
