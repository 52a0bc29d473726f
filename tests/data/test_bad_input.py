"""Each kind of bad raw input gives a clear DataError naming file and line, or is skipped."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from depthkd.data.shards import read_manifest
from depthkd.errors import DataError
from tests.conftest import NYU_DEMO, prepare

SCENE = "office_0001"


@pytest.fixture
def nyu_root(realdata, tmp_path):
    """Two good NYU frames; each bad-input fixture breaks the second one."""
    scene = tmp_path / "sync" / SCENE
    scene.mkdir(parents=True)
    for frame in ("00000", "00050"):
        shutil.copyfile(NYU_DEMO / "rgb" / f"rgb_{frame}.jpg", scene / f"rgb_{frame}.jpg")
        shutil.copyfile(
            NYU_DEMO / "depth" / f"sync_depth_{frame}.png", scene / f"sync_depth_{frame}.png"
        )
    return tmp_path / "sync"


def _split(tmp_path, *lines: str):
    path = tmp_path / "split.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _good(frame: str) -> str:
    return f"/{SCENE}/rgb_{frame}.jpg /{SCENE}/sync_depth_{frame}.png 518.8579"


def _run(tmp_path, root, split, **kw):
    return prepare(tmp_path, dataset="nyu", root=root, split_file=split, split="train", **kw)


@pytest.fixture
def missing_rgb(nyu_root):
    (nyu_root / SCENE / "rgb_00050.jpg").unlink()
    return "rgb file not found"


@pytest.fixture
def corrupt_rgb(nyu_root):
    path = nyu_root / SCENE / "rgb_00050.jpg"
    path.write_bytes(path.read_bytes()[:2000])  # truncated JPEG
    return "unreadable or corrupt image"


@pytest.fixture
def size_mismatch(nyu_root):
    path = nyu_root / SCENE / "sync_depth_00050.png"
    Image.fromarray(np.asarray(Image.open(path))[:-8]).save(path)
    return r"rgb is 480x640 but depth is 472x640"


@pytest.fixture
def depth_8bit(nyu_root):
    path = nyu_root / SCENE / "sync_depth_00050.png"
    Image.fromarray((np.asarray(Image.open(path)) // 256).astype(np.uint8)).save(path)
    return r"must be a 16-bit greyscale PNG \(uint16\), got 8-bit grey"


@pytest.fixture
def depth_rgb_png(nyu_root):
    path = nyu_root / SCENE / "sync_depth_00050.png"
    Image.new("RGB", (640, 480)).save(path)
    return "got 8-bit RGB"


@pytest.mark.parametrize(
    "breakage", ["missing_rgb", "corrupt_rgb", "size_mismatch", "depth_8bit", "depth_rgb_png"]
)
def test_bad_sample_names_file_and_line(request, tmp_path, nyu_root, breakage):
    expected = request.getfixturevalue(breakage)
    split = _split(tmp_path, _good("00000"), _good("00050"))
    with pytest.raises(DataError, match=rf"split\.txt:2: .*{expected}"):
        _run(tmp_path, nyu_root, split)
    assert not (tmp_path / "shards" / "manifest.json").exists()
    assert not list((tmp_path / "shards").glob("*.tar"))
    assert not list((tmp_path / "shards").glob(".tmp-*"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"/{SCENE}/rgb_00050.jpg", r"split\.txt:2: expected 2 or 3 columns"),
        (f"/{SCENE}/rgb_00050.jpg /{SCENE}/sync_depth_00050.png a b", r"got 4"),
        (f"/{SCENE}/rgb_00050.jpg /{SCENE}/sync_depth_00050.png -5", "focal length must be"),
        (f"/{SCENE}/rgb_09999.jpg /{SCENE}/sync_depth_09999.png 518.8", "rgb file not found"),
    ],
    ids=["too-few-columns", "too-many-columns", "negative-focal", "points-nowhere"],
)
def test_bad_split_line(tmp_path, nyu_root, line, message):
    split = _split(tmp_path, _good("00000"), line)
    with pytest.raises(DataError, match=message):
        _run(tmp_path, nyu_root, split)


def test_duplicate_key_is_rejected(tmp_path, nyu_root):
    split = _split(tmp_path, _good("00000"), _good("00000"))
    with pytest.raises(DataError, match=r"split\.txt:2: duplicate sample key .*first at .*:1"):
        _run(tmp_path, nyu_root, split)


def test_skip_records_bad_samples_in_manifest(tmp_path, nyu_root, corrupt_rgb):
    split = _split(tmp_path, _good("00000"), _good("00050"), f"/{SCENE}/only_two_columns.jpg")
    report = _run(tmp_path, nyu_root, split, on_error="skip")
    assert report.num_samples == 1
    skipped = read_manifest(tmp_path / "shards")["splits"]["train"]["skipped"]
    assert [s["where"].rsplit(":", 1)[-1] for s in skipped] == ["3", "2"]
    assert any("corrupt" in s["reason"] for s in skipped)


def test_all_samples_bad_is_an_empty_shard_set_error(tmp_path, nyu_root):
    split = _split(tmp_path, f"/{SCENE}/nope.jpg /{SCENE}/nope.png 518.8")
    with pytest.raises(DataError, match="no usable samples"):
        _run(tmp_path, nyu_root, split, on_error="skip")


def test_empty_split_file(tmp_path, nyu_root):
    with pytest.raises(DataError, match="lists no samples"):
        _run(tmp_path, nyu_root, _split(tmp_path, "# only a comment"))


def test_missing_kitti_gt_names_both_layouts(realdata, tmp_path):
    from tests.conftest import build_kitti_tree

    raw, gt, split = build_kitti_tree(realdata, tmp_path, nested=False)
    shutil.rmtree(gt)
    with pytest.raises(DataError, match=r"eigen_test_files_with_gt\.txt:1: ground-truth depth not"):
        prepare(tmp_path, dataset="kitti", root=raw, gt_root=gt, split_file=split, split="test")
