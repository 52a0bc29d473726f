"""The `depthkd` CLI: synth → prepare → verify end to end, errors, help and the console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from depthkd.cli.main import build_parser, main


def _synth(raw, layout: str, n: int) -> int:
    return main(
        f"data synth --layout {layout} --out {raw} --n {n} --height 32 --width 64 "
        "--workers 1".split()
    )


def _prepare(raw, shards, layout: str, split: str) -> int:
    root = (
        f"--root {raw / 'raw'} --gt-root {raw / 'gt'}"
        if layout == "kitti"
        else (f"--root {raw / 'sync'}")
    )
    return main(
        f"data prepare --dataset {layout} {root} --split-file {raw / 'splits'}/{split}.txt "
        f"--split {split} --out {shards} --quiet --workers 1".split()
    )


def test_synth_prepare_verify_end_to_end(tmp_path, capsys):
    raw, shards = tmp_path / "raw", tmp_path / "shards"
    assert _synth(raw, "kitti", 10) == 0
    out = capsys.readouterr().out
    assert "wrote 7 train + 1 val + 2 test kitti-like frames" in out
    splits = raw / "splits"
    assert f"splits: {splits / 'train.txt'}, {splits / 'val.txt'}, {splits / 'test.txt'}" in out
    for split in ("train", "val", "test"):
        assert _prepare(raw, shards, "kitti", split) == 0
    assert "prepared split 'test'" in capsys.readouterr().out
    assert _prepare(raw, shards, "kitti", "test") == 0
    assert "is up to date" in capsys.readouterr().out
    assert main(["data", "verify", str(shards), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["checked"] == {"train": 7, "val": 1, "test": 2}


def test_verify_fails_on_flipped_byte(tmp_path, capsys):
    raw, shards = tmp_path / "raw", tmp_path / "shards"
    assert _synth(raw, "nyu", 4) == 0
    assert _prepare(raw, shards, "nyu", "train") == 0
    shard = shards / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0x10
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["data", "verify", str(shards), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM train-000000.tar: sha256 mismatch" in out and "FAILED" in out


def test_user_errors_print_error_and_hint_and_exit_2(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path} is not a prepared shard dir")
    assert "hint: run `depthkd data prepare" in err
    assert (
        main(
            [
                "data",
                "prepare",
                "--dataset",
                "nyu",
                "--root",
                str(tmp_path),
                "--split",
                "train",
                "--out",
                str(tmp_path / "s"),
                "--shard-size",
                "0",
            ]
        )
        == 2
    )
    assert "--shard-size" in capsys.readouterr().err
    assert main(["config", "show", "data.batchsize=2"]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err


def _commands(parser, prefix=()):
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield (*prefix, name), sub
            yield from _commands(sub, (*prefix, name))


@pytest.mark.parametrize("command", [c for c, _ in _commands(build_parser())], ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 3


def test_console_script_and_pipeline_shims_run():
    script = shutil.which("depthkd", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script, "the depthkd console script is not installed in this environment"
    assert subprocess.run(
        [script, "--version"], capture_output=True, text=True, check=True
    ).stdout.startswith("depthkd ")
    out = subprocess.run(
        [sys.executable, "pipelines/prepare_data.py", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--split-file" in out
