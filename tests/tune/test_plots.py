"""Sweep figures are real, non-blank PNGs for any input; the CSV and the Pareto front are exact."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from PIL import Image

from depthkd.errors import ConfigError
from depthkd.tune.plots import (
    TrialRecord,
    asha_rungs,
    pareto_front,
    plot_curves,
    plot_metric_vs_params,
    plot_parallel_coordinates,
    plot_pareto,
    write_results_csv,
)

METRIC = "val/abs_rel"
LR = "train.optimizer.lr"
KD = "distill.losses.response_kd"
STUDENT = "model.student.name"
PLOTS = {
    "metric_vs_params": plot_metric_vs_params,
    "parallel_coordinates": plot_parallel_coordinates,
    "curves": plot_curves,
    "pareto": plot_pareto,
}


def _trial(
    trial_id: str,
    params: dict[str, float | int | str],
    metric: float | None,
    *,
    status: str = "TERMINATED",
    latency_ms: float | None = None,
) -> TrialRecord:
    rounds = 2 if status == "STOPPED" else 8
    start = 0.4 if metric is None or math.isnan(metric) else metric + 0.2
    curve = [(r, start - 0.2 * r / rounds) for r in range(1, rounds + 1)]
    return TrialRecord(trial_id, params, metric, rounds, status, curve, latency_ms, 1.5)


@pytest.fixture
def sweep() -> list[TrialRecord]:
    """A searched log-scale lr, a linear KD weight, a categorical student; every status."""
    return [
        _trial("t0", {LR: 1e-4, KD: 0.1, STUDENT: "mobilenetv2_050"}, 0.21, latency_ms=8.0),
        _trial("t1", {LR: 3e-3, KD: 0.5, STUDENT: "resnet18"}, 0.15, latency_ms=20.0),
        _trial("t2", {LR: 1e-2, KD: 0.9, STUDENT: "mobilenetv2_050"}, 0.18, latency_ms=8.5),
        _trial(
            "t3",
            {LR: 5e-4, KD: 0.3, STUDENT: "efficientnet_b0"},
            0.25,
            status="STOPPED",
            latency_ms=14.0,
        ),
        _trial("t4", {LR: 2e-3, KD: 0.7, STUDENT: "resnet18"}, float("nan"), latency_ms=21.0),
        _trial("t5", {LR: 1e-3, KD: 0.2, STUDENT: "resnet18"}, None, status="ERROR"),
    ]


def _assert_png(path: Path, *, min_colours: int = 8) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 400 and height > 300
        colours = image.convert("RGB").getcolors(maxcolors=width * height)
    assert len(colours) > min_colours  # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("name", PLOTS)
def test_plot_writes_a_png(name, sweep, tmp_path):
    path = tmp_path / f"{name}.png"
    assert PLOTS[name](sweep, METRIC, "min", path) == path
    _assert_png(path, min_colours=50)


@pytest.mark.parametrize("name", PLOTS)
@pytest.mark.parametrize(
    "trials",
    [
        pytest.param([], id="empty"),
        pytest.param([_trial("a", {KD: 0.3}, None), _trial("b", {KD: 0.5}, math.nan)], id="nan"),
        pytest.param([_trial("a", {KD: 0.3}, 0.2, latency_ms=9.0)], id="one-trial"),
        pytest.param(
            [_trial("a", {STUDENT: "x"}, 0.2, latency_ms=9.0), _trial("b", {STUDENT: "y"}, 0.3)],
            id="one-string-key",
        ),
        pytest.param(
            [_trial("a", {}, 0.2, latency_ms=9.0), _trial("b", {}, 0.3, latency_ms=4.0)],
            id="no-keys",
        ),
    ],
)
def test_plot_handles_edge_cases(name, trials, tmp_path):
    path = tmp_path / "out.png"
    PLOTS[name](trials, METRIC, "max", path)
    _assert_png(path)


def test_plot_overwrites_an_existing_figure(sweep, tmp_path):
    path = tmp_path / "curves.png"
    plot_curves([], METRIC, "min", path)
    empty = path.read_bytes()
    plot_curves(sweep, METRIC, "min", path, grace_period=1, reduction_factor=2)
    assert path.read_bytes() != empty
    _assert_png(path, min_colours=50)


@pytest.mark.parametrize("name", PLOTS)
def test_plot_rejects_an_unknown_mode(name, tmp_path):
    with pytest.raises(ConfigError, match="mode must be 'min' or 'max', got 'best'"):
        PLOTS[name]([], METRIC, "best", tmp_path / "out.png")


def test_csv_round_trips_exact_values(sweep, tmp_path):
    path = tmp_path / "results.csv"
    conditional = TrialRecord("t6", {KD: 1 / 3}, 0.1 + 0.2, 4, "TERMINATED", [], None, None)
    trials = [*sweep, conditional]
    assert write_results_csv(trials, path) == path
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header == [
        "trial_id",
        KD,
        STUDENT,
        LR,
        "metric",
        "rounds",
        "status",
        "latency_ms",
        "params_m",
    ]
    assert [row[0] for row in body] == [t.trial_id for t in trials]
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in body}
    for t in sweep:
        row = by_id[t.trial_id]
        assert float(row[LR]) == t.params[LR] and float(row[KD]) == t.params[KD]
        assert row[STUDENT] == t.params[STUDENT]
        assert int(row["rounds"]) == t.rounds and row["status"] == t.status
        assert float(row["params_m"]) == t.params_m
    assert float(by_id["t0"]["metric"]) == 0.21 and float(by_id["t0"]["latency_ms"]) == 8.0
    assert math.isnan(float(by_id["t4"]["metric"]))
    assert by_id["t5"]["metric"] == "" and by_id["t5"]["latency_ms"] == ""
    six = by_id["t6"]
    assert float(six[KD]) == 1 / 3 and float(six["metric"]) == 0.1 + 0.2
    assert six[LR] == six[STUDENT] == six["latency_ms"] == six["params_m"] == ""


def test_csv_of_no_trials_has_only_the_header(tmp_path):
    path = write_results_csv([], tmp_path / "results.csv")
    assert path.read_text() == "trial_id,metric,rounds,status,latency_ms,params_m\n"


# (latency_ms, metric): 1 is slower and worse than 0; 3 ties 2 exactly; 5 is slowest but best.
POINTS = [(10.0, 0.20), (12.0, 0.25), (15.0, 0.15), (15.0, 0.15), (30.0, 0.16), (40.0, 0.10)]


def test_pareto_front_min():
    assert pareto_front(POINTS, "min") == [0, 2, 3, 5]


def test_pareto_front_max():
    # higher is better: 0 is the fastest, 1 the best, and every slower point is worse than 1
    assert pareto_front(POINTS, "max") == [0, 1]


def test_pareto_front_equal_latency_keeps_only_the_better_metric():
    assert pareto_front([(5.0, 0.3), (5.0, 0.2), (1.0, 0.4)], "min") == [2, 1]


def test_pareto_front_edge_cases():
    assert pareto_front([], "min") == []
    assert pareto_front([(3.0, 0.5)], "max") == [0]


@pytest.mark.parametrize(
    ("grace", "rf", "max_round", "expected"),
    [
        (1, 2, 10, [1, 2, 4, 8]),
        (2, 3, 18, [2, 6, 18]),
        (4, None, 10, [4]),
        (12, 2, 10, []),
        (12, None, 10, []),
    ],
)
def test_asha_rungs(grace, rf, max_round, expected):
    assert asha_rungs(grace, rf, max_round) == expected


@pytest.mark.parametrize(
    ("grace", "rf", "match"),
    [(0, 2, "grace_period must be at least 1, got 0"), (1, 1, "reduction_factor .* got 1")],
)
def test_asha_rungs_rejects_bad_settings(grace, rf, match):
    with pytest.raises(ConfigError, match=match):
        asha_rungs(grace, rf, 10)
