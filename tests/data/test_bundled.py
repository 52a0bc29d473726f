"""The bundled synthetic set: its train, val and test lists become the configured shard splits,
and a named shard dir is checked for the splits a job reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from depthkd.config.schema import UNLABELED_SPLIT, DataConfig, SynthConfig
from depthkd.data.bundled import ensure_shards, synthetic_dir
from depthkd.data.shards import LOCK_FILE, MANIFEST, read_manifest, read_tar, verify_shards
from depthkd.errors import ConfigError, DataError

SYNTH = {"layout": "nyu", "n": 24, "height": 32, "width": 48}  # 17 train, 2 val, 5 test


def counts(shards: Path) -> dict[str, int]:
    return {name: e["num_samples"] for name, e in read_manifest(shards)["splits"].items()}


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("home")
    cfg = DataConfig.model_validate({"synthetic": SYNTH})
    return home, ensure_shards(cfg, home, progress=False)


def test_three_splits_are_prepared_and_verified(bundled: tuple[Path, Path]) -> None:
    home, shards = bundled
    base = synthetic_dir(DataConfig.model_validate({"synthetic": SYNTH}).synthetic, home)
    assert shards == base / "shards"
    assert [p.name for p in (home / "data").iterdir() if p.is_dir()] == [base.name]
    assert counts(shards) == {"train": 17, "val": 2, "test": 5}
    assert verify_shards(shards, progress=False).ok
    # One lock file beside the synthetic folder, one in the shard dir (not a shard: verify is ok).
    assert shards.parent.with_name(f"{shards.parent.name}.lock").is_file()
    assert (shards / LOCK_FILE).is_file()


def test_second_call_reuses_everything(bundled: tuple[Path, Path]) -> None:
    home, shards = bundled
    before = {p: p.stat().st_mtime_ns for p in shards.parent.rglob("*")}
    again = ensure_shards(DataConfig.model_validate({"synthetic": SYNTH}), home, progress=False)
    assert again == shards
    assert {p: p.stat().st_mtime_ns for p in shards.parent.rglob("*")} == before


def test_split_names_follow_the_config(tmp_path: Path) -> None:
    cfg = DataConfig.model_validate(
        {"synthetic": SYNTH, "train_split": "fit", "eval_split": "dev", "test_split": "heldout"}
    )
    shards = ensure_shards(cfg, tmp_path, progress=False)
    assert counts(shards) == {"fit": 17, "dev": 2, "heldout": 5}


def test_eval_on_test_prepares_the_test_list_once(tmp_path: Path) -> None:
    cfg = DataConfig.model_validate({"synthetic": SYNTH, "eval_split": "test"})
    shards = ensure_shards(cfg, tmp_path, progress=False)
    assert counts(shards) == {"train": 17, "test": 5}


def test_named_dir_needs_train_and_eval_but_not_test(bundled: tuple[Path, Path]) -> None:
    _, shards = bundled
    named = {"synthetic": SYNTH, "shards": str(shards)}
    assert ensure_shards(DataConfig.model_validate(named), Path("/nonexistent")) == shards
    no_test = DataConfig.model_validate({**named, "test_split": "report"})
    assert ensure_shards(no_test, Path("/nonexistent")) == shards
    no_eval = DataConfig.model_validate({**named, "eval_split": "dev"})
    with pytest.raises(DataError, match=r"no split 'dev' .*\(has: test, train, val\)"):
        ensure_shards(no_eval, Path("/nonexistent"))


def test_named_dir_with_an_empty_test_split_is_refused(
    bundled: tuple[Path, Path], tmp_path: Path
) -> None:
    _, shards = bundled
    doc = json.loads((shards / MANIFEST).read_text())
    doc["splits"]["test"]["shards"] = []
    (tmp_path / MANIFEST).write_text(json.dumps(doc))
    cfg = DataConfig.model_validate({"shards": str(tmp_path)})
    with pytest.raises(DataError, match=r"split 'test' has no shards"):
        ensure_shards(cfg, tmp_path)


def test_unlabeled_split_holds_rgb_only_frames_outside_the_labeled_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One core seen: prepare encodes in-process (a worker pool would take most of the time).
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    synth = {"layout": "nyu", "n": 6, "height": 16, "width": 24, "unlabeled_n": 4}
    cfg = DataConfig.model_validate({"synthetic": synth})
    shards = ensure_shards(cfg, tmp_path, progress=False)
    assert counts(shards) == {"train": 4, "val": 1, "test": 1, UNLABELED_SPLIT: 4}
    assert verify_shards(shards, progress=False).ok
    entry = read_manifest(shards)["splits"][UNLABELED_SPLIT]
    assert entry["num_without_gt"] == 4
    unlabeled = read_tar(shards / entry["shards"][0]["name"])
    for files in unlabeled.values():
        assert "depth.png" not in files and json.loads(files["meta.json"])["has_gt"] is False
    labeled = {
        key
        for split in ("train", "val", "test")
        for shard in read_manifest(shards)["splits"][split]["shards"]
        for key in read_tar(shards / shard["name"])
    }
    rooms = {key.split("/")[1] for key in unlabeled}
    assert not rooms & {key.split("/")[1] for key in labeled}


def test_unlabeled_n_changes_the_folder_but_zero_keeps_the_old_one(tmp_path: Path) -> None:
    plain = SynthConfig.model_validate(SYNTH)
    old_digest = hashlib.sha256(
        json.dumps(plain.model_dump(exclude={"unlabeled_n"}), sort_keys=True).encode()
    )
    assert synthetic_dir(plain, tmp_path).name == f"synthetic-nyu-{old_digest.hexdigest()[:10]}"
    more = SynthConfig.model_validate({**SYNTH, "unlabeled_n": 3})
    assert synthetic_dir(more, tmp_path) != synthetic_dir(plain, tmp_path)


def test_a_data_split_named_like_the_unlabeled_split_is_refused(tmp_path: Path) -> None:
    synth = {**SYNTH, "unlabeled_n": 2}
    cfg = DataConfig.model_validate({"synthetic": synth, "train_split": UNLABELED_SPLIT})
    with pytest.raises(ConfigError, match="is the bundled set's RGB-only split"):
        ensure_shards(cfg, tmp_path, progress=False)
    assert not (synthetic_dir(cfg.synthetic, tmp_path) / "raw").exists()  # refused before rendering
