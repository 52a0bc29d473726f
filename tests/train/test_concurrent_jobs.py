"""Two jobs started at the same moment on one fresh `$DEPTHKD_HOME` both finish, and the bundled
data exists once: generation and sharding take a lock, the second job waits and reuses them."""

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
    for name in ("first", "second"):
        log = (tmp_path / f"{name}.log").open("w")
        command = [sys.executable, "-m", "kdplatform.cli.main", "distill", "--config"]
        command += [str(REPO / "configs" / "tiny.yaml"), f"name={name}", "--quiet"]
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        jobs.append((name, process, log))
    for name, process, log in jobs:
        code = process.wait(timeout=TIMEOUT_S)
        log.close()
        assert code == 0, (tmp_path / f"{name}.log").read_text()[-4000:]
    assert len(list((home / "data").glob("synthetic-*/shards/manifest.json"))) == 1
    for name, _, _ in jobs:
        assert (home / "runs" / name / "distill" / "student.pt").is_file()
