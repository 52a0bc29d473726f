"""The promotion gate (`depthkd promote`, `pipelines/promote.py`) and rollback.

The gate takes a candidate version of `<tracking.student_model>` (default `@challenger`),
evaluates it and the current `@champion` now, on one evaluation set (the config's shards, the
promotion split — default test — and the dataset's protocol) with the shared evaluator, asks
`policy.decide`, and records the decision (tags on the candidate and a `promotion` run). Only a
version trained for the same dataset family and protocol as the evaluation set is compared.

Two gates at once: the alias is moved under a lock, after reading it again; when the champion
changed since the comparison (another gate promoted), the candidate is compared again with the
new champion, so the alias never ends on a version that lost to the one it replaced.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from depthkd.config.schema import ExperimentConfig, PromotionConfig, depthkd_home
from depthkd.console import Log
from depthkd.data.shards import read_manifest
from depthkd.errors import ConfigError, RegistryError
from depthkd.locking import exclusive_lock
from depthkd.metric_names import HEADLINE_METRICS
from depthkd.promotion.policy import Decision, decide
from depthkd.storage import Location
from depthkd.tracking import promotion as registry
from depthkd.tracking.model_registry import load_registered_model
from depthkd.tracking.promotion import VersionInfo

LATENCY_REPEATS, LATENCY_WARMUP = 10, 2


@dataclass(frozen=True)
class EvaluationSet:
    """Where both models are evaluated: one split of one shard set under one protocol."""

    shards: Location
    split: str
    protocol: str
    dataset: str  # family of the data the shards were prepared from (nyu, kitti, custom)
    fingerprint: str  # the split's manifest fingerprint
    source: str  # `DataConfig.source`: the bundled synthetic set or prepared shards

    def describe(self) -> str:
        return (
            f"{self.split} of {self.shards} ({self.dataset}, {self.protocol}, {self.fingerprint})"
        )


@dataclass
class GateOutcome:
    decision: Decision
    challenger: VersionInfo
    champion: VersionInfo | None  # the champion the challenger was compared with (or replaced)
    challenger_metrics: dict[str, float] | None
    champion_metrics: dict[str, float] | None
    latency_ms: float | None
    promoted: bool  # the champion alias now points at the challenger
    dry_run: bool
    run_id: str | None  # the promotion run (None for a dry run)
    seconds: float


def evaluation_set(cfg: ExperimentConfig) -> EvaluationSet:
    """The config's shard set, the promotion split (default `data.test_split`), its protocol."""
    from depthkd.train.jobs import resolve_shards
    from depthkd.train.profile import data_profile

    shards = resolve_shards(cfg, progress=False)
    split = cfg.promotion.split or cfg.data.test_split
    splits = read_manifest(shards)["splits"]
    if split not in splits:
        raise ConfigError(
            f"promotion.split: {shards} has no split {split!r} "
            f"(it has: {', '.join(sorted(splits))})"
        )
    profile = data_profile(cfg, shards)
    return EvaluationSet(
        shards=shards,
        split=split,
        protocol=profile.protocol,
        dataset=profile.family,
        fingerprint=splits[split]["fingerprint"][:16],
        source=cfg.data.source,
    )


def not_comparable(version: VersionInfo, evaluation: EvaluationSet) -> str | None:
    """Why `version` cannot be judged on `evaluation` (None when it can)."""
    dataset, protocol = version.tags.get("dataset"), version.tags.get("protocol")
    if dataset is None or protocol is None:
        return (
            f"v{version.version} has no dataset/protocol tags (registered before the gate "
            "existed, or not by depthkd): set them with `mlflow` tags dataset and protocol"
        )
    if dataset != evaluation.dataset:
        return (
            f"v{version.version} was trained for {dataset}, "
            f"the evaluation set is {evaluation.dataset}"
        )
    if protocol != evaluation.protocol:
        return (
            f"v{version.version} is evaluated under {protocol}, "
            f"the evaluation set under {evaluation.protocol}"
        )
    return None


def other_data(challenger: VersionInfo, evaluation: EvaluationSet) -> str | None:
    """Why the challenger's training data and the evaluation set are of different kinds: the
    bundled synthetic frames judge no student of real data (`depthkd promote` without --config),
    nor the reverse. The champion is not held to it: both are evaluated on the same set."""
    source = challenger.tags.get("data_source")  # absent on versions registered before it
    if source is None or source == evaluation.source:
        return None
    return (
        f"v{challenger.version} was trained on {source} data, the evaluation set is "
        f"{evaluation.source} (give the gate the config it was trained with: --config)"
    )


