"""A finished sweep's results: one `TrialRecord` per trial, the printed table, the CSV and plots
logged to the parent run, the best trial's config and its student registered as `challenger`.

The best trial is the best *completed* trial by its final value of the sweep metric (on val): its
exported student is the model that metric describes. The test split is read once, after the
choice, for the report tags of the registered version.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from depthkd.config.loader import save_config, with_values
from depthkd.config.schema import ExperimentConfig
from depthkd.storage import Location
from depthkd.tracking.logger import RunLogger
from depthkd.tracking.runs import JobRun, child_runs, latest_metrics
from depthkd.tune import plots
from depthkd.tune.plots import TrialRecord
from depthkd.tune.spec import STUDENT_KEY, SweepConfig
from depthkd.tune.status import COMPLETED, ERROR, STOPPED, trial_status
from depthkd.tune.teachers import SweepTeacher
from depthkd.tune.trial import trial_job_id, trial_run_name

RESULTS_DIR = "results"


def trial_records(
    grid: Any,
    spec: SweepConfig,
    *,
    max_rounds: int,
    costs: dict[str, tuple[float, float]],
) -> list[TrialRecord]:
    """One record per trial of a Tune `ResultGrid`, in trial-id order."""
    metric = spec.metric.name
    records = []
    for result in grid:
        frame = result.metrics_dataframe
        curve: list[tuple[int, float]] = []
        if frame is not None and metric in frame and "eval_round" in frame:
            rows = frame[["eval_round", metric]].dropna()
            # a resumed trial reports its checkpoint's round again: one point per round
            curve = sorted({int(r): float(v) for r, v in rows.itertuples(index=False)}.items())
        trial_id = (result.metrics or {}).get("trial_id") or _trial_id_of(Path(result.path))
        rounds = max((r for r, _ in curve), default=0)
        status = trial_status(rounds, max_rounds, failed=result.error is not None)
        params = {key: (result.config or {}).get(key) for key in spec.searched_keys()}
        params_m, latency = costs.get(str(params.get(STUDENT_KEY)), (None, None))
        records.append(
            TrialRecord(
                trial_id=trial_id,
                params=params,
                metric=curve[-1][1] if curve else None,
                rounds=rounds,
                status=status,
                curve=curve,
                latency_ms=latency,
                params_m=params_m,
                seconds=(result.metrics or {}).get("time_total_s"),
            )
        )
    return sorted(records, key=lambda r: r.trial_id)


def _trial_id_of(trial_dir: Path) -> str:
    """The trial id in a Tune trial folder name (`run_trial_<id>_<index>_<params>_<time>`), for a
    trial that never reported (no `trial_id` in its metrics)."""
    match = re.search(r"_([0-9a-f]{5}_\d{5})_", trial_dir.name)
    return match.group(1) if match else trial_dir.name


def best_record(records: list[TrialRecord], mode: str) -> TrialRecord | None:
    """The best completed trial by its final metric (None when no trial completed)."""
    done = [
        r
        for r in records
        if r.status == COMPLETED and r.metric is not None and not math.isnan(r.metric)
    ]
    if not done:
        return None
    return (min if mode == "min" else max)(done, key=lambda r: r.metric)


def format_table(records: list[TrialRecord], spec: SweepConfig) -> str:
    """The results table: searched values, metric, evaluation rounds used, status."""
    keys = spec.searched_keys()
    short = [k.rsplit(".", 1)[-1] for k in keys]
    costs = any(r.latency_ms is not None for r in records)
    header = ["trial", *short, spec.metric.name, "rounds", "status"]
    if costs:
        header += ["params_M", "latency_ms"]
    rows = [header]
    for r in records:
        row = [r.trial_id, *(_cell(r.params.get(k)) for k in keys), _cell(r.metric)]
        row += [str(r.rounds), r.status]
        if costs:
            row += [_cell(r.params_m), _cell(r.latency_ms)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(["results (" + spec.metric.name + ", final value per trial):", *lines])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_outputs(
    records: list[TrialRecord],
    spec: SweepConfig,
    directory: Path,
    *,
    parent: JobRun,
    max_rounds: int,
    log: Any = print,
) -> list[Path]:
    """The results CSV and plots under `<sweep dir>/results`, logged to the parent run."""
    out = directory / RESULTS_DIR
    metric, mode = spec.metric.name, spec.metric.mode
    asha = spec.scheduler.type == "asha"
    files = [
        plots.write_results_csv(records, out / "trials.csv"),
        plots.plot_metric_vs_params(records, metric, mode, out / "metric_vs_params.png"),
        plots.plot_parallel_coordinates(records, metric, mode, out / "parallel_coordinates.png"),
        plots.plot_curves(
            records,
            metric,
            mode,
            out / "curves.png",
            grace_period=spec.scheduler.grace_period if asha else None,
            reduction_factor=spec.scheduler.reduction_factor if asha else None,
        ),
    ]
    if any(r.latency_ms is not None for r in records):
        files.append(plots.plot_pareto(records, metric, mode, out / "pareto.png"))
    used = sum(r.rounds for r in records)
    with RunLogger(parent, system_metrics_interval=None) as logger:
        for path in files:
            logger.log_artifact(path, RESULTS_DIR)
        logger.log_metrics(
            {
                "budget/rounds_used": used,
                "budget/rounds_full": max_rounds * len(records),
                "trials/completed": sum(r.status == COMPLETED for r in records),
                "trials/stopped": sum(r.status == STOPPED for r in records),
                "trials/failed": sum(r.status == ERROR for r in records),
            },
            step=0,
        )
        best = best_record(records, mode)
        if best is not None:
            logger.log_metrics({f"best/{metric}": best.metric}, step=0)
            logger.set_tags({"depthkd.best_trial": best.trial_id})
    log(
        f"budget: {used} of {max_rounds * len(records)} evaluation rounds "
        f"({100 * used / max(max_rounds * len(records), 1):.0f} %); files in {out}"
    )
    return files


def best_experiment(
    base: ExperimentConfig, best: TrialRecord, spec: SweepConfig, teacher: SweepTeacher | None
) -> ExperimentConfig:
    """The best trial as a standalone experiment: its drawn values, the sweep's teacher."""
    values = {**best.params, "name": f"{spec.name}-best", "train.storage": None}
    if teacher is not None:
        values["distill.teacher"] = str(teacher.path)
    return with_values(base, values)


