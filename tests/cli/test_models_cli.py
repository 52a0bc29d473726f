"""`depthkd models list|describe`: the JSON contract of describe and its figures' consistency."""

from __future__ import annotations

import json

import pytest

from kdplatform.cli.main import main
from models.zoo import STUDENTS, TEACHERS

DESCRIBE = ["models", "describe", "--height", "64", "--width", "96", "--repeats", "1"]


def test_models_list_names_every_registered_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDENTS.names() + TEACHERS.names())


def test_describe_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*DESCRIBE, "--student", "mobilenetv2_050", "--teacher", "swin_micro", "--json"]
    assert main([*argv, "--warmup", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    for part in ("student", "teacher", "ghost_decoder"):
        assert set(result[part]) == {"params", "gflops", "latency_ms"}
        assert result[part]["params"] > 0 and result[part]["gflops"] > 0
        assert result[part]["latency_ms"] > 0
    assert 0 < result["lg_flops_share"] < 1
    assert result["settings"]["height"] == 64 and result["settings"]["student"] == "mobilenetv2_050"


def test_describe_accepts_timm_names_and_lg_ablation(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*DESCRIBE, "--student", "resnet18", "--teacher", "convnext_atto", "--warmup", "0"]
    assert main([*argv, "--json"]) == 0
    with_lg = json.loads(capsys.readouterr().out)
    assert main([*argv, "--json", "--no-lg-global"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert without["student"]["params"] < with_lg["student"]["params"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "teacher/student:" in table and "% of student FLOPs" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--student", "mobilenetv2_10"], "unknown student 'mobilenetv2_10'"),
        (["--teacher", "swin_tiyn"], "unknown teacher 'swin_tiyn'"),
        (["--repeats", "0"], "--repeats: must be at least 1"),
    ],
)
def test_describe_rejects_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*DESCRIBE, *argv]) == 2
    assert message in capsys.readouterr().err


def test_describe_pads_sizes_not_divisible_by_the_patch(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["models", "describe", "--height", "75", "--width", "250", "--repeats", "1"]
    assert (
        main([*argv, "--student", "mobilenetv2_050", "--teacher", "vit_micro_dpt", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["teacher"]["gflops"] > 0
