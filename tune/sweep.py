"""The sweep driver: `depthkd sweep --config configs/sweep_demo.yaml` (= `python tune/sweep.py`).

In order, everything checkable is checked before Ray starts (the sweep YAML, the base experiment,
every searched key at the ends of its range, the metric's split); then the data, one MLflow
parent run, the teacher (acclimated once per sweep, or loaded), the trials on Ray Tune (ASHA in
evaluation rounds; random, grid or Optuna TPE), and at the end the results table, the plots, the
best trial's config (`best.yaml`) and the best student registered as `challenger`.

Running the same sweep name again restores it (`Tuner.restore`): finished trials are not rerun
and keep their MLflow runs; unfinished ones continue from their own checkpoints.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdplatform.config.loader import dump_config, load_config, save_config, with_values
from kdplatform.config.schema import ExperimentConfig, depthkd_home
from kdplatform.errors import ConfigError
from kdplatform.tracking.server import local_tracking_server
from tune.spec import STUDENT_KEY, SweepConfig

Log = Callable[[str], None]


@dataclass
class SweepOutcome:
    """What a finished (or interrupted) sweep produced."""

    name: str
    directory: Path
    interrupted: bool = False
    records: list = field(default_factory=list)  # tune.plots.TrialRecord
    best: Any = None  # the best completed TrialRecord
    best_config: Path | None = None
    registered: str | None = None
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    seconds: float = 0.0


def sweep_dir(name: str) -> Path:
    """`$DEPTHKD_HOME/sweeps/<name>`: Tune state, trial runs, teachers, results."""
    return depthkd_home() / "sweeps" / name


def load_sweep(path: Path, overrides: list[str] = ()) -> SweepConfig:  # type: ignore[assignment]
    """The sweep YAML with dotted overrides (`num_samples=4`), validated; the base experiment's
    path is taken relative to the sweep file."""
    spec = load_config(path, overrides, model=SweepConfig)
    config = spec.base.config
    if config is not None and not config.is_absolute():
        base = spec.base.model_copy(update={"config": (path.parent / config).resolve()})
        spec = spec.model_copy(update={"base": base})
    return spec


def base_experiment(spec: SweepConfig) -> ExperimentConfig:
    """The base experiment of every trial, with the trials' resources and storage applied, and
    each searched key checked at the ends of its range (a bad key fails here, not in a trial).

    Raises:
        ConfigError: the base config, a searched key or the metric is wrong.
    """
    base = load_config(spec.base.config, spec.base.overrides)
    resources = spec.resources
    base = with_values(
        base,
        {
            "train.workers": resources.workers,
            "train.cpus_per_worker": resources.cpus_per_worker,
            "train.gpus_per_worker": resources.gpus_per_worker or 1.0,
            "train.use_gpu": resources.gpus_per_worker > 0,
            "train.storage": str(sweep_dir(spec.name) / "train"),
        },
    )
    split = spec.metric.split
    if split == base.data.test_split and not base.allow_test_selection:
        raise ConfigError(
            f"sweep metric {spec.metric.name!r} is on the test split: sweeps select on "
            f"{base.data.eval_split!r}",
            hint="use val/<metric>, or set allow_test_selection: true in the base experiment",
        )
    if split != base.data.eval_split:
        raise ConfigError(
            f"sweep metric {spec.metric.name!r}: trials evaluate on "
            f"{base.data.eval_split!r} (data.eval_split), so the metric must be "
            f"{base.data.eval_split}/<metric>"
        )
    for key, dist in spec.space.items():
        for value in _extremes(dist):
            with_values(base, {key: value})
    return base


def _extremes(dist: Any) -> list[Any]:
    if dist.type in ("choice", "grid"):
        return list(dist.values)
    if dist.type == "randint":
        return [dist.low, dist.high - 1]
    return [dist.low, dist.high]


def student_names(spec: SweepConfig, base: ExperimentConfig) -> list[str]:
    """Every student a trial can draw: one teacher is acclimated for each."""
    if STUDENT_KEY in spec.space:
        return [str(v) for v in spec.space[STUDENT_KEY].values]  # type: ignore[union-attr]
    return [base.model.student.name]


def run_sweep(spec: SweepConfig, *, log: Log = print, progress: bool = True) -> SweepOutcome:
    """Runs (or resumes) the sweep to the end; see the module docstring for the order."""
    from ray import tune

    from kdplatform.tracking.logger import RunLogger
    from kdplatform.tracking.runs import end_running_children, finish_job_run, open_job_run
    from kdplatform.train.jobs import resolve_shards
    from kdplatform.train.launcher import ensure_ray
    from kdplatform.train.profile import data_profile
    from tune import results as sweep_results
    from tune.console import SweepConsole
    from tune.space import build_tuner
    from tune.teachers import ensure_teachers, student_costs
    from tune.trial import TrialContext, run_trial

    started = time.perf_counter()
    base = base_experiment(spec)
    students = student_names(spec, base)
    directory = sweep_dir(spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    save_config(spec, directory / "sweep.yaml")
    shards = resolve_shards(base, progress=progress)
    profile = data_profile(base, shards)
    costs = student_costs(base, students) if STUDENT_KEY in spec.space else {}
    log(
        f"sweep {spec.name!r}: {len(spec.space)} searched keys, {spec.num_samples} samples, "
        f"metric {spec.metric.name} ({spec.metric.mode}, {profile.protocol})"
    )
    log(f"ray: {ensure_ray(log_to_driver=False)}")
    outcome = SweepOutcome(name=spec.name, directory=directory)
    with local_tracking_server(depthkd_home(), log_file=directory / "mlflow-server.log") as uri:
        outcome.tracking_uri = uri
        log(f"mlflow: {uri}")
        parent = open_job_run(
            experiment=base.tracking.experiment,
            job_id=f"sweep-{spec.name}",
            tags={"depthkd.job": "sweep", "depthkd.sweep": spec.name},
        )
        outcome.parent_run_id = parent.run_id
        with RunLogger(parent, system_metrics_interval=None) as parent_log:
            parent_log.log_text(dump_config(spec), "sweep.yaml")
            parent_log.log_params(
                {
                    "space": {k: d.model_dump() for k, d in spec.space.items()},
                    "metric": spec.metric.name,
                }
            )
        teachers = ensure_teachers(spec.name, base, students, directory, log=log, progress=progress)
        concurrency = max_concurrent_trials(spec)
        log(f"trials: up to {concurrency} at once, each {spec.resources.cpus:g} CPU")
        context = TrialContext(
            sweep=spec.name,
            base=base.model_dump(mode="json"),
            shards=str(shards),
            profile=profile.to_dict(),
            teachers={name: str(t.path) for name, t in teachers.items()},
            tracking_uri=uri,
            parent_run_id=parent.run_id,
            trial_root=str(directory / "trials"),
            metric=spec.metric.name,
        )
        console = SweepConsole(spec.metric.name, spec.searched_keys())
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, context=context.to_dict()),
            {"CPU": spec.resources.driver_cpus},
        )
        tuner, restored = build_tuner(
            spec, base, trainable, storage=directory, concurrency=concurrency, callbacks=[console]
        )
        log("resuming the sweep: finished trials are kept" if restored else "starting trials")
        grid = tuner.fit()
        outcome.interrupted = console.interrupted
        if outcome.interrupted:
            log(f"sweep interrupted; run the same command again to resume ({directory})")
            finish_job_run(parent, status="KILLED")
            outcome.seconds = time.perf_counter() - started
            return outcome
        max_rounds = rounds_per_trial(base)
        outcome.records = sweep_results.trial_records(
            grid, spec, parent=parent, max_rounds=max_rounds, costs=costs
        )
        # Tune ends a trial's process at its last report (or when ASHA stops it): its run stays
        # RUNNING until the driver ends it
        end_running_children(parent, sweep_results.run_statuses(outcome.records, spec.name))
        log(sweep_results.format_table(outcome.records, spec))
        sweep_results.write_outputs(
            outcome.records, spec, directory, parent=parent, max_rounds=max_rounds, log=log
        )
        outcome.best = sweep_results.best_record(outcome.records, spec.metric.mode)
        if outcome.best is not None:
            teacher = teachers[_student_of(outcome.best, base)]
            outcome.best_config = sweep_results.write_best_config(
                base, outcome.best, spec, teacher.path, directory / "best.yaml"
            )
            log(
                f"best trial {outcome.best.trial_id}: {spec.metric.name} "
                f"{outcome.best.metric:.4f}; config {outcome.best_config}"
            )
            if spec.register_best and base.tracking.register_models:
                outcome.registered = sweep_results.register_best(
                    outcome.best,
                    spec,
                    base,
                    shards,
                    profile,
                    teacher,
                    directory,
                    parent=parent,
                    log=log,
                )
        finish_job_run(parent, status="FINISHED")
    outcome.seconds = time.perf_counter() - started
    log(f"sweep done in {outcome.seconds:.0f} s; results in {directory}")
    return outcome


def _student_of(record: Any, base: ExperimentConfig) -> str:
    return str(record.params.get(STUDENT_KEY, base.model.student.name))


def rounds_per_trial(base: ExperimentConfig) -> int:
    """Evaluation rounds of a trial that runs to the full budget (ASHA's max_t)."""
    return math.ceil(base.distill.steps / base.train.eval_every)


def max_concurrent_trials(spec: SweepConfig) -> int:
    """As many trials as the cluster's CPUs (and GPUs) fit, at most `max_concurrent_trials`.

    Raises:
        ConfigError: one trial needs more than the cluster has.
    """
    import ray

    available = ray.cluster_resources()
    cpus, gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    need = spec.resources
    fits = math.floor(cpus / need.cpus + 1e-9)
    if need.gpus > 0:
        fits = min(fits, math.floor(gpus / need.gpus + 1e-9))
    if fits < 1:
        raise ConfigError(
            f"one trial needs {need.cpus:g} CPU and {need.gpus:g} GPU; the cluster has "
            f"{cpus:g} CPU and {gpus:g} GPU",
            hint="lower resources.cpus_per_worker / workers, or use a bigger cluster",
        )
    return min(fits, spec.max_concurrent_trials or fits)


def main(argv: list[str] | None = None) -> int:
    """`python tune/sweep.py --config configs/sweep_demo.yaml [key=value ...]`."""
    from kdplatform.cli.main import main as cli_main

    return cli_main(["sweep", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
