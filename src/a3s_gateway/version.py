"""The package version, in a module of its own so that any module can name it without
importing the package's facade (``a3s_gateway/__init__`` imports the composition root, which
imports most of the tree: importing ``__version__`` from there closed an import cycle).

Ring 0: a constant. Keep it equal to ``project.version`` in ``pyproject.toml`` (a test checks).
"""

from __future__ import annotations

from typing import Final

__all__ = ["__version__"]

__version__: Final = "0.1.0"
