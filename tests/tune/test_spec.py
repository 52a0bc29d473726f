"""The sweep YAML is validated like every config, before Ray starts: typos with file and line,
keys a trial cannot change, selection on the test split, searchers that do not fit the space."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune as ray_tune

from depthkd.errors import ConfigError
from depthkd.tune.space import param_space, rounds_per_trial, scheduler
from depthkd.tune.sweep import base_experiment, load_sweep
from depthkd.tune.teachers import needs_acclimated_teacher

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def _sweep(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: s\nbase:\n  config: {TINY}\n{body}")
    return path


SPACE = "space:\n  distill.losses.response_kd: {type: uniform, low: 0.0, high: 1.0}\n"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (SPACE + "num_sample: 4\n", r"sweep.yaml:6: unknown key 'num_sample' .*num_samples"),
        (
            "space:\n  distill.loss.attention_tau: {type: loguniform, low: 0.0, high: 4}\n",
            r"loguniform needs low > 0",
        ),
        (
            "space:\n  distill.optim.lr: {type: uniform, low: 0.1, high: 0.01}\n",
            r"needs low < high",
        ),
        ("space:\n  acclimate.steps: {type: choice, values: [1, 2]}\n", r"cannot be searched"),
        (
            "space:\n  model.teacher.name: {type: choice, values: [swin_micro]}\n",
            r"cannot be searched",
        ),
        (
            "space:\n  seed: {type: grid, values: [0, 1]}\nsearcher: {type: optuna}\n",
            r"'optuna' samples",
        ),
        (SPACE + "searcher: {type: grid}\n", r"'grid' needs every key to be a grid or choice"),
        ("space: {}\n", r"space"),
        ("space:\n  distill.steps: {type: choice, values: [4, 8]}\n", r"cannot be searched"),
        (
            "space:\n  cross_distill.loss.uncertainty_temperature: {type: uniform, low: 0.1, "
            "high: 0.5}\n",
            r"cannot be searched in a distill sweep",
        ),
        (SPACE + "metric: {name: val/abs_rell}\n", r"unknown metric 'abs_rell'"),
    ],
    ids=[
        "typo",
        "loguniform",
        "range",
        "acclimate",
        "teacher",
        "optuna-grid",
        "grid",
        "empty",
        "budget",
        "other-stage",
        "metric",
    ],
)
def test_bad_sweep_files_are_config_errors(tmp_path, body: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_sweep(_sweep(tmp_path, body))


def test_a_bad_searched_key_or_value_fails_on_the_driver(tmp_path) -> None:
    bad_key = load_sweep(
        _sweep(tmp_path, "space:\n  distill.losses.bogus: {type: uniform, low: 0, high: 1}\n")
    )
    with pytest.raises(ConfigError, match="unknown loss term 'bogus'"):
        base_experiment(bad_key)
    bad_value = load_sweep(
        _sweep(tmp_path, "space:\n  data.augment.cutflip_p: {type: uniform, low: 0, high: 2}\n")
    )
    with pytest.raises(ConfigError, match="cutflip_p"):
        base_experiment(bad_value)


def test_a_sweep_that_selects_on_test_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path / "home"))
    on_test = load_sweep(_sweep(tmp_path, SPACE + "metric: {name: test/abs_rel}\n"))
    with pytest.raises(ConfigError, match="sweep metric 'test/abs_rel' is on the test split"):
        base_experiment(on_test)
    allowed = on_test.model_copy(
        update={
            "base": on_test.base.model_copy(
                update={"overrides": ["allow_test_selection=true", "data.eval_split=test"]}
            )
        }
    )
    assert base_experiment(allowed).data.eval_split == "test"


def test_space_scheduler_and_trial_resources_follow_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path / "home"))
    spec = load_sweep(REPO / "configs" / "sweep_tiny.yaml", ["num_samples=2"])
    assert spec.base.config == TINY  # relative to the sweep file
    base = base_experiment(spec)
    assert (base.train.workers, base.train.cpus_per_worker) == (1, 0.9)
    assert base.train.storage == tmp_path / "home" / "sweeps" / "tiny-sweep" / "train"
    space = param_space(spec)
    assert space["distill.optim.lr"] == ray_tune.grid_search([0.003, 1e-7, 1e-8])
    assert isinstance(space["distill.losses.response_kd"], ray_tune.search.sample.Float)
    asha = scheduler(spec, rounds_per_trial(spec, base))
    assert (asha._time_attr, asha._max_t) == ("eval_round", 4)  # 8 steps, eval every 2
    assert spec.resources.cpus == pytest.approx(1.0)  # two trials on a 2-core laptop


def test_a_cross_distillation_sweep_searches_the_uncertainty_temperature(tmp_path) -> None:
    body = (
        "stage: cross_distill\nspace:\n"
        "  cross_distill.loss.uncertainty_temperature: {type: loguniform, low: 0.05, high: 1}\n"
        "  cross_distill.losses.cross_t2s: {type: uniform, low: 0, high: 0.5}\n"
    )
    spec = load_sweep(_sweep(tmp_path, body))
    assert spec.stage == "cross_distill"
    assert rounds_per_trial(spec, base_experiment(spec)) == 1  # tiny: 4 steps, eval every 4


def test_a_rerun_with_other_settings_is_refused(tmp_path, monkeypatch) -> None:
    from depthkd.tune.sweep import check_identity

    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path / "home"))
    spec = load_sweep(_sweep(tmp_path, SPACE))
    check_identity(spec, base_experiment(spec), tmp_path)  # first run: recorded
    check_identity(spec, base_experiment(spec), tmp_path)  # the same sweep again: a resume
    changed = load_sweep(_sweep(tmp_path, SPACE), ["num_samples=3", "base.overrides=[seed=4]"])
    with pytest.raises(
        ConfigError, match=r"started with other settings \(base.seed, .*num_samples"
    ):
        check_identity(changed, base_experiment(changed), tmp_path)


def test_a_base_with_its_own_storage_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path / "home"))
    spec = load_sweep(
        REPO / "configs" / "sweep_tiny.yaml", ["base.overrides=[train.storage=s3://b/r]"]
    )
    with pytest.raises(ConfigError, match=r"sets train.storage=s3://b/r, but a sweep keeps"):
        base_experiment(spec)


PSEUDO_ONLY = (
    "  overrides:\n    - data.synthetic.unlabeled_n=8\n    - distill.unlabeled_ratio=1.0\n"
    "    - distill.losses.pseudo_silog=1.0\n    - distill.losses.attentive_kd=0\n"
    "    - distill.losses.response_kd=0\n"
)


@pytest.mark.parametrize(
    ("overrides", "space", "acclimates"),
    [
        ("", SPACE, True),  # DisDepth's objective runs the teacher online
        (
            PSEUDO_ONLY,
            "space:\n  distill.unlabeled_ratio: {type: uniform, low: 0.5, high: 2}\n",
            False,
        ),
        (PSEUDO_ONLY, SPACE, True),  # a trial may draw response_kd > 0
    ],
)
def test_a_sweep_acclimates_a_teacher_only_when_a_trial_can_run_it_online(
    tmp_path, overrides, space, acclimates
) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: s\nbase:\n  config: {TINY}\n{overrides}{space}")
    spec = load_sweep(path)
    assert needs_acclimated_teacher(spec, base_experiment(spec)) is acclimates


def test_a_sweep_labels_with_the_teacher_a_job_would_use(tmp_path) -> None:
    from depthkd.tune.teachers import SweepTeacher, labelling_teacher

    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: s\nbase:\n  config: {TINY}\n{PSEUDO_ONLY}{SPACE}")
    base = base_experiment(load_sweep(path))
    acclimated = SweepTeacher(tmp_path / "acclimated.pt", "v2")
    student = base.model.student.name
    assert labelling_teacher("s", base, tmp_path, {student: acclimated}) == str(acclimated.path)
    named = base.model_copy(
        update={"distill": base.distill.model_copy(update={"teacher": "depthkd-teacher@v3"})}
    )
    assert labelling_teacher("s", named, tmp_path, {}) == "depthkd-teacher@v3"
    given = base.model_copy(
        update={
            "model": base.model.model_copy(
                update={"teacher": base.model.teacher.model_copy(update={"checkpoint": "t.pt"})}
            )
        }
    )
    assert labelling_teacher("s", given, tmp_path, {}) == "t.pt"
