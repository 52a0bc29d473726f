"""Type-checks the project with mypy (`make lint`): `python .ci/typecheck.py [mypy args]`.

The distribution has one import root, `depthkd`, mapped from several folders by pyproject.toml's
package-dir (`depthkd` ← kdplatform/, `depthkd.models` ← models/, ...). An editable install
resolves that with an import hook that mypy cannot follow, so this script first lays the mapping
out as links in `.typecheck/` (git-ignored; pyproject.toml's `mypy_path` points there), then runs
mypy on the packages that `[tool.mypy] packages` names, or on the arguments given, and prints its
report with each file under its real path (kdplatform/config/schema.py, not
.typecheck/depthkd/config/schema.py). `PYTHONPATH=.typecheck` imports this checkout's `depthkd`
the same way, without an install.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / ".typecheck"
SKIP = {"__pycache__"}
# a report line that names a file in the tree: `.typecheck/depthkd/x.py:12: error: ...`
TREE_PATH = re.compile(r"^(\.typecheck/[^:\s]+)(?=:)", re.MULTILINE)


def package_dirs(root: Path) -> dict[str, Path]:
    """`{package: folder}` of pyproject.toml's package-dir mapping."""
    table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {package: root / folder for package, folder in table["package-dir"].items()}


def _link(link: Path, target: Path) -> None:
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())


def build_tree(root: Path = ROOT, tree: Path = TREE) -> None:
    """Lays each mapped package out at its dotted name under `tree`: a package with mapped
    subpackages becomes a folder of links to its folder's entries, any other a link to its
    folder. Links from an earlier run are replaced, so a file added or removed is seen."""
    mapping = package_dirs(root)
    for package, folder in sorted(mapping.items()):
        place = tree.joinpath(*package.split("."))
        if place.is_symlink():
            place.unlink()
        children = {
            other.removeprefix(package + ".").split(".")[0]
            for other in mapping
            if other.startswith(package + ".")
        }
        if children:
            place.mkdir(parents=True, exist_ok=True)
            for stale in place.iterdir():
                if stale.is_symlink():
                    stale.unlink()
            for entry in folder.iterdir():
                if entry.name not in SKIP | children:
                    _link(place / entry.name, entry)
        else:
            place.parent.mkdir(parents=True, exist_ok=True)
            _link(place, folder)


def real_paths(report: str, root: Path = ROOT) -> str:
    """`report` with every file in the link tree named by its path in the repository."""
    return TREE_PATH.sub(
        lambda m: os.path.relpath(os.path.realpath(root / m.group(1)), root), report
    )


def main(argv: list[str]) -> int:
    build_tree()
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *argv], cwd=ROOT, capture_output=True, text=True
    )
    sys.stdout.write(real_paths(done.stdout))
    sys.stderr.write(real_paths(done.stderr))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
