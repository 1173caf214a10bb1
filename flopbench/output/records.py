"""Result records on disk: rows appended as they are measured, summaries replaced atomically.

A run writes, under its own folder `<out>/<run_id>/`:
- `rows.jsonl` — one JSON object per measured row, appended and flushed (fsync) the moment the row
  exists, so a crash or Ctrl-C later loses nothing already measured; a row that fails half-way (a full
  disk) is cut off again, so the file only ever holds whole rows, each on its own line;
- `rows.csv` — the same rows flattened, rewritten after every row by write-to-a-temporary-file, fsync,
  rename (`os.replace`, atomic on POSIX) and an fsync of the folder, and rebuilt from `rows.jsonl` whenever
  the two disagree (a Ctrl-C between the two writes);
- `environment.json` — machine, GPU, driver, library versions (written first, atomically);
- `.lock` — the pid, command and start time of the one process writing the folder (`fcntl.flock`).
A sweep (`flopbench.sweep`) writes the same files for all its grid points into one folder,
`<out>/<sweep name>/`, and continues them on `--resume`. Every path is resolved and must lie inside `--out`.

Reading: `read_records` / `read_rows` check each row (a JSON object with the fields, types and values the
reader names, `FIELD_KINDS`: every time, rate, peak, FLOP count and utilisation a positive, finite number
or null, never 0, negative or infinite) and name the file and line of the first bad one; a partial last line (a kill or a
full disk mid-write) is skipped with a warning. `read_rows` turns any of these files (or a folder of runs)
into a pandas DataFrame.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import stat
import sys
import tempfile
import time
from numbers import Integral, Real
from pathlib import Path

from ..errors import UsageError
from ..files import read_bytes, read_text

#: Field names of earlier flopbench versions, read under today's name (README, "Renames").
RENAMED_FIELDS = {"hardware_flops_counted": "hardware_flops"}

#: The fields that name a result row (the sweep's resume key, the baseline match), in this order.
KEY_FIELDS = ("model", "seq_len", "batch_size", "checkpointing", "dtype", "mode")

#: Every row field a reader may need, as flattened by `flatten` ("time_ms.median_ms"), and its kind:
#: "str" / "int" / "number" / "positive" must be there with that type ("positive": a finite number above 0,
#: as every measured time, rate, peak, FLOP count and utilisation is: a median of 0 ms would divide by
#: zero, an infinite MFU print "inf %"); "str?" / "positive?" may also be missing or null.
FIELD_KINDS = {
    "model": "str", "seq_len": "int", "batch_size": "int", "checkpointing": "str", "dtype": "str", "mode": "str",
    "status": "str", "device": "str?", "simple_formula": "str?",
    "peak_tflops": "positive?", "gemm_tflops": "positive?", "model_flops": "positive?",
    "hardware_flops": "positive?", "hardware_flops_analytic": "positive?", "simple_flops": "positive?",
    "tokens_per_s": "positive?", "achieved_tflops": "positive?", "mfu": "positive?", "hfu": "positive?",
    "time_ms.median_ms": "positive?", "time_ms.min_ms": "positive?", "time_ms.max_ms": "positive?",
    "config.n_layer": "int", "config.d_model": "int", "config.n_head": "int", "config.vocab_size": "int",
    "config.max_seq_len": "int",
}
_KIND_TEXT = {"str": "text", "int": "an integer", "number": "a finite number", "positive": "a positive, finite number"}

#: The fields of environment.json that readers print or compare; each must be a plain value (or missing).
ENVIRONMENT_FIELDS = ("timestamp", "hostname", "platform", "python", "cpu_count", "torch", "cuda_runtime",
                      "cudnn", "flopbench", "flopbench_git", "device")

_OUTPUTS = ("rows.jsonl", "rows.csv", "environment.json")


def folder_safe(name: str) -> str:
    """A run's own folder name: only [A-Za-z0-9._-] kept, each run of other characters one "-"
    (`gpt2-xl+pad64` -> `gpt2-xl-pad64`), leading dots and dashes dropped."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-") or "run"


