"""The installed distribution, not the checkout: the wheel built from this tree, installed without
`-e` into a fresh environment (which borrows this one's dependencies), runs from a user's project
that has its own `models/` package — the package shadows nothing and is shadowed by nothing, and
it carries its configs and the demo's teacher.

Its job (embedded Ray, one Ray Train worker) is also where the console is checked as a user sees
it: quiet (progress and one line per event, each once: Ray Train V2's print patch used to write
worker lines twice), the full log in the job's folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.packaging import package_folders

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.multiproc]

# what must stay in the job's log: Ray's and MLflow's own output
NOISE = re.compile(
    r"RayTrainWorker|TrainController|raylet|PlacementGroupCleaner|Tip:|WARNING|INFO|"
    r"Downloading artifacts|Checkpoint successfully|core_worker"
)

ROOT = Path(__file__).resolve().parents[1]
BUILD = (
    "import sys; from setuptools import build_meta; "
    "print(build_meta.build_wheel(sys.argv[1]))"  # the PEP 517 hook pip calls
)


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stderr", subprocess.PIPE)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{(done.stderr or '')[-3000:]}"
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
    command += ["data.synthetic.unlabeled_n=0", "data.num_workers=0", "supervised.steps=4"]
    command += ["train.cpus_per_worker=1", "train.eval_every=2", "train.log_every=2"]
    command += ["eval.max_batches=1", "tracking.register_models=false"]
    command += ["tracking.system_metrics=false"]
    # stderr into stdout, as a terminal shows them: in order
    shown = _run(command, cwd=user_project, env=_env(home), stderr=subprocess.STDOUT).stdout
    assert "student on test (kitti-garg-full" in shown
    recorded = yaml.safe_load((home / "runs" / "wheel" / "config.yaml").read_text())
    assert recorded["model"]["student"]["name"] == "mobilenetv2_050"  # the demo's, not the schema's
    teacher = Path(recorded["model"]["teacher"]["checkpoint"])
    assert teacher.is_file() and teacher.is_relative_to(installed.parent / "lib")
    assert teacher.parent.parent.name == "configs"
    _check_console(shown, home / "runs" / "wheel" / "job.log")


def _check_console(shown: str, log: Path) -> None:
    """The console from the job's start is quiet, each line once; the log holds everything."""
    lines = [s.strip() for s in re.split(r"[\r\n]", shown) if s.strip()]
    job = lines[lines.index(f"log: {log}") :]
    assert job[-1] == f"full log: {log}"
    assert [s for s in job if NOISE.search(s)] == []
    assert {s: n for s, n in Counter(job).items() if n > 1} == {}
    evaluations = [s for s in job if s.startswith("[supervised] eval step")]
    assert [s.split(" (")[0] for s in evaluations] == [
        "[supervised] eval step 2",
        "[supervised] eval step 4",
    ]
    assert all(re.search(r"\(val, kitti-garg-full, \d+ images\): abs_rel", s) for s in evaluations)
    assert any(s.startswith("[supervised] step 2/4 loss") and "ETA" in s for s in job)
    assert sum(s.startswith("[supervised] rank 0/1 on node") for s in job) == 1

    text = log.read_text()
    assert "resolved config:" in text and "TrainController" in text  # driver and Ray
    worker_lines = re.findall(r"\(RayTrainWorker pid=\d+\) (\[supervised\] .*)", text)
    assert len(worker_lines) == len(set(worker_lines)), worker_lines  # each once, not twice
    assert sum("eval step" in s for s in worker_lines) == 2
    assert sum("rank 0/1 on node" in s for s in worker_lines) == 1
