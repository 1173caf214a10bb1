"""What a command imports: `--help`, `estimate` and `count --no-torch` never load torch, and nothing imports
in a cycle."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import flopbench

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["estimate", "--model", "gpt2-xl", "--tokens", "300B", "--gpus", "8"],
    ["count", "--model", "llama3-70b", "--seq-len", "8192", "--no-torch", "--json"],
])
def test_command_never_imports_torch(argv):
    code = ("import runpy, sys\n"
            f"sys.argv = ['flopbench', *{argv!r}]\n"
            "try:\n    runpy.run_module('flopbench', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "heavy = sorted(m for m in ('torch', 'pandas', 'fvcore') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_count_no_torch_has_the_analytic_part_only(capsys):
    from flopbench.cli import main

    assert main(["count", "--model", "gpt2-xl", "--seq-len", "1024", "--no-torch", "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["counted"] == {}
    assert doc["analytic"]["forward"] == 3_506_703_564_800  # 2·T·(12·d²·L + d·V) + 4·T²·d·L for gpt2-xl
    assert all(c["status"] != "unexplained" for c in doc["reconciliation"])


def _imports(path: Path, module: str) -> set[str]:
    """The flopbench modules `module` (the file `path`) imports at its top level (not inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            found |= {f"{target}.{a.name}" for a in node.names} | {target}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flopbench"):
            found.add(node.module)
    return found


def test_no_import_cycle_and_no_private_name_across_modules():
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / "flopbench").rglob("*.py")}
    graph = {m: {t for t in _imports(p, m) if t in files and t != m} for m, p in files.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in graph[m]:
            assert state.get(t) != 1, f"import cycle: {' -> '.join([*path, m, t])}"
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in files:
        if m not in state:
            visit(m, [])
    for m, p in files.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("flopbench")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{m} imports private {private} from {node.module}"
    assert importlib.import_module("flopbench.api.count").count is flopbench.count
