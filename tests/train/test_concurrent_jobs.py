"""Two jobs started at the same moment on one fresh `$DEPTHKD_HOME` both finish, and the bundled
data exists once: generation and sharding take a lock, the second job waits and reuses them. The
same config started twice is one job id: the second run waits for the first, then resumes it.

The jobs are one-stage `supervised` jobs of configs/tiny.yaml, run in the driver (train.workers=0):
what is tested is the locking around the data and the job, which every job's driver takes the same
way however many stages and workers it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.multiproc]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def test_two_jobs_started_together_on_a_fresh_home_both_finish(tmp_path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env |= {"DEPTHKD_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    jobs = []
    # two jobs of their own and the very same job twice, all started at once
    for name, job in (("first", "first"), ("second", "second"), ("again", "second")):
        log = (tmp_path / f"{name}.log").open("w")
        command = [sys.executable, "-m", "depthkd.cli.main", "supervised", "--config"]
        # train.workers=0: the stage runs in the driver, where the locks are taken
        command += [str(REPO / "configs" / "tiny.yaml"), f"name={job}", "train.workers=0"]
        command += ["--quiet"]
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        jobs.append((name, process, log))
    for name, process, log in jobs:
        code = process.wait(timeout=TIMEOUT_S)
        log.close()
        assert code == 0, (tmp_path / f"{name}.log").read_text()[-4000:]
    assert len(list((home / "data").glob("synthetic-*/shards/manifest.json"))) == 1
    for name in ("first", "second"):
        assert (home / "runs" / name / "supervised" / "student.pt").is_file()
    waited = [n for n in ("second", "again") if "runs in another process" in _log(tmp_path, n)]
    assert len(waited) == 1  # one of the two runs of job "second" waited for the other
    assert "mlflow: run" in _log(tmp_path, waited[0]) and "(continued)" in _log(tmp_path, waited[0])


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()
