"""Shard sets are atomic, idempotent and verifiable."""

from __future__ import annotations

import json

import pytest

from depthkd.data.shards import MANIFEST, read_manifest, split_entry, verify_shards
from depthkd.data.sources.synthetic import write_synthetic
from depthkd.errors import DataError
from tests.conftest import prepare


@pytest.fixture(scope="module")
def synth_nyu(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return write_synthetic("nyu", out, 12, seed=3, height=48, width=64, progress=False)


def _prepare(tmp_path, synth, **kw):
    return prepare(
        tmp_path,
        dataset="nyu",
        root=synth.root,
        split_file=synth.train_split,
        split="train",
        shard_size=4,
        **kw,
    )


def test_manifest_lists_every_shard(tmp_path, synth_nyu):
    report = _prepare(tmp_path, synth_nyu)
    entry = read_manifest(tmp_path / "shards")["splits"]["train"]
    assert report.num_samples == entry["num_samples"] == synth_nyu.n_train
    assert [s["samples"] for s in entry["shards"]] == [4, 4, 1]  # 12 frames: 9 train
    assert entry["source"]["dataset"] == "nyu" and entry["split_file_sha256"]
    assert read_manifest(tmp_path / "shards")["tool_version"]


def test_rerun_is_a_noop(tmp_path, synth_nyu):
    _prepare(tmp_path, synth_nyu)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").iterdir()}
    assert _prepare(tmp_path, synth_nyu).up_to_date
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").iterdir()} == before


def test_same_inputs_give_identical_shards(tmp_path, synth_nyu):
    _prepare(tmp_path / "a", synth_nyu, workers=2)
    _prepare(tmp_path / "b", synth_nyu)
    a, b = (read_manifest(tmp_path / x / "shards")["splits"]["train"]["shards"] for x in "ab")
    assert [s["sha256"] for s in a] == [s["sha256"] for s in b]


def test_other_inputs_need_force(tmp_path, synth_nyu):
    _prepare(tmp_path, synth_nyu)
    with pytest.raises(DataError, match="already exists from other inputs"):
        prepare(
            tmp_path,
            dataset="nyu",
            root=synth_nyu.root,
            split_file=synth_nyu.train_split,
            split="train",
            shard_size=3,
        )
    report = prepare(
        tmp_path,
        dataset="nyu",
        root=synth_nyu.root,
        split_file=synth_nyu.train_split,
        split="train",
        shard_size=3,
        force=True,
    )
    assert report.num_shards == 3
    assert len(list((tmp_path / "shards").glob("train-*.tar"))) == 3


def test_two_splits_share_one_manifest(tmp_path, synth_nyu):
    _prepare(tmp_path, synth_nyu)
    prepare(
        tmp_path, dataset="nyu", root=synth_nyu.root, split_file=synth_nyu.test_split, split="test"
    )
    assert set(read_manifest(tmp_path / "shards")["splits"]) == {"train", "test"}
    assert verify_shards(tmp_path / "shards", progress=False).checked == {
        "train": synth_nyu.n_train,
        "test": synth_nyu.n_test,
    }


def test_interrupted_prepare_leaves_no_manifest(tmp_path, synth_nyu, monkeypatch):
    from depthkd.data.sources.nyu import NyuSyncSource

    calls = {"n": 0}
    real_encode = NyuSyncSource.encode

    def dies_on_seventh(self, sample):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_encode(self, sample)

    monkeypatch.setattr(NyuSyncSource, "encode", dies_on_seventh)
    with pytest.raises(KeyboardInterrupt):
        _prepare(tmp_path, synth_nyu)
    out = tmp_path / "shards"
    assert not (out / MANIFEST).exists()
    assert not list(out.glob("*.tar")) and not list(out.glob(".tmp-*"))
    with pytest.raises(DataError, match="not a prepared shard dir"):
        split_entry(out, "train")


def test_verify_catches_a_flipped_byte(tmp_path, synth_nyu):
    _prepare(tmp_path, synth_nyu)
    shard = tmp_path / "shards" / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    report = verify_shards(tmp_path / "shards", progress=False)
    assert not report.ok
    assert any("train-000001.tar: sha256 mismatch" in p for p in report.problems)


def test_verify_catches_a_missing_shard_and_bad_count(tmp_path, synth_nyu):
    _prepare(tmp_path, synth_nyu)
    (tmp_path / "shards" / "train-000002.tar").unlink()
    manifest = tmp_path / "shards" / MANIFEST
    doc = json.loads(manifest.read_text())
    doc["splits"]["train"]["shards"][0]["samples"] = 5
    manifest.write_text(json.dumps(doc))
    problems = verify_shards(tmp_path / "shards", progress=False).problems
    assert any("train-000002.tar: missing" in p for p in problems)
    assert any("4 samples, manifest says 5" in p for p in problems)


def test_unknown_split_lists_known_ones(tmp_path, synth_nyu):
    _prepare(tmp_path, synth_nyu)
    with pytest.raises(DataError, match=r"no split 'val' .*has: train"):
        split_entry(tmp_path / "shards", "val")


def test_relative_or_absolute_paths_are_the_same_inputs(tmp_path, synth_nyu, monkeypatch):
    _prepare(tmp_path, synth_nyu)
    monkeypatch.chdir(synth_nyu.root.parent)
    report = prepare(
        tmp_path,
        dataset="nyu",
        root="sync",
        split_file="splits/train.txt",
        split="train",
        shard_size=4,
    )
    assert report.up_to_date


def test_failed_force_rebuild_keeps_the_previous_split(tmp_path, synth_nyu):
    _prepare(tmp_path, synth_nyu)
    broken = tmp_path / "broken.txt"
    broken.write_text(synth_nyu.train_split.read_text() + "/nowhere/rgb_1.jpg /nowhere/d_1.png 5\n")
    with pytest.raises(DataError, match="rgb file not found"):
        prepare(
            tmp_path,
            dataset="nyu",
            root=synth_nyu.root,
            split_file=broken,
            split="train",
            shard_size=4,
            force=True,
        )
    assert split_entry(tmp_path / "shards", "train")["num_samples"] == synth_nyu.n_train
    assert verify_shards(tmp_path / "shards", progress=False).ok
