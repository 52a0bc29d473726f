"""Encoder weights by name and by location, without the network: timm's pretrained weights and
`hf-hub:` repos from a Hugging Face cache the tests fill (`HF_HUB_OFFLINE=1`, in a fresh process,
as huggingface_hub reads its settings on import), `s3://` objects from a real S3 server, and the
driver's refusal of what cannot be fetched or does not fit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from depthkd.config.schema import ExperimentConfig, StudentConfig
from depthkd.errors import CheckpointError
from depthkd.models.weights import fetch_weights, pretrained_repo
from depthkd.models.zoo import build_student, check_encoder_weights
from depthkd.train.launcher import _weights_for_workers
from tests import services

REPO = Path(__file__).resolve().parents[2]
STUDENT = "mobilenetv2_050"
REVISION = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as the hub names snapshots


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model(STUDENT).state_dict().items()}


def _cache_repo(hf_home: Path, repo: str, state: dict[str, torch.Tensor]) -> None:
    """`repo` in huggingface_hub's cache layout, as a download would leave it."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)


def _offline_env(hf_home: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return env | {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "DEPTHKD_HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def test_pretrained_and_hub_weights_load_from_the_cache_offline(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    repo = pretrained_repo(STUDENT)
    assert repo == "timm/mobilenetv2_050.lamb_in1k"  # timm's default tag
    _cache_repo(hf_home, repo, _state(1))
    _cache_repo(hf_home, "someone/my-encoder", _state(2))
    check = (
        "import sys, torch; from depthkd.config.schema import StudentConfig; "
        "from depthkd.models.zoo import build_student; "
        "cfg = StudentConfig.model_validate({'name': 'mobilenetv2_050', **eval(sys.argv[1])}); "
        "print(build_student(cfg, max_depth=10).backbone.body.conv_stem.weight.sum().item())"
    )
    sums = {}
    for source in ("{'pretrained': True}", "{'weights': 'hf-hub:someone/my-encoder@main'}"):
        done = subprocess.run(
            [sys.executable, "-c", check, source],
            env=_offline_env(hf_home, tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        sums[source] = float(done.stdout.split()[-1])
    assert sums["{'pretrained': True}"] == pytest.approx(_state(1)["conv_stem.weight"].sum().item())
    expected = _state(2)["conv_stem.weight"].sum().item()
    assert sums["{'weights': 'hf-hub:someone/my-encoder@main'}"] == pytest.approx(expected)


def test_offline_pretrained_without_a_cache_fails_on_the_driver_in_seconds(tmp_path: Path) -> None:
    home = tmp_path / "home"
    command = [sys.executable, "-m", "depthkd.cli.main", "supervised", "--config"]
    command += [str(REPO / "configs" / "tiny.yaml"), "model.student.pretrained=true", "--quiet"]
    started = time.monotonic()
    done = subprocess.run(
        command,
        env=_offline_env(tmp_path / "empty-hf", home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert elapsed <= 30, elapsed
    shown = done.stdout + done.stderr
    assert "model.student (mobilenetv2_050): cannot fetch hf-hub:timm/mobilenetv2_050" in shown
    assert "local file" in shown and "HF_HUB_OFFLINE=1" in shown  # the alternatives
    assert not (home / "data").exists()  # refused before any data was made


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.s3_bucket(tmp_path_factory.mktemp("s3"), "weights") as bucket:
        yield bucket


@pytest.mark.multiproc
def test_s3_weights_are_downloaded_once_per_node_and_again_when_replaced(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from depthkd import storage

    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path / "home"))
    url = f"{bucket}/encoders/student.safetensors"
    for seed in (1, 2):
        save_file(_state(seed), str(tmp_path / f"{seed}.safetensors"))
    storage.upload_file(tmp_path / "1.safetensors", url)
    cfg = StudentConfig(name=STUDENT, weights=url)
    first = build_student(cfg, max_depth=10).backbone.body.conv_stem.weight
    assert torch.equal(first, _state(1)["conv_stem.weight"])
    cached = fetch_weights(url)
    assert cached.is_relative_to(tmp_path / "home" / "cache" / "weights")
    written = cached.stat().st_mtime_ns
    assert fetch_weights(url) == cached  # the node's copy, not a second download
    assert cached.stat().st_mtime_ns == written
    storage.upload_file(tmp_path / "2.safetensors", url)  # replaced at the same URL
    again = build_student(cfg, max_depth=10).backbone.body.conv_stem.weight
    assert torch.equal(again, _state(2)["conv_stem.weight"])


@pytest.mark.multiproc
def test_a_local_file_travels_to_workers_beside_remote_checkpoints(
    bucket: str, tmp_path: Path
) -> None:
    from depthkd import storage

    path = tmp_path / "encoder.safetensors"
    save_file(_state(1), str(path))
    cfg = ExperimentConfig.model_validate({"model": {"student": {"weights": str(path)}}})
    assert _weights_for_workers(cfg, tmp_path / "job") is cfg  # a shared disk: as it is
    placed = _weights_for_workers(cfg, f"{bucket}/ray/job").model.student.weights
    assert placed == f"{bucket}/ray/job/student-weights.safetensors"
    assert storage.read_bytes(placed) == path.read_bytes()
    assert cfg.model.student.weights == str(path)  # the driver's config is left alone


def test_weights_of_another_size_are_refused_on_the_driver_with_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "wide.safetensors"
    wide = timm.create_model("mobilenetv2_100").state_dict()
    save_file({k: v.contiguous() for k, v in wide.items()}, str(path))
    cfg = ExperimentConfig.model_validate(
        {"model": {"student": {"name": STUDENT, "weights": str(path)}}}
    )
    with pytest.raises(CheckpointError) as refused:
        check_encoder_weights(cfg.model)
    message = str(refused.value)
    assert message.startswith(f"model.student ({STUDENT}): weights file {path} does not fit")
    assert (
        "wrong shape (" in message and "conv_stem.weight (32, 3, 3, 3) vs (16, 3, 3, 3)" in message
    )


def test_pretrained_where_no_released_weights_fit_is_refused_before_any_fetch() -> None:
    # swin_micro is swin_tiny's code at another size: nothing is fetched for it
    cfg = ExperimentConfig.model_validate(
        {"model": {"student": {"name": STUDENT}, "teacher": {"name": "swin_micro"}}}
    )
    cfg.model.teacher.pretrained = True
    with pytest.raises(CheckpointError, match=r"model\.teacher \(swin_micro\): .* another size"):
        check_encoder_weights(cfg.model)
    # a timm model that timm has no released weights for (a timm name, not a registered one)
    unreleased = ExperimentConfig.model_validate(
        {"model": {"student": {"name": "efficientnet_b0_gn", "pretrained": True}}}
    )
    with pytest.raises(CheckpointError, match=r"no pretrained weights for 'efficientnet_b0_gn'"):
        check_encoder_weights(unreleased.model)


@pytest.mark.parametrize(
    ("student", "error"),
    [
        ({"pretrained": True, "weights": "/x.pt"}, "set pretrained or weights, not both"),
        ({"weights": "hf-hub:no-org"}, "expected hf-hub:ORG/NAME"),
        ({"weights": "ftp://host/x.pt"}, "unsupported storage scheme 'ftp'"),
    ],
)
def test_bad_weight_sources_are_config_errors(student: dict, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        StudentConfig.model_validate(student)


def test_models_list_and_the_docs_table_show_the_registry(capsys) -> None:
    from depthkd.cli.main import main
    from depthkd.models.zoo import encoder_rows

    rows = encoder_rows()
    assert ("student", STUDENT, STUDENT, "hf-hub:timm/mobilenetv2_050.lamb_in1k") in rows
    assert main(["models", "list"]) == 0
    shown = capsys.readouterr().out.splitlines()
    for role, name, timm_model, loads in rows:
        assert any(
            line.split()[:2] == [role, name] and timm_model in line and line.endswith(loads)
            for line in shown
        ), name
    table = [
        [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        for line in (REPO / "docs" / "models.md").read_text().splitlines()
        if line.startswith(("| student", "| teacher"))
    ]
    assert [tuple(row) for row in table] == rows
