"""Distillation on labeled + pseudo-labelled frames through the real job path: the stages it
plans, the pass it runs with its teacher, the mixed batches, and the lineage MLflow records."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from depthkd.config.schema import ExperimentConfig
from depthkd.data.shards import manifest_fingerprint, read_manifest, sha256_file
from depthkd.models.zoo import build_student
from depthkd.train.jobs import job_stages, prepare_job, run_job
from depthkd.train.stages import distill_step
from depthkd.train.unlabeled import PSEUDO_LABEL_DIR
from tests.train.helpers import tiny_config

PSEUDO = {
    "distill": {"steps": 4, "unlabeled_ratio": 0.5, "losses": {"silog": 1.0, "pseudo_silog": 1.0}}
}


UNLABELED = {"synthetic": {"layout": "nyu", "n": 30, "height": 64, "width": 96, "unlabeled_n": 10}}


def _pseudo_config(home, **sections) -> ExperimentConfig:
    return tiny_config(home, data=UNLABELED, **PSEUDO, **sections)


def test_pseudo_label_distillation_needs_no_acclimated_teacher(tmp_path) -> None:
    cfg = _pseudo_config(tmp_path)
    assert job_stages(cfg, "distill") == ["teacher", "supervised", "distill"]
    given = cfg.model_copy(deep=True)
    given.model.teacher.checkpoint = "depthkd-teacher@pretrained"
    assert job_stages(given, "distill") == ["supervised", "distill"]  # the given teacher labels
    online = tiny_config(tmp_path, data=UNLABELED, distill={"unlabeled_ratio": 1.0})
    assert job_stages(online, "distill")[-2:] == ["acclimate", "distill"]  # KD terms need it


@pytest.mark.parametrize(
    ("distill", "match"),
    [
        ({"losses": {"silog": 1.0, "pseudo_silog": 1.0}}, "unlabeled_ratio > 0"),
        ({"unlabeled_ratio": 1.0, "losses": {"silog": 1.0}}, "no weighted term uses them"),
    ],
)
def test_pseudo_settings_that_would_do_nothing_are_refused(tmp_path, distill, match) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_config(tmp_path, distill=distill)


def test_without_unlabeled_frames_the_teacher_labels_the_training_frames(tmp_path) -> None:
    # a user's own labeled shards with the default (pseudo-label) objective still distil: the
    # teacher's dense depth on the training frames is the pseudo-label set
    own_shards = tiny_config(tmp_path, **PSEUDO).model_copy(deep=True)
    own_shards.data.shards = tmp_path / "shards"
    assert not own_shards.data.has_unlabeled_frames
    assert own_shards.data.pseudo_split == own_shards.data.train_split
    bundled = _pseudo_config(tmp_path)
    assert bundled.data.has_unlabeled_frames and bundled.data.pseudo_split == "unlabeled"
    bundled.data.unlabeled_split = "extra"
    assert bundled.data.pseudo_split == "extra"


def test_pseudo_term_reads_only_pseudo_labelled_rows() -> None:
    torch.manual_seed(0)
    cfg = ExperimentConfig.model_validate(
        {"model": {"student": {"name": "mobilenetv2_050", "decoder_channels": [8, 8, 16, 16]}}}
    )
    student = build_student(cfg.model.student, max_depth=10.0).eval()
    image = torch.rand(3, 3, 32, 48)
    depth = torch.zeros(3, 1, 32, 48)
    depth[0] = 3.0  # row 0 labeled
    pseudo = torch.zeros_like(depth)
    pseudo[1:] = 2.0  # rows 1, 2 pseudo-labelled
    batch = {"image": image, "depth": depth, "valid": depth > 0, "pseudo": pseudo}
    batch["confidence"] = torch.ones_like(pseudo)
    weights = {"silog": 1.0, "pseudo_silog": 1.0}
    loss_cfg = cfg.distill.loss
    terms = distill_step(student, None, batch, weights=weights, loss=loss_cfg, min_depth=0.1)
    assert set(terms) == {"silog", "pseudo_silog", "loss"}
    assert float(terms["pseudo_silog"]) > 0
    # ground truth on the pseudo-labelled rows leaves silog as it is: it reads row 0 only
    changed = {**batch, "depth": depth.clone()}
    changed["depth"][1:] = 0.0
    again = distill_step(student, None, changed, weights=weights, loss=loss_cfg, min_depth=0.1)
    assert torch.equal(terms["pseudo_silog"], again["pseudo_silog"])
    zero_conf = {**batch, "confidence": torch.zeros_like(pseudo)}
    muted = distill_step(student, None, zero_conf, weights=weights, loss=loss_cfg, min_depth=0.1)
    assert float(muted["pseudo_silog"]) == 0.0  # confidence 0 everywhere: nothing to learn


@pytest.mark.ray
@pytest.mark.slow
def test_distill_job_labels_its_unlabeled_frames_and_records_the_lineage(
    home, embedded_ray
) -> None:
    cfg = _pseudo_config(home)
    ctx = run_job(prepare_job(cfg, "distill", progress=False), log=lambda _: None)
    assert list(ctx.results) == ["teacher", "supervised", "distill"]
    pseudo = ctx.out_dir / PSEUDO_LABEL_DIR
    record = read_manifest(pseudo)["pseudo_labels"]
    teacher_file = ctx.results["teacher"].exports["teacher"]
    assert record["teacher"]["sha256"] == sha256_file(teacher_file)  # labelled by the job's teacher
    metrics = ctx.results["distill"].metrics
    assert "val/abs_rel" in metrics
    run = MlflowClient(ctx.run.tracking_uri).get_run(ctx.run.run_id)
    history = MlflowClient(ctx.run.tracking_uri).get_metric_history(
        ctx.run.run_id, "distill/train/pseudo_silog"
    )
    assert [m.step for m in history] == [1, 2, 3, 4]  # the term was computed at every step
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["depthkd.teacher_sha256"] == record["teacher"]["sha256"]
    assert set(ctx.test_metrics) == {"teacher", "supervised", "distill"}
    # the registered student names the teacher that labelled its frames
    student = MlflowClient(ctx.run.tracking_uri).get_model_version_by_alias(
        "depthkd-student", "challenger"
    )
    assert student.tags["teacher_sha256"] == record["teacher"]["sha256"]
    assert student.tags["teacher"] == "swin_micro (trained by this job)"


@pytest.mark.ray
def test_cross_distill_job_mixes_in_its_unlabeled_frames_unlabelled(home, embedded_ray) -> None:
    # the teacher branch labels the frames online: no pass runs, the frames are the input
    cross = {"steps": 2, "unlabeled_ratio": 1.0, "loss": {"cross_mode": "rectified"}}
    cfg = tiny_config(home, data=UNLABELED, cross_distill=cross)
    ctx = run_job(prepare_job(cfg, "cross_distill", progress=False), log=lambda _: None)
    assert list(ctx.results) == ["cross_distill"]
    assert not (ctx.out_dir / PSEUDO_LABEL_DIR).exists()
    inputs = MlflowClient(ctx.run.tracking_uri).get_run(ctx.run.run_id).inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [manifest_fingerprint(read_manifest(ctx.shards))]


def test_a_stage_that_mixes_in_frames_it_was_not_given_fails_on_the_driver(tmp_path) -> None:
    from depthkd.errors import ConfigError
    from depthkd.train.launcher import run_stage
    from depthkd.train.profile import DataProfile

    cfg = _pseudo_config(tmp_path)
    profile = DataProfile(family="nyu", max_depth=10.0, loss_min_depth=0.1, protocol="nyu-eigen")
    with pytest.raises(ConfigError, match="given no frames without ground truth"):
        run_stage(cfg, "distill", shards=tmp_path, profile=profile, run=None, out_dir=tmp_path)