def write_best_config(
    base: ExperimentConfig,
    best: TrialRecord,
    spec: SweepConfig,
    teacher: SweepTeacher | None,
    path: Path,
) -> Path:
    """`best.yaml`, which `depthkd distill --config` (or `cross-distill`) accepts as it is."""
    save_config(best_experiment(base, best, spec, teacher), path)
    return path


def register_best(
    best: TrialRecord,
    spec: SweepConfig,
    base: ExperimentConfig,
    shards: Location,
    profile: Any,
    teacher: SweepTeacher | None,
    directory: Path,
    *,
    parent: JobRun,
    log: Any = print,
) -> int:
    """Logs the best trial's student to its run and registers it as `<student model>@challenger`
    with the sweep, trial, dataset, splits, protocol, val metrics and teacher version as tags; the
    test metrics (read now, after the choice) are report tags."""
    from depthkd.data.shards import read_manifest
    from depthkd.eval.runner import evaluate_split
    from depthkd.metric_names import HEADLINE_METRICS
    from depthkd.models.serialization import load_model
    from depthkd.tracking import model_registry
    from depthkd.train.launcher import latest_export
    from depthkd.train.registration import registration_tags

    job_id = trial_job_id(spec.name, best.trial_id)
    child = child_runs(parent).get(job_id)
    if child is None:
        raise LookupError(f"no MLflow run for trial {best.trial_id} (job {job_id})")
    run = JobRun(parent.tracking_uri, parent.experiment_id, child["run_id"], resumed=True)
    export = latest_export(base.train.storage, trial_run_name(best.trial_id), "student")
    if export is None:
        raise LookupError(f"trial {best.trial_id} completed but left no exported student")
    model = load_model(export)
    val, test = base.data.eval_split, base.data.test_split
    test_metrics = {}
    if test in read_manifest(shards)["splits"]:
        sums = evaluate_split(model, shards, test, base.data, profile.protocol, tta=base.eval.tta)
        test_metrics = sums.means()
        log(
            f"best student on {test} ({profile.protocol}, {sums.n_images} images, report only): "
            + ", ".join(f"{k} {test_metrics[k]:.4f}" for k in HEADLINE_METRICS)
        )
    val_metrics = latest_metrics(run, prefix=f"{spec.stage}/{val}/")
    uri = model_registry.log_depth_model(run, model, name="student")
    name = base.tracking.student_model
    version = model_registry.register_model(
        uri,
        name,
        alias="challenger",
        tags={
            **registration_tags(
                base,
                profile,
                stage=spec.stage,
                job=job_id,
                val_metrics=val_metrics,
                test_metrics=test_metrics,
            ),
            "sweep": spec.name,
            "trial": best.trial_id,
            "teacher": teacher.version if teacher else "none (cross-distillation)",
            **{f"param.{k}": str(v) for k, v in best.params.items()},
        },
    )
    log(f"registered {name} v{version} @challenger")
    return version
