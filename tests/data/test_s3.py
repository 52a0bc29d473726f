"""Shard sets in S3 (a real S3-compatible server on 127.0.0.1): upload, verify, stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from depthkd import storage
from depthkd.config.schema import DataConfig, TrainConfig
from depthkd.data.loader import eval_loader
from depthkd.data.shards import (
    read_manifest,
    shard_paths,
    split_entry,
    upload_shards,
    verify_shards,
)
from depthkd.errors import DataError
from tests import services
from tests.conftest import prepare

pytestmark = pytest.mark.multiproc


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.s3_bucket(tmp_path_factory.mktemp("s3"), "shards") as bucket:
        yield bucket


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from depthkd.data.sources.synthetic import write_synthetic

    tmp = tmp_path_factory.mktemp("local")
    write_synthetic("nyu", tmp / "raw", 12, 0, height=32, width=48, progress=False)
    for split in ("train", "test"):
        prepare(
            tmp,
            dataset="nyu",
            root=tmp / "raw" / "sync",
            split_file=tmp / "raw" / "splits" / f"{split}.txt",
            split=split,
            shard_size=2,
        )
    return tmp / "shards"


def test_uploaded_shards_verify_and_stream_the_same_samples(bucket, local_shards) -> None:
    url = f"{bucket}/nyu"
    copied = upload_shards(local_shards, url, progress=False)
    names = {s["name"] for e in read_manifest(local_shards)["splits"].values() for s in e["shards"]}
    assert copied == len(names) + 1
    assert read_manifest(url) == read_manifest(local_shards)
    assert shard_paths(url, "test")[0] == f"{url}/test-000000.tar"
    report = verify_shards(url, progress=False)
    assert report.ok, report.problems
    assert report.checked == verify_shards(local_shards, progress=False).checked

    cfg = DataConfig(eval_batch_size=1, num_workers=2)
    remote = {b["key"][0]: b for b in eval_loader(url, "test", cfg, rank=0, world_size=1)}
    here = {b["key"][0]: b for b in eval_loader(local_shards, "test", cfg, rank=0, world_size=1)}
    assert sorted(remote) == sorted(here)
    assert len(remote) == split_entry(local_shards, "test")["num_samples"]
    for key, batch in remote.items():
        np.testing.assert_array_equal(batch["depth"].numpy(), here[key]["depth"].numpy())
        np.testing.assert_array_equal(batch["image"].numpy(), here[key]["image"].numpy())


def test_verify_finds_a_changed_and_a_missing_object(bucket, local_shards) -> None:
    url = f"{bucket}/broken"
    upload_shards(local_shards, url, progress=False)
    first, second = shard_paths(url, "train")[:2]
    storage.write_bytes(first, b"not a tar")
    bucket_name, key = storage.split_url(str(second))
    storage.s3_client().delete_object(Bucket=bucket_name, Key=key)
    problems = verify_shards(url, progress=False).problems
    assert any("train-000000.tar" in p and "sha256" in p for p in problems), problems
    assert "train-000001.tar: missing" in problems


def test_a_prefix_without_manifest_is_not_a_dataset(bucket) -> None:
    with pytest.raises(DataError, match="not a prepared shard dir"):
        read_manifest(f"{bucket}/nothing-here")


def test_locations_in_configs() -> None:
    assert TrainConfig(storage="s3://b/ray_results/").storage == "s3://b/ray_results"
    assert DataConfig(shards="relative").shards == Path("relative").resolve()
    with pytest.raises(ValueError, match="unsupported storage scheme 'gs'"):
        TrainConfig(storage="gs://b/x")
    with pytest.raises(ValueError, match="names no bucket"):
        DataConfig(shards="s3:///x")


def test_a_model_file_in_s3_is_a_model_reference(bucket, tmp_path: Path) -> None:
    import torch

    from depthkd.config.schema import StudentConfig
    from depthkd.models.serialization import save_model
    from depthkd.models.zoo import build_student
    from depthkd.tracking.references import load_model_reference

    student = build_student(
        StudentConfig(name="mobilenetv2_050", decoder_channels=[8, 8, 16, 16]), max_depth=10.0
    )
    url = f"{bucket}/models/student.pt"
    storage.upload_file(save_model(student, tmp_path / "student.pt"), url)
    loaded = load_model_reference(url, expect="student")
    for name, tensor in student.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with pytest.raises(DataError, match=r"absent.pt: (NoSuchKey|404)"):
        load_model_reference(f"{bucket}/models/absent.pt")


def test_prepare_refuses_to_write_to_s3_and_names_the_way(tmp_path: Path, capsys) -> None:
    from depthkd.cli.main import main

    argv = ["data", "prepare", "--dataset", "nyu", "--root", str(tmp_path), "--split", "train"]
    argv += ["--split-file", str(tmp_path / "train.txt")]
    assert main([*argv, "--out", "s3://bucket/shards"]) == 2
    assert "depthkd data upload DIR s3://bucket/prefix" in capsys.readouterr().err


def test_rgb_only_shards_upload_and_verify_like_labeled_ones(bucket, tmp_path: Path) -> None:
    from PIL import Image

    for name, size in (("a.png", (16, 24)), ("sub/b.jpg", (20, 12))):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(tmp_path / "photos" / name)
    prepare(tmp_path, dataset="images", root=tmp_path / "photos", split="unlabeled")
    url = f"{bucket}/unlabeled"
    upload_shards(tmp_path / "shards", url, progress=False)
    report = verify_shards(url, progress=False)
    assert report.ok, report.problems
    assert report.checked == {"unlabeled": 2}
    assert split_entry(url, "unlabeled")["num_without_gt"] == 2
