"""The sweep spec as Ray Tune objects: the parameter space, the searcher, the ASHA scheduler and
the `Tuner` itself, new or restored from the sweep's directory."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from depthkd.config.schema import ExperimentConfig
from depthkd.tune.spec import SweepConfig

TUNE_DIR = "tune"


def rounds_per_trial(spec: SweepConfig, base: ExperimentConfig) -> int:
    """Evaluation rounds of a trial that runs to the full budget (ASHA's max_t)."""
    steps = getattr(base, spec.stage).steps
    return math.ceil(steps / base.train.eval_every)


def param_space(spec: SweepConfig) -> dict[str, Any]:
    """`{dotted key: Tune domain}`; a trial receives `{dotted key: drawn value}`."""
    space: dict[str, Any] = {}
    for key, dist in spec.space.items():
        if dist.type == "uniform":
            space[key] = tune.uniform(dist.low, dist.high)
        elif dist.type == "loguniform":
            space[key] = tune.loguniform(dist.low, dist.high)
        elif dist.type == "quniform":
            space[key] = tune.quniform(dist.low, dist.high, dist.q)
        elif dist.type == "randint":
            space[key] = tune.randint(dist.low, dist.high)
        elif dist.type == "grid" or spec.searcher.type == "grid":
            space[key] = tune.grid_search(list(dist.values))
        else:
            space[key] = tune.choice(list(dist.values))
    return space


def searcher(spec: SweepConfig, concurrency: int) -> Any:
    """Random / grid sampling (Tune's variant generator) or Optuna's TPE, at most `concurrency`
    trials at once (the variant generator takes the limit itself, Tune ignores it there)."""
    if spec.searcher.type == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(sampler=TPESampler(seed=spec.searcher.seed))
        return ConcurrencyLimiter(search, max_concurrent=concurrency)
    return BasicVariantGenerator(random_state=spec.searcher.seed, max_concurrent=concurrency)


def scheduler(spec: SweepConfig, max_rounds: int) -> Any:
    """ASHA counted in evaluation rounds (`eval_round`: monotonic across resumes), or FIFO."""
    if spec.scheduler.type == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="eval_round",
        max_t=max_rounds,
        grace_period=min(spec.scheduler.grace_period, max_rounds),
        reduction_factor=spec.scheduler.reduction_factor,
        brackets=1,
    )


def build_tuner(
    spec: SweepConfig,
    base: ExperimentConfig,
    trainable: Any,
    *,
    storage: Path,
    concurrency: int,
    callbacks: list,
) -> tuple[tune.Tuner, bool]:
    """The sweep's `Tuner` and whether it was restored from `storage / "tune"`."""
    path = storage / TUNE_DIR
    # a driver stopped before Tune's first state snapshot leaves tuner.pkl alone: start afresh
    if tune.Tuner.can_restore(path) and any(path.glob("experiment_state-*.json")):
        # the restored run keeps its searcher and trial states; ASHA's rungs start empty again
        # (Tune pickles the scheduler as it was created), so resumed trials are compared with
        # each other only
        tuner = tune.Tuner.restore(
            str(path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
        # the pickled run config holds the previous driver's callbacks: use this driver's
        tuner._local_tuner.get_run_config().callbacks = callbacks
        return tuner, True
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric.name,
            mode=spec.metric.mode,
            search_alg=searcher(spec, concurrency),
            scheduler=scheduler(spec, rounds_per_trial(spec, base)),
            num_samples=spec.num_samples,
            time_budget_s=spec.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=str(storage), callbacks=callbacks, verbose=0
        ),
    )
    return tuner, False


def fit_interruptibly(tuner: tune.Tuner) -> tuple[Any, bool]:
    """`tuner.fit()`, and whether it returned because of Ctrl-C (SIGINT).

    Tune catches the first SIGINT itself: it saves the sweep's state, stops the trials and
    returns normally, after putting back the SIGINT handler it found. So the handler installed
    here is current again after `fit` exactly when Tune's fired. A second Ctrl-C raises
    KeyboardInterrupt as usual.
    """

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        grid = tuner.fit()
        return grid, signal.getsignal(signal.SIGINT) is interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
