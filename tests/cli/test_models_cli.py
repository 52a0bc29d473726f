"""`depthkd models list|describe|half`: the JSON contract of describe and its figures' consistency,
and float16 copies that load back as the same model."""

from __future__ import annotations

import json

import pytest

from depthkd.cli.main import main
from depthkd.models.zoo import STUDENTS, TEACHERS

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


def test_a_half_copy_is_half_the_size_and_predicts_the_same_depth(tmp_path, capsys) -> None:
    import torch

    from depthkd.config.schema import TeacherConfig
    from depthkd.models.serialization import load_model, save_model
    from depthkd.models.zoo import build_teacher

    torch.manual_seed(0)
    teacher = build_teacher(TeacherConfig(name="swin_micro"), max_depth=10.0)
    norm = next(m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.running_var.fill_(7e5)  # beyond float16's range, as trained variances can be
    source = save_model(teacher, tmp_path / "t.pt")
    assert main(["models", "half", str(source), str(tmp_path / "half.pt")]) == 0
    assert "sha256" in capsys.readouterr().out
    half = tmp_path / "half.pt"
    assert half.stat().st_size < 0.6 * source.stat().st_size
    image = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        full, copy = (load_model(p, expect="teacher")(image) for p in (source, half))
    assert copy.dtype == torch.float32
    assert torch.allclose(copy, full, rtol=1e-2, atol=1e-2)
    assert main(["models", "half", str(tmp_path / "none.pt"), str(tmp_path / "x.pt")]) == 2
