"""`depthkd data split`: val carved out of the real KITTI Eigen and NYU train lists by whole drives
and scenes, so that no near-duplicate frame of a val group is in train."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from depthkd.cli.main import main
from depthkd.data import splitting
from depthkd.data.splitting import GroupSplit, shared_groups, split_by_group, write_split
from depthkd.errors import ConfigError, DataError

BTS = Path("splits/cleinc_bts/train_test_inputs")
EIGEN_TRAIN = BTS / "eigen_train_files_with_gt.txt"
EIGEN_TEST = BTS / "eigen_test_files_with_gt.txt"
NYU_TRAIN = BTS / "nyudepthv2_train_files_with_gt.txt"
NYU_DENSE = Path("splits/aliyun_NeWCRFs/data_splits/nyudepthv2_train_files_with_gt_dense.txt")
# (list, group_by, lines, groups) as counted in PROVENANCE.md and by hand from the files
REAL_LISTS = [
    (EIGEN_TRAIN, "drive", 23158, 33),
    (NYU_TRAIN, "scene", 24231, 249),  # 284 folders; kitchen_0028a/b are one scene
    (NYU_DENSE, "scene", 36253, 249),
]
TOLERANCE = 0.01  # |val share − requested share|; greedy fill gets within 0.3 % on these lists


def group(line: str, group_by: str) -> str:
    """The drive or scene of a line, computed independently of the module under test."""
    parts = line.split()[0].lstrip("/").split("/")
    if group_by == "drive":
        return parts[1]
    return parts[0].rstrip("abcdefghijklmnopqrstuvwxyz")  # recordings a, b, … of one scene


def input_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def real_splits(realdata: Path) -> Callable[..., GroupSplit]:
    """Splits of the real lists, cached for the module: each takes ~0.2 s."""
    cache: dict[tuple[Path, float, int], GroupSplit] = {}

    def get(rel: Path, group_by: str, fraction: float = 0.1, seed: int = 0) -> GroupSplit:
        key = (rel, fraction, seed)
        if key not in cache:
            cache[key] = split_by_group(
                realdata / rel, val_fraction=fraction, group_by=group_by, seed=seed
            )
        return cache[key]

    return get


# --- the real lists --------------------------------------------------------------------------


@pytest.mark.parametrize(("rel", "group_by", "n_lines", "n_groups"), REAL_LISTS)
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2])
def test_real_list_splits_by_whole_groups(
    realdata: Path,
    real_splits: Callable[..., GroupSplit],
    rel: Path,
    group_by: str,
    n_lines: int,
    n_groups: int,
    fraction: float,
) -> None:
    result = real_splits(rel, group_by, fraction)
    train_groups = {group(line, group_by) for line in result.train}
    val_groups = {group(line, group_by) for line in result.val}
    assert not train_groups & val_groups
    assert (train_groups, val_groups) == (result.train_groups, result.val_groups)
    assert len(train_groups) + len(val_groups) == n_groups
    assert val_groups and train_groups
    assert len(result.train) + len(result.val) == n_lines
    # Every input line is in exactly one output, verbatim.
    assert Counter(result.train + result.val) == Counter(input_lines(realdata / rel))
    assert abs(len(result.val) / n_lines - fraction) < TOLERANCE


@pytest.mark.parametrize(("rel", "group_by", "n_lines", "n_groups"), REAL_LISTS[:2])
def test_real_split_is_deterministic_per_seed(
    realdata: Path, rel: Path, group_by: str, n_lines: int, n_groups: int
) -> None:
    def run(seed: int) -> GroupSplit:
        return split_by_group(realdata / rel, val_fraction=0.1, group_by=group_by, seed=seed)

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first.val_groups != other.val_groups
    assert abs(len(other.val) / n_lines - 0.1) < TOLERANCE


def test_line_order_does_not_change_the_groups(realdata: Path, tmp_path: Path) -> None:
    shuffled = tmp_path / "reversed.txt"
    shuffled.write_text("\n".join(reversed(input_lines(realdata / NYU_TRAIN))) + "\n")
    a, b = (
        split_by_group(path, val_fraction=0.1, group_by="scene", seed=1)
        for path in (realdata / NYU_TRAIN, shuffled)
    )
    assert a.val_groups == b.val_groups
    assert list(b.val) == list(reversed(a.val))  # input order kept within each output


def test_written_lines_are_verbatim(realdata: Path, tmp_path: Path) -> None:
    # The Eigen test list has `None` GT columns and per-date focals; the BTS NYU train list has
    # leading slashes and a focal column. Both must come out byte for byte.
    for rel, group_by in ((EIGEN_TEST, "drive"), (NYU_TRAIN, "scene")):
        out = tmp_path / rel.stem
        train_file, val_file = write_split(
            split_by_group(realdata / rel, val_fraction=0.2, group_by=group_by, seed=0), out
        )
        written = train_file.read_text().splitlines() + val_file.read_text().splitlines()
        assert sorted(written) == sorted(input_lines(realdata / rel))
        assert not shared_groups(train_file, val_file, group_by)
    eigen_written = (tmp_path / EIGEN_TEST.stem / "train.txt").read_text()
    eigen_written += (tmp_path / EIGEN_TEST.stem / "val.txt").read_text()
    assert eigen_written.count(" None ") == 45
    assert (tmp_path / NYU_TRAIN.stem / "val.txt").read_text().startswith("/")


# --- bad input -------------------------------------------------------------------------------

KITTI_LINE = (
    "2011_09_26/2011_09_26_drive_{:04d}_sync/image_02/data/0000000005.png "
    "2011_09_26_drive_{:04d}_sync/proj_depth/groundtruth/image_02/0000000005.png 721.5377"
)


@pytest.fixture
def one_drive(tmp_path: Path) -> Path:
    path = tmp_path / "one_drive.txt"
    path.write_text("\n".join(KITTI_LINE.format(1, 1) for _ in range(3)) + "\n")
    return path


@pytest.fixture
def bad_line(tmp_path: Path) -> Path:
    path = tmp_path / "bad.txt"
    lines = [KITTI_LINE.format(1, 1), "# a comment", KITTI_LINE.format(2, 2), "frame.png x.png 7"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def nyu_two_scenes(tmp_path: Path) -> Path:
    path = tmp_path / "nyu.txt"
    path.write_text(
        "/bedroom_0004/rgb_00001.jpg /bedroom_0004/sync_depth_00001.png 518.8579\n"
        "kitchen_0028b/rgb_00002.jpg kitchen_0028b/sync_depth_00002.png 518.8579\n"
    )
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split file not found: .*nowhere\.txt"):
        split_by_group(tmp_path / "nowhere.txt", val_fraction=0.1, group_by="drive", seed=0)


def test_unparseable_line_names_file_and_line(bad_line: Path) -> None:
    with pytest.raises(DataError, match=r"bad\.txt:4: cannot tell the KITTI drive of 'frame\.png'"):
        split_by_group(bad_line, val_fraction=0.1, group_by="drive", seed=0)
    with pytest.raises(DataError, match=r"bad\.txt:4: cannot tell the scene of 'frame\.png'"):
        split_by_group(bad_line, val_fraction=0.1, group_by="scene", seed=0)


def test_nyu_list_grouped_by_drive_is_refused(nyu_two_scenes: Path) -> None:
    with pytest.raises(DataError, match=r"nyu\.txt:1: cannot tell the KITTI drive") as info:
        split_by_group(nyu_two_scenes, val_fraction=0.5, group_by="drive", seed=0)
    assert info.value.hint == "use --group-by scene for NYU-style lists"


def test_scene_is_the_first_path_component(nyu_two_scenes: Path) -> None:
    result = split_by_group(nyu_two_scenes, val_fraction=0.5, group_by="scene", seed=0)
    assert result.train_groups | result.val_groups == {"bedroom_0004", "kitchen_0028"}
    assert len(result.val_groups) == len(result.train_groups) == 1


def test_recordings_of_one_scene_stay_together(tmp_path: Path) -> None:
    path = tmp_path / "nyu.txt"
    lines = [
        f"/{scene}/rgb_{i:05d}.jpg /{scene}/sync_depth_{i:05d}.png 518.8579"
        for i, scene in enumerate(["kitchen_0028a", "kitchen_0028b", "office_0003"] * 4)
    ]
    path.write_text("\n".join(lines) + "\n")
    for seed in range(6):
        result = split_by_group(path, val_fraction=0.3, group_by="scene", seed=seed)
        train = {line.split("/")[1] for line in result.train}
        val = {line.split("/")[1] for line in result.val}
        # kitchen_0028a and kitchen_0028b: both in train or both in val
        assert {"kitchen_0028a", "kitchen_0028b"} <= train or {
            "kitchen_0028a",
            "kitchen_0028b",
        } <= val


def test_fewer_than_two_groups(one_drive: Path) -> None:
    with pytest.raises(DataError, match=r"one_drive\.txt: all 3 frames are in one drive"):
        split_by_group(one_drive, val_fraction=0.1, group_by="drive", seed=0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan"), True])
def test_fraction_outside_the_open_unit_interval(nyu_two_scenes: Path, fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"^val_fraction must be a number in \(0, 1\)"):
        split_by_group(nyu_two_scenes, val_fraction=fraction, group_by="scene", seed=0)


def test_unknown_grouping(nyu_two_scenes: Path) -> None:
    with pytest.raises(ConfigError, match=r"^group_by must be one of scene, drive"):
        split_by_group(nyu_two_scenes, val_fraction=0.5, group_by="room", seed=0)  # type: ignore[arg-type]


def test_output_may_not_overwrite_the_input(nyu_two_scenes: Path) -> None:
    renamed = nyu_two_scenes.with_name("train.txt")
    nyu_two_scenes.rename(renamed)
    result = split_by_group(renamed, val_fraction=0.5, group_by="scene", seed=0)
    with pytest.raises(ConfigError, match=r"would overwrite the input .*train\.txt"):
        write_split(result, renamed.parent)


def test_interrupted_write_leaves_no_val_list(
    nyu_two_scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    write_split(split_by_group(nyu_two_scenes, val_fraction=0.5, group_by="scene", seed=0), out)
    real_write = splitting.atomic.write_text

    def dies_on_val(path: Path, text: str) -> None:
        if path.name == "val.txt":
            raise KeyboardInterrupt
        real_write(path, text)

    monkeypatch.setattr(splitting.atomic, "write_text", dies_on_val)
    other = split_by_group(nyu_two_scenes, val_fraction=0.5, group_by="scene", seed=1)
    with pytest.raises(KeyboardInterrupt):
        write_split(other, out)
    # The old val.txt is gone rather than left beside a train list it may overlap.
    assert not (out / "val.txt").exists()
    assert (out / "train.txt").is_file()


# --- CLI -------------------------------------------------------------------------------------


def test_cli_split_prints_counts_and_overlap(
    realdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "data",
        "split",
        "--split-file",
        str(realdata / EIGEN_TRAIN),
        "--val-fraction",
        "0.1",
        "--group-by",
        "drive",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "eigen"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    expected = split_by_group(realdata / EIGEN_TRAIN, val_fraction=0.1, group_by="drive", seed=3)
    n_train, n_val = len(expected.train), len(expected.val)
    assert out[0].startswith(f"train: {n_train} frames (")
    assert out[0].endswith(f"in {len(expected.train_groups)} drives → {tmp_path}/eigen/train.txt")
    assert out[1].startswith(f"val: {n_val} frames (")
    assert out[2] == "overlap: 0 drives in both train and val"
    assert len(out) == 3
    assert (tmp_path / "eigen" / "val.txt").read_text().splitlines() == list(expected.val)


def test_cli_split_reports_bad_input(
    one_drive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["data", "split", "--split-file", str(one_drive), "--group-by", "drive"]
    assert main([*base, "--out", str(tmp_path / "o")]) == 2
    assert "all 3 frames are in one drive" in capsys.readouterr().err
    assert main([*base, "--val-fraction", "1", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: val_fraction must be a number in (0, 1)")
    assert not (tmp_path / "o").exists()


def test_cli_split_then_prepare_synthetic_drives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, lists, shards = tmp_path / "raw", tmp_path / "lists", tmp_path / "shards"
    # 150 KITTI-like frames: 105 train frames in drives 1, 2 (50 each) and 3 (5).
    synth = f"data synth --layout kitti --out {raw} --n 150 --height 16 --width 16 --workers 1"
    assert main(synth.split()) == 0
    carve = f"data split --split-file {raw}/splits/train.txt --group-by drive --out {lists}"
    assert main([*carve.split(), "--val-fraction", "0.4"]) == 0
    capsys.readouterr()
    counts = {}
    for split in ("train", "val"):
        prepare = (
            f"data prepare --dataset kitti --root {raw}/raw --gt-root {raw}/gt "
            f"--split-file {lists}/{split}.txt --split {split} --out {shards} --quiet --workers 1"
        )
        assert main(prepare.split()) == 0
        counts[split] = int(capsys.readouterr().out.split(": ")[1].split()[0])
    assert counts["train"] + counts["val"] == 105
    # Target 0.4 × 105 = 42: drive 3 (5 frames) fits under it, then one 50-frame drive brings val
    # to 55, closer to 42 than 5 is; drive 1 or 2 stays in train.
    assert counts["val"] == 55
