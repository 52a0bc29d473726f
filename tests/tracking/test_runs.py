"""One MLflow run per job id, reused by a resumed job; JobRun crosses into workers as a dict."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from mlflow import MlflowClient

from depthkd.errors import ConfigError
from depthkd.tracking.runs import JOB_ID_TAG, JobRun, finish_job_run, open_job_run


def test_same_job_id_reuses_the_run_and_another_id_gets_a_new_one(home: Path) -> None:
    first = open_job_run(experiment="distill", job_id="job-a", tags={"stage": "distill"})
    assert not first.resumed
    client = MlflowClient(first.tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.run_name == "job-a"
    assert run.data.tags[JOB_ID_TAG] == "job-a" and run.data.tags["stage"] == "distill"

    finish_job_run(first, status="FAILED")
    assert client.get_run(first.run_id).info.status == "FAILED"
    again = open_job_run(experiment="distill", job_id="job-a")
    assert again.resumed and again.run_id == first.run_id
    assert again.experiment_id == first.experiment_id
    assert client.get_run(first.run_id).info.status == "RUNNING"

    other = open_job_run(experiment="distill", job_id="job-b")
    assert not other.resumed and other.run_id != first.run_id
    # The same job id in another experiment is another job.
    elsewhere = open_job_run(experiment="acclimate", job_id="job-a")
    assert elsewhere.run_id != first.run_id and not elsewhere.resumed


def test_nested_run_under_a_parent(home: Path) -> None:
    sweep = open_job_run(experiment="tune", job_id="sweep-1")
    trial = open_job_run(experiment="tune", job_id="sweep-1.trial-0", parent_run_id=sweep.run_id)
    tags = MlflowClient(trial.tracking_uri).get_run(trial.run_id).data.tags
    assert tags["mlflow.parentRunId"] == sweep.run_id


def test_deleted_run_is_not_resumed(home: Path) -> None:
    first = open_job_run(experiment="distill", job_id="job-a")
    MlflowClient(first.tracking_uri).delete_run(first.run_id)
    again = open_job_run(experiment="distill", job_id="job-a")
    assert not again.resumed and again.run_id != first.run_id


def test_job_run_round_trips_as_dict_and_pickle() -> None:
    run = JobRun("sqlite:////x/mlflow.db", "3", "a" * 32, resumed=True)
    assert JobRun.from_dict(run.to_dict()) == run
    assert pickle.loads(pickle.dumps(run)) == run
    assert all(isinstance(v, str | bool) for v in run.to_dict().values())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"tracking_uri": "x", "experiment_id": "1"}, "missing run_id"),
        ({"tracking_uri": "x", "experiment_id": "1", "run_id": "r", "extra": 1}, "unknown keys"),
    ],
)
def test_job_run_from_bad_dict(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        JobRun.from_dict(data)


def test_job_id_with_quotes_is_rejected(home: Path) -> None:
    with pytest.raises(ConfigError, match="job id"):
        open_job_run(experiment="distill", job_id="it's")


def test_finish_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="FINISHED"):
        finish_job_run(JobRun("x", "1", "r"), status="DONE")  # type: ignore[arg-type]
