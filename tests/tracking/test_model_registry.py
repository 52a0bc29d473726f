"""Depth models through MLflow: log + register under an alias, load back, pyfunc predictions."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from depthkd.config.schema import StudentConfig
from depthkd.errors import CheckpointError, RegistryError
from depthkd.models.depth_model import DepthModel
from depthkd.models.serialization import load_model, save_model
from depthkd.models.zoo import build_student
from depthkd.tracking.logger import RunLogger
from depthkd.tracking.model_registry import (
    load_registered_model,
    log_depth_model,
    register_model,
    resolve_model_reference,
)
from depthkd.tracking.runs import JobRun, open_job_run

STUDENT = "depthkd-student"
H, W = 40, 56  # not a multiple of the encoder stride: the model pads and crops
# The pyfunc runs on CUDA when there is one (TF32 convolutions there); the reference on the CPU.
TOL = {"rtol": 1e-2, "atol": 1e-2} if torch.cuda.is_available() else {"rtol": 1e-5, "atol": 1e-5}


def _student(seed: int) -> DepthModel:
    torch.manual_seed(seed)
    cfg = StudentConfig(name="mobilenetv2_050", decoder_channels=(8, 8, 8, 8))
    return build_student(cfg, max_depth=10.0).eval()


def _depth(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(image)


@pytest.fixture
def logged(home: Path) -> tuple[JobRun, DepthModel, str]:
    """A job run with a tiny student logged and registered as version 1 @challenger."""
    run = open_job_run(experiment="distill", job_id="job-1")
    model = _student(0)
    uri = log_depth_model(run, model, name="student")
    assert register_model(uri, STUDENT, alias="challenger", tags={"dataset": "nyu"}) == 1
    return run, model, uri


def test_register_sets_version_alias_and_tags(
    logged: tuple[JobRun, DepthModel, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _, uri = logged
    # MLflow 3.17's list_artifacts looks up a logged model named like the directory through the
    # global tracking URI, whatever URI the client has.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run.tracking_uri)
    assert uri.startswith("models:/m-")
    client = MlflowClient(run.tracking_uri)
    version = client.get_model_version_by_alias(STUDENT, "challenger")
    # The SQL registry returns the version as an int although ModelVersion documents a str.
    assert str(version.version) == "1" and version.run_id == run.run_id
    assert version.tags == {"dataset": "nyu"}
    # The logged model lives in the run's experiment, next to its run artifacts.
    model = client.get_logged_model(uri.removeprefix("models:/"))
    assert model.experiment_id == run.experiment_id and model.source_run_id == run.run_id
    weights = [f.path for f in client.list_artifacts(run.run_id, "student")]
    assert "student/state_dict.pt" in weights


def test_registered_model_gives_the_same_depth(logged: tuple[JobRun, DepthModel, str]) -> None:
    run, model, _ = logged
    image = torch.rand(2, 3, H, W)
    expected = _depth(model, image)
    for ref in ("models:/depthkd-student@challenger", "depthkd-student@challenger"):
        loaded = load_registered_model(ref)
        assert not loaded.training and loaded.arch == model.arch
        assert torch.equal(_depth(loaded, image), expected)
    for ref in (f"runs:/{run.run_id}/student", run.run_id, "models:/depthkd-student/1"):
        assert torch.equal(_depth(load_registered_model(ref), image), expected)


def test_a_second_version_moves_the_alias(logged: tuple[JobRun, DepthModel, str]) -> None:
    run, first, uri = logged
    second = _student(1)
    log_depth_model(run, second, name="student", step=5)
    # A runs:/ reference registers the run's latest model of that name.
    assert register_model(f"runs:/{run.run_id}/student", STUDENT, alias="challenger") == 2
    assert register_model(uri, STUDENT, alias="champion") == 3
    image = torch.rand(1, 3, H, W)
    assert torch.equal(
        _depth(load_registered_model(f"{STUDENT}@challenger"), image), _depth(second, image)
    )
    # Version 1 still holds its own weights, though the run's artifact now has the second ones.
    assert torch.equal(
        _depth(load_registered_model(f"models:/{STUDENT}/1"), image), _depth(first, image)
    )
    assert torch.equal(
        _depth(load_registered_model(f"{STUDENT}@champion"), image), _depth(first, image)
    )


def test_logging_a_model_keeps_the_metric_history_exactly_once(home: Path) -> None:
    run = open_job_run(experiment="distill", job_id="job-2")
    logger = RunLogger(run, system_metrics_interval=None)
    for step in range(4):
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step)
    logger.flush()
    log_depth_model(run, _student(0), step=3)
    history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]


def test_logged_model_is_code_and_weights_not_a_pickle(
    home: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = open_job_run(experiment="distill", job_id="job-3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run.tracking_uri)
    with caplog.at_level("WARNING"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        uri = log_depth_model(run, _student(0), name="student")
    warned = " ".join([r.getMessage() for r in caplog.records] + [str(w.message) for w in caught])
    assert "CloudPickle" not in warned and "signature" not in warned
    model_dir = Path(mlflow.artifacts.download_artifacts(uri, tracking_uri=run.tracking_uri))
    files = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith(".pkl")]
    assert "pyfunc_model.py" in files and any(f.endswith("state_dict.pt") for f in files)


def test_pyfunc_predicts_metric_depth_like_the_torch_model(
    logged: tuple[JobRun, DepthModel, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, model, _ = logged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run.tracking_uri)
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading prepends the model's code dir
    pyfunc = mlflow.pyfunc.load_model(f"models:/{STUDENT}@challenger")
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = pyfunc.predict(image)
    assert isinstance(depth, np.ndarray) and depth.shape == (H, W) and depth.dtype == np.float32
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    np.testing.assert_allclose(depth, _depth(model, tensor)[0, 0].numpy(), **TOL)
    assert pyfunc.predict(image[:24, :30]).shape == (24, 30)  # any size: the model pads
    signature = pyfunc.metadata.signature
    assert signature.inputs.inputs[0].type == np.dtype(np.uint8)
    assert signature.inputs.inputs[0].shape == (-1, -1, 3)
    assert signature.outputs.inputs[0].shape == (-1, -1)
    with pytest.raises(Exception, match="shape"):  # the signature refuses a greyscale array
        pyfunc.predict(image[..., 0])


@pytest.mark.slow
def test_pyfunc_loads_in_a_fresh_process_from_its_own_code(
    logged: tuple[JobRun, DepthModel, str], tmp_path: Path
) -> None:
    run, model, _ = logged
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    script = (
        "import json, sys, numpy as np, mlflow.pyfunc\n"
        f"m = mlflow.pyfunc.load_model('models:/{STUDENT}@challenger')\n"
        f"np.save('depth.npy', m.predict(np.load({str(tmp_path / 'image.npy')!r})))\n"
        "print(json.dumps(sys.modules['depthkd.tracking.model_registry'].__file__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={
            "MLFLOW_TRACKING_URI": run.tracking_uri,
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CloudPickle" not in out.stderr and "pickle" not in out.stderr.lower()
    module_file = json.loads(out.stdout.strip().splitlines()[-1])
    # The wrapper came from the code logged with the model, not from this checkout.
    assert "/code/depthkd/" in module_file and not module_file.startswith(str(Path.cwd()))
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    expected = _depth(model, tensor)[0, 0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "depth.npy"), expected, **TOL)


def test_unknown_alias_names_the_model_and_lists_aliases(
    logged: tuple[JobRun, DepthModel, str],
) -> None:
    with pytest.raises(RegistryError, match="'depthkd-student' has no alias 'champion'") as info:
        load_registered_model("models:/depthkd-student@champion")
    assert info.value.hint is not None and "challenger (v1)" in info.value.hint
    with pytest.raises(RegistryError, match="no version 7"):
        resolve_model_reference("models:/depthkd-student/7")


@pytest.mark.parametrize(
    ("ref", "match", "hint"),
    [
        (
            "depthkd-acclimated-teacher@newest",
            "no registered model 'depthkd-acclimated-teacher'",
            STUDENT,
        ),
        ("depthkd-student", "not a model reference", "depthkd-student@<alias>"),
        ("what/ever", "not a model reference", "registered models: depthkd-student"),
        ("runs:/0123456789abcdef0123456789abcdef/student", "no MLflow run", None),
        ("models:/m-0123456789abcdef0123456789abcdef", "no logged model", None),
        ("models:/depthkd-student/Production", "stages", "challenger"),
    ],
)
def test_bad_references(
    logged: tuple[JobRun, DepthModel, str], ref: str, match: str, hint: str | None
) -> None:
    with pytest.raises(RegistryError, match=match) as info:
        resolve_model_reference(ref)
    if hint is not None:
        assert info.value.hint is not None and hint in info.value.hint


def test_run_reference_with_a_wrong_name_lists_the_logged_models(
    logged: tuple[JobRun, DepthModel, str],
) -> None:
    run, _, _ = logged
    with pytest.raises(RegistryError, match="no depth model 'teacher'") as info:
        resolve_model_reference(f"runs:/{run.run_id}/teacher")
    assert info.value.hint == f"use runs:/{run.run_id}/student"


def test_weights_file_round_trip_and_errors(tmp_path: Path) -> None:
    model = _student(0)
    path = save_model(torch.nn.parallel.DataParallel(model), tmp_path / "w.pt")
    image = torch.rand(1, 3, H, W)
    assert torch.equal(_depth(load_model(path), image), _depth(model, image))
    torch.save({"state_dict": {}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a depthkd model file"):
        load_model(tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="has no arch"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x.pt")
