"""A pass logged as an MLflow run with its pseudo-label set as a dataset input, and the set
logged as an input of another (a student's training) run."""

from __future__ import annotations

import mlflow
import pytest

from depthkd.data.shards import manifest_fingerprint, read_manifest
from depthkd.tracking.datasets import log_dataset_input, log_pseudo_label_run
from depthkd.tracking.runs import open_job_run
from depthkd.tracking.store import tracking_uri
from tests.pseudolabel.conftest import Labelled

pytestmark = pytest.mark.ray  # the labelled set comes from a Ray pass


def _inputs(run_id: str) -> list:
    mlflow.set_tracking_uri(tracking_uri())
    try:
        return mlflow.get_run(run_id).inputs.dataset_inputs
    finally:
        mlflow.set_tracking_uri(None)


def test_pass_run_logs_its_output_as_a_dataset(labelled: Labelled, home) -> None:
    report = labelled.report
    run_id = log_pseudo_label_run(
        labelled.out,
        params={"split": report.split, "batch_size": report.batch_size},
        metrics={"frames": report.frames, "frames_per_s": report.frames_per_s},
        teacher=report.teacher,
    )
    (logged,) = _inputs(run_id)
    assert logged.dataset.name == "out"
    assert logged.dataset.digest == report.fingerprint
    assert report.fingerprint == manifest_fingerprint(read_manifest(labelled.out))
    assert labelled.out.as_uri() in logged.dataset.source
    tags = {t.key: t.value for t in logged.tags}
    assert tags["mlflow.data.context"] == "pseudo-labels"
    assert tags["depthkd.teacher_sha256"] == report.teacher["sha256"]
    run = mlflow.MlflowClient(tracking_uri()).get_run(run_id)
    assert run.data.params["teacher.sha256"] == report.teacher["sha256"]
    assert run.data.metrics["frames"] == 9 and run.info.status == "FINISHED"


def test_a_training_run_records_the_set_as_its_input(labelled: Labelled, home) -> None:
    student = open_job_run(experiment="students", job_id="student-1")
    digest = log_dataset_input(student.run_id, labelled.out, name="pl-unlabeled")
    (logged,) = _inputs(student.run_id)
    assert (logged.dataset.name, logged.dataset.digest) == ("pl-unlabeled", digest)
    assert digest == labelled.report.fingerprint
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "training"
