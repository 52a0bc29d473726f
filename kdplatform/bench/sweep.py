"""Sweep benchmarks whose figures go into closing notes (`depthkd bench asha|trial-overhead`).

* `asha`: the same configurations (random search, one seed) run twice back to back, once under
  ASHA and once all to the full budget, sharing one teacher: evaluation rounds spent and the best
  val metric of each.
* `trial-overhead`: one trial of a sweep against the same job run alone (`depthkd distill` with
  the trial's config and the same teacher), in one process, wall time of each.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from depthkd.config.loader import with_values
from depthkd.console import Log
from depthkd.errors import ConfigError
from depthkd.tune.spec import SweepConfig
from depthkd.tune.sweep import SweepOutcome, base_experiment, run_sweep


def _named(spec: SweepConfig, name: str, **update: object) -> SweepConfig:
    return spec.model_copy(
        update={"name": name, "register_best": False, "promote": False, **update}
    )


def _with_teacher(spec: SweepConfig, teacher: str) -> SweepConfig:
    base = spec.base.model_copy(
        update={"overrides": [*spec.base.overrides, f"distill.teacher={teacher}"]}
    )
    return spec.model_copy(update={"base": base})


def _teacher_of(outcome: SweepOutcome) -> str:
    import json

    from depthkd.tune.teachers import DEPTH_TEACHER, TEACHERS_FILE

    known = json.loads((outcome.directory / TEACHERS_FILE).read_text())
    known.pop(DEPTH_TEACHER, None)  # the acclimated one is shared, not its depth teacher
    if len(known) != 1:
        raise ConfigError("the sweep benchmarks share one teacher: do not search the student")
    (entry,) = known.values()
    return entry["path"]


@dataclass
class AshaBenchResult:
    """Both runs of the same configurations: rounds spent, best val metric, the tables."""

    metric: str
    configurations: int
    max_rounds: int
    asha_rounds: int
    full_rounds: int
    asha_best: float
    full_best: float
    asha_table: str
    full_table: str
    seconds: dict[str, float]

    @property
    def budget_ratio(self) -> float:
        return self.asha_rounds / self.full_rounds

    @property
    def best_gap(self) -> float:
        """Relative distance of ASHA's best from the full-budget best (> 0: ASHA worse, min)."""
        return self.asha_best / self.full_best - 1

    def to_dict(self) -> dict:
        return {**asdict(self), "budget_ratio": self.budget_ratio, "best_gap": self.best_gap}


def run_asha_benchmark(spec: SweepConfig, *, tag: str, log: Log = print) -> AshaBenchResult:
    """ASHA, then the full budget, on the same random draws (searcher seed) and teacher."""
    from depthkd.tune import results
    from depthkd.tune.space import rounds_per_trial

    if spec.searcher.type == "optuna":  # TPE adapts to results: the two runs would differ
        spec = spec.model_copy(
            update={"searcher": spec.searcher.model_copy(update={"type": "random"})}
        )
    asha_spec = _named(spec, f"{spec.name}-asha-{tag}")
    asha_spec = asha_spec.model_copy(
        update={"scheduler": spec.scheduler.model_copy(update={"type": "asha"})}
    )
    started = time.perf_counter()
    asha = run_sweep(asha_spec, log=log, progress=False)
    asha_seconds = time.perf_counter() - started
    full_spec = _with_teacher(_named(spec, f"{spec.name}-full-{tag}"), _teacher_of(asha))
    full_spec = full_spec.model_copy(
        update={"scheduler": spec.scheduler.model_copy(update={"type": "none"})}
    )
    started = time.perf_counter()
    full = run_sweep(full_spec, log=log, progress=False)
    full_seconds = time.perf_counter() - started
    draws = [sorted(map(str, r.params.items())) for r in asha.records]
    if sorted(draws) != sorted(sorted(map(str, r.params.items())) for r in full.records):
        raise RuntimeError("the ASHA and full-budget runs drew different configurations")
    mode = spec.metric.mode
    return AshaBenchResult(
        metric=spec.metric.name,
        configurations=len(asha.records),
        max_rounds=rounds_per_trial(spec, base_experiment(spec)),
        asha_rounds=sum(r.rounds for r in asha.records),
        full_rounds=sum(r.rounds for r in full.records),
        asha_best=results.best_record(asha.records, mode).metric,
        full_best=results.best_record(full.records, mode).metric,
        asha_table=results.format_table(asha.records, spec),
        full_table=results.format_table(full.records, spec),
        seconds={"asha": asha_seconds, "full": full_seconds},
    )


@dataclass
class OverheadResult:
    """Wall times (seconds) of one sweep trial and of the same job run alone.

    `trial_seconds` is the trial from its start to its last report (Tune's `time_total_s`) and
    `alone_stage_seconds` the same stage run alone (`run_stage`: worker start-up to export): the
    per-trial overhead. The whole one-trial sweep and the whole job are given too; the sweep's
    own fixed costs (tracking server, parent run, plots) are paid once per sweep.
    """

    trial_seconds: float
    sweep_seconds: float
    alone_stage_seconds: list[float]
    alone_seconds: list[float]

    @property
    def overhead(self) -> float:
        return self.trial_seconds / statistics.mean(self.alone_stage_seconds) - 1

    def to_dict(self) -> dict:
        return {**asdict(self), "overhead": self.overhead}


def run_overhead_benchmark(spec: SweepConfig, *, tag: str, log: Log = print) -> OverheadResult:
    """The job alone, a one-trial sweep of the same config, the job alone again: one process,
    one Ray, one teacher (acclimated by a first one-trial sweep that is not timed)."""
    from depthkd.train.jobs import prepare_job, run_job
    from depthkd.tune.results import best_experiment
    from depthkd.tune.teachers import SweepTeacher

    one = {"num_samples": 1, "max_concurrent_trials": 1}
    warm = run_sweep(_named(spec, f"{spec.name}-warm-{tag}", **one), log=log, progress=False)
    teacher = _teacher_of(warm)
    best = best_experiment(
        base_experiment(warm_spec := _named(spec, warm.name, **one)),
        warm.best,
        warm_spec,
        SweepTeacher(Path(teacher), "the warm-up sweep's"),
    )

    def alone(index: int) -> tuple[float, float]:
        # no registration: the timed sweep registers nothing either
        cfg = with_values(
            best, {"name": f"{spec.name}-alone{index}-{tag}", "tracking.register_models": False}
        )
        started = time.perf_counter()
        ctx = run_job(prepare_job(cfg, "distill", progress=False), log=log)
        return time.perf_counter() - started, ctx.results["distill"].seconds

    first = alone(0)
    timed = _with_teacher(_named(spec, f"{spec.name}-one-{tag}", **one), teacher)
    # the same draw as the warm-up sweep: same searcher seed, one sample
    started = time.perf_counter()
    outcome = run_sweep(timed, log=log, progress=False)
    sweep_seconds = time.perf_counter() - started
    second = alone(1)
    (trial,) = outcome.records
    return OverheadResult(
        trial_seconds=trial.seconds,
        sweep_seconds=sweep_seconds,
        alone_stage_seconds=[first[1], second[1]],
        alone_seconds=[first[0], second[0]],
    )
