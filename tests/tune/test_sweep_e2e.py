"""A real sweep on an embedded Ray, driven as a user drives it (`depthkd sweep` in its own
process): 3 trials of configs/sweep_tiny.yaml, 2 at once, ASHA, interrupted with SIGINT (Ctrl-C)
once a trial has ended, then run again to the end (one test: a whole sweep costs minutes).

The sweeps run while a second Ray (a `ray start` cluster) is up on the machine: Ray Train's
clean-up of a stopped trial's CPUs once gave up there and the sweep stalled.

Each sweep's home starts with the store's schema and the bundled data set in place, as the first
job on a new home would leave them (the session caches of tests/conftest.py): building them is
not what these tests are about.

Checked in the MLflow store afterwards: one parent run with one nested child per trial, each
child's val curve complete (one point per evaluation round the trial reached) and free of
duplicates, the results CSV and plots, `best.yaml` and the registered challenger.
"""

from __future__ import annotations

import csv
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from depthkd.config.loader import load_config
from depthkd.tracking.runs import JOB_ID_TAG, PARENT_RUN_TAG
from depthkd.tune.sweep import base_experiment, load_sweep
from tests.bundled_cache import BundledCache
from tests.conftest import seed_store

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.multiproc]

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO / "configs" / "sweep_tiny.yaml"
METRIC = "distill/val/abs_rel"
EVAL_EVERY = 2  # train.eval_every in sweep_tiny.yaml
TIMEOUT_S = 480  # one sweep; pytest's own timeout is set above it, so a stuck sweep's log shows


@pytest.fixture
def home(tmp_path: Path, migrated_db: Path, bundled_cache: BundledCache) -> Path:
    """The sweeps' `$DEPTHKD_HOME`: a migrated store and the base config's bundled set."""
    home = tmp_path / "home"
    seed_store(home, migrated_db)
    bundled_cache.seed(base_experiment(load_sweep(SWEEP)).data, home)
    return home


def _start(home: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env |= {"DEPTHKD_HOME": str(home), "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "depthkd.cli.main", "sweep", "--config", str(SWEEP)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own group: a stuck sweep is killed whole
        )


def _wait(process: subprocess.Popen, log: Path) -> int:
    try:
        return process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"sweep did not finish in {TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _client(home: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def _runs(home: Path) -> tuple[object, dict[str, object]]:
    """The sweep's parent run and its children by job id."""
    client = _client(home)
    experiment = client.get_experiment_by_name("depthkd-tests")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get(JOB_ID_TAG) == "sweep-tiny-sweep"]
    children = {
        r.data.tags[JOB_ID_TAG]: r
        for r in runs
        if r.data.tags.get(PARENT_RUN_TAG) == parent.info.run_id
    }
    return parent, children


def _rows(home: Path) -> dict[str, dict[str, str]]:
    path = home / "sweeps" / "tiny-sweep" / "results" / "trials.csv"
    with path.open() as f:
        return {row["trial_id"]: row for row in csv.DictReader(f)}


def _check_complete_sweep(home: Path) -> dict[str, dict[str, str]]:
    rows = _rows(home)
    assert len(rows) == 3
    assert {row["status"] for row in rows.values()} >= {"TERMINATED", "STOPPED"}
    parent, children = _runs(home)
    assert parent.info.status == "FINISHED"
    assert set(children) == {f"tiny-sweep-{trial}" for trial in rows}
    client = _client(home)
    for trial, row in rows.items():
        child = children[f"tiny-sweep-{trial}"]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, METRIC)]
        rounds = int(row["rounds"])
        # every evaluation once, no gaps, no duplicates; a stopped trial may have logged an
        # evaluation or two more while Tune was deciding to stop it
        assert steps == [EVAL_EVERY * (i + 1) for i in range(len(steps))], (trial, steps)
        assert len(steps) == rounds if row["status"] == "TERMINATED" else len(steps) >= rounds
        expected = "FINISHED" if row["status"] == "TERMINATED" else "KILLED"
        assert child.info.status == expected
    return rows


