"""Tracking and registry on MLflow: one run per job, rank-0 logging with exactly-once metrics
(depth image grids among them), and depth models logged, registered under aliases and loaded back.

Every MLflow call of depthkd lives in this package; the rest of the code sees `JobRun` (plain
data), `RunLogger` and the functions below.
"""

from depthkd.tracking import _telemetry_off  # noqa: F401  (first: before MLflow loads)
from depthkd.tracking.logger import RunLogger
from depthkd.tracking.model_registry import (
    load_registered_model,
    log_depth_model,
    register_model,
    resolve_model_reference,
)
from depthkd.tracking.runs import JobRun, finish_job_run, open_job_run
from depthkd.tracking.store import artifact_root, ensure_experiment, tracking_uri

__all__ = [
    "JobRun",
    "RunLogger",
    "artifact_root",
    "ensure_experiment",
    "finish_job_run",
    "load_registered_model",
    "log_depth_model",
    "open_job_run",
    "register_model",
    "resolve_model_reference",
    "tracking_uri",
]
