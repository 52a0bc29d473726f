"""RGB-only sources (images, video, kitti-raw) become verified shards without depth: upright
images of any size, every n-th video frame, KITTI raw frames keyed like the labeled ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from depthkd.cli.main import main
from depthkd.config.schema import PrepareConfig
from depthkd.data.images import decode_rgb
from depthkd.data.shards import read_manifest, read_tar, verify_shards
from depthkd.data.sources import build_source
from depthkd.data.sources.kitti import kitti_key
from depthkd.errors import ConfigError, DataError
from tests.conftest import KITTI_TINY, prepare

EXIF_ORIENTATION = 0x0112
TINY_DRIVE = "2011_09_26_drive_0023_sync"
TINY_FRAMES = 7  # image_02 frames of the packnet-sfm KITTI_tiny drive


def samples(shards: Path, split: str) -> dict[str, dict[str, bytes]]:
    """Every sample of a split as {key: {extension: bytes}}."""
    out: dict[str, dict[str, bytes]] = {}
    for shard in read_manifest(shards)["splits"][split]["shards"]:
        out.update(read_tar(shards / shard["name"]))
    return out


def _image(path: Path, height: int, width: int, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A sideways phone photo (stored 20x30 with a white left band, EXIF orientation 6 = turn
    90° clockwise to view), two more sizes in a sub-folder and files that are not listed."""
    root = tmp_path / "photos"
    root.mkdir()
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:, :10] = 255
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(stored).save(root / "IMG_0001.JPG", exif=exif.tobytes(), quality=95)
    _image(root / "trip" / "a.png", 17, 23)
    _image(root / "trip" / "b.v2.jpeg", 40, 12)
    (root / "notes.txt").write_text("not an image")
    (root / "trip" / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble: hidden
    return root


# --- images ----------------------------------------------------------------------------------


def test_folder_of_photos_becomes_verified_upright_rgb_only_shards(
    tmp_path: Path, photos: Path
) -> None:
    report = prepare(tmp_path, dataset="images", root=photos, split="unlabeled", focal=500.0)
    shards = tmp_path / "shards"
    assert report.num_samples == 3 and not report.skipped
    assert verify_shards(shards, progress=False).ok
    entry = read_manifest(shards)["splits"]["unlabeled"]
    assert entry["num_without_gt"] == 3 and entry["source"]["dataset"] == "images"
    got = samples(shards, "unlabeled")
    assert sorted(got) == ["images/IMG_0001", "images/trip/a", "images/trip/b_v2"]
    for files in got.values():
        assert "depth.png" not in files
    assert got["images/IMG_0001"]["rgb.jpg"] == (photos / "IMG_0001.JPG").read_bytes()
    sizes = {}
    for key, files in got.items():
        meta = json.loads(files["meta.json"])
        rgb = decode_rgb(files.get("rgb.png") or files["rgb.jpg"], key)
        assert meta["has_gt"] is False and meta["focal"] == 500.0
        assert rgb.shape[:2] == (meta["height"], meta["width"])
        sizes[key] = rgb.shape[:2]
    assert sizes == {
        "images/IMG_0001": (30, 20),
        "images/trip/a": (17, 23),
        "images/trip/b_v2": (40, 12),
    }
    upright = decode_rgb(got["images/IMG_0001"]["rgb.jpg"], "photo")
    assert upright[:8].mean() > 240 and upright[12:].mean() < 15  # the band is now on top


def test_glob_root_keys_are_relative_to_the_pattern_base(tmp_path: Path, photos: Path) -> None:
    report = prepare(tmp_path, dataset="images", root=photos / "**" / "*.png", split="u")
    assert report.num_samples == 1
    assert list(samples(tmp_path / "shards", "u")) == ["images/trip/a"]


def test_adding_an_image_rebuilds_instead_of_reporting_up_to_date(
    tmp_path: Path, photos: Path
) -> None:
    assert prepare(tmp_path, dataset="images", root=photos, split="u").num_samples == 3
    _image(photos / "new.png", 16, 16)
    with pytest.raises(DataError, match="already exists from other inputs"):
        prepare(tmp_path, dataset="images", root=photos, split="u")
    assert prepare(tmp_path, dataset="images", root=photos, split="u", force=True).num_samples == 4


def test_corrupt_image_raises_naming_the_file_or_is_skipped(tmp_path: Path, photos: Path) -> None:
    bad = photos / "trip" / "a.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=r"a\.png: unreadable or corrupt image"):
        prepare(tmp_path, dataset="images", root=photos, split="u")
    report = prepare(tmp_path, dataset="images", root=photos, split="u", on_error="skip")
    assert report.num_samples == 2
    skipped = read_manifest(tmp_path / "shards")["splits"]["u"]["skipped"]
    assert len(skipped) == 1 and skipped[0]["where"] == str(bad)


def test_empty_folder_and_unmatched_glob_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.png/\.jpg/\.jpeg images under .*empty"):
        prepare(tmp_path, dataset="images", root=tmp_path / "empty", split="u")
    with pytest.raises(DataError, match=r"no \.png/\.jpg/\.jpeg images matching"):
        prepare(tmp_path, dataset="images", root=tmp_path / "empty" / "*.jpg", split="u")
    with pytest.raises(DataError, match="image root not found"):
        prepare(tmp_path, dataset="images", root=tmp_path / "missing", split="u")


# --- video -----------------------------------------------------------------------------------


def _video(path: Path, frames: int, *, rotation: int | None = None) -> None:
    """Frame i is flat grey 8 * i, so a decoded frame tells its index; keyframes every 8 frames
    and B-frames, so frames are reordered and seeking matters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "8", "bf": "2"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.bit_rate = 5_000_000
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            rgb = np.full((48, 64, 3), 8 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def _frame_index(files: dict[str, bytes]) -> float:
    return decode_rgb(files["rgb.jpg"], "frame").mean() / 8


def test_video_yields_every_nth_frame(tmp_path: Path) -> None:
    _video(tmp_path / "clip.v1.mp4", 30)
    report = prepare(tmp_path, dataset="video", root=tmp_path / "clip.v1.mp4", split="u", every=7)
    assert report.num_samples == 5  # frames 0, 7, 14, 21, 28
    shards = tmp_path / "shards"
    assert verify_shards(shards, progress=False).ok
    got = samples(shards, "u")
    assert sorted(got) == [f"video/clip_v1/{k:06d}" for k in (0, 7, 14, 21, 28)]
    for key, files in got.items():
        meta = json.loads(files["meta.json"])
        assert meta["has_gt"] is False and "depth.png" not in files
        assert (meta["height"], meta["width"]) == (48, 64)
        assert meta["source"]["frame"] == int(key[-6:])
        assert _frame_index(files) == pytest.approx(int(key[-6:]), abs=0.4)


def test_video_frames_decode_right_in_any_order_and_upright(tmp_path: Path) -> None:
    _video(tmp_path / "videos" / "a.mp4", 30)
    _video(tmp_path / "videos" / "phone" / "b.mp4", 3, rotation=-90)  # portrait: turn clockwise
    cfg = PrepareConfig(dataset="video", root=tmp_path / "videos", split="u", out=tmp_path, every=3)
    source = build_source(cfg)
    listed = list(source.iter_samples())
    keys = [f"video/a/{k:06d}" for k in range(0, 30, 3)] + ["video/phone/b/000000"]
    assert [s.key for s in listed] == keys
    order = listed[::-1] + listed[::2] + listed  # seeks backwards and forwards, then in order
    for sample in order:
        encoded = source.encode(sample)
        if sample.key.startswith("video/a/"):
            assert _frame_index(encoded) == pytest.approx(sample.extra["frame"], abs=0.4)
        else:
            assert decode_rgb(encoded["rgb.jpg"], sample.key).shape == (64, 48, 3)


def test_every_zero_and_options_of_another_dataset_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["data", "prepare", "--root", str(tmp_path), "--split", "u", "--out", str(tmp_path)]
    assert main([*args, "--dataset", "video", "--every", "0"]) == 2
    assert "--every: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main([*args, "--dataset", "images", "--every", "5"]) == 2
    assert "--every: Value error, only applies to --dataset video" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="takes no --split-file"):
        build_source(
            PrepareConfig(
                dataset="images", root=tmp_path, split="u", out=tmp_path, split_file=tmp_path
            )
        )


def test_unreadable_video_raises_or_is_skipped(tmp_path: Path) -> None:
    _video(tmp_path / "videos" / "good.mp4", 4)
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    with pytest.raises(DataError, match=r"broken\.mp4: unreadable or corrupt video"):
        prepare(tmp_path, dataset="video", root=tmp_path / "videos", split="u", every=2)
    report = prepare(
        tmp_path, dataset="video", root=tmp_path / "videos", split="u", every=2, on_error="skip"
    )
    assert report.num_samples == 2 and "broken.mp4" in report.skipped[0]["where"]


# --- kitti-raw -------------------------------------------------------------------------------


@pytest.fixture
def kitti_tiny(realdata: Path) -> Path:
    if not KITTI_TINY.is_dir():
        pytest.skip(f"{KITTI_TINY} is absent")
    return KITTI_TINY


def test_kitti_raw_scans_the_drives_with_labeled_keys(tmp_path: Path, kitti_tiny: Path) -> None:
    report = prepare(tmp_path, dataset="kitti-raw", root=kitti_tiny, split="raw")
    assert report.num_samples == TINY_FRAMES
    shards = tmp_path / "shards"
    assert verify_shards(shards, progress=False).ok
    got = samples(shards, "raw")
    assert sorted(got) == [kitti_key(TINY_DRIVE, f"{i:010d}") for i in range(TINY_FRAMES)]
    meta = json.loads(got[kitti_key(TINY_DRIVE, "0000000003")]["meta.json"])
    assert meta["dataset"] == "kitti" and meta["has_gt"] is False
    assert (meta["height"], meta["width"]) == (375, 1242) and meta["focal"] == 721.5377
    assert read_manifest(shards)["splits"]["raw"]["source"]["dataset"] == "kitti-raw"


def test_kitti_raw_split_file_lists_and_calibrated_focal(tmp_path: Path, kitti_tiny: Path) -> None:
    date = tmp_path / "raw" / "2011_09_28"
    for frame in ("0000000000", "0000000001"):
        src = kitti_tiny / "2011_09_26" / TINY_DRIVE / "image_02" / "data" / f"{frame}.png"
        dst = date / "2011_09_28_drive_0002_sync" / "image_02" / "data" / f"{frame}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    (date / "calib_cam_to_cam.txt").write_text("P_rect_02: 7.070493e+02 0 6.04e+02 0\n")
    split = tmp_path / "list.txt"
    split.write_text(
        "2011_09_28/2011_09_28_drive_0002_sync/image_02/data/0000000000.png gt.png 1.0\n"
        "2011_09_28/2011_09_28_drive_0002_sync 1 l\n"  # monodepth2
    )
    report = prepare(
        tmp_path, dataset="kitti-raw", root=tmp_path / "raw", split_file=split, split="raw"
    )
    assert report.num_samples == 2
    for files in samples(tmp_path / "shards", "raw").values():
        assert json.loads(files["meta.json"])["focal"] == pytest.approx(707.0493)
    split.write_text("2011_09_28/2011_09_28_drive_0002_sync/image_02/0000000000.png\n")
    with pytest.raises(DataError, match=r"list\.txt:1: .* is not <date>/<drive>_sync/image_0X"):
        prepare(tmp_path, dataset="kitti-raw", root=tmp_path / "raw", split_file=split, split="b")


def test_kitti_raw_right_camera_frames_get_their_own_keys(tmp_path: Path, kitti_tiny: Path) -> None:
    frame = kitti_tiny / "2011_09_26" / TINY_DRIVE / "image_02" / "data" / "0000000000.png"
    for camera in ("image_02", "image_03"):
        dst = tmp_path / "raw" / "2011_09_26" / TINY_DRIVE / camera / "data" / frame.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(frame, dst)
    report = prepare(tmp_path, dataset="kitti-raw", root=tmp_path / "raw", split="l")
    assert report.num_samples == 1
    report = prepare(
        tmp_path, dataset="kitti-raw", root=tmp_path / "raw", split="lr", right_camera=True
    )
    assert sorted(samples(tmp_path / "shards", "lr")) == [
        f"kitti/{TINY_DRIVE}/0000000000",
        f"kitti/{TINY_DRIVE}/image_03/0000000000",
    ]
    with pytest.raises(ConfigError, match="--right-camera adds image_03 when scanning"):
        build_source(
            PrepareConfig(
                dataset="kitti-raw",
                root=tmp_path,
                split="u",
                out=tmp_path,
                split_file=tmp_path / "list.txt",
                right_camera=True,
            )
        )


def test_kitti_raw_empty_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no KITTI raw frames under .*image_02/data/\*\.png"):
        prepare(tmp_path, dataset="kitti-raw", root=tmp_path, split="raw")
