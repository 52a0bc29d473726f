"""Configs: unknown keys and bad values name file, line and key; overrides are typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from depthkd.config.loader import dump_config, load_config, validate_options
from depthkd.config.schema import ExperimentConfig, PrepareConfig
from depthkd.errors import ConfigError

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
CONFIGS = [p for p in SHIPPED if not p.name.startswith("sweep_")]
SWEEPS = [p for p in SHIPPED if p.name.startswith("sweep_")]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert load_config(None, []).model_validate(cfg.model_dump(mode="json")) == cfg
    assert cfg.data.eval_split == "val" and cfg.data.test_split == "test"


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweeps_validate_with_their_base(path, tmp_path, monkeypatch):
    from depthkd.tune.sweep import base_experiment, load_sweep

    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    base = base_experiment(load_sweep(path))  # every searched key checked at its range ends
    assert base.data.eval_split == "val"


def _write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_line_and_close_match(tmp_path):
    path = _write(tmp_path, "name: x\ndata:\n  batch_size: 4\n  batchsize: 3\n")
    with pytest.raises(
        ConfigError,
        match=r"exp\.yaml:4: unknown key 'data\.batchsize' "
        r"\(did you mean 'batch_size'\?\)",
    ):
        load_config(path)


def test_bad_value_names_file_line_key_and_value(tmp_path):
    path = _write(tmp_path, "data:\n  augment:\n    cutflip_p: 1.5\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:3: data\.augment\.cutflip_p: .*got 1\.5"):
        load_config(path)


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.yaml:3: invalid YAML: expected .,. or .\]."):
        load_config(_write(tmp_path, "data:\n  batch_size: [1, 2\n"))


def test_yaml_is_never_executed(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, "name: !!python/object/apply:os.system ['true']\n"))


def test_overrides_are_typed_and_win_over_the_file(tmp_path):
    path = _write(tmp_path, "data:\n  batch_size: 4\n")
    cfg = load_config(path, ["data.batch_size=16", "data.augment.crop=[32,48]", "seed=3"])
    assert cfg.data.batch_size == 16 and cfg.data.augment.crop == (32, 48) and cfg.seed == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=abc", r"override 'data\.batch_size=abc': data\.batch_size: .*integer"),
        ("data.nope=1", r"override 'data\.nope=1': unknown key 'data\.nope'"),
        ("batch_size", r"not of the form dotted\.key=value"),
        ("seed.x=1", r"seed: Input should be a valid integer"),
    ],
)
def test_bad_override(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_dump_round_trips():
    cfg = load_config(None, ["data.augment.cutflip_p=0.25"])
    assert ExperimentConfig.model_validate(__import__("yaml").safe_load(dump_config(cfg))) == cfg


def test_cli_options_errors_name_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"--shard-size: .*greater than or equal to 1 \(got 0\)"):
        validate_options(
            PrepareConfig,
            {
                "dataset": "nyu",
                "root": tmp_path,
                "split": "train",
                "out": tmp_path,
                "shard_size": 0,
            },
        )
    with pytest.raises(ConfigError, match=r"--split: String should match pattern"):
        validate_options(
            PrepareConfig, {"dataset": "nyu", "root": tmp_path, "split": "a/b", "out": tmp_path}
        )


def test_override_into_a_value_from_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'seed\.x=1': seed is a value, not a section"):
        load_config(_write(tmp_path, "seed: 3\n"), ["seed.x=1"])


def test_cutflip_range_must_be_fractions():
    with pytest.raises(ConfigError, match=r"cutflip_range: .*at most 1"):
        load_config(None, ["data.augment.cutflip_range=[0.5,1.5]"])


def test_relative_shard_dir_is_resolved_on_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(None, ["data.shards=shards"]).data.shards == tmp_path / "shards"


def test_a_model_file_beside_the_config_file_is_found_from_any_directory(tmp_path, monkeypatch):
    """A shipped or copied config names its own files relative to itself; overrides and names
    that are no file beside it keep their meaning."""
    (tmp_path / "configs" / "teachers").mkdir(parents=True)
    (tmp_path / "configs" / "teachers" / "t.pt").write_bytes(b"")
    config = tmp_path / "configs" / "c.yaml"
    config.write_text("model:\n  teacher:\n    name: swin_micro\n    checkpoint: teachers/t.pt\n")
    monkeypatch.chdir(tmp_path)  # where `teachers/t.pt` does not exist
    cfg = load_config(config)
    assert cfg.model.teacher.checkpoint == str(tmp_path / "configs" / "teachers" / "t.pt")
    named = load_config(config, ["model.teacher.checkpoint=depthkd-teacher@pretrained"])
    assert named.model.teacher.checkpoint == "depthkd-teacher@pretrained"
