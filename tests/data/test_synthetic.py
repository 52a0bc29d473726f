"""Tests of the procedural RGB-D generator: layouts, encodings, determinism and depth cues."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from depthkd.data.constants import (
    KITTI_DEPTH_SCALE,
    KITTI_FOCAL,
    KITTI_SIZE,
    NYU_DEPTH_SCALE,
    NYU_FOCAL,
    NYU_SIZE,
)
from depthkd.data.sources import synthetic
from depthkd.data.sources.render import render_scene
from depthkd.data.sources.synthetic import SynthSummary, write_synthetic
from depthkd.errors import ConfigError

H, W = 64, 96
SEED = 3
KITTI_N = 40  # 4 val and 8 test frames: one test frame has no GT
NYU_N = 30  # two rooms of 20 frames; 3 val and 6 test frames

KITTI_RGB = r"2011_09_26/2011_09_26_drive_(\d{4})_sync/image_02/data/(\d{10})\.png"
KITTI_GT = r"2011_09_26_drive_(\d{4})_sync/proj_depth/groundtruth/image_02/(\d{10})\.png"
NYU_RGB = r"synth_room_(\d{4})/rgb_(\d{5})\.jpg"
NYU_GT = r"synth_room_(\d{4})/sync_depth_(\d{5})\.png"


@pytest.fixture(scope="module")
def kitti(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    out = tmp_path_factory.mktemp("kitti")
    return write_synthetic("kitti", out, KITTI_N, SEED, height=H, width=W, progress=False)


@pytest.fixture(scope="module")
def nyu(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    out = tmp_path_factory.mktemp("nyu")
    return write_synthetic("nyu", out, NYU_N, SEED, height=H, width=W, progress=False)


def split_lines(path: Path) -> list[list[str]]:
    return [line.split(" ") for line in path.read_text().splitlines()]


def all_lines(summary: SynthSummary) -> list[list[str]]:
    """The lines of train, val and test, in sample order."""
    return [
        line
        for path in (summary.train_split, summary.val_split, summary.test_split)
        for line in split_lines(path)
    ]


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_depth(path: Path, scale: float) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I;16B", "I"), image.mode
        encoded = np.asarray(image)
    assert encoded.dtype == np.uint16, encoded.dtype
    return encoded / scale


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["kitti", "nyu"])
def test_bytes_depend_on_seed_not_on_workers(layout: str, tmp_path: Path) -> None:
    runs = {
        (seed, workers): tmp_path / f"{seed}_{workers}"
        for seed, workers in [(0, 1), (0, 2), (1, 1)]
    }
    for (seed, workers), out in runs.items():
        write_synthetic(layout, out, 12, seed, height=H, width=W, workers=workers, progress=False)
    same = digests(runs[0, 1])
    assert len(same) > 12
    assert digests(runs[0, 2]) == same
    other = digests(runs[1, 1])
    assert other.keys() == same.keys()
    assert other != same


def test_render_scene_is_a_function_of_the_generator_state() -> None:
    for layout in ("kitti", "nyu"):
        first = render_scene(layout, np.random.default_rng([5, 1]), H, W)
        again = render_scene(layout, np.random.default_rng([5, 1]), H, W)
        other = render_scene(layout, np.random.default_rng([5, 2]), H, W)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert not np.array_equal(first[0], other[0])
        rgb, depth = first
        assert rgb.shape == (H, W, 3)
        assert rgb.dtype == np.uint8
        assert depth.shape == (H, W)
        assert depth.dtype == np.float32


# --- layouts and split files -------------------------------------------------------------------


def test_kitti_splits(kitti: SynthSummary) -> None:
    assert (kitti.root, kitti.gt_root) == (kitti.out / "raw", kitti.out / "gt")
    assert (kitti.n_train, kitti.n_val, kitti.n_test) == (28, 4, 8)
    focal = f"{KITTI_FOCAL * W / KITTI_SIZE[1]:.4f}"
    train, val, test = (
        split_lines(path) for path in (kitti.train_split, kitti.val_split, kitti.test_split)
    )
    assert (len(train), len(val), len(test)) == (kitti.n_train, kitti.n_val, kitti.n_test)
    assert len({line[0] for line in train + val + test}) == KITTI_N
    for rgb, gt, line_focal in train + val + test:
        assert line_focal == focal
        drive_frame = re.fullmatch(KITTI_RGB, rgb).groups()
        assert int(drive_frame[0]) >= 1
        assert int(drive_frame[1]) < 50
        assert (kitti.root / rgb).is_file()
        if gt == "None":
            missing = f"2011_09_26_drive_{drive_frame[0]}_sync/proj_depth/groundtruth/image_02"
            assert not (kitti.gt_root / missing / f"{drive_frame[1]}.png").exists()
            continue
        assert re.fullmatch(KITTI_GT, gt).groups() == drive_frame
        assert (kitti.gt_root / gt).is_file()
    assert all(gt != "None" for _, gt, _ in train + val)
    without_gt = sum(gt == "None" for _, gt, _ in test)
    assert without_gt == kitti.n_test_without_gt == 1


def test_kitti_frames_are_numbered_within_drives(tmp_path: Path) -> None:
    summary = write_synthetic("kitti", tmp_path, 52, 0, height=16, width=16, progress=False)
    rgbs = [line[0] for line in all_lines(summary)]
    assert rgbs[49].endswith("drive_0001_sync/image_02/data/0000000049.png")
    assert rgbs[50].endswith("drive_0002_sync/image_02/data/0000000000.png")


def test_nyu_splits(nyu: SynthSummary) -> None:
    assert (nyu.root, nyu.gt_root) == (nyu.out / "sync", None)
    assert (nyu.n_train, nyu.n_val, nyu.n_test, nyu.n_test_without_gt) == (21, 3, 6, 0)
    focal = f"{NYU_FOCAL * W / NYU_SIZE[1]:.4f}"
    train, val, test = (
        split_lines(path) for path in (nyu.train_split, nyu.val_split, nyu.test_split)
    )
    assert (len(train), len(val), len(test)) == (nyu.n_train, nyu.n_val, nyu.n_test)
    # Like the BTS lists: train paths have a leading slash, test paths do not; val is carved out
    # of a train list and keeps it.
    for lines, slash in ((train, True), (val, True), (test, False)):
        for rgb, gt, line_focal in lines:
            assert line_focal == focal
            assert rgb.startswith("/") == gt.startswith("/") == slash
            rgb, gt = rgb.removeprefix("/"), gt.removeprefix("/")
            assert re.fullmatch(NYU_RGB, rgb).groups() == re.fullmatch(NYU_GT, gt).groups()
            assert (nyu.root / rgb).is_file()
            assert (nyu.root / gt).is_file()
    rooms = {line[0].lstrip("/").split("/")[0] for line in train + val + test}
    assert rooms == {"synth_room_0000", "synth_room_0001"}


@pytest.mark.parametrize("layout", ["kitti", "nyu"])
def test_images_have_the_requested_size(
    layout: str, kitti: SynthSummary, nyu: SynthSummary
) -> None:
    summary = kitti if layout == "kitti" else nyu
    scale = KITTI_DEPTH_SCALE if layout == "kitti" else NYU_DEPTH_SCALE
    for rgb, gt, _ in all_lines(summary):
        assert read_rgb(summary.root / rgb.lstrip("/")).shape == (H, W, 3)
        if gt != "None":
            gt_root = summary.gt_root or summary.root
            assert read_depth(gt_root / gt.lstrip("/"), scale).shape == (H, W)


def test_native_size_by_default_and_a_single_frame(tmp_path: Path) -> None:
    summary = write_synthetic("nyu", tmp_path, 1, 0, progress=False)
    assert (summary.n_train, summary.n_val, summary.n_test) == (1, 0, 0)
    assert summary.val_split.read_text() == summary.test_split.read_text() == ""
    ((rgb, _, focal),) = split_lines(summary.train_split)
    assert focal == f"{NYU_FOCAL:.4f}"
    assert read_rgb(summary.root / rgb.lstrip("/")).shape == (*NYU_SIZE, 3)


@pytest.mark.parametrize(
    ("n", "test_fraction", "val_fraction", "n_val", "n_test"),
    [
        (10, 0.3, 0.1, 1, 3),
        (10, 0.0, 0.1, 1, 1),
        (20, 0.2, 0.1, 2, 4),
        (10, 0.2, 0.0, 0, 2),
        (10, 0.2, 0.01, 1, 2),  # at least one val frame
        (3, 0.2, 0.1, 1, 1),
        (3, 0.5, 0.5, 0, 2),  # capped: one train frame stays
        (2, 0.9, 0.5, 0, 1),
    ],
)
def test_split_sizes(
    tmp_path: Path, n: int, test_fraction: float, val_fraction: float, n_val: int, n_test: int
) -> None:
    summary = write_synthetic(
        "nyu",
        tmp_path,
        n,
        0,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        height=16,
        width=16,
        progress=False,
    )
    assert (summary.n_train, summary.n_val, summary.n_test) == (n - n_val - n_test, n_val, n_test)
    counts = [len(split_lines(p)) for p in (summary.train_split, summary.val_split)]
    assert counts == [summary.n_train, summary.n_val]


def test_test_split_does_not_depend_on_val_fraction(tmp_path: Path) -> None:
    runs = [
        write_synthetic(
            "kitti", tmp_path / str(f), 40, 0, val_fraction=f, height=16, width=16, progress=False
        )
        for f in (0.0, 0.3)
    ]
    assert [r.n_val for r in runs] == [0, 12]
    assert runs[0].test_split.read_text() == runs[1].test_split.read_text()
    assert runs[0].n_test_without_gt == runs[1].n_test_without_gt == 1
    train = [split_lines(r.train_split) for r in runs]
    assert train[1] == train[0][:20]  # val comes out of the end of train


def test_test_list_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []
    real_write = synthetic._write_text

    def recording(path: Path, text: str) -> None:
        written.append(path.name)
        real_write(path, text)

    monkeypatch.setattr(synthetic, "_write_text", recording)
    write_synthetic("nyu", tmp_path, 10, 0, height=16, width=16, progress=False)
    assert written == ["train.txt", "val.txt", "test.txt"]  # test.txt marks a complete folder


def test_no_temporary_files_are_left(kitti: SynthSummary, nyu: SynthSummary) -> None:
    for summary in (kitti, nyu):
        assert not [p for p in summary.out.rglob(".*")]


def test_progress_bar_goes_to_stderr_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_synthetic("nyu", tmp_path / "quiet", 2, 0, height=16, width=16, progress=False)
    assert capsys.readouterr().err == ""
    write_synthetic("nyu", tmp_path / "loud", 2, 0, height=16, width=16, progress=True)
    captured = capsys.readouterr()
    assert "synth nyu" in captured.err
    assert captured.out == ""


# --- depth encoding and cues -------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["kitti", "nyu"])
def test_depth_png_round_trips_the_rendered_depth(
    layout: str, kitti: SynthSummary, nyu: SynthSummary
) -> None:
    summary = kitti if layout == "kitti" else nyu
    scale = KITTI_DEPTH_SCALE if layout == "kitti" else NYU_DEPTH_SCALE
    rgb_path, gt_path, _ = split_lines(summary.train_split)[2]
    rgb, depth = render_scene(layout, np.random.default_rng([SEED, 2]), H, W)
    decoded = read_depth((summary.gt_root or summary.root) / gt_path.lstrip("/"), scale)
    assert np.array_equal(decoded > 0, depth > 0)
    assert np.abs(decoded - depth).max() <= 0.5 / scale + 1e-6
    if layout == "kitti":  # PNG is lossless
        assert np.array_equal(read_rgb(summary.root / rgb_path), rgb)


def test_kitti_depth_is_sparse_and_capped(kitti: SynthSummary) -> None:
    for _, gt, _ in all_lines(kitti):
        if gt == "None":
            continue
        depth = read_depth(kitti.gt_root / gt, KITTI_DEPTH_SCALE)
        assert 0.10 <= np.mean(depth > 0) <= 0.40
        assert depth.max() <= 80.0


def test_kitti_ground_recedes_towards_the_horizon() -> None:
    for i in range(10):
        _, depth = render_scene("kitti", np.random.default_rng([SEED, 100 + i]), H, W)
        bottom = depth[-H // 4 :]
        horizon = depth[H // 2 : H // 2 + H // 8]
        assert np.median(bottom[bottom > 0]) < np.median(horizon[horizon > 0])


def test_kitti_sky_has_no_depth() -> None:
    for i in range(5):
        _, depth = render_scene("kitti", np.random.default_rng([SEED, 200 + i]), H, W)
        # The top rows look above the horizon: sky or buildings, never ground beyond 80 m.
        assert np.all(depth[0] <= 80.0)
        assert np.mean(depth[: H // 4] > 0) < np.mean(depth[-H // 4 :] > 0)


def test_nyu_depth_is_dense_indoor_range(nyu: SynthSummary) -> None:
    holes = []
    for _, gt, _ in all_lines(nyu):
        depth = read_depth(nyu.root / gt.lstrip("/"), NYU_DEPTH_SCALE)
        valid = depth[depth > 0]
        assert valid.min() > 0.5
        assert valid.max() <= 10.5
        holes.append(np.mean(depth == 0))
    assert max(holes) < 0.10
    assert np.mean(holes) > 0.0  # Kinect-like holes exist


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"layout": "cityscapes"}, "layout"),
        ({"height": 8}, "height"),
        ({"width": 15}, "width"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"workers": 0}, "workers"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict, name: str) -> None:
    args = {"layout": "kitti", "out": tmp_path, "n": 2, "seed": 0, "height": 16, "width": 16}
    with pytest.raises(ConfigError, match=rf"^{name} must"):
        write_synthetic(**{**args, "progress": False, **kwargs})
    assert not (tmp_path / "splits").exists()


def test_render_scene_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"^layout must"):
        render_scene("cityscapes", rng, H, W)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^width must"):
        render_scene("nyu", rng, H, 4)


# --- unlabeled frames ---------------------------------------------------------------------------


def _depth_files(out: Path) -> list[Path]:
    return sorted(
        p.relative_to(out)
        for p in out.rglob("*.png")
        if "proj_depth" in p.parts or p.name.startswith("sync_depth_")
    )


@pytest.mark.parametrize("layout", ["kitti", "nyu"])
def test_unlabeled_frames_are_rgb_only_new_scenes_and_change_no_labeled_byte(
    tmp_path: Path, layout: str
) -> None:
    args = {"n": 6, "seed": SEED, "height": 16, "width": 24, "progress": False}
    plain = write_synthetic(layout, tmp_path / "plain", **args)  # type: ignore[arg-type]
    both = write_synthetic(layout, tmp_path / "both", unlabeled_n=3, **args)  # type: ignore[arg-type]
    assert plain.unlabeled_split is None and not (plain.out / "splits" / "unlabeled.txt").exists()
    assert both.n_unlabeled == 3 and both.unlabeled_split == both.out / "splits" / "unlabeled.txt"
    lines = split_lines(both.unlabeled_split)
    assert len(lines) == 3 and all(gt == "None" for _, gt, _ in lines)
    for rgb, _, _ in lines:
        assert (both.root / rgb).is_file()
    # A drive (room) of their own, after the labeled ones: no scene is shared with a test frame.
    pattern = KITTI_RGB if layout == "kitti" else NYU_RGB
    labeled = {int(re.fullmatch(pattern, line[0].lstrip("/"))[1]) for line in all_lines(both)}
    assert {int(re.fullmatch(pattern, rgb)[1]) for rgb, _, _ in lines} == {max(labeled) + 1}
    # Their depth is never written, and every file of the labeled set is byte-identical.
    assert _depth_files(both.out) == _depth_files(plain.out)
    for path in plain.out.rglob("*.*"):
        assert (both.out / path.relative_to(plain.out)).read_bytes() == path.read_bytes()


def test_negative_unlabeled_n_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^unlabeled_n must be an integer >= 0"):
        write_synthetic("nyu", tmp_path, 2, 0, height=16, width=16, unlabeled_n=-1)
