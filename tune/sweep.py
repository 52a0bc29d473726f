"""The sweep driver: `depthkd sweep --config configs/sweep_demo.yaml`
(= `python pipelines/sweep.py`).

In order, everything checkable is checked before Ray starts (the sweep YAML, the base experiment,
every searched key at the ends of its range, the metric's split); then the data, one MLflow
parent run, the teacher (acclimated once per sweep, or loaded), the trials on Ray Tune (ASHA in
evaluation rounds; random, grid or Optuna TPE), and at the end the results table, the plots, the
best trial's config (`best.yaml`) and the best student registered as `challenger`.

Running the same sweep name again restores it (`Tuner.restore`): finished trials are not rerun
and keep their MLflow runs; unfinished ones continue from their own checkpoints.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depthkd import atomic
from depthkd.config.loader import dump_config, load_config, save_config, with_values
from depthkd.config.schema import ExperimentConfig, depthkd_home
from depthkd.console import Log
from depthkd.errors import ConfigError
from depthkd.storage import Location
from depthkd.tracking.server import local_tracking_server
from depthkd.tune.spec import STUDENT_KEY, SweepConfig

IDENTITY_FILE = "identity.json"
REGISTERED_FILE = "registered.json"


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
    promotion: str | None = None  # the gate's reason, when the sweep ends with it
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
    if base.train.storage is not None:
        raise ConfigError(
            f"the base experiment sets train.storage={base.train.storage}, but a sweep keeps its "
            f"trials' checkpoints in {sweep_dir(spec.name) / 'train'} (resume needs them there)",
            hint="drop train.storage from the sweep's base; on several nodes put $DEPTHKD_HOME "
            "on a shared volume and set train.shared_filesystem=true",
        )
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
    if base.model.teacher.source == "hf" and base.distill.teacher is None:
        raise ConfigError(
            "the base's teacher is a Hugging Face model (model.teacher.source: hf): sweeps do not "
            "read one themselves yet",
            hint="acclimate it once (`depthkd acclimate --config ...`) and give the sweep's base "
            "the result: distill.teacher=<its teacher.pt>",
        )
    if spec.stage == "distill" and base.distill.teacher and STUDENT_KEY in spec.space:
        raise ConfigError(
            f"the base names one teacher (distill.teacher={base.distill.teacher!r}) but the "
            f"sweep searches {STUDENT_KEY}: a teacher is acclimated for one student encoder",
            hint="drop distill.teacher (one teacher is then acclimated per student)",
        )
    for key, dist in spec.space.items():
        for value in _extremes(dist):
            with_values(base, {key: value})
    return base


def check_identity(spec: SweepConfig, base: ExperimentConfig, directory: Path) -> None:
    """Remembers what the sweep is on its first run; a later run (a resume) must be the same
    sweep: Tune restores its own search space, scheduler and budget, so a changed file would mix
    old trials with new settings.

    Raises:
        ConfigError: the sweep file or its base experiment changed since the first run.
    """
    identity = {
        "sweep": spec.model_dump(mode="json", exclude={"register_best"}),
        "base": base.model_dump(mode="json"),
    }
    path = directory / IDENTITY_FILE
    if not path.is_file():
        atomic.write_json(path, identity)
        return
    before = json.loads(path.read_text())
    changed = sorted(
        key
        for part in identity
        for key in _flat(identity[part], part) ^ _flat(before.get(part, {}), part)
    )
    if changed:
        keys = sorted({key.split("=", 1)[0] for key in changed})
        raise ConfigError(
            f"sweep {spec.name!r} was started with other settings ({', '.join(keys[:8])}); "
            "a rerun resumes it exactly as it was",
            hint=f"give the changed sweep a new name, or delete {directory} to start over",
        )


def _flat(data: Any, prefix: str) -> set[str]:
    if isinstance(data, dict):
        return {item for k, v in data.items() for item in _flat(v, f"{prefix}.{k}")}
    return {f"{prefix}={json.dumps(data, sort_keys=True)}"}


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
    from depthkd.raycluster import ensure_ray
    from depthkd.tracking.runs import ensure_job_experiment, finish_job_run, open_job_run
    from depthkd.tracking.store import tracking_uri
    from depthkd.train.jobs import resolve_shards
    from depthkd.train.launcher import check_cluster
    from depthkd.train.profile import data_profile
    from depthkd.tune.trial import SWEEP_TAG

    started = time.perf_counter()
    base = base_experiment(spec)
    directory = sweep_dir(spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    check_identity(spec, base, directory)
    save_config(spec, directory / "sweep.yaml")
    shards = resolve_shards(base, progress=progress)
    profile = data_profile(base, shards)
    log(
        f"sweep {spec.name!r}: {spec.stage}, {len(spec.space)} searched keys, "
        f"{spec.num_samples} samples, metric {spec.metric.name} ({spec.metric.mode}, "
        f"{profile.protocol})"
    )
    log(f"ray: {ensure_ray(log_to_driver=False)}")
    check_cluster(base, shards, tracking_uri())
    outcome = SweepOutcome(name=spec.name, directory=directory)
    ensure_job_experiment(base.tracking.experiment)  # before the server: local artifact root
    with local_tracking_server(depthkd_home(), log_file=directory / "mlflow-server.log") as uri:
        outcome.tracking_uri = uri
        log(f"mlflow: {uri}")
        parent = open_job_run(
            experiment=base.tracking.experiment,
            job_id=f"sweep-{spec.name}",
            tags={"depthkd.job": "sweep", SWEEP_TAG: spec.name},
        )
        outcome.parent_run_id = parent.run_id
        try:
            _run(spec, base, shards, profile, parent, outcome, log=log, progress=progress)
        except BaseException as exc:  # the parent run never stays RUNNING
            finish_job_run(
                parent, status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            )
            raise
        finish_job_run(parent, status="KILLED" if outcome.interrupted else "FINISHED")
    outcome.seconds = time.perf_counter() - started
    if outcome.interrupted:
        log(f"sweep interrupted; run the same command again to resume ({directory})")
    else:
        log(f"sweep done in {outcome.seconds:.0f} s; results in {directory}")
    return outcome


def _run(
    spec: SweepConfig,
    base: ExperimentConfig,
    shards: Location,
    profile: Any,
    parent: Any,
    outcome: SweepOutcome,
    *,
    log: Log,
    progress: bool,
) -> None:
    """The sweep inside its parent run: teachers, trials, results, registration."""
    from ray import tune

    from depthkd.tracking.datasets import log_dataset_input
    from depthkd.tracking.logger import RunLogger
    from depthkd.train.unlabeled import mixes_unlabeled, needs_labelling, unlabeled_frames
    from depthkd.tune import results as sweep_results
    from depthkd.tune.console import SweepConsole
    from depthkd.tune.space import build_tuner, fit_interruptibly, rounds_per_trial
    from depthkd.tune.teachers import (
        ensure_teachers,
        labelling_teacher,
        needs_acclimated_teacher,
        student_costs,
    )
    from depthkd.tune.trial import TrialContext, TrialRunEnder, run_trial

    directory = outcome.directory
    students = student_names(spec, base)
    costs = student_costs(base, students, shards, profile) if STUDENT_KEY in spec.space else {}
    with RunLogger(parent, system_metrics_interval=None) as parent_log:
        parent_log.log_text(dump_config(spec), "sweep.yaml")
        parent_log.log_params(
            {
                "space": {k: d.model_dump() for k, d in spec.space.items()},
                "metric": spec.metric.name,
                "stage": spec.stage,
            }
        )
    teachers = {}
    if spec.stage == "distill" and needs_acclimated_teacher(spec, base):
        teachers = ensure_teachers(spec.name, base, students, directory, log=log, progress=progress)
    unlabeled = None
    if mixes_unlabeled(base, spec.stage) or f"{spec.stage}.unlabeled_ratio" in spec.space:
        teacher = None
        if needs_labelling(base, spec.stage):
            teacher = labelling_teacher(
                spec.name, base, directory, teachers, log=log, progress=progress
            )
        unlabeled = unlabeled_frames(
            base, spec.stage, shards, teacher=teacher, out_dir=directory, log=log
        )
        log_dataset_input(parent.run_id, unlabeled, uri=outcome.tracking_uri)
    concurrency = max_concurrent_trials(spec)
    log(f"trials: up to {concurrency} at once, each {spec.resources.cpus:g} CPU")
    context = TrialContext(
        sweep=spec.name,
        stage=spec.stage,
        base=base.model_dump(mode="json"),
        shards=str(shards),
        profile=profile.to_dict(),
        teachers={name: str(t.path) for name, t in teachers.items()},
        tracking_uri=outcome.tracking_uri,
        parent_run_id=parent.run_id,
        trial_root=str(directory / "trials"),
        metric=spec.metric.name,
        unlabeled=None if unlabeled is None else str(unlabeled),
    )
    console = SweepConsole(spec.metric.name, spec.searched_keys())
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, context=context.to_dict()),
        {"CPU": spec.resources.driver_cpus},
    )
    max_rounds = rounds_per_trial(spec, base)
    callbacks = [console, TrialRunEnder(parent, spec.name, max_rounds)]
    tuner, restored = build_tuner(
        spec, base, trainable, storage=directory, concurrency=concurrency, callbacks=callbacks
    )
    log("resuming the sweep: finished trials are kept" if restored else "starting trials")
    grid, outcome.interrupted = fit_interruptibly(tuner)
    outcome.records = sweep_results.trial_records(grid, spec, max_rounds=max_rounds, costs=costs)
    if outcome.interrupted:
        return
    log(sweep_results.format_table(outcome.records, spec))
    sweep_results.write_outputs(
        outcome.records, spec, directory, parent=parent, max_rounds=max_rounds, log=log
    )
    outcome.best = sweep_results.best_record(outcome.records, spec.metric.mode)
    if outcome.best is None:
        log("no trial completed: nothing to register")
        return
    teacher = teachers.get(_student_of(outcome.best, base))
    outcome.best_config = sweep_results.write_best_config(
        base, outcome.best, spec, teacher, directory / "best.yaml"
    )
    log(
        f"best trial {outcome.best.trial_id}: {spec.metric.name} {outcome.best.metric:.4f}; "
        f"config {outcome.best_config}"
    )
    if not (spec.register_best and base.tracking.register_models):
        return
    marker = directory / REGISTERED_FILE
    done = json.loads(marker.read_text()) if marker.is_file() else {}
    name = base.tracking.student_model
    if done.get("trial") == outcome.best.trial_id:  # a rerun of a finished sweep
        outcome.registered = f"{name} v{done['version']} @challenger"
        log(f"already registered: {outcome.registered}")
        return
    version = sweep_results.register_best(
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
    outcome.registered = f"{name} v{version} @challenger"
    atomic.write_json(marker, {"trial": outcome.best.trial_id, "version": version})
    if spec.promote:
        from depthkd.promotion.gate import run_gate

        gate = run_gate(base, candidate=str(version), log=log)
        outcome.promotion = gate.decision.reason


def _student_of(record: Any, base: ExperimentConfig) -> str:
    return str(record.params.get(STUDENT_KEY, base.model.student.name))


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


if __name__ == "__main__":  # the script moved: tune is a library and imports no command line
    sys.exit("the sweep's script is `python pipelines/sweep.py --config ...` (or `depthkd sweep`)")
