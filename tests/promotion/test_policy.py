"""The promotion decision on given numbers: every rule, and the reason a refusal gives."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from depthkd.config.schema import ExperimentConfig, PromotionConfig
from depthkd.promotion.policy import decide

CHAMPION = {"abs_rel": 0.200, "rmse": 1.00, "d1": 0.70}


def _policy(**values: object) -> PromotionConfig:
    return PromotionConfig.model_validate(values)


def test_a_clear_win_promotes_and_names_the_gain() -> None:
    decision = decide({"abs_rel": 0.180, "rmse": 0.99, "d1": 0.71}, CHAMPION, _policy())
    assert decision.promote
    assert "0.1800 better than the champion's 0.2000 (+10.00 %)" in decision.reason
    assert {c.rule for c in decision.checks} == {"finite", "win", "guard"}


def test_worse_is_refused_with_the_reason() -> None:
    decision = decide({"abs_rel": 0.210, "rmse": 1.0, "d1": 0.7}, CHAMPION, _policy())
    assert not decision.promote
    assert decision.reason == (
        "win abs_rel: 0.2100 not better than the champion's 0.2000 (-5.00 %)"
    )


def test_better_by_less_than_the_margin_is_refused() -> None:
    challenger = {"abs_rel": 0.199, "rmse": 1.0, "d1": 0.7}  # 0.5 % better
    assert not decide(challenger, CHAMPION, _policy(margin=0.01)).promote
    assert "less than the 1 % margin" in decide(challenger, CHAMPION, _policy()).reason
    assert decide(challenger, CHAMPION, _policy(margin=0.004)).promote


def test_a_guard_metric_regressing_past_its_tolerance_is_refused() -> None:
    challenger = {"abs_rel": 0.150, "rmse": 1.05, "d1": 0.70}  # rmse 5 % worse
    decision = decide(challenger, CHAMPION, _policy(guards={"rmse": 0.02}))
    assert not decision.promote
    assert decision.reason.startswith("guard rmse: 1.0500 vs 1.0000: regresses 5.00 %")
    assert decide(challenger, CHAMPION, _policy(guards={"rmse": 0.06})).promote


def test_higher_is_better_metrics_point_the_right_way() -> None:
    # d1 is an accuracy: a lower d1 is a regression, a higher one a win
    worse_d1 = {"abs_rel": 0.15, "rmse": 1.0, "d1": 0.60}
    assert "guard d1" in decide(worse_d1, CHAMPION, _policy()).reason
    on_d1 = _policy(metric="d1", guards={})
    assert decide({"abs_rel": 0.3, "rmse": 2.0, "d1": 0.80}, CHAMPION, on_d1).promote
    assert not decide({"abs_rel": 0.1, "rmse": 0.5, "d1": 0.65}, CHAMPION, on_d1).promote


def test_first_challenger_must_pass_the_sanity_floor() -> None:
    policy = _policy(floor={"abs_rel": 0.5, "d1": 0.2})
    first = decide({"abs_rel": 0.3, "rmse": 1.0, "d1": 0.5}, None, policy)
    assert first.promote and first.reason.startswith("first champion")
    broken = decide({"abs_rel": 0.9, "rmse": 9.0, "d1": 0.5}, None, policy)
    assert not broken.promote
    assert broken.reason == "floor abs_rel: 0.9000 misses the floor <= 0.5"


def test_a_latency_budget_refuses_a_slow_challenger() -> None:
    policy = _policy(budget={"height": 352, "width": 704, "ms": 50})
    fast = {"abs_rel": 0.15, "rmse": 1.0, "d1": 0.7}
    assert decide(fast, CHAMPION, policy, latency_ms=40.0).promote
    slow = decide(fast, CHAMPION, policy, latency_ms=75.0)
    assert not slow.promote
    assert slow.reason == "budget latency@352x704: 75.0 ms over the 50 ms budget"


def test_missing_or_nan_metrics_are_refused() -> None:
    decision = decide({"abs_rel": math.nan, "rmse": 1.0, "d1": 0.7}, CHAMPION, _policy())
    assert not decision.promote and "not finite: abs_rel" in decision.reason


def test_a_champion_without_finite_metrics_is_replaced_through_the_floor() -> None:
    broken = {"abs_rel": math.nan, "rmse": 1.0, "d1": 0.7}
    decision = decide({"abs_rel": 0.3, "rmse": 1.0, "d1": 0.5}, broken, _policy())
    assert decision.promote and decision.reason.startswith("replaces a broken champion")


def test_a_win_of_exactly_the_margin_counts() -> None:
    challenger = {"abs_rel": 0.198, "rmse": 1.0, "d1": 0.7}  # 1 % better, up to float error
    assert decide(challenger, CHAMPION, _policy(margin=0.01)).promote


def test_the_comparison_table_lists_every_check() -> None:
    decision = decide({"abs_rel": 0.18, "rmse": 0.99, "d1": 0.71}, CHAMPION, _policy())
    table = decision.table().splitlines()
    assert table[0].startswith("| rule | metric | challenger | reference |")
    assert len(table) == 2 + len(decision.checks)
    assert any("| win | abs_rel | 0.18 | 0.2 | pass |" in row for row in table)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"metric": "absrel"}, "promotion.metric: unknown metric absrel"),
        ({"guards": {"rmse": -0.1}}, "promotion.guards: negative tolerance for rmse"),
        ({"floor": {"dd1": 0.1}}, "promotion.floor: unknown metric dd1"),
        ({"margin": 1.5}, "margin"),
    ],
)
def test_bad_promotion_settings_are_config_errors(section: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExperimentConfig.model_validate({"promotion": section})
