"""`depthkd bench kd` reporting: ratios and gaps against the right no-KD row, split labels on
every figure, and the table and chart written next to the JSON."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from depthkd.bench.kd import (
    BASELINE,
    ROWS,
    KDBenchResult,
    markdown,
    selected_rows,
    write_result,
)
from depthkd.errors import ConfigError


def _result() -> KDBenchResult:
    rows = {}
    for i, row in enumerate(ROWS):
        base = 0.30 if row.lg_global else 0.32
        test = [0.24, 0.25, 0.26] if row.distils else [base, base + 0.01, base - 0.01]
        rows[row.key] = {
            "label": row.label,
            "lg_global": row.lg_global,
            "test": {"abs_rel": test, "rmse": [1.0 + i] * 3, "d1": [0.5] * 3},
            "val": {"abs_rel": [v + 0.02 for v in test], "rmse": [1.0] * 3, "d1": [0.5] * 3},
        }
    metrics = {"abs_rel": 0.2, "rmse": 0.9, "d1": 0.6}
    return KDBenchResult(
        config="bench-kd",
        protocol="kitti-garg-full",
        selection_split="val",
        report_split="test",
        seeds=[0, 1, 2],
        steps={"teacher": 6, "supervised": 2, "acclimate": 1, "distill": 2},
        test_images=72,
        rows=rows,
        teacher={
            "before": {"val": metrics, "test": metrics},
            "after": {"val": {"abs_rel": [0.201] * 3}, "test": {"abs_rel": [0.2] * 3}},
        },
        seconds={},
    )


def test_each_row_is_compared_with_the_no_kd_row_of_its_own_student() -> None:
    result = _result()
    ratio, gap = result.versus_baseline("attentive_response")
    assert ratio == pytest.approx(0.25 / 0.30)
    assert gap == pytest.approx((0.30 - 0.25) / 0.01)  # both rows' std is 0.01
    ratio, _ = result.versus_baseline("kd_local")
    assert ratio == pytest.approx(0.25 / 0.32)  # the LG-local student's own baseline
    assert set(BASELINE.values()) <= set(result.rows)


def test_gap_closed_is_measured_against_the_teacher() -> None:
    result = _result()  # no KD 0.30, every KD row 0.25, teacher 0.20
    assert result.gap_closed("pseudo") == pytest.approx(0.5)
    assert result.gap_closed("kd_local") == pytest.approx((0.32 - 0.25) / (0.32 - 0.20))
    assert "| 50 % |" in markdown(result)


def test_table_and_chart_say_which_split_and_protocol(tmp_path) -> None:
    result = _result()
    table = markdown(result)
    assert (
        "**test split** (72 frames, metrics over those with ground truth; protocol kitti-garg-full)"
        in table
    )
    assert "| student | test abs_rel | × no KD | gap (σ) | paired reduction | gap closed |" in table
    row = "| attentive + response KD (fixed copied ghost) | 0.2500 ± 0.0100 | 0.833 | 5.0 |"
    assert f"{row} 0.0500 ± 0.0173 | 50 % |" in table  # per seed: 0.06, 0.06, 0.03
    assert "after / before: 1.005" in table
    paths = write_result(result, tmp_path, "kd-x")
    assert json.loads(paths["json"].read_text())["report_split"] == "test"
    assert paths["md"].read_text() == table
    with Image.open(paths["png"]) as chart:
        assert chart.format == "PNG" and chart.width > 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kd-x.json", "kd-x.md", "kd-x.png"]


def test_chosen_rows_bring_their_no_kd_rows_and_unknown_rows_are_refused() -> None:
    keys = [row.key for row in selected_rows(["pseudo", "kd_local"])]
    assert keys == ["no_kd", "pseudo", "no_kd_local", "kd_local"]
    with pytest.raises(ConfigError, match="unknown row pseudo_only"):
        selected_rows(["pseudo_only"])


def test_a_run_without_acclimation_says_so() -> None:
    result = _result()
    result.teacher["after"] = {"val": {}, "test": {}}  # rows no_kd + pseudo acclimate nothing
    assert "after acclimation: not measured in these rows" in markdown(result)


@pytest.mark.ray
@pytest.mark.slow
def test_a_given_teacher_is_evaluated_and_labels_the_frames_not_trained(
    embedded_ray, home, tmp_path
) -> None:
    from pathlib import Path

    from depthkd.bench.kd import run_kd_benchmark
    from depthkd.config.loader import load_config
    from tests.pseudolabel.conftest import save_teacher

    teacher = save_teacher(tmp_path / "teacher.pt")
    tiny = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
    steps = {"steps": 2, "optim": {"lr": 0.001, "warmup_steps": 0}}
    cfg = load_config(
        tiny,
        [
            f"model.teacher.checkpoint={teacher}",
            "data.synthetic.unlabeled_n=8",
            "train.workers=0",
            f"supervised={json.dumps(steps)}",
            f"distill={json.dumps({**steps, 'unlabeled_ratio': 1.0})}",
            'distill.losses={"silog": 1.0, "pseudo_silog": 1.0}',
        ],
    )
    lines: list[str] = []
    result = run_kd_benchmark(
        cfg, seeds=[0], tag="t", log=lines.append, rows=selected_rows(["pseudo"])
    )
    assert any(line.startswith("teacher: given (") for line in lines)
    assert not any("depth training" in line for line in lines)
    assert set(result.rows) == {"no_kd", "pseudo"}
    assert len(result.rows["pseudo"]["test"]["abs_rel"]) == 1
    before = result.teacher["before"]
    assert before["test"]["abs_rel"] > 0 and before["val"]["abs_rel"] > 0
    assert result.teacher["after"] == {"val": {}, "test": {}}  # no row distils online
    assert "not measured in these rows" in markdown(result)
    assert result.steps == {"supervised": 2, "distill": 2}  # nothing trained the teacher
    assert result.teacher["source"] == "given"
    assert "Teacher (val / test abs_rel): given " in markdown(result)