def flatten(record: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as JSON text (one CSV cell)."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def row_key(row: dict) -> tuple:
    """(model, seq_len, batch_size, checkpointing, dtype, mode) of a result row (`KEY_FIELDS`)."""
    return (row["model"], int(row["seq_len"]), int(row["batch_size"]), row["checkpointing"], row["dtype"],
            row["mode"])


# --------------------------------------------------------------------------------------------------
# Checking rows and environments
# --------------------------------------------------------------------------------------------------


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _is_null(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fits(value, kind: str, csv: bool) -> bool:
    base = kind.rstrip("?")
    if _is_null(value):
        return kind.endswith("?")
    if isinstance(value, bool):
        return False
    if base == "str":
        return isinstance(value, str) or csv  # pandas reads a model named "125" as a number
    if csv and isinstance(value, str):  # a column pandas read as text because another row holds text
        with contextlib.suppress(ValueError):
            return _fits(float(value), kind, csv)
        return False
    if base == "int":
        return isinstance(value, Integral) or (csv and isinstance(value, Real) and float(value).is_integer())
    if not isinstance(value, Real) or not (isinstance(value, Integral) or math.isfinite(value)):
        return False
    return value > 0 if base == "positive" else True


def check_row(row, need=(), csv: bool = False) -> str | None:
    """What is wrong with `row` for a reader that uses the fields `need` (keys of `FIELD_KINDS`), or None.

    `row` is one parsed JSON line (`csv=True`: one rows.csv record, already flat, types as pandas read them)."""
    if not isinstance(row, dict):
        return f"expected a JSON object (one result row), got {_json_type(row)}"
    flat = row if csv else flatten({RENAMED_FIELDS.get(k, k): v for k, v in row.items()})
    for name in need:
        kind = FIELD_KINDS[name]
        if name not in flat and not kind.endswith("?"):
            return f"missing field {name!r}"
        value = flat.get(name)
        if not _fits(value, kind, csv):
            text = f"{value!r}" if len(repr(value)) <= 60 else f"{repr(value)[:57]}..."
            nullable = " or null" if kind.endswith("?") else ""
            return f"{name} = {text} is not {_KIND_TEXT[kind.rstrip('?')]}{nullable}"
    return None


def check_environment(env) -> str | None:
    """What is wrong with a parsed environment.json for the readers (they print and compare it), or None."""
    if not isinstance(env, dict):
        return f"expected a JSON object, got {_json_type(env)}"
    gpu = env.get("gpu")
    if gpu is not None and not (isinstance(gpu, dict) and isinstance(gpu.get("name"), (str, type(None)))):
        return f"gpu = {gpu!r:.60} is not null or an object with a name"
    for name in ENVIRONMENT_FIELDS:
        if isinstance(env.get(name), (dict, list)):
            return f"{name} is {_json_type(env[name])}, not a plain value"
    return None


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_jsonl(data: bytes, path: Path, need=()) -> tuple[list[dict], tuple[int, int, str] | None]:
    """The rows of rows.jsonl bytes `data` (renamed fields under today's names), and the partial last line
    as (line number, byte offset where it starts, what is wrong) or None.

    Only the LAST non-blank line may be partial (not JSON: a row cut short by a kill or a full disk); any
    other bad line, and a last line that is JSON but not a row, is a `UsageError` naming its line number."""
    lines = data.split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    rows, offset = [], 0
    for i, raw in enumerate(lines):
        start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            problem = f"not UTF-8 text at byte {e.start}"
        except RecursionError:
            problem = "nested too deeply"
        except ValueError as e:  # json.JSONDecodeError
            problem = f"not JSON at column {getattr(e, 'colno', '?')}: {getattr(e, 'msg', e)}"
        else:
            problem = check_row(row, need)
            if problem:
                raise UsageError(f"{path}: line {i + 1}: {problem}")
            rows.append({RENAMED_FIELDS.get(k, k): v for k, v in row.items()})
            continue
        if i == last:
            return rows, (i + 1, start, problem)
        raise UsageError(f"{path}: line {i + 1}: {problem}; only a last line may be cut short, so this file was "
                         f"edited or damaged")
    return rows, None


def read_records(path: str | Path, need=(), warn=None) -> list[dict]:
    """The rows of one rows.jsonl file, as written (nested dicts, not flattened).

    Each row must be a JSON object with the fields `need` (see `check_row`); a partial last line after whole
    rows is skipped and `warn(message)` (default: stderr) says so (with no whole row before it, it is an error)."""
    path = Path(path)
    rows, partial = parse_jsonl(read_bytes(path), path, need)
    if partial and not rows:  # nothing whole before it: not a results file (or not one yet)
        raise UsageError(f"{path}: line {partial[0]}: {partial[2]}")
    if partial:
        (warn or _warn_stderr)(f"warning: {path}: line {partial[0]} is a partial row ({partial[2]}), skipped; "
                               f"a kill or a full disk cut it short")
    return rows


def _read_csv(path: Path, need=()):
    import pandas as pd

    try:
        df = pd.read_csv(io.StringIO(read_text(path))).rename(columns=RENAMED_FIELDS)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise UsageError(f"{path}: not a rows.csv file ({str(e).strip().splitlines()[0]})") from None
    for i, record in enumerate(df.to_dict("records"), 1):
        problem = check_row(record, need, csv=True)
        if problem:
            raise UsageError(f"{path}: data row {i}: {problem}")
    return df


def read_rows(path: str | Path, need=(), warn=None):
    """A pandas DataFrame of result rows from a rows.jsonl / rows.csv file or a folder holding runs, each row
    checked for the fields `need` (see `read_records`)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("rows.jsonl"))
        if not files:
            raise UsageError(f"{path}: no rows.jsonl below this folder")
        return pd.concat([read_rows(f, need, warn) for f in files], ignore_index=True)
    if path.suffix == ".csv":
        return _read_csv(path, need)
    return pd.DataFrame([flatten(r) for r in read_records(path, need, warn)])


def _load_environment(path: Path, warn) -> dict | None:
    """environment.json parsed and checked; a bad one is a warning and None (the rows stand without it). A
    FIFO or device there is a `UsageError` (from `files.read_bytes`)."""
    data = read_bytes(path)
    try:
        env = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        problem = f"not JSON ({type(e).__name__})"
    else:
        problem = check_environment(env)
        if problem is None:
            return env
    warn(f"warning: {path}: {problem}; going on without it")
    return None


def read_environment(path: str | Path, warn=None) -> list[dict]:
    """The environment.json records of a results file's folder, or of every run below a folder. A damaged
    one is left out with a warning (`warn`, default stderr): the rows stand without it."""
    path = Path(path)
    files = sorted(path.rglob("environment.json")) if path.is_dir() else [path.with_name("environment.json")]
    envs = [_load_environment(f, warn or _warn_stderr) for f in files if os.path.lexists(f)]
    return [env for env in envs if env is not None]


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


#: The longest name of one file or folder most file systems take (NAME_MAX: 255 bytes on ext4, XFS, btrfs).
MAX_NAME_BYTES = 255


def check_folder_name(name) -> str | None:
    """What is wrong with `name` as the one folder below --out that results go to, or None."""
    if not isinstance(name, str) or not name.strip():
        return "give a non-empty folder name"
    if "\0" in name or "/" in name or (os.altsep and os.altsep in name) or os.sep in name:
        return "a folder name has no path separator or NUL"
    if name in (".", ".."):
        return "it would write outside --out"
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        return f"{size:,} bytes long, more than the {MAX_NAME_BYTES} a file system takes for one folder name"
    return None


def _short(name: str) -> str:
    return repr(name if len(name) <= 40 else f"{name[:37]}...")


def _storage_error(e: OSError, path: Path, kept: str) -> UsageError:
    """A failed write of `path` as one line; `kept` says what is still intact."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return UsageError(f"no space left on device while writing {path}; {kept}; free some space and run again")
    return UsageError(f"cannot write {path} ({e.strerror or e}); {kept}")


_UMASK = os.umask(0o022)
os.umask(_UMASK)
#: The mode of a new results file: what open() would give it under the process's umask.
_FILE_MODE = 0o666 & ~_UMASK


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX: the directory entry is the folder's data)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` all at once: a unique temp file in the same folder, fsync, `os.replace`,
    fsync of the folder. On any failure (a full disk, Ctrl-C) the temp file is removed and `path` is as it was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, _FILE_MODE)  # mkstemp makes it private (0600); results are files like any other
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _append(path: Path, data: bytes) -> None:
    """Append `data` to `path` on a fresh line, fsynced; if it fails half-way the file is cut back to what it
    held, so it never ends in half a row."""
    # O_NONBLOCK: a FIFO put there is an error (ENXIO), not a hang; it changes nothing for a regular file
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # the last line has no newline: never glue a row onto it
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root) and path.resolve() != root


