"""Faults in results files and the files a user names, replayed end to end through the CLI: each is one line
on stderr and exit 2 (or a warning and carry on), never a hang or a traceback, and nothing measured is lost.

Commands that could hang (a FIFO, /dev/zero) run in a forked child with a 30 s timeout."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import traceback

import pandas as pd
import pytest
from helpers import unwrapped

from flopbench.cli import main
from flopbench.output.records import read_records

MODEL = '{ name = "m1", preset = "tiny", n_layer = 1, d_model = 32, n_head = 2, vocab_size = 64, max_seq_len = 16 }'
SPEC = f"""
name = "s"
models = [{MODEL}]
seq_len = [8]
batch_size = [2]
checkpointing = ["none"]
dtype = ["fp32"]
device = "cpu"
warmup = 0
iters = 1
gemm = false
peak_tflops = 1.0
modes = ["fwd_bwd", "train_step"]
"""
TINY_RUN = ["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "8",
            "--batch-size", "2", "--warmup", "0", "--iters", "1", "--no-gemm", "--device", "cpu", "--no-save"]


def cli_child(argv, tmp_path, timeout=30):
    """(exit code, stdout, stderr) of `flopbench argv` run in a forked child, killed after `timeout` s."""
    out_file, err_file = tmp_path / "child.out", tmp_path / "child.err"
    pid = os.fork()
    if pid == 0:  # the child: no pytest capture, its own files
        code = 99
        with open(out_file, "w") as out, open(err_file, "w") as err:
            sys.stdout, sys.stderr = out, err
            try:
                code = main(argv)
            except BaseException:
                traceback.print_exc(file=err)
            finally:
                out.flush()
                err.flush()
                os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"flopbench {' '.join(argv)} hung for {timeout} s")
        time.sleep(0.02)
    return os.waitstatus_to_exitcode(status), out_file.read_text(), err_file.read_text()


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, unwrapped(err)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A finished tiny sweep: <tmp>/out/s with 2 rows (fwd_bwd, train_step), and its spec."""
    root = tmp_path_factory.mktemp("measured")
    (root / "s.toml").write_text(SPEC)
    assert main(["sweep", "--spec", str(root / "s.toml"), "--out", str(root / "out")]) == 0
    return root


@pytest.fixture
def sweep_dir(measured, tmp_path):
    """A private copy of the measured sweep: (spec, out, folder)."""
    shutil.copytree(measured / "out", tmp_path / "out")
    shutil.copy(measured / "s.toml", tmp_path / "s.toml")
    return tmp_path / "s.toml", tmp_path / "out", tmp_path / "out" / "s"


# -- 1. paths outside --out ---------------------------------------------------------------------------------


