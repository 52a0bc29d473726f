"""No top-level module may shadow the standard library (it would crash every Ray worker)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_top_level_name_shadows_stdlib():
    names = {p.stem for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert not names & set(sys.stdlib_module_names)


def test_packages_import():
    import kdplatform
    import models
    import pipelines
    import tune

    assert kdplatform.__version__ and models and pipelines and tune