def noncommercial_teacher(challenger: VersionInfo, policy: PromotionConfig) -> str | None:
    """Why the challenger may not ship: its teacher's licence forbids commercial use (a Creative
    Commons NC licence), unless the policy allows it."""
    licence = challenger.tags.get("teacher_licence", "")
    if policy.allow_noncommercial_teacher or "-nc" not in licence.lower():
        return None
    return (
        f"v{challenger.version} learnt from teacher {challenger.tags.get('teacher')!r} under "
        f"{licence}, a non-commercial licence (promotion.allow_noncommercial_teacher: true "
        "promotes it anyway)"
    )


def run_gate(
    cfg: ExperimentConfig,
    *,
    candidate: str = registry.CHALLENGER,
    dry_run: bool = False,
    log: Log = print,
) -> GateOutcome:
    """Evaluates, decides and (unless `dry_run`) records; moves `@champion` on a promotion."""
    started = time.perf_counter()
    name, policy = cfg.tracking.student_model, cfg.promotion
    challenger = registry.find_version(name, candidate)
    evaluation = evaluation_set(cfg)
    log(f"gate: {name} v{challenger.version} on {evaluation.describe()}")
    outcome = GateOutcome(
        decision=Decision(False, ""),
        challenger=challenger,
        champion=registry.champion(name),
        challenger_metrics=None,
        champion_metrics=None,
        latency_ms=None,
        promoted=False,
        dry_run=dry_run,
        run_id=None,
        seconds=0.0,
    )
    if registry.CHAMPION in challenger.aliases:
        outcome.decision = Decision(False, f"v{challenger.version} is the champion already")
        return _finish(outcome, cfg, evaluation, started, log, record=False)
    if problem := not_comparable(challenger, evaluation) or other_data(challenger, evaluation):
        outcome.decision = Decision(False, f"not comparable: {problem}")
        return _finish(outcome, cfg, evaluation, started, log)
    if problem := noncommercial_teacher(challenger, policy):
        outcome.decision = Decision(False, problem)
        return _finish(outcome, cfg, evaluation, started, log)
    model = load_registered_model(challenger.ref)
    outcome.challenger_metrics = _evaluate(model, challenger, cfg, evaluation, log)
    if policy.budget is not None:
        outcome.latency_ms = _latency_ms(model, policy.budget.height, policy.budget.width)
        size = f"{policy.budget.height}x{policy.budget.width}"
        log(f"  latency at {size}: {outcome.latency_ms:.1f} ms")
    for _ in range(policy.retries + 1):
        champion = outcome.champion
        if champion is not None and (problem := not_comparable(champion, evaluation)):
            outcome.decision = Decision(False, f"not comparable with the champion: {problem}")
            return _finish(outcome, cfg, evaluation, started, log)
        outcome.champion_metrics = (
            None
            if champion is None
            else _evaluate(load_registered_model(champion.ref), champion, cfg, evaluation, log)
        )
        outcome.decision = decide(
            outcome.challenger_metrics,
            outcome.champion_metrics,
            policy,
            latency_ms=outcome.latency_ms,
        )
        if dry_run or not outcome.decision.promote:
            break
        with exclusive_lock(_lock_path(name), message=f"waiting for another gate on {name}"):
            now = registry.champion(name)
            if _version(now) == challenger.version:
                outcome.decision = Decision(
                    False, f"v{challenger.version} was promoted by another gate meanwhile"
                )
                return _finish(outcome, cfg, evaluation, started, log, record=False)
            if _version(now) == _version(champion):
                registry.move_champion(name, challenger.version)
                outcome.promoted = True
                # recorded under the lock: the history lists the moves in the order they happened
                return _finish(outcome, cfg, evaluation, started, log)
        log(
            f"  the champion moved from {_label(champion)} to {_label(now)} during the comparison: "
            "comparing again"
        )
        outcome.champion = now
    else:
        outcome.decision = Decision(
            False, "the champion kept moving during the comparison: run the gate again"
        )
    return _finish(outcome, cfg, evaluation, started, log)


def rollback(cfg: ExperimentConfig, version: int, reason: str, *, log: Log = print) -> GateOutcome:
    """Points `@champion` back at an earlier `version`, recorded with `reason` (no evaluation)."""
    started = time.perf_counter()
    name = cfg.tracking.student_model
    if not reason.strip():
        raise ConfigError("a rollback needs --reason: why the champion goes back")
    target = registry.find_version(name, version)
    with exclusive_lock(_lock_path(name), message=f"waiting for another gate on {name}"):
        current = registry.champion(name)
        if current is None:
            raise RegistryError(f"{name} has no champion to roll back")
        if target.version >= current.version:
            raise RegistryError(
                f"v{target.version} is not earlier than the champion v{current.version}",
                hint="newer versions become champion through the gate: "
                "depthkd promote --candidate N",
            )
        former = {row.get("champion") for row in registry.decision_history(name)} - {"none"}
        if str(target.version) not in former:
            raise RegistryError(
                f"v{target.version} was never champion: a rollback returns to a former champion",
                hint=f"former champions: {', '.join(sorted(f'v{v}' for v in former))}",
            )
        registry.move_champion(name, target.version)
        outcome = GateOutcome(
            decision=Decision(True, f"rolled back: {reason.strip()}"),
            challenger=target,
            champion=current,
            challenger_metrics=None,
            champion_metrics=None,
            latency_ms=None,
            promoted=True,
            dry_run=False,
            run_id=None,
            seconds=0.0,
        )
        return _finish(outcome, cfg, None, started, log, kind="rolled back")


