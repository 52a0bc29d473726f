"""Named, weighted loss terms: config errors that name the key, a weight of 0 that is exactly
leaving the term out, dotted overrides that change one term, and test-split selection refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from depthkd.config.loader import load_config
from depthkd.config.schema import LOSS_TERMS
from depthkd.errors import ConfigError
from depthkd.models.serialization import save_model
from depthkd.models.zoo import build_acclimated_teacher
from depthkd.train.profile import DataProfile
from depthkd.train.stages import STAGES
from tests.train.helpers import tiny_config

PROFILE = DataProfile(family="nyu", max_depth=10.0, loss_min_depth=0.1, protocol="nyu-eigen")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        (
            "distill:\n  losses:\n    silog: 1.0\n    atentive_kd: 1.0\n",
            r"exp.yaml:2: distill.losses: .*unknown loss term 'atentive_kd'",
        ),
        (
            "distill:\n  losses:\n    silog: 1.0\n    response_kd: -0.5\n",
            r"exp.yaml:2: distill.losses: .*'response_kd': weight must be a number >= 0",
        ),
        (
            "distill:\n  losses:\n    silog: 1.0\n    silog_ghost: 1.0\n",
            r"distill.losses: .*'silog_ghost' is not available to the distill stage.*acclimate",
        ),
        (
            "supervised:\n  losses:\n    attentive_kd: 1.0\n",
            r"supervised.losses: .*'attentive_kd' is not available to the supervised stage",
        ),
        ("acclimate:\n  losses:\n    silog_ghost: 0\n", r"acclimate.losses: .*weight > 0"),
    ],
    ids=["unknown", "negative", "other-stage", "not-in-baseline", "all-zero"],
)
def test_bad_loss_terms_are_config_errors_naming_the_key(tmp_path, yaml_text, match) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, yaml_text))


def test_a_dotted_override_changes_one_term_and_a_file_states_the_whole_objective(
    tmp_path,
) -> None:
    cfg = load_config(None, ["distill.losses.response_kd=0.2", "distill.loss.attention_tau=0.5"])
    assert cfg.distill.losses == {
        "silog": 1.0,
        "attentive_kd": 1.0,
        "response_kd": 0.2,
        "pseudo_silog": 0.0,  # listed in the default objective, weighted 0: not computed
    }
    assert "pseudo_silog" not in cfg.distill.active_losses()
    assert cfg.distill.loss.attention_tau == 0.5
    only_silog = load_config(_write(tmp_path, "distill:\n  losses:\n    silog: 1.0\n"))
    assert only_silog.distill.losses == {"silog": 1.0}
    assert load_config(None).cross_distill.losses == LOSS_TERMS["cross_distill"]
    with pytest.raises(ConfigError, match="unknown loss term 'bogus'"):
        load_config(None, ["distill.losses.bogus=1"])


def test_searchable_settings_are_plain_dotted_keys() -> None:
    cfg = load_config(
        None,
        [
            "distill.loss.attention_weights=[1, 0.5, 0.25, 0]",
            "cross_distill.loss.uncertainty_temperature=0.1",
            "data.augment.cutflip_p=0.3",
        ],
    )
    assert cfg.distill.loss.attention_weights == (1.0, 0.5, 0.25, 0.0)
    assert cfg.cross_distill.loss.uncertainty_temperature == 0.1
    assert cfg.data.augment.cutflip_p == 0.3
    with pytest.raises(ConfigError, match="attention_weights"):
        load_config(None, ["distill.loss.attention_weights=[0, 0, 0, 0]"])


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    image = torch.rand(2, 3, 64, 96)
    depth = 1 + 4 * image.mean(1, keepdim=True)
    return {"image": image, "depth": depth, "valid": depth > 0}


@pytest.mark.parametrize(
    ("stage", "zeroed"),
    [("distill", "response_kd"), ("distill", "attentive_kd"), ("acclimate", "silog_teacher")],
)
def test_weight_zero_is_exactly_leaving_the_term_out(tmp_path, stage: str, zeroed: str) -> None:
    full = dict(LOSS_TERMS[stage])
    with_zero = {**full, zeroed: 0.0}
    without = {k: v for k, v in full.items() if k != zeroed}
    inputs = {}
    if STAGES.get(stage).needs_teacher:
        base = tiny_config(tmp_path)
        model = build_acclimated_teacher(base.model.teacher, base.model.student, max_depth=10.0)
        inputs = {"teacher": save_model(model, tmp_path / "teacher.pt")}
    results = []
    for losses in (with_zero, without):
        cfg = tiny_config(tmp_path, **{stage: {"losses": losses}})
        torch.manual_seed(0)
        built = STAGES.get(stage).build(cfg, PROFILE, inputs)
        terms = built.step(built.model.train(), _batch(), 0)
        terms["loss"].backward()
        grads = [p.grad.clone() for p in built.model.parameters() if p.grad is not None]
        results.append((terms, grads))
    (zero_terms, zero_grads), (out_terms, out_grads) = results
    assert zeroed not in zero_terms and set(zero_terms) == set(out_terms)
    assert torch.equal(zero_terms["loss"], out_terms["loss"])
    assert len(zero_grads) == len(out_grads)
    assert all(torch.equal(a, b) for a, b in zip(zero_grads, out_grads, strict=True))


def test_the_objective_is_the_weighted_sum_of_the_logged_terms(tmp_path) -> None:
    weights = {"silog_teacher": 0.7, "silog_student": 1.3, "confidence_fit": 0.5}
    cfg = tiny_config(tmp_path, cross_distill={"losses": {**weights, "cross_t2s": 0.2}})
    built = STAGES.get("cross_distill").build(cfg, PROFILE, {})
    terms = built.step(built.model.train(), _batch(), 0)  # even step: the supervised phase
    assert set(terms) == {*weights, "loss"}
    expected = sum(w * terms[name] for name, w in weights.items())
    assert torch.allclose(terms["loss"], expected)
    odd = built.step(built.model.train(), _batch(), 1)  # pseudo-label phase: cross_s2t left out
    assert set(odd) == {"cross_t2s", "loss"}


def test_selecting_on_the_test_split_is_refused_unless_allowed(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"data.eval_split is the test split 'test'"):
        load_config(_write(tmp_path, "data:\n  eval_split: test\n"))
    cfg = load_config(_write(tmp_path, "allow_test_selection: true\ndata:\n  eval_split: test\n"))
    assert cfg.data.eval_split == "test"
    assert load_config(None).data.eval_split == "val"
