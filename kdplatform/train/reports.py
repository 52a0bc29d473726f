"""The held-out test report of a job: every exported model (and a given teacher) evaluated once on
the test split, logged as `<stage>/test/<metric>` and printed; never used to select."""

from __future__ import annotations

from pathlib import Path

from depthkd.console import Log
from depthkd.eval.runner import evaluate_split
from depthkd.metric_names import HEADLINE_METRICS
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model
from depthkd.tracking.logger import RunLogger
from depthkd.train.job_context import JobContext
from depthkd.train.launcher import StageResult


def split_metrics(metrics: dict[str, float], split: str) -> dict[str, float]:
    """`{metric: value}` of the `<split>/<metric>` entries of a stage's report."""
    prefix = f"{split}/"
    return {k.removeprefix(prefix): float(v) for k, v in metrics.items() if k.startswith(prefix)}


def test_report(
    ctx: JobContext, result: StageResult, logger: RunLogger, log: Log
) -> dict[str, float]:
    """The held-out test metrics of the stage's first exported model (after training: a report,
    not a selection); logged as `<stage>/test/<metric>` at the stage's last step."""
    role, path = next(iter(result.exports.items()))
    step = int(result.metrics.get("step", 0))
    return _report_model(ctx, result.stage, role, path, step, logger, log)


def _report_model(
    ctx: JobContext,
    stage: str,
    role: str,
    path: Path,
    step: int,
    logger: RunLogger,
    log: Log,
) -> dict[str, float]:
    cfg = ctx.cfg
    split = cfg.data.test_split
    sums = evaluate_split(
        load_model(path), ctx.shards, split, cfg.data, ctx.profile.protocol, tta=cfg.eval.tta
    )
    means = sums.means()
    logger.log_metrics({f"{stage}/{split}/{k}": v for k, v in means.items()}, step)
    logger.flush()
    log(
        f"[{stage}] {role} on {split} ({ctx.profile.protocol}, {sums.n_images} images): "
        + ", ".join(f"{k} {means[k]:.4f}" for k in HEADLINE_METRICS)
    )
    return means


# a teacher the config gives (not trained by the job) → the stage whose report it stands in for
GIVEN_TEACHERS = {ModelKind.TEACHER: "teacher", ModelKind.ACCLIMATED_TEACHER: "acclimate"}


def report_given_teachers(ctx: JobContext, logger: RunLogger, log: Log) -> None:
    """Test metrics of the teachers the config gives, so that the gap between student and
    teacher is measured in every job, on the same split and protocol."""
    for kind, stage in GIVEN_TEACHERS.items():
        if kind in ctx.inputs and stage not in ctx.stages and ctx.has_test_split:
            ctx.test_metrics[stage] = _report_model(
                ctx, stage, "teacher (given)", ctx.inputs[kind], 0, logger, log
            )
