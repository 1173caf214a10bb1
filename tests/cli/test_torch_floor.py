"""The torch floor: 2.5.0 picked cuDNN attention by default on H100 and gave NaNs (pytorch issue #138649),
fixed in 2.5.1; pyproject and the README must both say >= 2.5.1."""

import pathlib
import re
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_pyproject_refuses_torch_2_5_0_and_allows_2_5_1():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert Version("2.5.0") not in torch_req.specifier
    assert Version("2.5.1") in torch_req.specifier and Version("2.13.0") in torch_req.specifier


def test_readme_states_the_same_floor():
    readme = (ROOT / "README.md").read_text()
    floors = re.findall(r"≥ (2\.\d+(?:\.\d+)?), < 2\.\d+", readme)
    assert floors == ["2.5.1"]
