"""How pyproject.toml maps the repository's folders onto the one import root `depthkd`."""

from __future__ import annotations

import tomllib
from pathlib import Path


def setuptools_table(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folders(root: Path) -> dict[str, str]:
    """`{package: folder}` of the package-dir mapping (`depthkd` ← `kdplatform`, ...)."""
    return dict(setuptools_table(root)["package-dir"])
