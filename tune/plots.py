"""Figures and a CSV table that summarise the results of one hyper-parameter sweep.

A sweep driver turns each Ray Tune trial into a `TrialRecord` and hands the list to these pure
functions; each writes one file (PNG at 150 dpi, or CSV) atomically and returns its path, so an
interrupted sweep never leaves half a figure that MLflow would log. Trials whose metric is missing
or NaN are left out of every figure; with nothing left a figure still appears and says "no
results yet", so a driver can refresh the figures after every round without special cases.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from depthkd import atomic
from depthkd.errors import ConfigError
from depthkd.tune.spec import STUDENT_KEY
from depthkd.tune.status import COMPLETED, STOPPED

Mode = Literal["min", "max"]
Point = tuple[float, float]


_DPI = 150
_LOG_SPAN = 20.0  # a numeric axis turns logarithmic when its positive values span more than this
_JITTER = 0.15  # half-width of the horizontal jitter of categorical points, in category units
_N_TICKS = 5  # tick labels per numeric axis of the parallel-coordinates plot
_STATUS_STYLES = {  # status -> (marker, colour, legend label)
    COMPLETED: ("o", "tab:blue", "completed"),
    STOPPED: ("v", "tab:orange", "early-stopped (ASHA)"),
}
_OTHER_STYLE = ("s", "tab:grey")  # any other status, labelled by its own name
_BEST_COLOUR = "crimson"
_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1.0}
_CSV_TAIL = ("metric", "rounds", "status", "latency_ms", "params_m")


@dataclass(frozen=True)
class TrialRecord:
    """What one finished (or stopped, or failed) trial of a sweep contributes to its summary.

    Attributes:
        trial_id: Ray Tune's trial id.
        params: the searched dotted config keys and the values this trial drew.
        metric: best or last value of the sweep metric; None if the trial reported nothing.
        rounds: evaluation rounds the trial used.
        status: "TERMINATED" (full budget), "STOPPED" (early-stopped by ASHA) or "ERROR".
        curve: (evaluation round, metric value) of every evaluation the trial reported.
        latency_ms: measured CPU latency of the trial's student, when the backbone is searched.
        params_m: the student's parameter count in millions.
        seconds: the trial's wall time from its start to its last report (Tune's time_total_s).
    """

    trial_id: str
    params: dict[str, float | int | str]
    metric: float | None
    rounds: int
    status: str
    curve: list[tuple[int, float]]
    latency_ms: float | None = None
    params_m: float | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class _Scale:
    """Where one searched key's values sit on an axis: numeric (linear or log) or categorical."""

    categories: tuple[str, ...] | None  # None for a numeric key
    log: bool
    lo: float
    hi: float

    @classmethod
    def of(cls, values: Sequence[float | int | str]) -> _Scale:
        if not all(_is_number(v) for v in values):
            return cls(tuple(sorted({str(v) for v in values})), log=False, lo=0.0, hi=0.0)
        lo, hi = float(min(values)), float(max(values))
        return cls(None, log=lo > 0 and hi / lo > _LOG_SPAN, lo=lo, hi=hi)

    def position(self, value: float | int | str) -> float:
        """The value on the plot's x-axis: itself if numeric, else its category index."""
        if self.categories is None:
            return float(value)
        return float(self.categories.index(str(value)))

    def unit(self, value: float | int | str) -> float:
        """The value mapped to [0, 1] (0.5 when the axis holds a single value)."""
        if self.categories is not None:
            n = len(self.categories)
            return 0.5 if n == 1 else self.position(value) / (n - 1)
        if self.hi == self.lo:
            return 0.5
        if self.log:
            return math.log(float(value) / self.lo) / math.log(self.hi / self.lo)
        return (float(value) - self.lo) / (self.hi - self.lo)

    def ticks(self) -> list[tuple[float, str]]:
        """(position in [0, 1], label showing the real value) for a normalised axis."""
        if self.categories is not None:
            return [(self.unit(c), c) for c in self.categories]
        if self.hi == self.lo:
            return [(0.5, f"{self.lo:.3g}")]
        fractions = np.linspace(0.0, 1.0, _N_TICKS)
        if self.log:
            reals = self.lo * (self.hi / self.lo) ** fractions
        else:
            reals = self.lo + (self.hi - self.lo) * fractions
        return [(float(f), f"{r:.3g}") for f, r in zip(fractions, reals, strict=True)]


