"""The install files must agree: users of conda and of pip get the same dependency set."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _installed_extras() -> list[str]:
    """The extras environment.yml installs (``-e .[a,b]``); others (e.g. ``cluster``) stay optional."""
    return re.search(r"-e \.\[([^\]]*)\]", (ROOT / "environment.yml").read_text()).group(1).split(",")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in _installed_extras():
        reqs += project["optional-dependencies"][extra]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment_pip_requirements() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = []
    for line in lines[start + 1:]:
        m = re.match(r"^\s+- (.+)$", line)
        if not m:
            break
        if not m.group(1).startswith("-e"):
            reqs.append(m.group(1))
    return {_name(r): r.replace(" ", "") for r in reqs}


def test_environment_yml_and_pyproject_agree():
    assert _environment_pip_requirements() == _pyproject_requirements()


def test_environment_installs_this_package_with_extras():
    text = (ROOT / "environment.yml").read_text()
    assert "- -e .[notebooks,test]" in text and "python=3.11" in text


def test_torch_is_pinned_to_the_locally_served_builds():
    reqs = _pyproject_requirements()
    assert reqs["torch"] == "torch==2.14.1" and reqs["torchvision"] == "torchvision==0.29.1"
