"""`depthkd bench all`: the suite's result files, its S3 row against a given endpoint, the ASHA
row read from a `bench asha` result, and the GPU step on the CPU (the figures themselves are for
closing notes, not for assertions)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

from depthkd import storage
from depthkd.bench.suite import redact, result_stem
from depthkd.cli.main import main
from depthkd.devcluster.services import S3_ENV
from tests import services

QUICK_ROWS = ("loader_local", "loader_s3", "latency", "onnx", "gpu")
SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]


def _require_moto() -> None:
    if importlib.util.find_spec("moto") is None:
        services.unavailable("moto[server] is not installed (the S3-compatible server)")


def _result(out: Path) -> tuple[dict, str, str]:
    stem = result_stem(quick=True)
    json_text = (out / f"{stem}.json").read_text()
    md_text = (out / f"{stem}.md").read_text()
    return json.loads(json_text), json_text, md_text


@pytest.mark.slow
@pytest.mark.multiproc
def test_quick_suite_writes_the_result_and_the_table(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _require_moto()
    out = tmp_path / "results"
    argv = ["bench", "all", "--quick", "--out", str(out), "--only", ",".join(QUICK_ROWS)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result, json_text, md_text = _result(out)

    machine = result["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["memory_gib"] > 0
    assert machine["python"] and machine["os"]
    assert set(machine["versions"]) >= {"torch", "ray", "mlflow", "webdataset"}
    assert machine["gpu"]["name"] == (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    )

    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == list(QUICK_ROWS)
    for name in ("loader_local", "loader_s3", "latency", "onnx"):
        row = rows[name]
        assert row["status"] == "ok", row["note"]
        assert row["figures"] and all(f["value"] > 0 for f in row["figures"]), row["figures"]
        assert row["ratio"] > 0 and row["ratio_of"] and row["protocol"]
    s3 = rows["loader_s3"]["details"]
    assert s3["endpoint"].startswith("http://127.0.0.1:")
    assert s3["endpoint"] in rows["loader_s3"]["protocol"]
    assert s3["raw_objects"] >= 2 * s3["n_samples"]  # one object per rgb and per depth file
    assert rows["loader_s3"]["target"] == ">= 3x"
    gpu = rows["gpu"]
    if torch.cuda.is_available():
        assert gpu["status"] == "not run"
    else:
        assert gpu["status"] == "skipped" and "no CUDA device" in gpu["note"]

    for text in (json_text, md_text, printed):
        assert SECRET not in text and S3_ENV["AWS_ACCESS_KEY_ID"] not in text
    for row in result["rows"]:
        assert f"(`{row['name']}`)" in md_text
        assert f"(`{row['name']}`)" in printed  # the table is printed too
    assert sum(line.startswith("[") for line in printed.splitlines()) == len(QUICK_ROWS)
    assert str(out / f"{result_stem(quick=True)}.json") in printed


@pytest.mark.slow
@pytest.mark.multiproc
def test_s3_row_uses_the_given_endpoint_and_removes_its_upload(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    with services.s3_server(tmp_path) as server:
        bucket = server.create_bucket("given")
        with mock.patch.dict(os.environ, server.env):
            argv = ["bench", "all", "--quick", "--out", str(out), "--only", "loader_s3"]
            assert main([*argv, "--s3", f"{bucket}/base/"]) == 0
            assert list(storage.list_keys(f"{bucket}/base")) == []
    result, json_text, md_text = _result(out)
    (row,) = result["rows"]
    assert row["status"] == "ok" and row["ratio"] > 0
    assert row["details"]["endpoint"] == server.endpoint
    assert row["details"]["url"].startswith("s3://given/base/depthkd-bench-")
    assert result["options"]["s3"] == "s3://given/base"
    assert SECRET not in json_text and SECRET not in md_text


def test_asha_row_reads_the_newest_bench_asha_result(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    figures = {
        "metric": "val/abs_rel",
        "configurations": 4,
        "max_rounds": 6,
        "asha_best": 0.31,
        "full_best": 0.30,
    }
    old, new = out / "asha-2020-01-01-a.json", out / "asha-2020-01-02-b.json"
    old.write_text(json.dumps({**figures, "asha_rounds": 20, "full_rounds": 24}))
    table = "trial lr val/abs_rel rounds status\nt0 0.1 - 0 ERROR\nt1 0.2 0.3 6 TERMINATED"
    extra = {"asha_table": table, "seconds": {"asha": 50.0, "full": 40.0}}
    new.write_text(json.dumps({**figures, "asha_rounds": 12, "full_rounds": 24, **extra}))
    os.utime(old, (time.time() - 3600,) * 2)
    (out / "asha-broken.json").write_text("{")
    assert main(["bench", "all", "--quick", "--out", str(out), "--only", "asha"]) == 0
    (row,) = _result(out)[0]["rows"]
    assert row["status"] == "ok" and row["ratio"] == pytest.approx(0.5)
    assert str(new) in row["protocol"] and "val split" in row["protocol"]
    assert "1 trial(s) errored under ASHA; wall time ASHA 50 s, full 40 s" in row["note"]


def test_asha_row_without_a_result_says_how_to_get_one(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert main(["bench", "all", "--quick", "--out", str(out), "--only", "asha"]) == 0
    (row,) = _result(out)[0]["rows"]
    assert row["status"] == "not run" and "depthkd bench asha --json" in row["note"]


def test_unknown_row_is_an_error_naming_close_matches(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "all", "--out", str(tmp_path), "--only", "loader_s4"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark row 'loader_s4'" in err and "loader_s3" in err


def test_s3_option_must_be_an_s3_url(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "all", "--out", str(tmp_path), "--s3", "http://host/bucket"]) == 2
    assert "expected s3://bucket/prefix" in capsys.readouterr().err


def test_redact_replaces_every_credential_value() -> None:
    text = f'{{"a": "{SECRET}", "b": "x{SECRET}x"}}'
    assert SECRET not in redact(text, {SECRET, ""})


@pytest.mark.slow
def test_gpu_step_variants_run_on_the_cpu() -> None:
    """The GPU row's code path (device, bf16 autocast, channels_last) on the CPU, tiny."""
    from depthkd.bench.gpu import run_gpu_benchmark
    from depthkd.bench.train import TrainBenchSettings
    from depthkd.config.files import DEFAULT_CONFIG
    from depthkd.config.loader import load_config

    settings = TrainBenchSettings(steps=1, warmup=1, batch_size=2, height=64, width=96, threads=1)
    result = run_gpu_benchmark(
        load_config(DEFAULT_CONFIG, []),
        settings,
        device="cpu",
        variants=("plain", "channels_last"),
        rounds=1,
        log=None,
    )
    figures = result.to_dict()
    assert [v["name"] for v in figures["variants"]] == ["plain", "channels_last"]
    assert all(v["images_per_s"] > 0 for v in figures["variants"])
    fastest = max(figures["variants"], key=lambda v: v["images_per_s"])
    assert figures["best"] == fastest["name"]
    plain = figures["variants"][0]["images_per_s"]
    assert figures["ratio"] == pytest.approx(fastest["images_per_s"] / plain)