def pareto_front(points: Sequence[Point], mode: Mode) -> list[int]:
    """Indices of the non-dominated (latency, metric) points, sorted by latency.

    A point is dominated when another has no higher latency and no worse metric, and is strictly
    better in one of the two; identical points do not dominate each other, so both stay.

    Args:
        points: finite (latency_ms, metric) pairs.
        mode: "min" if a lower metric is better, "max" if a higher one is.
    """
    sign = _sign(mode)
    scored = [(lat, sign * m) for lat, m in points]  # lower score is better in either mode

    def dominated(i: int) -> bool:
        lat_i, s_i = scored[i]
        return any(lat <= lat_i and s <= s_i and (lat < lat_i or s < s_i) for lat, s in scored)

    return sorted((i for i in range(len(points)) if not dominated(i)), key=lambda i: scored[i])


def asha_rungs(grace_period: int, reduction_factor: int | None, max_round: int) -> list[int]:
    """The rounds at which ASHA compares trials: grace, grace·rf, grace·rf², … up to max_round.

    Args:
        grace_period: ASHA's grace period, in evaluation rounds.
        reduction_factor: ASHA's reduction factor; None draws only the first rung.
        max_round: the last round to draw a rung at.

    Raises:
        ConfigError: grace_period is below 1 or reduction_factor below 2.
    """
    if grace_period < 1:
        raise ConfigError(f"grace_period must be at least 1, got {grace_period}")
    if reduction_factor is None:
        return [grace_period] if grace_period <= max_round else []
    if reduction_factor < 2:
        raise ConfigError(f"reduction_factor must be at least 2, got {reduction_factor}")
    rungs = []
    rung = grace_period
    while rung <= max_round:
        rungs.append(rung)
        rung *= reduction_factor
    return rungs


def plot_metric_vs_params(
    trials: Sequence[TrialRecord], metric: str, mode: Mode, path: Path
) -> Path:
    """One panel per searched key: the sweep metric against the key's value.

    Numeric keys whose positive values span more than a factor 20 get a log axis; string keys are
    categories with jittered points. Early-stopped trials get their own marker, the best trial a
    red star.

    Args:
        trials: the sweep's trials; those without a finite metric are left out.
        metric: the metric's name with its split, e.g. "val/abs_rel".
        mode: "min" if a lower metric is better, "max" if a higher one is.
        path: where the PNG goes.

    Returns:
        `path`.
    """
    done = _with_metric(trials)
    best = _best(done, mode)
    keys = _keys(done)
    title = f"{metric} vs searched hyper-parameters"
    if best is None:
        return _save_empty(path, title)
    if not keys:
        return _save_empty(path, title, message="no searched hyper-parameters")
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    rng = np.random.default_rng(0)  # fixed seed: the same results always give the same figure
    for ax, key in zip(axes, keys, strict=False):
        present = [t for t in done if key in t.params]
        scale = _Scale.of([t.params[key] for t in present])
        xs = np.array([scale.position(t.params[key]) for t in present])
        if scale.categories is not None:
            xs += rng.uniform(-_JITTER, _JITTER, len(present))
        ys = np.array([t.metric for t in present])
        for status in sorted({t.status for t in present}):
            sel = np.array([t.status == status for t in present])
            marker, colour, _ = _status_style(status)
            ax.scatter(xs[sel], ys[sel], marker=marker, color=colour, s=30, alpha=0.75)
        if best in present:
            i = present.index(best)
            ax.scatter(
                xs[i],
                ys[i],
                marker="*",
                s=220,
                color=_BEST_COLOUR,
                edgecolors="black",
                zorder=3,
            )
        _set_x_scale(ax, scale)
        ax.set_xlabel(key)
        ax.set_ylabel(_metric_label(metric, mode))
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    fig.legend(
        handles=_status_handles({t.status for t in done}, best),
        loc="outside lower center",
        ncols=4,
        fontsize=8,
    )
    fig.suptitle(f"{title} ({_trials(len(done))})")
    return _save(fig, path)


