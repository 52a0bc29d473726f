"""One MLflow run per job, opened on the driver and continued by a resumed job.

The driver calls `open_job_run` with the job id (the Ray `RunConfig.name`): a job that is run again
to resume finds its run by the `depthkd.job_id` tag and continues it, so metrics, params and models
of all attempts land in one place. The returned `JobRun` is plain data; it crosses into Ray workers
as a dict (`to_dict()` / `from_dict()`), where rank 0 logs through `RunLogger`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from mlflow.entities import RunStatus, ViewType

from depthkd.errors import ConfigError
from depthkd.tracking.store import (
    artifact_root,
    client_for,
    ensure_experiment,
    tracking_uri,
    uses_server_artifacts,
)

JOB_ID_TAG = "depthkd.job_id"
PARENT_RUN_TAG = "mlflow.parentRunId"  # how the MLflow UI nests runs
# Job ids go into a search filter between single quotes; keep them to characters that need no
# escaping there (Ray run names are usually like this anyway).
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*$")

RunEndStatus = Literal["FINISHED", "FAILED", "KILLED"]


@dataclass(frozen=True)
class JobRun:
    """The MLflow run of one job, as plain data that pickles and crosses into Ray workers.

    Attributes:
        tracking_uri: absolute tracking URI resolved on the driver.
        experiment_id: experiment holding the run.
        run_id: the run.
        resumed: True when `open_job_run` found an existing run for the job id.
    """

    tracking_uri: str
    experiment_id: str
    run_id: str
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The run as a JSON-able dict for `train_loop_config`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRun:
        """The run from `to_dict()` output.

        Raises:
            ConfigError: a key is missing or unknown.
        """
        names = {f.name for f in fields(cls)}
        required = names - {"resumed"}
        if missing := sorted(required - data.keys()):
            raise ConfigError(f"job run is missing {', '.join(missing)}: {dict(data)}")
        if unknown := sorted(data.keys() - names):
            raise ConfigError(f"job run has unknown keys {', '.join(unknown)}: {dict(data)}")
        return cls(
            tracking_uri=str(data["tracking_uri"]),
            experiment_id=str(data["experiment_id"]),
            run_id=str(data["run_id"]),
            resumed=bool(data.get("resumed", False)),
        )


def ensure_job_experiment(experiment: str, *, home: Path | None = None) -> str:
    """The id of `experiment` in the current store, created if missing.

    On the local default store its artifacts go to `artifact_root(home)`. Create the experiment
    this way before putting a local server in front of the store (a sweep): an experiment created
    through the server would get proxied `mlflow-artifacts:` locations that the plain SQLite store
    cannot resolve later.
    """
    uri = tracking_uri(home)
    root = None if uses_server_artifacts(uri) else artifact_root(home)
    return ensure_experiment(client_for(uri), experiment, root)


def open_job_run(
    *,
    experiment: str,
    job_id: str,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    home: Path | None = None,
) -> JobRun:
    """The run of job `job_id` in `experiment`: the existing one (status back to RUNNING) or new.

    Call this on the driver, never in a worker, so all ranks and all attempts share one run.

    Args:
        experiment: experiment name, created if missing.
        job_id: the job's id (Ray `RunConfig.name`); also the new run's name.
        tags: extra run tags, (re)set on new and resumed runs alike.
        parent_run_id: makes this a nested run of that one (a Tune trial under its sweep).
        home: local state root for the default store; default `depthkd_home()`.

    Raises:
        ConfigError: `job_id` has characters a run search cannot match, or the experiment is
            deleted.
    """
    if not _JOB_ID.match(job_id):
        raise ConfigError(
            f"job id {job_id!r} is not usable as an MLflow run key",
            hint="use letters, digits and . _ : @ + - (starting with a letter or digit)",
        )
    uri = tracking_uri(home)
    client = client_for(uri)
    experiment_id = ensure_job_experiment(experiment, home=home)
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id is not None:
        all_tags[PARENT_RUN_TAG] = parent_run_id
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{JOB_ID_TAG}` = '{job_id}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    # Exact match again in Python; the oldest run wins if a race ever created two.
    matches = [r for r in existing if r.data.tags.get(JOB_ID_TAG) == job_id]
    if matches:
        run_id = matches[0].info.run_id
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        for key, value in all_tags.items():
            client.set_tag(run_id, key, value)
        return JobRun(uri, experiment_id, run_id, resumed=True)
    run = client.create_run(experiment_id, run_name=job_id, tags={**all_tags, JOB_ID_TAG: job_id})
    return JobRun(uri, experiment_id, run.info.run_id, resumed=False)


def finish_job_run(run: JobRun, status: RunEndStatus = "FINISHED") -> None:
    """Marks the job's run as ended with `status` (FINISHED, FAILED or KILLED)."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"run end status must be FINISHED, FAILED or KILLED, not {status!r}")
    client_for(run.tracking_uri).set_terminated(run.run_id, status=status)


def child_runs(parent: JobRun) -> dict[str, dict[str, str]]:
    """The nested runs of `parent` by job id: `{job_id: {"run_id": ..., "status": ...}}`."""
    client = client_for(parent.tracking_uri)
    runs = client.search_runs(
        [parent.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent.run_id}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=10_000,
    )
    return {
        r.data.tags.get(JOB_ID_TAG, r.info.run_id): {
            "run_id": r.info.run_id,
            "status": r.info.status,
        }
        for r in runs
    }


def end_child_run(parent: JobRun, job_id: str, status: RunEndStatus) -> bool:
    """Ends the nested run of `parent` for `job_id` with `status` if it is still RUNNING (its
    process was ended from outside, e.g. a trial that Tune stopped); a run that already ended is
    left untouched. Returns whether it ended the run."""
    child = child_runs(parent).get(job_id)
    if child is None or child["status"] != "RUNNING":
        return False
    finish_job_run(replace(parent, run_id=child["run_id"], resumed=False), status)
    return True


def latest_metrics(run: JobRun, *, prefix: str) -> dict[str, float]:
    """The latest value of each metric of `run` whose key starts with `prefix` (prefix removed)."""
    metrics = client_for(run.tracking_uri).get_run(run.run_id).data.metrics
    return {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}


def job_metric_history(tracking_uri: str, experiment: str, job_id: str, key: str) -> list[float]:
    """The values of metric `key` of job `job_id`'s run, in step order (a benchmark's reading)."""
    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = (
        client.search_runs([found.experiment_id], filter_string=f"tags.`{JOB_ID_TAG}` = '{job_id}'")
        if found
        else []
    )
    if len(runs) != 1:
        raise ConfigError(f"{experiment!r} holds {len(runs)} runs of job {job_id!r}, not one")
    history = client.get_metric_history(runs[0].info.run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]
