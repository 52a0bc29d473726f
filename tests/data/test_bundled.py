"""The bundled synthetic set: its train, val and test lists become the configured shard splits,
and a named shard dir is checked for the splits a job reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdplatform.config.schema import DataConfig
from kdplatform.data.bundled import ensure_shards, synthetic_dir
from kdplatform.data.shards import LOCK_FILE, MANIFEST, read_manifest, verify_shards
from kdplatform.errors import DataError

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