def plot_parallel_coordinates(
    trials: Sequence[TrialRecord], metric: str, mode: Mode, path: Path
) -> Path:
    """One vertical axis per searched key plus the metric, one line per trial.

    Every axis is normalised to [0, 1] with tick labels in real values (categories by index, with
    their names as labels). Lines are coloured by the metric, better trials brighter; the best
    trial is drawn bold in red. A trial lacking a key leaves a gap in its line.

    Args:
        trials: the sweep's trials; those without a finite metric are left out.
        metric: the metric's name with its split, e.g. "val/abs_rel".
        mode: "min" if a lower metric is better, "max" if a higher one is.
        path: where the PNG goes.

    Returns:
        `path`.
    """
    done = _with_metric(trials)
    best = _best(done, mode)
    keys = _keys(done)
    if best is None:
        return _save_empty(path, f"{metric}: parallel coordinates")
    scales = [_Scale.of([t.params[k] for t in done if k in t.params]) for k in keys]
    metric_values = [t.metric for t in done]
    metric_scale = _Scale(None, log=False, lo=min(metric_values), hi=max(metric_values))
    xs = np.arange(len(keys) + 1)
    fig = Figure(figsize=(max(6.0, 2.0 * len(xs) + 1.5), 4.6), layout="constrained")
    ax = fig.subplots()
    norm = Normalize(metric_scale.lo, metric_scale.hi)
    cmap = "viridis_r" if mode == "min" else "viridis"  # the better end is yellow in both modes
    mappable = ScalarMappable(norm, cmap)
    for t in done:
        ys = [
            s.unit(t.params[k]) if k in t.params else np.nan
            for s, k in zip(scales, keys, strict=True)
        ]
        ys.append(metric_scale.unit(t.metric))
        if t is best:
            ax.plot(xs, ys, color=_BEST_COLOUR, lw=3.2, zorder=3, label=f"best: {t.trial_id}")
        else:
            ax.plot(xs, ys, color=mappable.to_rgba(t.metric), lw=1.2, alpha=0.8)
    for x, scale in zip(xs, [*scales, metric_scale], strict=True):
        ax.axvline(x, color="black", lw=0.8)
        for y, label in scale.ticks():
            ax.text(x - 0.04, y, label, ha="right", va="center", fontsize=7, bbox=_LABEL_BOX)
    ax.set_xlim(-0.5, len(keys) + 0.2)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(xs, [*(_wrap_key(k) for k in keys), metric], fontsize=8)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 1.12), fontsize=8, frameon=False)
    fig.colorbar(mappable, ax=ax, label=_metric_label(metric, mode), shrink=0.85)
    fig.suptitle(f"{metric}: parallel coordinates ({_trials(len(done))})")
    return _save(fig, path)