def _check_outcome(home: Path, rows: dict[str, dict[str, str]], first: str, second: str) -> None:
    """What a finished sweep leaves: ASHA stopped a trial, trials ran side by side through the
    sweep's server without losing writes, one teacher for all trials (reused on resume), the
    plots, the results logged, `best.yaml` and the registered challenger."""
    assert sum(r["status"] == "STOPPED" for r in rows.values()) >= 1  # ASHA stopped one early
    # two trials wrote to the store at the same time, through the sweep's server, and nothing
    # was lost to "database is locked"
    _, children = _runs(home)
    spans = sorted((c.info.start_time, c.info.end_time) for c in children.values())
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    server_log = (home / "sweeps" / "tiny-sweep" / "mlflow-server.log").read_text()
    assert "database is locked" not in first + second + server_log
    assert first.count("acclimating the sweep's teacher") == 1  # one teacher, not one per trial
    assert "acclimating the sweep's teacher" not in second  # ... and not again on resume
    sweep_dir = home / "sweeps" / "tiny-sweep"
    for plot in ("curves.png", "metric_vs_params.png", "parallel_coordinates.png"):
        assert (sweep_dir / "results" / plot).stat().st_size > 10_000
    parent, _ = _runs(home)
    logged = {a.path for a in _client(home).list_artifacts(parent.info.run_id, "results")}
    assert "results/trials.csv" in logged and "results/curves.png" in logged
    assert _client(home).get_metric_history(parent.info.run_id, "budget/rounds_used")
    # best.yaml is a plain experiment config: the best trial's values and the sweep's teacher
    best = load_config(sweep_dir / "best.yaml")
    best_id = parent.data.tags["depthkd.best_trial"]
    assert best.distill.optim.lr == pytest.approx(float(rows[best_id]["distill.optim.lr"]))
    assert Path(best.distill.teacher).is_file()
    version = _client(home).get_model_version_by_alias("depthkd-student", "challenger")
    assert version.tags["sweep"] == "tiny-sweep" and version.tags["trial"] == best_id
    assert version.tags["selection_split"] == "val" and version.tags["protocol"] == "nyu-eigen"
    assert "val/abs_rel" in version.tags and "test/abs_rel" in version.tags


@pytest.mark.timeout(3 * TIMEOUT_S + 120)  # first sweep to a trial end, its exit, second sweep
def test_a_sweep_interrupted_and_run_again_finishes_every_trial_once_and_registers_the_best(
    tmp_path, home, local_ray_cluster
) -> None:
    first_log = tmp_path / "first.log"
    process = _start(home, first_log)
    deadline = time.monotonic() + TIMEOUT_S
    while " ended after " not in first_log.read_text():
        assert process.poll() is None, first_log.read_text()[-4000:]
        assert time.monotonic() < deadline, "no trial ended in time"
        time.sleep(1)
    process.send_signal(signal.SIGINT)  # as Ctrl-C would
    assert _wait(process, first_log) == 130, first_log.read_text()[-4000:]
    assert "sweep interrupted" in first_log.read_text()
    client = _client(home)
    _, before = _runs(home)
    finished = {job: run for job, run in before.items() if run.info.status != "RUNNING"}
    assert finished, "no trial run was ended before the interrupt"
    histories = {
        job: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, METRIC)]
        for job, run in finished.items()
    }

    second_log = tmp_path / "second.log"
    assert _wait(_start(home, second_log), second_log) == 0, second_log.read_text()[-4000:]
    second = second_log.read_text()
    assert "resuming the sweep" in second
    for job in finished:
        trial = job.removeprefix("tiny-sweep-")
        assert f"trial {trial} started" not in second  # not run again
    rows = _check_complete_sweep(home)
    _, after = _runs(home)
    for job, run in finished.items():  # their runs untouched
        assert after[job].info.run_id == run.info.run_id
        assert after[job].info.end_time == run.info.end_time
        assert after[job].info.status == run.info.status
        steps = client.get_metric_history(run.info.run_id, METRIC)
        assert [(m.step, m.value) for m in steps] == histories[job]
    _check_outcome(home, rows, first_log.read_text(), second)
