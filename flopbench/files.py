"""Reading the files a user names (a config.json, a sweep spec, results, a baseline) safely.

Only regular files are read, and never more than a cap: a FIFO would block forever and `/dev/zero` would
read without bound, so both are refused before they are opened. Every problem is a `UsageError` naming
the path and what is wrong; callers prefix it with the option that named the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UsageError

#: The most flopbench reads of one file: far above any config, spec or results file it writes.
MAX_BYTES = 256 * 2**20


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: str | Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (a larger file is a UsageError)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise UsageError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{path}: {_kind(info.st_mode)}, not a regular file; give a file")
    if info.st_size > limit:
        raise UsageError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} flopbench reads")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(data) > limit:  # grew while being read
        raise UsageError(f"{path}: more than the {limit:,} bytes flopbench reads")
    return data


def read_text(path: str | Path, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of the regular file `path` (see `read_bytes`)."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte {e.start})") from None