def plot_curves(
    trials: Sequence[TrialRecord],
    metric: str,
    mode: Mode,
    path: Path,
    *,
    grace_period: int | None = None,
    reduction_factor: int | None = None,
) -> Path:
    """Every trial's learning curve: the metric against the evaluation round.

    The last point of each trial ASHA stopped is marked with an "x" and its trial id; the best
    trial is drawn bold in red. With a grace period, dashed lines mark ASHA's rungs (see
    `asha_rungs`).

    Args:
        trials: the sweep's trials; NaN points of a curve are left out.
        metric: the metric's name with its split, e.g. "val/abs_rel".
        mode: "min" if a lower metric is better, "max" if a higher one is.
        path: where the PNG goes.
        grace_period: ASHA's grace period in evaluation rounds; None draws no rungs.
        reduction_factor: ASHA's reduction factor; None draws only the first rung.

    Returns:
        `path`.

    Raises:
        ConfigError: the grace period or reduction factor is out of range.
    """
    best = _best(_with_metric(trials), mode)
    curves = {t.trial_id: sorted((r, v) for r, v in t.curve if math.isfinite(v)) for t in trials}
    drawn = [t for t in trials if curves[t.trial_id]]
    if not drawn:
        return _save_empty(path, f"{metric} learning curves")
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    for t in drawn:
        rounds, values = zip(*curves[t.trial_id], strict=True)
        if t is best:
            ax.plot(rounds, values, color=_BEST_COLOUR, lw=3.0, zorder=3, marker=".")
        else:
            ax.plot(rounds, values, lw=1.2, alpha=0.7, marker=".", markersize=4)
        if t.status == STOPPED:
            ax.scatter(rounds[-1], values[-1], marker="x", s=50, color="black", zorder=4)
            ax.annotate(
                t.trial_id,
                (rounds[-1], values[-1]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
            )
    max_round = max(r for t in drawn for r, _ in curves[t.trial_id])
    rungs = [] if grace_period is None else asha_rungs(grace_period, reduction_factor, max_round)
    for rung in rungs:
        ax.axvline(rung, color="grey", ls="--", lw=1.0)
    ax.legend(handles=_curve_handles(best, any(t.status == STOPPED for t in drawn), rungs))
    ax.set_xlabel("evaluation round")
    ax.set_ylabel(_metric_label(metric, mode))
    ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} learning curves ({_trials(len(drawn))})")
    return _save(fig, path)


def plot_pareto(trials: Sequence[TrialRecord], metric: str, mode: Mode, path: Path) -> Path:
    """The metric against the student's CPU latency, with the Pareto front as a step line.

    Each point is labelled with its student's name when `model.student.name` was searched, else
    with its trial id. The latency axis turns logarithmic when it spans more than a factor 20.

    Args:
        trials: the sweep's trials; only those with both a finite metric and a latency are drawn.
        metric: the metric's name with its split, e.g. "val/abs_rel".
        mode: "min" if a lower metric is better, "max" if a higher one is.
        path: where the PNG goes.

    Returns:
        `path`.
    """
    _sign(mode)  # a bad mode is an error even while there is nothing to draw
    title = f"{metric} vs CPU latency"
    done = [
        t for t in _with_metric(trials) if t.latency_ms is not None and math.isfinite(t.latency_ms)
    ]
    if not done:
        return _save_empty(path, title)
    points = [(t.latency_ms, t.metric) for t in done]
    front = pareto_front(points, mode)
    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.scatter(*zip(*points, strict=True), s=30, alpha=0.75, label="trials")
    front_lat = [points[i][0] for i in front]
    front_met = [points[i][1] for i in front]
    last_lat = max(lat for lat, _ in points)  # the front holds on to the right edge
    ax.step(
        [*front_lat, last_lat],
        [*front_met, front_met[-1]],
        where="post",
        color=_BEST_COLOUR,
        lw=1.8,
        label="Pareto front",
    )
    ax.scatter(front_lat, front_met, s=60, color=_BEST_COLOUR, zorder=3)
    for t, point in zip(done, points, strict=True):
        name = str(t.params.get(STUDENT_KEY, t.trial_id))
        ax.annotate(name, point, xytext=(4, 4), textcoords="offset points", fontsize=7)
    if _Scale.of([lat for lat, _ in points]).log:
        ax.set_xscale("log")
    ax.set_xlabel("CPU latency (ms)")
    ax.set_ylabel(_metric_label(metric, mode))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"{title} ({_trials(len(done))}, {len(front)} on the front)")
    return _save(fig, path)


