"""The promotion decision as a pure function of numbers measured on one evaluation set.

No registry, no files: `decide` gets the challenger's and the champion's metrics (measured now,
on the same shards, split and protocol), the challenger's latency when there is a budget, and the
policy (`PromotionConfig`). Every rule it applies becomes a `Check` row, so a refusal says which
rule failed and by how much.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from depthkd.config.schema import LatencyBudget, PromotionConfig
from depthkd.metric_names import HIGHER_IS_BETTER


@dataclass(frozen=True)
class Check:
    """One rule: what was compared, against what, and whether it passed."""

    rule: str  # "win", "guard", "floor", "budget", "finite"
    metric: str
    challenger: float
    reference: float | None  # the champion's value, the floor or the budget
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    checks: list[Check] = field(default_factory=list)

    def table(self) -> str:
        """The checks as a markdown table (the promotion run's comparison artifact)."""
        rows = ["| rule | metric | challenger | reference | result | detail |", "|---" * 6 + "|"]
        for c in self.checks:
            ref = "-" if c.reference is None else f"{c.reference:.6g}"
            result = "pass" if c.passed else "FAIL"
            rows.append(
                f"| {c.rule} | {c.metric} | {c.challenger:.6g} | {ref} | {result} | {c.detail} |"
            )
        return "\n".join(rows)


def relative_gain(metric: str, challenger: float, champion: float) -> float:
    """How much better the challenger is, relative to the champion (> 0 better, < 0 worse)."""
    scale = max(abs(champion), 1e-12)
    better = challenger - champion if metric in HIGHER_IS_BETTER else champion - challenger
    return better / scale


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    policy: PromotionConfig,
    *,
    latency_ms: float | None = None,
) -> Decision:
    """Promote or refuse, with every check; the first failed check is the reason."""
    checks = [_finite(challenger, policy)]
    if policy.budget is not None:
        checks.append(_budget(latency_ms, policy.budget))
    broken = champion is not None and not _finite(champion, policy).passed
    if champion is None or broken:  # a champion without finite metrics cannot be beaten
        checks += [_floor(m, challenger[m], limit) for m, limit in policy.floor.items()]
        passed = all(c.passed for c in checks)
        reason = (
            "replaces a broken champion: its metrics are not finite and the sanity floor holds"
            if broken
            else "first champion: no champion yet and the sanity floor holds"
        )
        return Decision(passed, reason if passed else _failed(checks), checks)
    checks.append(_win(policy.metric, challenger, champion, policy.margin))
    checks += [_guard(m, challenger, champion, tol) for m, tol in policy.guards.items()]
    if all(c.passed for c in checks):
        win = next(c for c in checks if c.rule == "win")
        return Decision(True, f"beats the champion: {win.detail}", checks)
    return Decision(False, _failed(checks), checks)


def _failed(checks: list[Check]) -> str:
    first = next(c for c in checks if not c.passed)
    return f"{first.rule} {first.metric}: {first.detail}"


def _finite(challenger: Mapping[str, float], policy: PromotionConfig) -> Check:
    names = {policy.metric, *policy.guards, *policy.floor}
    bad = sorted(n for n in names if not math.isfinite(challenger.get(n, math.nan)))
    return Check(
        "finite",
        ", ".join(sorted(names)),
        challenger.get(policy.metric, math.nan),
        None,
        not bad,
        f"missing or not finite: {', '.join(bad)}" if bad else "all finite",
    )


def _budget(latency_ms: float | None, budget: LatencyBudget) -> Check:
    size = f"{budget.height}x{budget.width}"
    if latency_ms is None:
        return Check("budget", f"latency@{size}", math.nan, budget.ms, False, "not measured")
    fits = latency_ms <= budget.ms
    detail = f"{latency_ms:.1f} ms {'within' if fits else 'over'} the {budget.ms:g} ms budget"
    return Check("budget", f"latency@{size}", latency_ms, budget.ms, fits, detail)


def _floor(metric: str, value: float, limit: float) -> Check:
    higher = metric in HIGHER_IS_BETTER
    passed = value >= limit if higher else value <= limit
    sign = ">=" if higher else "<="
    detail = f"{value:.4f} {'meets' if passed else 'misses'} the floor {sign} {limit:g}"
    return Check("floor", metric, value, limit, passed, detail)


def _win(
    metric: str, challenger: Mapping[str, float], champion: Mapping[str, float], margin: float
) -> Check:
    gain = relative_gain(metric, challenger[metric], champion[metric])
    passed = gain >= margin - 1e-12 and gain > 0  # a win of exactly the margin counts
    if gain <= 0:
        verdict = "not better than"
    elif passed:
        verdict = "better than"
    else:
        verdict = f"better by less than the {100 * margin:g} % margin than"
    detail = (
        f"{challenger[metric]:.4f} {verdict} the champion's {champion[metric]:.4f} "
        f"({100 * gain:+.2f} %)"
    )
    return Check("win", metric, challenger[metric], champion[metric], passed, detail)


def _guard(
    metric: str, challenger: Mapping[str, float], champion: Mapping[str, float], tolerance: float
) -> Check:
    regression = -relative_gain(metric, challenger[metric], champion[metric])
    passed = regression <= tolerance
    detail = (
        f"{challenger[metric]:.4f} vs {champion[metric]:.4f}: "
        + (f"regresses {100 * regression:.2f} %" if regression > 0 else "no regression")
        + f" (tolerance {100 * tolerance:g} %)"
    )
    return Check("guard", metric, challenger[metric], champion[metric], passed, detail)
