"""Every README example that can run on a CPU runs on a fresh copy of the repository, and prints something.

The copy is the working tree as `git ls-files` lists it (tracked and untracked-but-not-ignored files, with
their uncommitted edits; a clone of HEAD would miss those), in a temporary folder: a fresh clone, with no
results of earlier runs. Each ```bash block of README.md is read; every `python3 -m flopbench ...` command in
it (also after `&&`, with `\\` continuations joined) is run from the copy's root in README order, except
those that need what a CPU machine lacks:

- `--device cuda` or `torchrun` on the line;
- a comment `# GPU ...` on the line, or as the first line of the block (the whole block);
- a comment `# needs ...` on the line (e.g. "# needs your own config.json"), likewise for a block.

Each must exit 0 within `TIMEOUT_S` and print something on stdout. One test per example, named by the
example, so a failure names the command. Slow (all of them: 3 minutes on a 2-core VM at load 3, 13 at load
7): marked `slow`, run by default.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: Per example. On a 2-core VM at load 7-8 (other jobs beside the tests) the slowest example, the default `run`,
#: took 371 s, the sweep of cpu_smoke.toml 174 s, every other one under 140 s (39 s and 25 s at load 2);
#: 720 s leaves about 2x the slowest, and still stops an example that hangs.
TIMEOUT_S = 720
SKIP_COMMENT = re.compile(r"(^|\s)#\s*(GPU|needs)\b")


def _commands(line: str) -> list[list[str]]:
    """The `python -m flopbench` commands on one shell line (split at `&&`, `;`, `||`), as argument lists."""
    words = shlex.split(line, comments=True)
    commands, current = [], []
    for word in [*words, "&&"]:
        if word in ("&&", ";", "||"):
            if current[1:3] == ["-m", "flopbench"] and re.fullmatch(r"python3?", current[0]):
                commands.append(current[3:])
            current = []
        else:
            current.append(word)
    return commands


def readme_examples(text: str) -> tuple[list[str], list[str]]:
    """(the CPU examples as shell lines, the skipped ones) of every ```bash block of `text`."""
    run, skipped = [], []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        lines = block.replace("\\\n", " ").splitlines()
        block_skipped = bool(lines) and bool(SKIP_COMMENT.match(lines[0].strip()))
        for line in lines:
            for args in _commands(line):
                example = shlex.join(["python3", "-m", "flopbench", *args])
                gpu = "torchrun" in line or re.search(r"--device[ =]cuda\b", line)
                (skipped if block_skipped or gpu or SKIP_COMMENT.search(line) else run).append(example)
    return run, skipped


EXAMPLES, SKIPPED = readme_examples(README.read_text(encoding="utf-8"))


def test_the_parser_finds_and_skips_what_the_rules_say():
    text = ("```bash\npython3 -m pip install -e . && python3 -m flopbench run   # quick\n"
            "python3 -m flopbench count --model gpt2 \\\n    --seq-len 64          # continued\n"
            "python3 -m flopbench run --device cuda\npython3 -m flopbench sweep --spec x.toml   # GPU: 8 hours\n"
            "torchrun --nproc_per_node 8 -m flopbench run\npython3 -m flopbench gpus   # detected GPU\n"
            "python3 -m flopbench count --model ~/m/config.json   # needs your own config.json\n```\n"
            "```bash\n# GPU: the H100 workflow\npython3 -m flopbench run --model gpt2-xl\n```\n"
            "```python\npython3 -m flopbench estimate\n```\n")
    run, skipped = readme_examples(text)
    assert run == ["python3 -m flopbench run", "python3 -m flopbench count --model gpt2 --seq-len 64",
                   "python3 -m flopbench gpus"]
    assert skipped == ["python3 -m flopbench run --device cuda", "python3 -m flopbench sweep --spec x.toml",
                       "python3 -m flopbench count --model '~/m/config.json'",
                       "python3 -m flopbench run --model gpt2-xl"]


def test_the_readme_has_cpu_examples_of_every_command():
    commands = {shlex.split(e)[3] for e in EXAMPLES}
    assert commands >= {"count", "run", "infer", "gpus", "sweep", "report", "estimate"}, EXAMPLES


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh copy of the working tree (see the module docstring)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    dest = tmp_path_factory.mktemp("clone") / "flopbench"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.parametrize("example", EXAMPLES)
def test_readme_example_runs_on_a_fresh_clone(clone, example):
    env = {**os.environ, "PYTHONPATH": str(clone), "COLUMNS": "100"}
    try:
        done = subprocess.run([sys.executable, *shlex.split(example)[1:]], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"README example did not finish in {TIMEOUT_S} s: {example}")
    assert done.returncode == 0, f"README example failed (exit {done.returncode}): {example}\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), f"README example printed nothing on stdout: {example}"