class ResultWriter:
    """Writes one run's (or sweep's) rows as they come; see the module docstring for the files.

    Holds the folder's lock until `close()` (or `with ResultWriter(...)`), which also rebuilds rows.csv
    from rows.jsonl if they disagree and removes its stray temp files."""

    def __init__(self, out_dir: str | Path, run_id: str, env: dict, resume: bool = False, *, fresh: bool = True,
                 warn=None):
        """`fresh=True` (a run): a new folder named after `run_id`, only [A-Za-z0-9._-] kept, with -2, -3, ...
        added when that name is taken. `fresh=False` (a sweep): the folder `run_id` itself, which must hold
        no rows unless `resume`. `resume=True` continues a folder that already has rows: they are checked and
        kept (a partial last line is set aside in rows.jsonl.corrupt), rows.csv is rebuilt if it disagrees, and
        the environment.json the rows began on is kept (`previous_environment`). `warn(message)`: warnings
        (default: stderr)."""
        self.warn = warn or _warn_stderr
        self._lock_fd: int | None = None
        self.rows: list[dict] = []
        self.appended = 0  # rows appended to rows.jsonl by this writer
        self.previous_environment: dict | None = None
        out, fresh = Path(out_dir), fresh and not resume
        problem = None if fresh else check_folder_name(run_id)
        if problem:
            raise UsageError(f"results folder {_short(str(run_id))}: {problem}")
        try:
            out.mkdir(parents=True, exist_ok=True)
            root = out.resolve()
            self.folder = self._make_folder(out, root, str(run_id), fresh)
        except OSError as e:
            raise UsageError(f"--out {out}: cannot write there ({e.strerror or e}); choose a writable folder") from None
        for path in (self.folder, *(self.folder / n for n in (*_OUTPUTS, ".lock", "rows.jsonl.corrupt"))):
            if not _inside(path, root):
                raise UsageError(f"{path}: resolves to {path.resolve()}, outside --out {out}; choose another name")
        self._lock()
        try:
            self._clean_temp_files()
            self._start(env, resume)
        except BaseException:
            self._unlock()
            raise

    # -- the folder and its lock -------------------------------------------------------------------

    @staticmethod
    def _make_folder(out: Path, root: Path, name: str, fresh: bool) -> Path:
        if not fresh:
            folder = out / name
            if _inside(folder, root):
                folder.mkdir(exist_ok=True)
            return folder
        base = folder_safe(name)
        problem = check_folder_name(f"{base}-9999")  # with the longest suffix below
        if problem:
            raise UsageError(f"results folder {_short(base)}: {problem}; it is named after the run, so the model's "
                             f"name (a config.json's _name_or_path) is too long")
        for n in range(1, 10_000):  # two runs started in the same second get name, name-2, ...
            folder = out / (base if n == 1 else f"{base}-{n}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
        raise UsageError(f"--out {out}: 10,000 folders named {base}-N already; choose another --out")

    def _lock(self) -> None:
        """Take the folder's lock (`fcntl.flock` on `.lock`, non-blocking) or say who holds it."""
        import fcntl  # POSIX only: imported here so that reading results works everywhere

        path = self.folder / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UsageError(f"{path}: cannot open the folder's lock file ({e.strerror or e}); "
                             f"choose another --out") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UsageError(f"{path}: not a regular file; choose another --out")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UsageError(f"{self.folder} is being written by {holder}; wait for it or choose another "
                             f"--out") from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        info = {"pid": os.getpid(), "command": " ".join(sys.argv)[:500],
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor releases the flock

    def _clean_temp_files(self) -> None:
        """Remove temp files an earlier writer of this folder left (a kill mid-rename): with the lock held,
        no other writer can own them."""
        for name in _OUTPUTS:
            for tmp in self.folder.glob(f".{name}*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    # -- starting, appending, closing --------------------------------------------------------------

    def _start(self, env: dict, resume: bool) -> None:
        jsonl, env_file = self.folder / "rows.jsonl", self.folder / "environment.json"
        if os.path.lexists(jsonl):
            data = read_bytes(jsonl)  # a FIFO or device there: a UsageError, not a hang
            if data.strip() and not resume:
                raise UsageError(f"{jsonl} already has rows: pass --resume to continue that sweep, or choose another "
                                 f"--out")
            if resume:
                self.rows = self._repair(jsonl, data)
        if resume and os.path.lexists(env_file):
            self.previous_environment = _load_environment(env_file, self.warn)
            if self.previous_environment is None:
                self._set_aside(env_file, read_bytes(env_file))
        try:
            if self.previous_environment is None:
                _atomic_write(env_file, (json.dumps(env, indent=2, default=str) + "\n").encode())
            if resume:
                self._sync_csv(say=True)
        except OSError as e:
            raise _storage_error(e, self.folder, f"the {len(self.rows)} rows in {jsonl} are intact") from None

    def _set_aside(self, path: Path, data: bytes) -> Path:
        """Append `data` (a damaged line or file) to `path`.corrupt, fsynced, so nothing is thrown away."""
        corrupt = path.with_name(path.name + ".corrupt")
        try:
            _append(corrupt, data if data.endswith(b"\n") else data + b"\n")
        except OSError as e:
            raise _storage_error(e, corrupt, f"{path} is untouched") from None
        return corrupt

    def _repair(self, jsonl: Path, data: bytes) -> list[dict]:
        """The rows of `jsonl` (checked); a partial last line is moved to rows.jsonl.corrupt, and the file
        rewritten without it, atomically; a missing final newline is added."""
        rows, partial = parse_jsonl(data, jsonl, KEY_FIELDS + ("status",))
        try:
            if partial:
                line, start, problem = partial
                corrupt = self._set_aside(jsonl, data[start:])
                _atomic_write(jsonl, data[:start])
                self.warn(f"warning: {jsonl} line {line} is a partial row ({problem}): set aside in {corrupt}; "
                          f"the {len(rows)} rows before it are kept")
            elif data and not data.endswith(b"\n"):
                _append(jsonl, b"")  # adds the newline only
        except OSError as e:
            raise _storage_error(e, jsonl, f"{jsonl} is as it was") from None
        return rows

    def _csv_bytes(self) -> bytes:
        import pandas as pd

        return pd.DataFrame([flatten(r) for r in self.rows]).to_csv(index=False).encode("utf-8")

    def _sync_csv(self, say: bool = False) -> None:
        """Rebuild rows.csv from the rows (= rows.jsonl) if it does not hold exactly them."""
        if not self.rows:
            return
        path, expected = self.folder / "rows.csv", self._csv_bytes()
        existed = os.path.lexists(path)
        try:
            same = read_bytes(path) == expected
        except UsageError:  # missing, or not a regular file: replaced below
            same = False
        if not same:
            _atomic_write(path, expected)
            if say and existed:
                self.warn(f"warning: {path} did not match rows.jsonl ({len(self.rows)} rows); rebuilt from it")

    @property
    def files(self) -> dict[str, str]:
        return {name: str(self.folder / name) for name in _OUTPUTS}

    def append(self, row: dict) -> None:
        """Append `row` to rows.jsonl (fsynced) and rewrite rows.csv (atomically). A failure (a full disk)
        is a `UsageError` naming the file; the rows before this one stay intact in both files."""
        if self._lock_fd is None:
            raise UsageError(f"{self.folder}: this ResultWriter is closed")
        line = json.dumps(row, default=str) + "\n"
        jsonl = self.folder / "rows.jsonl"
        try:
            _append(jsonl, line.encode("utf-8"))
        except OSError as e:
            raise _storage_error(e, jsonl, f"the {len(self.rows)} rows before this one are intact") from None
        self.rows.append(json.loads(line))  # as on disk
        self.appended += 1
        try:
            _atomic_write(self.folder / "rows.csv", self._csv_bytes())
        except OSError as e:
            raise _storage_error(e, self.folder / "rows.csv", f"{jsonl} has all {len(self.rows)} rows and rows.csv "
                                 f"is rebuilt from it") from None

    def close(self) -> None:
        """Rebuild rows.csv if it disagrees with rows.jsonl, remove stray temp files, release the lock. Never
        raises for a write failure (it is a warning: rows.jsonl has every row, and --resume rebuilds)."""
        if self._lock_fd is None:
            return
        try:
            self._sync_csv()
        except (OSError, UsageError) as e:
            self.warn(f"warning: could not rebuild {self.folder / 'rows.csv'} "
                      f"({getattr(e, 'strerror', None) or e}); rows.jsonl has every row")
        finally:
            self._clean_temp_files()
            self._unlock()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._unlock()
        except Exception:  # interpreter shutdown: the lock goes with the process anyway
            pass


def _holder(fd: int) -> str:
    """"pid N (started T: command)" from a lock file, or "another process" if it cannot be read."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {int(info['pid'])} (started {info['started']}: {str(info['command'])[:200]})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _records(data) -> list[dict]:
    """The flat-able records in `data`; see `to_dataframe`."""
    if hasattr(data, "records"):  # Profile.records() (a method), Measurement.records (a property)
        records = data.records
        return list(records() if callable(records) else records)
    if isinstance(data, dict):
        return list(data["rows"]) if isinstance(data.get("rows"), list) else [data]
    if isinstance(data, (list, tuple)):
        return [record for item in data for record in _records(item)]
    raise UsageError(f"to_dataframe({type(data).__name__}): pass a run or count document, a list of them or of "
                     f"rows, a profile / measure result, or a path to rows.jsonl, rows.csv or a results folder")


def to_dataframe(data):
    """A pandas DataFrame, one row per record, nested fields flattened to dotted columns ("time_ms.median_ms").

    `data` may be: a `run` document (its rows), a `count` document (one row), a list of documents or of
    row dicts, a `Profile` or `Measurement` (their `records()`), or a path, which `read_rows` reads.
    """
    import pandas as pd

    if isinstance(data, (str, Path)):
        return read_rows(data)
    return pd.DataFrame([flatten(r) for r in _records(data)])
