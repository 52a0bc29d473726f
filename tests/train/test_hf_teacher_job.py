"""A Hugging Face depth model as the job's teacher (`model.teacher.source: hf`): a tiny random
metric Depth Anything written with `save_pretrained` and read offline, acclimated through the
ghost decoder, then distilled into the student by response KD, attentive KD and the pseudo-label
pass in one job. Its model files rebuild it without the directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import transformers
from mlflow import MlflowClient

from depthkd.config.schema import ExperimentConfig
from depthkd.errors import ConfigError
from depthkd.models.hf_teachers import ExternalDepthModel
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model
from depthkd.models.zoo import build_given_teacher, student_feature_channels
from depthkd.train.jobs import job_stages, prepare_job, run_job
from depthkd.train.unlabeled import PSEUDO_LABEL_DIR
from tests.hf_models import IMAGENET, save_tiny, tiny_depth_anything
from tests.train.helpers import tiny_config

UNLABELED = {"synthetic": {"layout": "nyu", "n": 30, "height": 64, "width": 96, "unlabeled_n": 10}}
EVERY_PATH = {
    "steps": 2,
    "unlabeled_ratio": 0.5,
    "losses": {"silog": 1.0, "response_kd": 0.5, "attentive_kd": 1.0, "pseudo_silog": 1.0},
}


@pytest.fixture(scope="module")
def metric_da(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_depth_anything(depth_estimation_type="metric", max_depth=10)
    return save_tiny(tmp_path_factory.mktemp("hf") / "da-metric", config, _processor())


def _processor() -> transformers.DPTImageProcessor:
    return transformers.DPTImageProcessor(**IMAGENET)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub: the variable, and the flag huggingface_hub read from it when it was imported."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _config(home: Path, hf_id: Path) -> ExperimentConfig:
    teacher = {"source": "hf", "hf_id": str(hf_id), "licence": "cc-by-nc-4.0"}
    return tiny_config(
        home,
        data=UNLABELED,
        model={
            "student": {"name": "mobilenetv2_050", "decoder_channels": [8, 8, 16, 16]},
            "teacher": teacher,
        },
        distill=EVERY_PATH,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_a_hf_teacher_is_acclimated_and_distilled_through_every_path(
    home: Path, embedded_ray, metric_da: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "da-metric"
    shutil.copytree(metric_da, copy)
    cfg = _config(home, copy)
    assert job_stages(cfg, "distill") == ["acclimate", "distill"]  # given: no teacher stage
    ctx = prepare_job(cfg, "distill", progress=False)
    given = ctx.inputs[ModelKind.TEACHER]
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = build_given_teacher(cfg.model.teacher, max_depth=10.0).eval()(image)
    shutil.rmtree(copy)  # from here on the job's own model file is the teacher
    ctx = run_job(ctx, log=lambda _: None)
    assert list(ctx.results) == ["acclimate", "distill"]
    history = MlflowClient(ctx.run.tracking_uri).get_metric_history
    for term in ("response_kd", "attentive_kd", "pseudo_silog"):
        assert [m.step for m in history(ctx.run.run_id, f"distill/train/{term}")] == [1, 2]
    assert (ctx.out_dir / PSEUDO_LABEL_DIR).is_dir()  # the pass ran with the HF teacher

    teacher = load_model(given, expect=ModelKind.TEACHER)
    assert isinstance(teacher, ExternalDepthModel)  # rebuilt from the file alone
    with torch.no_grad():
        depth = teacher(image)
    assert torch.equal(depth, expected)  # the same network and normalisation as read
    assert depth.shape == (1, 1, 64, 96) and 0 <= float(depth.min()) <= float(depth.max()) <= 10
    acclimated = load_model(ctx.results["acclimate"].exports["teacher"])
    adapted = acclimated(image).features  # the teacher's maps in the student's shapes
    assert [f.shape[1] for f in adapted] == list(student_feature_channels(cfg.model.student))
    student = MlflowClient(ctx.run.tracking_uri).get_model_version_by_alias(
        "depthkd-student", "challenger"
    )
    assert student.tags["teacher"] == f"hf:{copy}"
    assert student.tags["teacher_licence"] == "cc-by-nc-4.0"


def test_a_relative_hf_teacher_is_refused_on_the_driver(home: Path, tmp_path: Path) -> None:
    relative = save_tiny(tmp_path / "da-relative", tiny_depth_anything(), _processor())
    with pytest.raises(ConfigError, match="predicts relative disparity: jobs take metric"):
        prepare_job(_config(home, relative), "distill", progress=False)


@pytest.mark.parametrize("job", ["teacher", "cross_distill"])
def test_stages_a_hf_teacher_does_not_take_are_refused_before_any_data(
    home: Path, metric_da: Path, job: str
) -> None:
    with pytest.raises(ConfigError, match=f"job '{job}' runs {job} on its teacher"):
        prepare_job(_config(home, metric_da), job, progress=False)
    assert not (home / "data").exists()


def test_sweeps_and_the_kd_benchmark_refuse_a_hf_teacher_they_cannot_read(
    home: Path, metric_da: Path
) -> None:
    from depthkd.bench.kd import check_benchmark_config
    from depthkd.tune.sweep import base_experiment, load_sweep

    spec = load_sweep(Path(__file__).resolve().parents[2] / "configs" / "sweep_tiny.yaml")
    hf = ["model.teacher.source=hf", f"model.teacher.hf_id={metric_da}"]
    spec.base.overrides = [*spec.base.overrides, *hf]
    with pytest.raises(ConfigError, match="sweeps do not read one themselves yet"):
        base_experiment(spec)
    with pytest.raises(ConfigError, match="bench kd takes its teacher from"):
        check_benchmark_config(_config(home, metric_da))


@pytest.mark.parametrize(
    ("teacher", "error"),
    [
        ({"source": "hf"}, "source hf and hf_id go together"),
        ({"hf_id": "org/model"}, "source hf and hf_id go together"),
        ({"source": "hf", "hf_id": "org/m", "checkpoint": "t.pt"}, r"drop \['checkpoint'\]"),
    ],
)
def test_hf_teacher_settings_are_checked(teacher: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ExperimentConfig.model_validate({"model": {"teacher": teacher}})
