"""Does distillation pay? The same student trained with and without KD on the same config.

Two jobs run on one experiment config, through the real job path (`prepare_job` → `run_job`: Ray
Train workers, MLflow tracking, registration):

* `<name>-nokd-<tag>`: the `supervised` job, the student alone with SILog;
* `<name>-kd-<tag>`: the `distill` job with no teacher given, so it acclimates the teacher first
  and then distils the student from it (SILog + attentive feature KD + response KD).

Both students see the same data stream (keyed by seed and epoch), the same number of steps, the
same optimizer and learning rate (`distill.optim` serves both); only the loss differs. The job
names carry a tag (default: the start time), so a rerun never resumes an earlier run. Figures are
the final val evaluation of each stage (`val/*` of its last report) under the config's protocol:
the acclimated teacher, the distilled student and the student without KD, plus wall times per
stage (each includes its worker group's start-up and the final evaluation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from kdplatform.config.loader import with_values
from kdplatform.config.schema import ExperimentConfig
from kdplatform.data.shards import split_entry
from kdplatform.train.jobs import JobContext, prepare_job, run_job, split_metrics


@dataclass
class KDBenchResult:
    """Final evaluation of teacher, KD student and no-KD student, and wall times (seconds)."""

    config: str
    protocol: str
    split: str
    eval_images: int
    steps: dict[str, int]
    teacher: dict[str, float]
    kd_student: dict[str, float]
    nokd_student: dict[str, float]
    seconds: dict[str, float]
    jobs: dict[str, str]

    @property
    def abs_rel_gain(self) -> float:
        """Relative abs_rel reduction of the KD student over the no-KD one (> 0: KD helps)."""
        return 1 - self.kd_student["abs_rel"] / self.nokd_student["abs_rel"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "abs_rel_gain": self.abs_rel_gain}


def _eval_metrics(ctx: JobContext, stage: str) -> dict[str, float]:
    return split_metrics(ctx.results[stage].metrics, ctx.cfg.data.eval_split)


def _eval_images(ctx: JobContext) -> int:
    """Frames each final evaluation covers (one rank reads the whole split, up to max_batches)."""
    cfg = ctx.cfg
    total = int(split_entry(ctx.shards, cfg.data.eval_split)["num_samples"])
    if cfg.eval.max_batches is None or cfg.train.workers > 1:
        return total
    return min(total, cfg.eval.max_batches * cfg.data.eval_batch_size)


def _run_timed(
    cfg: ExperimentConfig, job: str, *, progress: bool, log: Callable[[str], None]
) -> tuple[JobContext, dict[str, float]]:
    """Runs one job; returns it with each stage's wall time and the whole job's."""
    started = time.perf_counter()
    ctx = run_job(prepare_job(cfg, job, progress=progress), log=log)
    seconds = {stage: result.seconds for stage, result in ctx.results.items()}
    seconds["job"] = time.perf_counter() - started
    return ctx, seconds


def run_kd_benchmark(
    cfg: ExperimentConfig,
    *,
    tag: str,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> KDBenchResult:
    """Runs the no-KD job, then the KD job (acclimation + distillation), on the same config."""
    # the KD arm always acclimates its own teacher on this config
    distill = cfg.distill.model_copy(update={"teacher": None, "acclimate_first": True})
    cfg = cfg.model_copy(update={"distill": distill})
    # the baseline: the distilled student's steps and optimizer, its supervised term alone
    distill_section = cfg.distill.model_dump(mode="json")
    cfg = with_values(
        cfg,
        {
            "supervised.steps": cfg.distill.steps,
            "supervised.optim": distill_section["optim"],
            "supervised.losses": {"silog": cfg.distill.losses.get("silog", 1.0)},
            "supervised.loss": distill_section["loss"],
        },
    )
    nokd_cfg = cfg.model_copy(update={"name": f"{cfg.name}-nokd-{tag}"})
    kd_cfg = cfg.model_copy(update={"name": f"{cfg.name}-kd-{tag}"})

    log(f"== {nokd_cfg.name}: student without KD ({cfg.distill.steps} steps)")
    nokd, nokd_seconds = _run_timed(nokd_cfg, "supervised", progress=progress, log=log)
    log(
        f"== {kd_cfg.name}: teacher acclimation ({cfg.acclimate.steps} steps), then "
        f"distillation ({cfg.distill.steps} steps)"
    )
    kd, kd_seconds = _run_timed(kd_cfg, "distill", progress=progress, log=log)
    return KDBenchResult(
        config=cfg.name,
        protocol=kd.profile.protocol,
        split=cfg.data.eval_split,
        eval_images=_eval_images(kd),
        steps={"acclimate": cfg.acclimate.steps, "distill": cfg.distill.steps},
        teacher=_eval_metrics(kd, "acclimate"),
        kd_student=_eval_metrics(kd, "distill"),
        nokd_student=_eval_metrics(nokd, "supervised"),
        seconds={
            "supervised": nokd_seconds["supervised"],
            "acclimate": kd_seconds["acclimate"],
            "distill": kd_seconds["distill"],
            "nokd_job": nokd_seconds["job"],
            "kd_job": kd_seconds["job"],
        },
        jobs={"nokd": nokd_cfg.name, "kd": kd_cfg.name},
    )
