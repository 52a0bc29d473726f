"""The promotion gate on a real MLflow store and real shards: random tiny students of known
quality (measured here on the tiny synthetic test split) registered as versions, then gated.

Every decision must be visible afterwards: the alias, the version's `promotion.*` tags, and one
`promotion` run per decision in the order `depthkd registry history` prints.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from depthkd.config.loader import save_config, with_values
from depthkd.config.schema import ExperimentConfig
from depthkd.data.bundled import ensure_shards
from depthkd.errors import RegistryError
from depthkd.eval.runner import evaluate_split
from depthkd.models.serialization import load_model, save_model
from depthkd.models.zoo import build_student
from depthkd.promotion.gate import rollback, run_gate
from depthkd.promotion.policy import relative_gain
from depthkd.tracking.model_registry import log_depth_model, register_model
from depthkd.tracking.promotion import decision_history
from depthkd.tracking.runs import open_job_run
from tests.train.helpers import tiny_config

REPO = Path(__file__).resolve().parents[2]
NAME = "depthkd-student"
SEEDS = range(8)


@dataclass(frozen=True)
class Student:
    seed: int
    path: Path
    metrics: dict[str, float]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate-data")
    return ensure_shards(tiny_config(root).data, root, progress=False)


@pytest.fixture(scope="module")
def students(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Student]:
    """Random tiny students and their test metrics (nyu-eigen), by seed."""
    root = tmp_path_factory.mktemp("students")
    cfg = tiny_config(root)
    found = {}
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = build_student(cfg.model.student, max_depth=10.0).eval()
        metrics = evaluate_split(model, shards, "test", cfg.data, "nyu-eigen").means()
        found[seed] = Student(seed, save_model(model, root / f"student-{seed}.pt"), metrics)
    return found


@pytest.fixture
def cfg(home: Path, shards: Path) -> ExperimentConfig:
    return with_values(tiny_config(home), {"data.shards": str(shards)})


def _register(
    student: Student,
    *,
    dataset: str = "nyu",
    protocol: str = "nyu-eigen",
    source: str = "prepared-shards",
    teacher_licence: str | None = None,
) -> int:
    run = open_job_run(experiment="tests", job_id=f"student-{student.seed}")
    uri = log_depth_model(run, load_model(student.path), name="student")
    tags = {"dataset": dataset, "protocol": protocol, "data_source": source}
    if teacher_licence:
        tags |= {"teacher": "depth-anything-v2-large", "teacher_licence": teacher_licence}
    return register_model(uri, NAME, alias="challenger", tags=tags)


def _client(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def _champion(home: Path) -> int | None:
    aliases = _client(home).get_registered_model(NAME).aliases
    return int(aliases["champion"]) if "champion" in aliases else None


def _tags(home: Path, version: int) -> dict[str, str]:
    return _client(home).get_model_version(NAME, str(version)).tags


def _pair(students: dict[int, Student], want) -> tuple[Student, Student]:
    """The first (challenger, champion) pair of distinct students for which `want` holds."""
    for a in students.values():
        for b in students.values():
            if a.seed != b.seed and want(a.metrics, b.metrics):
                return a, b
    pytest.fail("no pair of the random students has the wanted relation")


def _gain(metric: str, a: dict, b: dict) -> float:
    return relative_gain(metric, a[metric], b[metric])


def _clear_win(a: dict, b: dict) -> bool:
    return _gain("abs_rel", a, b) > 0.05 and all(_gain(m, a, b) > 0 for m in ("rmse", "d1"))


def test_first_challenger_becomes_champion_then_a_better_one_replaces_it(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    better, worse = _pair(students, _clear_win)
    first = _register(worse)
    outcome = run_gate(cfg, log=lambda *_: None)
    assert outcome.promoted and _champion(home) == first
    assert outcome.decision.reason.startswith("first champion")
    tags = _tags(home, first)
    assert tags["promotion.decision"] == "promoted"
    assert tags["promotion.previous_champion"] == "none"
    assert tags["promotion.protocol"] == "nyu-eigen" and tags["promotion.split"] == "test"
    assert len(tags["promotion.manifest_fingerprint"]) == 16
    assert float(tags["promotion.challenger.abs_rel"]) == pytest.approx(
        worse.metrics["abs_rel"], rel=1e-5
    )

    second = _register(better)
    outcome = run_gate(cfg, log=lambda *_: None)
    assert outcome.promoted and _champion(home) == second
    # both were evaluated now, on the same set, with the shared evaluator
    assert outcome.challenger_metrics["abs_rel"] == pytest.approx(better.metrics["abs_rel"])
    assert outcome.champion_metrics["abs_rel"] == pytest.approx(worse.metrics["abs_rel"])
    assert _tags(home, second)["promotion.previous_champion"] == f"v{first}"
    history = decision_history(NAME)
    assert [(h["decision"], h["challenger"], h["champion"]) for h in history] == [
        ("promoted", str(first), str(first)),
        ("promoted", str(second), str(second)),
    ]


def test_a_worse_challenger_is_refused_and_the_champion_stays(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    better, worse = _pair(students, _clear_win)
    champion = _register(better)
    run_gate(cfg, log=lambda *_: None)
    challenger = _register(worse)
    outcome = run_gate(cfg, log=lambda *_: None)
    assert not outcome.promoted and _champion(home) == champion
    assert "not better than the champion's" in outcome.decision.reason
    tags = _tags(home, challenger)
    assert tags["promotion.decision"] == "refused"
    assert tags["promotion.reason"] == outcome.decision.reason
    assert decision_history(NAME)[-1]["decision"] == "refused"


def test_better_by_less_than_the_margin_is_refused(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    better, worse = _pair(students, _clear_win)
    _register(worse)
    run_gate(cfg, log=lambda *_: None)
    _register(better)
    gain = _gain("abs_rel", better.metrics, worse.metrics)
    strict = with_values(cfg, {"promotion.margin": round(gain + 0.01, 4)})
    outcome = run_gate(strict, log=lambda *_: None)
    assert not outcome.promoted
    assert "better by less than the" in outcome.decision.reason


def test_a_guard_metric_regressing_is_refused(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    challenger, champion = _pair(
        students, lambda a, b: _gain("abs_rel", a, b) > 0.02 and _gain("rmse", a, b) < -0.03
    )
    first = _register(champion)
    run_gate(cfg, log=lambda *_: None)
    _register(challenger)
    outcome = run_gate(with_values(cfg, {"promotion.guards": {"rmse": 0.02}}), log=print)
    assert not outcome.promoted and _champion(home) == first
    assert outcome.decision.reason.startswith("guard rmse:")


def test_other_dataset_or_protocol_is_not_comparable(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    _register(students[0], dataset="kitti", protocol="kitti-garg-kbcrop")
    outcome = run_gate(cfg, log=lambda *_: None)
    assert not outcome.promoted and _champion(home) is None
    assert outcome.decision.reason == (
        "not comparable: v1 was trained for kitti, the evaluation set is nyu"
    )
    assert outcome.challenger_metrics is None  # refused before any evaluation


def test_a_student_of_a_noncommercial_teacher_is_refused_unless_allowed(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    first = _register(students[0], teacher_licence="CC-BY-NC-4.0")
    outcome = run_gate(cfg, log=lambda *_: None)
    assert not outcome.promoted and outcome.challenger_metrics is None and _champion(home) is None
    assert outcome.decision.reason == (
        f"v{first} learnt from teacher 'depth-anything-v2-large' under CC-BY-NC-4.0, a "
        "non-commercial licence (promotion.allow_noncommercial_teacher: true promotes it anyway)"
    )
    assert _tags(home, first)["promotion.decision"] == "refused"
    allowed = with_values(cfg, {"promotion.allow_noncommercial_teacher": True})
    assert run_gate(allowed, log=lambda *_: None).promoted and _champion(home) == first
    _register(students[1], teacher_licence="apache-2.0")  # commercial use allowed: judged
    assert run_gate(cfg, log=lambda *_: None).challenger_metrics is not None


def test_a_model_of_real_data_is_not_judged_on_the_bundled_frames_nor_the_reverse(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    """`depthkd promote` without --config evaluates on the bundled synthetic set: a student
    trained on prepared (real) NYU shards, tagged nyu like it, is refused there, and the other
    way round (the gate's set here is prepared shards)."""
    _register(students[0], source="bundled-synthetic")
    outcome = run_gate(cfg, log=lambda *_: None)
    assert not outcome.promoted and outcome.challenger_metrics is None
    assert outcome.decision.reason == (
        "not comparable: v1 was trained on bundled-synthetic data, the evaluation set is "
        "prepared-shards (give the gate the config it was trained with: --config)"
    )


def test_a_first_challenger_below_the_floor_is_refused(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    _register(students[0])
    outcome = run_gate(with_values(cfg, {"promotion.floor": {"abs_rel": 0.01}}), log=print)
    assert not outcome.promoted and _champion(home) is None
    assert outcome.decision.reason.startswith("floor abs_rel:")


def test_a_latency_budget_is_measured_and_enforced(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    _register(students[0])
    budget = {"promotion.budget": {"height": 64, "width": 96, "ms": 0.001}}
    outcome = run_gate(with_values(cfg, budget), log=lambda *_: None)
    assert outcome.latency_ms is not None and outcome.latency_ms > 0.001
    assert not outcome.promoted and outcome.decision.reason.startswith("budget latency@64x96:")


def test_dry_run_prints_the_decision_and_changes_nothing(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    version = _register(students[0])
    lines: list[str] = []
    outcome = run_gate(cfg, dry_run=True, log=lines.append)
    assert outcome.decision.promote and not outcome.promoted and outcome.run_id is None
    assert lines[-1].startswith(f"would promote: {NAME} v{version}: first champion")
    assert _champion(home) is None
    assert not any(k.startswith("promotion.") for k in _tags(home, version))
    assert decision_history(NAME) == []


def test_rollback_moves_the_champion_back_with_the_reason(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student]
) -> None:
    better, worse = _pair(students, _clear_win)
    first = _register(worse)
    run_gate(cfg, log=lambda *_: None)
    refused = _register(worse)  # the same weights: not better, never champion
    assert not run_gate(cfg, log=lambda *_: None).promoted
    second = _register(better)
    run_gate(cfg, log=lambda *_: None)
    assert _champion(home) == second
    with pytest.raises(RegistryError, match="was never champion"):
        rollback(cfg, refused, "it looked fine", log=lambda *_: None)
    with pytest.raises(RegistryError, match="not earlier than the champion"):
        rollback(cfg, second, "no-op", log=lambda *_: None)

    rollback(cfg, first, "v3 misbehaves on night frames", log=lambda *_: None)
    assert _champion(home) == first
    last = decision_history(NAME)[-1]
    assert last["decision"] == "rolled back" and last["previous_champion"] == f"v{second}"
    assert last["reason"] == "rolled back: v3 misbehaves on night frames"
    out = subprocess.run(
        [sys.executable, "-m", "depthkd.cli.main", "registry", "history", "--model", NAME],
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == f"{NAME}: 4 decision(s), oldest first"
    assert "rolled back" in lines[-1] and f"v{second} -> v{first}" in lines[-1]
    assert "night frames" in lines[-1]


@pytest.mark.multiproc
def test_two_gates_at_once_leave_the_champion_on_the_better_challenger(
    cfg: ExperimentConfig, home: Path, students: dict[int, Student], tmp_path: Path
) -> None:
    # a champion and two challengers that both beat it; one of them beats the other too
    best, middle, weakest = next(
        (a, b, c)
        for a, b, c in itertools.permutations(students.values(), 3)
        if _clear_win(a.metrics, b.metrics) and _clear_win(b.metrics, c.metrics)
    )
    _register(weakest)
    run_gate(cfg, log=lambda *_: None)
    versions = {"middle": _register(middle), "best": _register(best)}
    config = tmp_path / "gate.yaml"
    save_config(cfg, config)
    started = time.monotonic()
    gates = [
        subprocess.Popen(
            [sys.executable, "-m", "depthkd.cli.main", "promote", "--candidate", str(v),
             "--config", str(config)],
            cwd=REPO,
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for v in versions.values()
    ]  # fmt: skip
    outputs = [g.communicate(timeout=300)[0] for g in gates]
    assert all(g.returncode == 0 for g in gates), outputs
    assert _champion(home) == versions["best"], outputs
    decisions = {h["challenger"]: h for h in decision_history(NAME)[1:]}
    assert decisions[str(versions["best"])]["decision"] == "promoted"
    assert decisions[str(versions["middle"])]["decision"] in ("promoted", "refused")
    assert time.monotonic() - started < 300


def _env(home: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return env | {"DEPTHKD_HOME": str(home), "PYTHONUNBUFFERED": "1"}
