"""`label_shards` end to end on an embedded Ray: the output decodes, verifies and holds the
teacher's predictions; reruns are no-ops or refused when teacher, source or size changed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from depthkd.cli.main import main
from depthkd.data import images
from depthkd.data.shards import (
    MANIFEST,
    decode_sample_files,
    read_manifest,
    read_tar,
    shard_paths,
    verify_shards,
)
from depthkd.errors import DataError
from depthkd.models.serialization import load_model
from depthkd.pseudolabel import label_shards
from depthkd.pseudolabel.labeler import resize_rgb
from tests.pseudolabel.conftest import (
    LABEL_SIZE,
    MAX_DEPTH,
    SPLIT,
    Labelled,
    save_teacher,
    write_rgb_shards,
)

pytestmark = pytest.mark.ray


def test_output_verifies_and_mirrors_the_source_shards(labelled: Labelled) -> None:
    report = verify_shards(labelled.out, progress=False)
    assert report.ok, report.problems
    assert report.checked == {SPLIT: 9}
    assert [p.name for p in shard_paths(labelled.out, SPLIT)] == [
        p.name for p in shard_paths(labelled.source, SPLIT)
    ]
    manifest = read_manifest(labelled.out)
    record = manifest["pseudo_labels"]
    assert record["size"] == list(LABEL_SIZE)
    assert record["depth_scale"] == 6553.0  # floor(65535 / 10 m)
    assert record["has_confidence"] is False
    assert record["teacher"]["sha256"] == labelled.report.teacher["sha256"]
    assert record["source"]["split"] == SPLIT
    assert labelled.report.frames == 9 and labelled.report.shards_written == 3
    assert not (labelled.out / "pseudo_labels.partial.json").exists()


def test_samples_hold_the_teachers_depth_within_quantisation(labelled: Labelled) -> None:
    model = load_model(labelled.teacher)
    scale = read_manifest(labelled.out)["pseudo_labels"]["depth_scale"]
    source = {k: v for p in shard_paths(labelled.source, SPLIT) for k, v in read_tar(p).items()}
    for path in shard_paths(labelled.out, SPLIT):
        for key, files in read_tar(path).items():
            sample = decode_sample_files(files, key)
            meta = sample["meta"]
            assert sample["depth"] is None and sample["confidence"] is None
            assert sample["pseudo"].dtype == np.uint16 and sample["pseudo"].shape == LABEL_SIZE
            assert meta["pseudo"] is True and meta["has_gt"] is False
            assert meta["source_key"] == key and meta["depth_scale"] == scale
            frame = resize_rgb(images.decode_rgb(source[key]["rgb.png"], key), LABEL_SIZE)
            np.testing.assert_array_equal(sample["rgb"], frame)
            with torch.no_grad():
                image = torch.from_numpy(np.array(frame)).permute(2, 0, 1)[None].float() / 255.0
                expected = model(image)[0, 0].numpy()
            got = sample["pseudo"].astype(np.float64) / scale
            assert np.abs(got - expected).max() <= 0.5 / scale + 1e-5
            assert 0 < expected.max() <= MAX_DEPTH


def test_rerun_of_a_complete_output_is_a_no_op(labelled: Labelled) -> None:
    before = {p.name: os.stat(p).st_mtime_ns for p in labelled.out.iterdir()}
    report = label_shards(labelled.teacher, labelled.source, SPLIT, labelled.out, size=LABEL_SIZE)
    assert report.up_to_date and report.frames == 0 and report.shards_skipped == 3
    assert report.fingerprint == labelled.report.fingerprint
    assert {p.name: os.stat(p).st_mtime_ns for p in labelled.out.iterdir()} == before


def test_another_teacher_is_refused(labelled: Labelled, tmp_path) -> None:
    other = save_teacher(tmp_path / "other.pt", seed=1)
    with pytest.raises(DataError, match=r"changed: teacher: .*other\.pt"):
        label_shards(other, labelled.source, SPLIT, labelled.out, size=LABEL_SIZE)
    assert (labelled.out / MANIFEST).exists()  # nothing was touched


def test_another_size_or_source_is_refused(labelled: Labelled, tmp_path) -> None:
    with pytest.raises(DataError, match=r"changed: size: 32x48 → 16x16"):
        label_shards(labelled.teacher, labelled.source, SPLIT, labelled.out, size=(16, 16))
    other = write_rgb_shards(tmp_path / "other", seed=7)
    with pytest.raises(DataError, match=r"changed: source: "):
        label_shards(labelled.teacher, other, SPLIT, labelled.out, size=LABEL_SIZE)


def test_cli_refusal_names_the_change(labelled: Labelled, tmp_path, capsys) -> None:
    other = save_teacher(tmp_path / "other.pt", seed=1)
    argv = ["pseudo-label", "--teacher", str(other), "--shards", str(labelled.source)]
    argv += ["--split", SPLIT, "--out", str(labelled.out), "--size", "32", "48", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "changed: teacher" in err and "--force" in err


def test_frames_of_several_sizes_need_a_size(labelled: Labelled, tmp_path) -> None:
    with pytest.raises(
        DataError, match=r"frames differ in size \(.* is 24x32, .* is 30x40\)"
    ) as info:
        label_shards(labelled.teacher, labelled.source, SPLIT, tmp_path / "out")
    assert "--size" in info.value.hint


def test_manifest_is_the_last_file_written(labelled: Labelled) -> None:
    manifest = labelled.out / MANIFEST
    shards = [labelled.out / p.name for p in shard_paths(labelled.out, SPLIT)]
    assert all(os.stat(manifest).st_mtime_ns >= os.stat(s).st_mtime_ns for s in shards)
    assert json.loads(manifest.read_text())["splits"][SPLIT]["num_samples"] == 9
