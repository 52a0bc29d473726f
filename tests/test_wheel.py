"""The installed distribution, not the checkout: the wheel built from this tree, installed without
`-e` into a fresh environment (which borrows this one's dependencies), runs from a user's project
that has its own `models/` package — the package shadows nothing and is shadowed by nothing, and
it carries its configs and the demo's teacher."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.packaging import package_folders

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]

ROOT = Path(__file__).resolve().parents[1]
BUILD = (
    "import sys; from setuptools import build_meta; "
    "print(build_meta.build_wheel(sys.argv[1]))"  # the PEP 517 hook pip calls
)


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh environment holding the wheel (its `bin/`): built from a copy of the tree, so the
    build writes nothing into the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    skip = shutil.ignore_patterns("__pycache__")
    for name in ["pyproject.toml", "README.md", *package_folders(ROOT).values()]:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=skip)
        else:
            shutil.copy2(ROOT / name, source / name)
    built = _run([sys.executable, "-c", BUILD, str(tmp / "dist")], cwd=source)
    wheel = tmp / "dist" / built.stdout.strip().splitlines()[-1]
    env = tmp / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)])
    python = env / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)])  # fmt: skip
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    # installed after the wheel, so pip never sees this environment's editable depthkd
    (Path(site.stdout.strip()) / "borrowed-dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return env / "bin"


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A user's project with the folder names ML projects often have."""
    for package in ("models", "tune", "pipelines"):
        (tmp_path / "project" / package).mkdir(parents=True)
        (tmp_path / "project" / package / "__init__.py").write_text(f'OWNER = "user {package}"\n')
    return tmp_path / "project"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return env | {"DEPTHKD_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": ""}


def test_the_installed_package_neither_shadows_nor_is_shadowed(installed, user_project, tmp_path):
    check = (
        "import models, tune, depthkd, depthkd.models, depthkd.tune; "
        "print(models.OWNER, tune.OWNER, depthkd.__file__, depthkd.models.__file__)"
    )
    done = _run([str(installed / "python"), "-c", check], cwd=user_project, env=_env(tmp_path))
    shown = done.stdout.split()
    assert shown[:4] == ["user", "models", "user", "tune"]
    package, models = Path(shown[4]), Path(shown[5])
    assert package.is_relative_to(installed.parent / "lib")
    assert models.parent == package.parent / "models"
    assert _run([str(installed / "depthkd"), "--help"], env=_env(tmp_path)).stdout.startswith(
        "usage: depthkd"
    )


def test_a_job_runs_the_shipped_default_config_from_a_user_project(
    installed, user_project, tmp_path
):
    """`depthkd supervised` with no --config: the demo's config from the package data (not the
    schema's defaults), its teacher file found beside it; made small by overrides."""
    home = tmp_path / "home"
    command = [str(installed / "depthkd"), "supervised", "name=wheel", "data.synthetic.n=40"]
    command += ["data.synthetic.unlabeled_n=0", "supervised.steps=2", "train.workers=0"]
    command += ["eval.max_batches=1", "tracking.register_models=false"]
    command += ["tracking.system_metrics=false", "--quiet"]
    done = _run(command, cwd=user_project, env=_env(home))
    assert "student on test (kitti-garg-full" in done.stdout
    recorded = yaml.safe_load((home / "runs" / "wheel" / "config.yaml").read_text())
    assert recorded["model"]["student"]["name"] == "mobilenetv2_050"  # the demo's, not the schema's
    teacher = Path(recorded["model"]["teacher"]["checkpoint"])
    assert teacher.is_file() and teacher.is_relative_to(installed.parent / "lib")
    assert teacher.parent.parent.name == "configs"
