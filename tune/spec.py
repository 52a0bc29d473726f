"""The sweep YAML: the base experiment, the search space over dotted keys, the metric, the
scheduler, the searcher, the budget and each trial's resources; validated like every config.

```yaml
name: kd-weights                       # sweep id: running it again resumes it
base:
  config: configs/default.yaml         # the experiment every trial starts from
  overrides: [distill.steps=100]
space:                                 # dotted key → distribution
  distill.losses.response_kd: {type: uniform, low: 0.0, high: 1.0}
  distill.loss.attention_tau: {type: loguniform, low: 0.25, high: 4.0}
  data.augment.cutflip_p: {type: quniform, low: 0.0, high: 1.0, q: 0.25}
  model.student.name: {type: choice, values: [mobilenetv2_050, mobilenetv2_100]}
metric: {name: val/abs_rel, mode: min}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, seed: 0}
num_samples: 8
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from depthkd.config.schema import StrictModel
from depthkd.metric_names import METRIC_NAMES

STUDENT_KEY = "model.student.name"
# What a trial may change: its stage's objective, loss settings and optimizer, the augmentation,
# the seed and the student backbone. Everything else is shared by every trial (the data and its
# splits, the teacher and its acclimation, the budget in evaluation rounds that ASHA counts in,
# the tracking) or would change what the metric means.
_SEARCHABLE_SECTIONS = ("losses", "loss", "optim")
_SEARCHABLE_SHARED = ("data.augment.",)
_SEARCHABLE_KEYS = ("seed", STUDENT_KEY, "distill.unlabeled_ratio", "cross_distill.unlabeled_ratio")


class Uniform(StrictModel):
    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.low < self.high:
            raise ValueError(f"needs low < high, got [{self.low}, {self.high}]")
        return self


class LogUniform(Uniform):
    type: Literal["loguniform"]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _positive(self) -> LogUniform:
        if self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self


class QUniform(Uniform):
    type: Literal["quniform"]  # type: ignore[assignment]
    q: float = Field(gt=0, description="values are multiples of q")


class RandInt(StrictModel):
    type: Literal["randint"]
    low: int
    high: int = Field(description="exclusive, as numpy and Ray Tune")

    @model_validator(mode="after")
    def _ordered(self) -> RandInt:
        if not self.low < self.high:
            raise ValueError(f"needs low < high, got [{self.low}, {self.high})")
        return self


class Choice(StrictModel):
    type: Literal["choice", "grid"]
    values: list[Any] = Field(min_length=1)


Distribution = Annotated[
    Uniform | LogUniform | QUniform | RandInt | Choice, Field(discriminator="type")
]


class BaseExperiment(StrictModel):
    """The experiment each trial starts from: a config file plus dotted overrides."""

    config: Path | None = Field(
        None, description="experiment YAML, relative to the sweep file; unset: the defaults"
    )
    overrides: list[str] = Field(default_factory=list, description="dotted.key=value")


class MetricSpec(StrictModel):
    name: str = Field("val/abs_rel", pattern=r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+$")
    mode: Literal["min", "max"] = "min"

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        metric = value.split("/", 1)[1]
        if metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRIC_NAMES)}")
        return value

    @property
    def split(self) -> str:
        return self.name.split("/", 1)[0]


class SchedulerSpec(StrictModel):
    """ASHA counted in evaluation rounds (`eval_round`, which survives resume), or none."""

    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, description="evaluation rounds before a trial can stop")
    reduction_factor: int = Field(2, ge=2)


class SearcherSpec(StrictModel):
    type: Literal["random", "grid", "optuna"] = "random"
    seed: int = 0


class TrialResources(StrictModel):
    """What one trial takes: its Ray Train workers plus a fraction of a CPU for its driver."""

    workers: int = Field(1, ge=1, description="Ray Train workers per trial")
    cpus_per_worker: float = Field(0.9, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    driver_cpus: float = Field(0.1, ge=0, description="the trial's own function (it only waits)")

    @property
    def cpus(self) -> float:
        return self.driver_cpus + self.workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker


class SweepConfig(StrictModel):
    """One sweep, one file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="sweep id; reuse resumes")
    stage: Literal["distill", "cross_distill"] = Field(
        "distill", description="what each trial trains (cross_distill needs no teacher)"
    )
    base: BaseExperiment = BaseExperiment()
    space: dict[str, Distribution] = Field(min_length=1)
    metric: MetricSpec = MetricSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    searcher: SearcherSpec = SearcherSpec()
    num_samples: int = Field(8, ge=1, description="trials (grid: repeats of the whole grid)")
    time_budget_s: float | None = Field(None, gt=0, description="wall-clock budget of the sweep")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="unset: as many as the cluster's CPUs and GPUs fit"
    )
    resources: TrialResources = TrialResources()
    register_best: bool = Field(True, description="register the best student as challenger")
    promote: bool = Field(
        False, description="then put it through the promotion gate (base config's promotion)"
    )

    @model_validator(mode="after")
    def _searchable_keys(self) -> SweepConfig:
        sections = tuple(f"{self.stage}.{section}." for section in _SEARCHABLE_SECTIONS)
        for key in self.space:
            if not (key in _SEARCHABLE_KEYS or key.startswith(sections + _SEARCHABLE_SHARED)):
                raise ValueError(
                    f"space: {key!r} cannot be searched in a {self.stage} sweep; searchable: "
                    f"{', '.join(s + '*' for s in sections + _SEARCHABLE_SHARED)}, "
                    f"{', '.join(_SEARCHABLE_KEYS)} (the data, the teacher, the step budget "
                    "and the tracking are shared by every trial)"
                )
        return self

    @model_validator(mode="after")
    def _searcher_fits_space(self) -> SweepConfig:
        kinds = {dist.type for dist in self.space.values()}
        if self.searcher.type == "grid" and kinds - {"grid", "choice"}:
            raise ValueError("searcher 'grid' needs every key to be a grid or choice")
        if self.searcher.type == "optuna" and "grid" in kinds:
            raise ValueError("searcher 'optuna' samples; use 'choice' instead of 'grid'")
        return self

    @model_validator(mode="after")
    def _promote_needs_registration(self) -> SweepConfig:
        if self.promote and not self.register_best:
            raise ValueError("promote: true needs register_best: true (the gate takes a version)")
        return self

    def searched_keys(self) -> list[str]:
        return sorted(self.space)