def write_results_csv(trials: Sequence[TrialRecord], path: Path) -> Path:
    """One row per trial: trial_id, one column per searched key (sorted), then the results.

    The result columns are metric, rounds, status, latency_ms and params_m; a missing value (None,
    or a key the trial did not draw) is an empty cell. Floats are written in their shortest
    round-tripping form, so reading a cell back with `float` gives the exact value.

    Args:
        trials: the sweep's trials, in the order their rows should appear.
        path: where the CSV goes.

    Returns:
        `path`.
    """
    keys = _keys(trials)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial_id", *keys, *_CSV_TAIL])
    for t in trials:
        results = (t.metric, t.rounds, t.status, t.latency_ms, t.params_m)
        writer.writerow([t.trial_id, *(t.params.get(k) for k in keys), *results])  # None -> ""
    atomic.write_text(path, buffer.getvalue())
    return path


def _sign(mode: str) -> int:
    """+1 for "min", -1 for "max": multiplying by it makes lower always better."""
    if mode not in ("min", "max"):
        raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
    return 1 if mode == "min" else -1


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _with_metric(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [t for t in trials if t.metric is not None and math.isfinite(t.metric)]


def _best(done: Sequence[TrialRecord], mode: Mode) -> TrialRecord | None:
    sign = _sign(mode)
    return min(done, key=lambda t: sign * t.metric, default=None)


def _keys(trials: Sequence[TrialRecord]) -> list[str]:
    return sorted({k for t in trials for k in t.params})


def _metric_label(metric: str, mode: Mode) -> str:
    return f"{metric} ({'lower' if mode == 'min' else 'higher'} is better)"


def _wrap_key(key: str) -> str:
    """A dotted key on two lines, its last part below: long keys stay readable under an axis."""
    head, _, tail = key.rpartition(".")
    return f"{head}.\n{tail}" if head else tail


def _set_x_scale(ax: Axes, scale: _Scale) -> None:
    if scale.categories is not None:
        ax.set_xticks(range(len(scale.categories)), scale.categories, rotation=20, ha="right")
        ax.set_xlim(-0.5, len(scale.categories) - 0.5)
    elif scale.log:
        ax.set_xscale("log")
    else:  # few ticks, and 1e-4-sized values with an offset label rather than long decimals
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))


def _status_handles(statuses: set[str], best: TrialRecord) -> list[Line2D]:
    handles = []
    for status in sorted(statuses):
        marker, colour, label = _status_style(status)
        handles.append(Line2D([], [], ls="", marker=marker, color=colour, label=label))
    label = f"best: {best.trial_id} ({best.metric:.4g})"
    star = Line2D([], [], ls="", marker="*", ms=12, mfc=_BEST_COLOUR, mec="black", label=label)
    return [*handles, star]


def _status_style(status: str) -> tuple[str, str, str]:
    return _STATUS_STYLES.get(status, (*_OTHER_STYLE, status.lower()))


def _curve_handles(best: TrialRecord | None, stopped: bool, rungs: list[int]) -> list[Line2D]:
    handles = []
    if best is not None:
        label = f"best: {best.trial_id} ({best.metric:.4g})"
        handles.append(Line2D([], [], color=_BEST_COLOUR, lw=3.0, label=label))
    if stopped:
        handles.append(Line2D([], [], ls="", marker="x", color="black", label="stopped by ASHA"))
    if rungs:
        handles.append(Line2D([], [], ls="--", color="grey", label="ASHA rungs"))
    return handles


def _trials(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


def _save_empty(path: Path, title: str, *, message: str = "no results yet") -> Path:
    fig = Figure(figsize=(6.0, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=16, color="grey")
    ax.set_axis_off()
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)  # attaches itself to the figure: no pyplot, no global backend
    fig.savefig(buffer, format="png", dpi=_DPI)
    atomic.write_bytes(path, buffer.getvalue())
    return path
