"""Results files (`output.records`): whole rows only, fsync + atomic rename, one writer, paths inside --out,
damaged files repaired or refused with the line number, old field names still read."""

import errno
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from flopbench.errors import UsageError
from flopbench.output import records
from flopbench.output.records import (KEY_FIELDS, ResultWriter, check_environment, read_environment,
                                      read_records, read_rows)

ENV = {"device": "cpu", "gpu": None, "torch": "x"}


def row(i: int, model: str = "m") -> dict:
    return {"model": model, "seq_len": 8 * i, "batch_size": 2, "checkpointing": "none", "dtype": "fp32",
            "mode": "fwd_bwd", "status": "ok", "time_ms": {"median_ms": float(i)}}


def jsonl_text(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def tmp_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- folders ------------------------------------------------------------------------------------------------


def test_run_folder_name_is_sanitized_unique_and_the_row_keeps_its_model(tmp_path):
    first = ResultWriter(tmp_path, "20250101-120000-gpt2-xl+pad64-cpu-fp32", ENV)
    second = ResultWriter(tmp_path, "20250101-120000-gpt2-xl+pad64-cpu-fp32", ENV)  # same second
    odd = ResultWriter(tmp_path, "../../x y\0z", ENV)
    assert first.folder.name == "20250101-120000-gpt2-xl-pad64-cpu-fp32"
    assert second.folder.name == "20250101-120000-gpt2-xl-pad64-cpu-fp32-2"
    assert odd.folder.parent == tmp_path and odd.folder.name == "x-y-z"
    first.append({**row(1), "model": "gpt2-xl+pad64"})
    assert read_records(first.folder / "rows.jsonl")[0]["model"] == "gpt2-xl+pad64"
    for w in (first, second, odd):
        w.close()


def _start_writer(out, barrier, queue):
    barrier.wait()
    queue.put(str(ResultWriter(out, "20250101-120000-m-cpu-fp32", ENV).folder))


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_start_writer, args=(tmp_path, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    folders = {queue.get(timeout=30), queue.get(timeout=30)}
    for p in procs:
        p.join(30)
    assert folders == {str(tmp_path / "20250101-120000-m-cpu-fp32"), str(tmp_path / "20250101-120000-m-cpu-fp32-2")}


HOLDER = textwrap.dedent("""
    import sys
    from flopbench.output.records import ResultWriter
    w = ResultWriter(sys.argv[1], "s", {}, fresh=False)
    print("locked", flush=True)
    sys.stdin.readline()
    w.close()
""")


def test_a_second_writer_of_a_folder_is_refused_with_the_holders_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError) as e:
            ResultWriter(tmp_path, "s", ENV, resume=True, fresh=False)
        message = str(e.value)
        assert f"{tmp_path / 's'} is being written by pid {holder.pid} (started " in message
        assert "wait for it or choose another --out" in message and "\n" not in message
    finally:
        holder.communicate("\n", timeout=30)
    with ResultWriter(tmp_path, "s", ENV, resume=True, fresh=False) as w:  # free again once it exits
        w.append(row(1))
    assert len(read_records(tmp_path / "s" / "rows.jsonl")) == 1


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\0b", ""])
def test_a_folder_name_outside_out_is_refused(tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(UsageError):
        ResultWriter(out, name, ENV, fresh=False)
    assert not list(tmp_path.glob("*.jsonl")) and not (tmp_path / "environment.json").exists()


def test_an_output_file_linked_outside_out_is_refused_and_left_alone(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    folder = tmp_path / "out" / "s"
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").symlink_to(outside)
    with pytest.raises(UsageError, match="outside --out"):
        ResultWriter(tmp_path / "out", "s", ENV, resume=True, fresh=False)
    assert outside.read_text() == "keep me\n"


# -- appending: fresh lines, fsync, atomic rename, full disk -------------------------------------------------


def test_append_after_a_last_row_without_newline_starts_a_new_line(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "rows.jsonl").write_text(json.dumps(row(1)))  # no trailing newline
    with ResultWriter(tmp_path, "s", ENV, resume=True, fresh=False) as w:
        w.append(row(2))
    assert (folder / "rows.jsonl").read_text() == jsonl_text([row(1), row(2)])
    assert len(pd.read_csv(folder / "rows.csv")) == 2


def test_rows_are_fsynced_and_the_csv_renamed_into_place(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    w = ResultWriter(tmp_path, "s", ENV, fresh=False)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    w.append(row(1))
    w.append(row(2))
    w.close()
    folder = str(w.folder)
    jsonl, csv = f"{folder}/rows.jsonl", f"{folder}/rows.csv"
    # per row: the JSONL line is fsynced first, then a temp CSV is fsynced, renamed over rows.csv, the folder fsynced
    temps = [c[1] for c in calls if c[0] == "replace"]
    assert calls == [("fsync", jsonl), ("fsync", temps[0]), ("replace", temps[0], csv), ("fsync", folder),
                     ("fsync", jsonl), ("fsync", temps[1]), ("replace", temps[1], csv), ("fsync", folder)]
    # each temp file is unique to its write (mkstemp), in the folder, and gone afterwards
    assert len(set(temps)) == 2 and all(os.path.dirname(t) == folder and ".rows.csv." in t for t in temps)
    assert tmp_files(w.folder) == [] and len(pd.read_csv(csv)) == 2
    assert os.stat(csv).st_mode & 0o777 == os.stat(jsonl).st_mode & 0o777  # not mkstemp's private 0600


def test_a_full_disk_mid_row_cuts_the_half_row_and_keeps_every_earlier_row(tmp_path, monkeypatch):
    w = ResultWriter(tmp_path, "s", ENV, fresh=False)
    w.append(row(1))
    w.append(row(2))
    before = (w.folder / "rows.jsonl").read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the kernel takes half the row, then the disk is full
        if len(data) > 20:
            real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(UsageError) as e:
        w.append(row(3))
    monkeypatch.undo()
    assert str(e.value).startswith(f"no space left on device while writing {w.folder / 'rows.jsonl'}")
    assert "the 2 rows before this one are intact" in str(e.value)
    assert (w.folder / "rows.jsonl").read_bytes() == before  # no half row
    assert len(pd.read_csv(w.folder / "rows.csv")) == 2 and tmp_files(w.folder) == []
    w.close()


def test_a_full_disk_during_the_csv_rewrite_keeps_the_old_csv_and_no_temp_file(tmp_path, monkeypatch):
    w = ResultWriter(tmp_path, "s", ENV, fresh=False)
    w.append(row(1))
    old_csv = (w.folder / "rows.csv").read_bytes()
    real_fsync, n = os.fsync, []

    def fsync(fd):  # the JSONL line's fsync passes; the CSV temp file's fails
        n.append(fd)
        if len(n) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(UsageError, match=f"no space left on device while writing {w.folder / 'rows.csv'}"):
        w.append(row(2))
    monkeypatch.undo()
    assert (w.folder / "rows.csv").read_bytes() == old_csv and tmp_files(w.folder) == []
    assert [r["seq_len"] for r in read_records(w.folder / "rows.jsonl")] == [8, 16]  # the row itself is kept
    w.close()  # the end of the writer rebuilds rows.csv from rows.jsonl
    assert len(pd.read_csv(w.folder / "rows.csv")) == 2


# -- resuming a damaged folder ------------------------------------------------------------------------------


def test_resume_sets_a_partial_last_row_aside_and_names_its_line(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    good = jsonl_text([row(i) for i in range(1, 6)])
    partial = json.dumps(row(6))[:30]  # a kill mid-write
    (folder / "rows.jsonl").write_text(good + partial)
    warnings = []
    with ResultWriter(tmp_path, "s", ENV, resume=True, fresh=False, warn=warnings.append) as w:
        assert len(w.rows) == 5
        w.append(row(7))
    assert (folder / "rows.jsonl").read_text() == good + json.dumps(row(7)) + "\n"
    assert (folder / "rows.jsonl.corrupt").read_text() == partial + "\n"
    assert len(warnings) == 1 and "line 6 is a partial row" in warnings[0] and "rows.jsonl.corrupt" in warnings[0]


def test_resume_rebuilds_a_short_csv_and_removes_stray_temp_files(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    rows = [row(i) for i in range(1, 5)]
    (folder / "rows.jsonl").write_text(jsonl_text(rows))
    pd.DataFrame([records.flatten(r) for r in rows[:3]]).to_csv(folder / "rows.csv", index=False)  # one short
    for stray in (".rows.csv.tmp", ".rows.csv.k2j3.tmp", ".environment.json.tmp"):
        (folder / stray).write_text("half")
    warnings = []
    with ResultWriter(tmp_path, "s", ENV, resume=True, fresh=False, warn=warnings.append):
        pass
    assert len(pd.read_csv(folder / "rows.csv")) == 4 and tmp_files(folder) == []
    assert any("rows.csv did not match rows.jsonl (4 rows); rebuilt" in m for m in warnings)


def test_resume_with_a_bad_environment_sets_it_aside_and_goes_on(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "rows.jsonl").write_text(jsonl_text([row(1)]))
    (folder / "environment.json").write_text('{"gpu": "H100"}')
    warnings = []
    with ResultWriter(tmp_path, "s", ENV, resume=True, fresh=False, warn=warnings.append) as w:
        assert w.previous_environment is None
    assert json.loads((folder / "environment.json").read_text()) == ENV
    assert (folder / "environment.json.corrupt").read_text() == '{"gpu": "H100"}\n'
    assert "gpu = 'H100' is not null or an object with a name" in warnings[0]


# -- reading ------------------------------------------------------------------------------------------------


def test_readers_skip_a_partial_last_line_and_say_which(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(jsonl_text([row(i) for i in range(1, 6)]) + "\n" + '{"model": "m", "seq')  # line 7
    warnings = []
    assert [r["seq_len"] for r in read_records(path, KEY_FIELDS, warn=warnings.append)] == [8, 16, 24, 32, 40]
    assert warnings == [f"warning: {path}: line 7 is a partial row (not JSON at column 16: Unterminated string "
                        f"starting at), skipped; a kill or a full disk cut it short"]


def test_a_bad_line_in_the_middle_is_an_error_naming_its_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(row(i)) for i in range(1, 7)]
    lines[2] = lines[2][:25]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=rf"^{path}: line 3: not JSON at column .*only a last line may be cut short"):
        read_records(path)


@pytest.mark.parametrize("line, problem", [
    ("[1, 2, 3]", "expected a JSON object (one result row), got a list"),
    ("{}", "missing field 'model'"),
    ("null", "expected a JSON object (one result row), got null"),
    (json.dumps({k: v for k, v in row(2).items() if k != "mode"}), "missing field 'mode'"),
    (json.dumps({**row(2), "seq_len": "long"}), "seq_len = 'long' is not an integer"),
])
def test_a_wrong_shaped_row_names_file_line_and_problem(tmp_path, line, problem):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row(1)) + "\n" + line + "\n" + json.dumps(row(3)) + "\n")
    with pytest.raises(UsageError) as e:
        read_records(path, KEY_FIELDS)
    assert str(e.value) == f"{path}: line 2: {problem}"


def test_a_wrong_shaped_csv_row_names_its_row(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("model,seq_len,batch_size,checkpointing,dtype,mode\nm,8,2,none,fp32,fwd_bwd\nm,x,2,none,fp32,\n")
    with pytest.raises(UsageError, match=r"rows.csv: data row 2: seq_len = 'x' is not an integer"):
        read_rows(path, KEY_FIELDS)


def test_old_field_names_are_read_under_the_new_ones(tmp_path):
    old = {**row(1), "hardware_flops_counted": 123}
    (tmp_path / "rows.jsonl").write_text(json.dumps(old) + "\n")
    pd.DataFrame([old]).to_csv(tmp_path / "rows.csv", index=False)
    assert read_records(tmp_path / "rows.jsonl")[0]["hardware_flops"] == 123
    for name in ("rows.jsonl", "rows.csv"):
        df = read_rows(tmp_path / name, need=("hardware_flops",))
        assert df["hardware_flops"].tolist() == [123] and "hardware_flops_counted" not in df.columns


@pytest.mark.parametrize("text, problem", [
    ("[1]", "expected a JSON object, got a list"),
    ("null", "expected a JSON object, got null"),
    ('{"gpu": "H100"}', "gpu = 'H100' is not null or an object with a name"),
    ('{"torch": {"v": 2}}', "torch is an object, not a plain value"),
])
def test_environment_shape(text, problem):
    assert check_environment(json.loads(text)) == problem
    assert check_environment({"gpu": {"name": "NVIDIA H100"}, "torch": "2.4"}) is None


def test_a_damaged_environment_is_left_out_of_the_report_with_a_warning(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "environment.json").write_bytes(b"\x89PNG\x00\xff")
    (tmp_path / "b" / "environment.json").write_text(json.dumps(ENV))
    warnings = []
    assert read_environment(tmp_path, warn=warnings.append) == [ENV]
    assert len(warnings) == 1 and "a/environment.json: not JSON" in warnings[0]


def test_a_file_whose_only_line_is_not_json_is_an_error_not_an_empty_result(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("{this is not json\n")
    with pytest.raises(UsageError, match=r"rows.jsonl: line 1: not JSON at column 2"):
        read_records(path)
