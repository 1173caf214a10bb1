"""Result records on disk: rows appended as they are measured, summaries replaced atomically.

A run writes, under its own folder `<out>/<run_id>/`:
- `rows.jsonl` — one JSON object per measured row, appended and flushed (fsync) the moment the row
  exists, so a crash or Ctrl-C later loses nothing already measured;
- `rows.csv` — the same rows flattened, rewritten by write-then-rename after every row;
- `environment.json` — machine, GPU, driver, library versions (written first).
A sweep (`flopbench.sweep`) writes the same three files for all its grid points into one folder,
`<out>/<sweep name>/`, and continues them on `--resume`.
`read_rows` turns any of these (a file or a folder of runs) into a pandas DataFrame.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError

#: Field names of earlier flopbench versions, read under today's name (README, "Renames").
RENAMED_FIELDS = {"hardware_flops_counted": "hardware_flops"}


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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ResultWriter:
    """Writes one run's rows as they come; see the module docstring for the files."""

    def __init__(self, out_dir: str | Path, run_id: str, env: dict, resume: bool = False):
        """`resume=True` continues a folder that already has rows (a sweep run again with --resume): its
        rows are kept (rows.csv stays complete) and its environment.json, the one the rows began on."""
        self.folder = Path(out_dir) / run_id
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UsageError(f"--out {out_dir}: cannot write there ({e.strerror or e}); choose a writable folder") from None
        jsonl, env_file = self.folder / "rows.jsonl", self.folder / "environment.json"
        self.rows: list[dict] = read_records(jsonl) if resume and jsonl.exists() else []
        if not (resume and env_file.exists()):
            _atomic_write(env_file, json.dumps(env, indent=2, default=str) + "\n")

    @property
    def files(self) -> dict[str, str]:
        return {name: str(self.folder / name) for name in ("rows.jsonl", "rows.csv", "environment.json")}

    def append(self, row: dict) -> None:
        with open(self.folder / "rows.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        import pandas as pd

        _atomic_write(self.folder / "rows.csv", pd.DataFrame([flatten(r) for r in self.rows]).to_csv(index=False))


def read_rows(path: str | Path):
    """A pandas DataFrame of result rows from a rows.jsonl / rows.csv file or a folder holding runs."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("rows.jsonl"))
        if not files:
            raise UsageError(f"{path}: no rows.jsonl below this folder")
        return pd.concat([read_rows(f) for f in files], ignore_index=True)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.suffix == ".csv":
        return pd.read_csv(path).rename(columns=RENAMED_FIELDS)
    return pd.DataFrame([flatten(r) for r in read_records(path)])


def read_records(path: str | Path) -> list[dict]:
    """The rows of one rows.jsonl file, as written (nested dicts, not flattened)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not JSON Lines ({e.msg} at line {e.lineno})") from None
    return [{RENAMED_FIELDS.get(k, k): v for k, v in row.items()} if isinstance(row, dict) else row for row in rows]


def read_environment(path: str | Path) -> list[dict]:
    """The environment.json records of a results file's folder, or of every run below a folder (unreadable
    ones are skipped: the rows stand without them)."""
    path = Path(path)
    files = sorted(path.rglob("environment.json")) if path.is_dir() else [path.with_name("environment.json")]
    envs = []
    for f in files:
        try:
            envs.append(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return envs


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
