"""The repository's layout: no top-level module shadows the standard library (it would crash every
Ray worker), and the installed distribution exposes the folders under one import root."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.packaging import package_folders, setuptools_table

ROOT = Path(__file__).resolve().parents[1]


def test_no_top_level_name_shadows_stdlib():
    names = {p.stem for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert not names & set(sys.stdlib_module_names)


def test_every_package_folder_is_listed_under_depthkd():
    """A new subpackage missing from pyproject.toml's list would be left out of the wheel."""
    on_disk = {
        ".".join([package, *init.parent.relative_to(ROOT / folder).parts])
        for package, folder in package_folders(ROOT).items()
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert set(setuptools_table(ROOT)["packages"]) == on_disk
    assert all(name == "depthkd" or name.startswith("depthkd.") for name in on_disk)


def test_packages_import_under_one_root():
    import depthkd
    import depthkd.configs
    import depthkd.models
    import depthkd.pipelines
    import depthkd.tune

    assert depthkd.__version__
    assert Path(depthkd.models.__file__).parent == ROOT / "models"
    assert Path(depthkd.tune.__file__).parent == ROOT / "tune"
    assert (Path(depthkd.configs.__file__).parent / "default.yaml").is_file()
