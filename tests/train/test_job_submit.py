"""End to end: `ray job submit --working-dir .` of the main job to a real local cluster.

The tiny config (configs/tiny.yaml) runs acclimation and distillation for a few steps; the job's
MLflow run and the registered student must land in the store under the job's `DEPTHKD_HOME`. That
home starts with the config's bundled data set in place (the session cache of tests/conftest.py),
not with a store: the job creates it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from depthkd.config.loader import load_config
from tests.bundled_cache import BundledCache
from tests.local_cluster import AUTH_MODE, RAY, REPO_ROOT, VENV_BIN, LocalRayCluster

SUBMIT_TIMEOUT_S = 600


def _job_logs(cluster: LocalRayCluster, job_id: str) -> str:
    try:
        logs = cluster.ray_cli("job", "logs", "--address", cluster.dashboard_url, job_id)
    except subprocess.TimeoutExpired:
        return "(`ray job logs` timed out)"
    return (logs.stdout + logs.stderr)[-20000:]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(SUBMIT_TIMEOUT_S + 300)
def test_submit_distill_job_registers_student(
    local_ray_cluster: LocalRayCluster, tmp_path: Path, bundled_cache: BundledCache
) -> None:
    cluster = local_ray_cluster
    home = (tmp_path / "depthkd-home").resolve()
    bundled_cache.seed(load_config(REPO_ROOT / "configs" / "tiny.yaml").data, home)
    job_id = f"submit-{uuid.uuid4().hex[:8]}"
    runtime_env = {
        "env_vars": {
            "DEPTHKD_HOME": str(home),
            # Internal ray.init calls must reach this cluster, not another one on this host.
            "RAY_ADDRESS": cluster.gcs_address,
            "RAY_AUTH_MODE": AUTH_MODE,
            # The entry point's `python` is the first one on the cluster's PATH: this venv's.
            "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
    }
    command = [
        RAY, "job", "submit",
        "--address", cluster.dashboard_url,
        "--submission-id", job_id,
        "--working-dir", str(REPO_ROOT),
        "--runtime-env-json", json.dumps(runtime_env),
        "--",
        "python", "pipelines/distill.py", "--config", "configs/tiny.yaml", f"name={job_id}",
        "--quiet",
    ]  # fmt: skip
    try:
        submit = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=SUBMIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        logs = _job_logs(cluster, job_id)
        cluster.ray_cli("job", "stop", "--address", cluster.dashboard_url, "--no-wait", job_id)
        pytest.fail(
            f"`ray job submit` did not finish within {SUBMIT_TIMEOUT_S} s; job logs:\n{logs}",
            pytrace=False,
        )
    if submit.returncode != 0:
        pytest.fail(
            f"`ray job submit` exited with {submit.returncode}\n--- stdout ---\n"
            f"{submit.stdout[-20000:]}\n--- stderr ---\n{submit.stderr[-5000:]}\n"
            f"--- ray job logs ---\n{_job_logs(cluster, job_id)}\n{cluster.log_tail()}",
            pytrace=False,
        )

    db = home / "mlflow.db"
    assert db.is_file(), f"no MLflow store at {db}; job logs:\n{_job_logs(cluster, job_id)}"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("depthkd-tests")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`depthkd.job_id` = '{job_id}'"
    )
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["depthkd.job_id"] == job_id
    for metric in ("acclimate/val/abs_rel", "distill/val/abs_rel"):
        assert metric in run.data.metrics, sorted(run.data.metrics)
        assert run.data.metrics[metric] > 0
    student = client.get_model_version_by_alias("depthkd-student", "challenger")
    assert int(student.version) == 1
    assert student.run_id == run.info.run_id
    teacher = client.get_model_version_by_alias("depthkd-acclimated-teacher", "newest")
    assert int(teacher.version) == 1
    assert (
        teacher.tags["student"]
        == load_config(REPO_ROOT / "configs" / "tiny.yaml").model.student.name
    )