def test_a_spec_file_named_dotdot_writes_nothing_outside_out(tmp_path, capsys):
    spec = tmp_path / "...toml"  # its stem, the default name, is ".."
    spec.write_text(SPEC.replace('name = "s"\n', ""))
    code, out, err = cli(capsys, "sweep", "--spec", str(spec), "--out", str(tmp_path / "out"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "name = '..' is not allowed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["...toml"]


# -- 5. one writer at a time ------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    from flopbench.output.records import ResultWriter
    w = ResultWriter(sys.argv[1], "s", {}, resume=True, fresh=False)
    print("locked", flush=True)
    sys.stdin.readline()
    w.close()
""")


@pytest.mark.parametrize("resume", [True, False])
def test_a_second_sweep_on_a_folder_being_written_is_refused(sweep_dir, capsys, resume):
    spec, out, folder = sweep_dir
    before = (folder / "rows.jsonl").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, stdout, err = cli(capsys, "sweep", "--spec", str(spec), "--out", str(out), *(["--resume"] * resume))
    finally:
        holder.communicate("\n", timeout=30)
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert f"{folder} is being written by pid {holder.pid} (started " in err and "choose another --out" in err
    assert (folder / "rows.jsonl").read_bytes() == before


# -- 6. files that would hang or read without end ------------------------------------------------------------


def _fifo(path):
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("case", ["spec fifo", "spec zero", "report fifo", "report folder fifo", "report zero",
                                  "baseline json fifo", "baseline jsonl fifo", "mfu-from fifo",
                                  "resume rows fifo", "resume environment fifo"])
def test_a_fifo_or_dev_zero_is_one_line_not_a_hang(sweep_dir, tmp_path, case):
    spec, out, folder = sweep_dir
    fifo = tmp_path / "f"
    if case == "spec fifo":
        argv = ["sweep", "--spec", _fifo(fifo), "--out", str(out)]
    elif case == "spec zero":
        argv = ["sweep", "--spec", "/dev/zero", "--out", str(out)]
    elif case == "report fifo":
        argv = ["report", _fifo(tmp_path / "rows.jsonl"), "--out", str(tmp_path / "rep")]
    elif case == "report folder fifo":
        (folder / "rows.jsonl").unlink()
        _fifo(folder / "rows.jsonl")
        argv = ["report", str(out), "--out", str(tmp_path / "rep")]
    elif case == "report zero":
        argv = ["report", "/dev/zero", "--out", str(tmp_path / "rep")]
    elif case.startswith("baseline"):
        argv = [*TINY_RUN, "--max-vs-baseline", f"{_fifo(tmp_path / ('b.' + case.split()[1]))}:0.05"]
    elif case == "mfu-from fifo":
        argv = ["estimate", "--tokens", "1B", "--mfu-from", _fifo(fifo)]
    else:
        name = "rows.jsonl" if case == "resume rows fifo" else "environment.json"
        (folder / name).unlink()
        _fifo(folder / name)
        argv = ["sweep", "--spec", str(spec), "--out", str(out), "--resume"]
    code, stdout, err = cli_child(argv, tmp_path)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert ("a FIFO, not a regular file" in err) or ("a character device, not a regular file" in err), err
    assert "timing" not in err  # nothing was measured


# -- 2, 3. appending after a damaged last line ----------------------------------------------------------------


def test_resume_after_a_last_row_without_newline_keeps_every_row_on_its_own_line(sweep_dir, capsys):
    spec, out, folder = sweep_dir
    jsonl = folder / "rows.jsonl"
    jsonl.write_bytes(jsonl.read_bytes().rstrip(b"\n"))
    spec.write_text(spec.read_text().replace("seq_len = [8]", "seq_len = [8, 16]"))
    code, _, err = cli(capsys, "sweep", "--spec", str(spec), "--out", str(out), "--resume")
    assert code == 0, err
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]  # every line is one whole row
    assert [(r["seq_len"], r["mode"]) for r in rows] == [(8, "fwd_bwd"), (8, "train_step"), (16, "fwd_bwd"),
                                                         (16, "train_step")]


def test_resume_sets_a_partial_last_row_aside_and_measures_it_again(sweep_dir, capsys):
    spec, out, folder = sweep_dir
    jsonl = folder / "rows.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("\n\n" + lines[0] + lines[1][:40])  # two blank lines, one row, half a row on line 4
    code, _, err = cli(capsys, "sweep", "--spec", str(spec), "--out", str(out), "--resume")
    assert code == 0, err
    assert "line 4 is a partial row" in err and "rows.jsonl.corrupt" in err
    assert (folder / "rows.jsonl.corrupt").read_text() == lines[1][:40] + "\n"
    rows = read_records(jsonl)
    assert [r["mode"] for r in rows] == ["fwd_bwd", "train_step"] and len(pd.read_csv(folder / "rows.csv")) == 2


@pytest.mark.parametrize("command", ["report", "estimate"])
def test_readers_skip_a_partial_last_row_with_a_warning(sweep_dir, tmp_path, capsys, command):
    _, out, folder = sweep_dir
    jsonl = folder / "rows.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text(lines[0] + lines[1] + lines[1][:30])  # line 3 cut short
    argv = (["report", str(jsonl), "--out", str(tmp_path / "rep"), "--json"] if command == "report" else
            ["estimate", "--tokens", "1B", "--mfu-from", str(jsonl), "--json"])
    code, stdout, err = cli(capsys, *argv)
    assert code == 0, err
    assert f"warning: {jsonl}: line 3 is a partial row" in err
    doc = json.loads(stdout)
    if command == "report":
        assert doc["rows"] == 2
    else:  # the one train_step row: MFU = model FLOPs / (median time x 1 TFLOP/s)
        train = json.loads(lines[1])
        assert doc["mfu"] == pytest.approx(train["model_flops"] / (train["time_ms"]["median_ms"] / 1e3) / 1e12)


# -- 8. wrong-shaped JSON ------------------------------------------------------------------------------------

WRONG = ["[1, 2, 3]", "{}", "null", "no mode"]


@pytest.mark.parametrize("command", ["resume", "report", "estimate"])
@pytest.mark.parametrize("bad", WRONG)
def test_a_wrong_shaped_row_is_one_line_naming_file_and_line(sweep_dir, tmp_path, capsys, command, bad):
    spec, out, folder = sweep_dir
    jsonl = folder / "rows.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    if bad == "no mode":
        bad = json.dumps({k: v for k, v in json.loads(lines[1]).items() if k != "mode"})
    jsonl.write_text(lines[0] + bad + "\n" + lines[1])  # the bad row is line 2, not the last
    argv = {"resume": ["sweep", "--spec", str(spec), "--out", str(out), "--resume"],
            "report": ["report", str(out), "--out", str(tmp_path / "rep")],
            "estimate": ["estimate", "--tokens", "1B", "--mfu-from", str(out)]}[command]
    code, stdout, err = cli(capsys, *argv)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert f"{jsonl}: line 2: " in err
    assert ("expected a JSON object" in err) or ("missing field" in err)


@pytest.mark.parametrize("env", [b"\x89PNG\r\n\x1a\n\x00\xff", b"[1, 2]", b"null", b'{"gpu": "NVIDIA H100"}'])
@pytest.mark.parametrize("command", ["resume", "report"])
def test_a_damaged_environment_json_is_a_warning_and_the_rows_stand(sweep_dir, tmp_path, capsys, env, command):
    spec, out, folder = sweep_dir
    (folder / "environment.json").write_bytes(env)
    argv = (["sweep", "--spec", str(spec), "--out", str(out), "--resume"] if command == "resume" else
            ["report", str(out), "--out", str(tmp_path / "rep")])
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert f"warning: {folder / 'environment.json'}: " in err and "going on without it" in err
    if command == "resume":  # set aside, and this machine's environment written in its place
        assert (folder / "environment.json.corrupt").read_bytes() == env + (b"" if env.endswith(b"\n") else b"\n")
        assert json.loads((folder / "environment.json").read_text())["device"] == "cpu"
    else:
        assert "measured on" not in (tmp_path / "rep" / "report.md").read_text()


# -- 10. a full disk ---------------------------------------------------------------------------------------------


def test_a_full_disk_mid_sweep_is_one_line_and_keeps_every_finished_row(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    real_fsync, jsonl_syncs = os.fsync, []

    def fsync(fd):  # the second row's fsync of rows.jsonl finds the disk full
        if os.readlink(f"/proc/self/fd/{fd}").endswith("rows.jsonl"):
            jsonl_syncs.append(fd)
            if len(jsonl_syncs) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, stdout, err = cli(capsys, "sweep", "--spec", str(spec), "--out", str(tmp_path / "out"))
    folder = tmp_path / "out" / "s"
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert f"no space left on device while writing {folder / 'rows.jsonl'}" in err
    assert [r["mode"] for r in read_records(folder / "rows.jsonl")] == ["fwd_bwd"]  # the first row, whole
    assert len(pd.read_csv(folder / "rows.csv")) == 1
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "environment.json", "rows.csv", "rows.jsonl"]


# -- 13. limits --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, fragment", [
    (("seq_len = [8]\nbatch_size = [2]", f"seq_len = {list(range(1, 1001))}\nbatch_size = {list(range(1, 1001))}"),
     "1,000,000 grid points (models x seq_len x batch_size x dtype x checkpointing), more than the limit of 10,000"),
    (("iters = 1", "iters = 20000"), "iters = 20000 is not allowed: an integer from 1 to 10,000"),
    (("warmup = 0", "warmup = 2000"), "warmup = 2000 is not allowed: an integer from 0 to 1,000"),
])
def test_limits_of_a_spec(tmp_path, change, fragment):
    assert change[0] in SPEC
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace(*change).replace("max_seq_len = 16", "max_seq_len = 1024"))
    start = time.monotonic()
    code, stdout, err = cli_child(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out")], tmp_path)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and fragment in err, err
    assert time.monotonic() - start < 5 and not (tmp_path / "out").exists()  # refused before planning


# -- 9. impossible values (issue 24, items 11 and 14) --------------------------------------------------------


# estimate computes its MFU from the time, the peak and the FLOPs (it reads no mfu / hfu); report reads the
# counted and simple FLOPs of a row, not model_flops.
IMPOSSIBLE = [(command, field, value) for field, value in (("time_ms.median_ms", 0), ("time_ms.median_ms", -5.0),
                                                           ("peak_tflops", -1.0)) for command in ("report", "estimate")]
IMPOSSIBLE += [("report", "mfu", float("inf")), ("report", "hfu", 0.0), ("estimate", "model_flops", 0)]


@pytest.mark.parametrize("command, field, value", IMPOSSIBLE)
def test_a_row_with_an_impossible_value_is_one_line_naming_file_and_line(sweep_dir, tmp_path, capsys, command, field,
                                                                         value):
    """Before: `estimate --mfu-from` divided by a median of 0 ms (ZeroDivisionError); `report` printed an MFU of
    "inf %" and a median of -5 ms. A measured time, rate, peak, FLOP count or utilisation is positive and
    finite, or null."""
    _, out, folder = sweep_dir
    jsonl = folder / "rows.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    row = json.loads(lines[1])  # the train_step row, the one estimate reads
    if "." in field:
        outer, inner = field.split(".")
        row[outer][inner] = value
    else:
        row[field] = value
    jsonl.write_text(lines[0] + json.dumps(row) + "\n")
    argv = (["report", str(out), "--out", str(tmp_path / "rep")] if command == "report" else
            ["estimate", "--tokens", "1B", "--mfu-from", str(out)])
    code, stdout, err = cli(capsys, *argv)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert f"{jsonl}: line 2: {field} = {value!r} is not a positive, finite number or null" in err, err
    assert not (tmp_path / "rep" / "report.md").exists()


# -- 10. a results folder name longer than a file system takes (issue 24, item 15) ---------------------------


def test_a_300_character_spec_name_is_refused_naming_its_length(tmp_path, capsys):
    """Before: "--out ...: cannot write there (File name too long)", which blamed --out."""
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace('name = "s"', f'name = "{"n" * 300}"'))
    code, out, err = cli(capsys, "sweep", "--spec", str(spec), "--out", str(tmp_path / "out"))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert ("name = 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...' is not allowed: 300 bytes long, more than the 255 a "
            "file system takes for one folder name") in err, err
    assert "cannot write there" not in err and not (tmp_path / "out").exists()


def test_a_10000_character_name_or_path_is_refused_naming_the_models_name(tmp_path, capsys):
    """A run's folder is named after its model: a config.json whose _name_or_path is 10,000 characters long
    gave a folder name the file system refuses. Before: "--out ...: cannot write there (File name too long)"."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 16,
                                  "vocab_size": 64, "_name_or_path": "org/" + "m" * 10_000}))
    code, out, err = cli(capsys, *TINY_RUN[:-1], "--model", str(config), "--out", str(tmp_path / "out"))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "bytes long, more than the 255 a file system takes for one folder name" in err, err
    assert "the model's name (a config.json's _name_or_path) is too long" in err and "cannot write there" not in err
    assert not list((tmp_path / "out").rglob("rows.jsonl"))