def _finish(
    outcome: GateOutcome,
    cfg: ExperimentConfig,
    evaluation: EvaluationSet | None,
    started: float,
    log: Log,
    *,
    record: bool = True,
    kind: str | None = None,
) -> GateOutcome:
    outcome.seconds = time.perf_counter() - started
    decision = kind or ("promoted" if outcome.promoted else "refused")
    if outcome.dry_run:
        decision = "would promote" if outcome.decision.promote else "would refuse"
    label = f"{cfg.tracking.student_model} v{outcome.challenger.version}"
    log(f"{decision}: {label}: {outcome.decision.reason}")
    if record and not outcome.dry_run:
        outcome.run_id = _record(outcome, cfg, evaluation, decision)
    return outcome


def _record(
    outcome: GateOutcome, cfg: ExperimentConfig, evaluation: EvaluationSet | None, decision: str
) -> str:
    name = cfg.tracking.student_model
    shown = dict.fromkeys([cfg.promotion.metric, *cfg.promotion.guards, *HEADLINE_METRICS])
    record: dict[str, Any] = {
        "decision": decision,
        "reason": outcome.decision.reason,
        "time": registry.now_text(),
        "challenger": outcome.challenger.version,
        "previous_champion": _label(outcome.champion),
        "champion": outcome.challenger.version
        if outcome.promoted
        else _version(outcome.champion) or "none",
        "evaluation_set": evaluation.describe() if evaluation else "none (rollback)",
        "protocol": evaluation.protocol if evaluation else "none",
        "split": evaluation.split if evaluation else "none",
        "manifest_fingerprint": evaluation.fingerprint if evaluation else "none",
        "latency_ms": "none" if outcome.latency_ms is None else f"{outcome.latency_ms:.2f}",
        "policy": json.dumps(cfg.promotion.model_dump(mode="json"), sort_keys=True),
        "challenger_metrics": {k: outcome.challenger_metrics[k] for k in shown}
        if outcome.challenger_metrics
        else {},
        "champion_metrics": {k: outcome.champion_metrics[k] for k in shown}
        if outcome.champion_metrics
        else {},
    }
    version_tags = {k: v for k, v in record.items() if not isinstance(v, dict)}
    version_tags.pop("policy")
    for side in ("challenger_metrics", "champion_metrics"):
        version_tags |= {
            f"{side.removesuffix('_metrics')}.{k}": f"{v:.6g}" for k, v in record[side].items()
        }
    registry.tag_version(name, outcome.challenger.version, version_tags)
    return registry.log_decision(name, record, outcome.decision.table())


def _evaluate(
    model: torch.nn.Module,
    version: VersionInfo,
    cfg: ExperimentConfig,
    evaluation: EvaluationSet,
    log: Log,
) -> dict[str, float]:
    from depthkd.eval.runner import evaluate_split

    sums = evaluate_split(
        model, evaluation.shards, evaluation.split, cfg.data, evaluation.protocol, tta=cfg.eval.tta
    )
    means = sums.means()
    role = "champion" if registry.CHAMPION in version.aliases else "challenger"
    log(
        f"  v{version.version} ({role}) on {evaluation.split} ({evaluation.protocol}, "
        f"{sums.n_images} images): " + ", ".join(f"{k} {means[k]:.4f}" for k in HEADLINE_METRICS)
    )
    return means


def _latency_ms(model: torch.nn.Module, height: int, width: int) -> float:
    from depthkd.eval.cost import median_latencies_ms

    image = torch.rand(1, 3, height, width)
    timed = median_latencies_ms(
        {"model": lambda: model(image)}, repeats=LATENCY_REPEATS, warmup=LATENCY_WARMUP
    )
    return timed["model"]


def _lock_path(name: str) -> Path:
    return depthkd_home() / "registry" / f"{name}.lock"


def _version(info: VersionInfo | None) -> int | None:
    return None if info is None else info.version


def _label(info: VersionInfo | None) -> str:
    return "none" if info is None else f"v{info.version}"
