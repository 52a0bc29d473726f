"""A real job from the CLI (embedded Ray, one worker): a quiet console, the full log in the job's
folder, worker lines once (Ray Train V2's print patch used to write each of them twice)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from depthkd.data.sources.synthetic import write_synthetic
from tests.conftest import prepare

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.multiproc]

REPO = Path(__file__).resolve().parents[2]
# what must stay in the log: Ray's and MLflow's own output
NOISE = re.compile(
    r"RayTrainWorker|TrainController|raylet|PlacementGroupCleaner|Tip:|WARNING|INFO|"
    r"Downloading artifacts|Checkpoint successfully|core_worker"
)


def _shards(tmp_path: Path) -> Path:
    """The bundled tiny set, prepared in this process (the job's own preparation spends most of
    its time starting encoder processes)."""
    raw = tmp_path / "raw"
    write_synthetic("nyu", raw, 40, 0, height=64, width=96, progress=False)
    for split in ("train", "val", "test"):
        prepare(
            tmp_path,
            dataset="nyu",
            root=raw / "sync",
            split_file=raw / "splits" / f"{split}.txt",
            split=split,
        )
    return tmp_path / "shards"


def test_a_job_shows_progress_and_events_once_and_logs_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env |= {"DEPTHKD_HOME": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, "-m", "depthkd.cli.main", "supervised"]
    command += ["--config", str(REPO / "configs" / "tiny.yaml"), "name=console"]
    command += [f"data.shards={_shards(tmp_path)}"]
    command += ["train.eval_every=2", "tracking.register_models=false"]
    command += ["tracking.system_metrics=false"]
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # as a terminal shows them: in order
        text=True,
        timeout=240,
    )
    shown = done.stdout
    assert done.returncode == 0, shown[-4000:]
    log = tmp_path / "runs" / "console" / "job.log"
    # the console from the job's start
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
    assert all("(val, nyu-eigen, 4 images): abs_rel" in s for s in evaluations)
    assert any(s.startswith("[supervised] step 2/4 loss") and "ETA" in s for s in job)
    assert sum(s.startswith("[supervised] rank 0/1 on node") for s in job) == 1

    text = log.read_text()
    assert "resolved config:" in text and "TrainController" in text  # driver and Ray
    worker_lines = re.findall(r"\(RayTrainWorker pid=\d+\) (\[supervised\] .*)", text)
    assert len(worker_lines) == len(set(worker_lines)), worker_lines  # each once, not twice
    assert sum("eval step" in s for s in worker_lines) == 2
    assert sum("rank 0/1 on node" in s for s in worker_lines) == 1
