"""One sweep trial: a Tune function trainable that builds and fits its stage's (distill or
cross_distill) `TorchTrainer` (the Ray 2.60 pattern: `Tuner(trainer)` is gone) and forwards its
evaluations.

The trial's training run is the nested MLflow child of the sweep's parent run, found again by its
job id when a restored sweep continues the trial; its Ray Train run (`train-<trial id>`) resumes
from the trial's own latest checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback

from depthkd.config.loader import with_values
from depthkd.config.schema import ExperimentConfig
from depthkd.tracking.runs import JobRun, end_child_run, open_job_run
from depthkd.train.launcher import run_stage
from depthkd.train.profile import DataProfile
from depthkd.tune.status import ERROR, RUN_END, trial_status

TRIAL_TAG = "depthkd.trial"
SWEEP_TAG = "depthkd.sweep"


@dataclass(frozen=True)
class TrialContext:
    """What every trial shares, resolved once on the sweep driver (plain data for Ray)."""

    sweep: str
    stage: str  # distill | cross_distill
    base: dict[str, Any]  # the base experiment, `model_dump(mode="json")`
    shards: str
    profile: dict[str, Any]
    teachers: dict[str, str]  # student name → acclimated teacher checkpoint (distill only)
    tracking_uri: str
    parent_run_id: str
    trial_root: str  # trial exports under <trial_root>/<trial id>
    metric: str
    unlabeled: str | None = None  # the shard set every trial mixes in (labelled once, if need be)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_job_id(sweep: str, trial_id: str) -> str:
    """The job id of a trial: its MLflow run key and its experiment `name`."""
    return f"{sweep}-{trial_id}"


def trial_run_name(trial_id: str) -> str:
    """The Ray Train run of a trial (in `train.storage`): the resume key of its checkpoints."""
    return f"train-{trial_id}"


def trial_config(base: ExperimentConfig, draw: dict[str, Any], *, name: str) -> ExperimentConfig:
    """The base experiment with a trial's drawn values (dotted keys) and its own name."""
    return with_values(base, {**draw, "name": name})


class EvaluationReports(TuneReportCallback):
    """Forwards to Tune the reports that carry the sweep metric: every evaluation.

    Checkpoint-only reports (no evaluation at that step) stay in Ray Train; Tune would reject a
    result without the metric, and schedulers only need evaluation points.
    """

    def __init__(self, metric: str) -> None:
        super().__init__()
        self.metric = metric

    def after_report(self, run_context: Any, metrics: list[dict], checkpoint: Any) -> None:
        if metrics and self.metric in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)


def run_trial(draw: dict[str, Any], *, context: dict[str, Any]) -> None:
    """The trainable: the distill stage of the base experiment with `draw` applied."""
    ctx = TrialContext(**context)
    trial_id = tune.get_context().get_trial_id()
    # trial processes log through the sweep's server, never straight into SQLite
    os.environ["MLFLOW_TRACKING_URI"] = ctx.tracking_uri
    base = ExperimentConfig.model_validate(ctx.base)
    cfg = trial_config(base, draw, name=trial_job_id(ctx.sweep, trial_id))
    run = open_job_run(
        experiment=cfg.tracking.experiment,
        job_id=cfg.name,
        tags={SWEEP_TAG: ctx.sweep, TRIAL_TAG: trial_id, "depthkd.job": ctx.stage},
        parent_run_id=ctx.parent_run_id,
    )
    teacher = ctx.teachers.get(cfg.model.student.name)
    run_stage(
        cfg,
        ctx.stage,
        shards=ctx.shards,
        profile=DataProfile(**ctx.profile),
        run=run,
        inputs={"teacher": Path(teacher)} if teacher else None,
        out_dir=Path(ctx.trial_root) / trial_id,
        run_name=trial_run_name(trial_id),
        callbacks=[EvaluationReports(ctx.metric)],
        unlabeled=ctx.unlabeled,
    )


class TrialRunEnder(Callback):
    """Ends a trial's MLflow run on the sweep driver as soon as Tune ends the trial, with the
    status its record will show (`tune.status.trial_status`): FINISHED, KILLED (stopped by the
    scheduler) or FAILED.

    The driver, not the trial, ends every run: Tune kills a trial's process at its last report or
    when the scheduler stops it, and a trial that ASHA stops may still reach its last step before
    its process goes. Trials that Ctrl-C stopped are not ended here; their runs stay RUNNING and a
    resumed sweep continues them.
    """

    def __init__(self, parent: JobRun, sweep: str, max_rounds: int) -> None:
        self.parent, self.sweep, self.max_rounds = parent, sweep, max_rounds

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rounds = (trial.last_result or {}).get("eval_round", 0)
        self._end(trial, trial_status(rounds, self.max_rounds, failed=False))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, ERROR)

    def _end(self, trial: Any, status: str) -> None:
        end_child_run(self.parent, trial_job_id(self.sweep, trial.trial_id), RUN_END[status])
