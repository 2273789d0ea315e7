"""The package version: one value, the same in ``pyproject.toml``, the facade and ``version.py``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import a3s_gateway
from a3s_gateway.version import __version__

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_version_is_the_projects() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert __version__ == project["version"]
    assert a3s_gateway.__version__ is __version__
