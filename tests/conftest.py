"""Shared fixtures: the real sample frames in ../shared/realdata, small raw dataset trees, an
isolated `$DEPTHKD_HOME`, an embedded Ray of our own and (plugin) a real `ray start` cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import ray

from kdplatform.config.schema import PrepareConfig
from kdplatform.data.shards import PrepareReport, prepare_shards
from kdplatform.data.sources import build_source

pytest_plugins = ["tests.local_cluster"]  # the `local_ray_cluster` fixture

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
KITTI_DEMO = REALDATA / "kitti" / "YvanYin_Metric3D" / "data" / "kitti_demo"
KITTI_TINY = REALDATA / "kitti" / "TRI-ML_packnet-sfm_pr74" / "KITTI_tiny"
NYU_DEMO = REALDATA / "nyu" / "YvanYin_Metric3D" / "data" / "nyu_demo"
KITTI_FRAMES = ("0000000005", "0000000050", "0000000100")
NYU_FRAMES = ("00000", "00050", "00100")
# The Metric3D KITTI frames are most likely from 2011_09_28_drive_0002 (PROVENANCE.md).
KITTI_DATE, KITTI_DRIVE = "2011_09_28", "2011_09_28_drive_0002_sync"


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is absent")
    return REALDATA


@pytest.fixture(scope="module")
def embedded_ray():
    # our own local instance: never attach to another cluster that happens to run on this host
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def prepare(tmp: Path, **options: object) -> PrepareReport:
    """Runs `data prepare` in-process with defaults suited to tests (1 worker, no progress)."""
    cfg = PrepareConfig.model_validate({"out": tmp / "shards", "workers": 1, **options})
    return prepare_shards(cfg, build_source(cfg), progress=False)


def build_kitti_tree(realdata: Path, root: Path, *, nested: bool) -> tuple[Path, Path, Path]:
    """KITTI raw + annotated GT from the real frames, in the BTS (flat) or NeWCRFs (nested) layout.

    Returns (raw root, gt root, split file); the split also has a `None`-GT line for a TRI frame.
    """
    raw, gt = root / "raw", root / "gt"
    lines = []
    for frame in KITTI_FRAMES:
        rgb = raw / KITTI_DATE / KITTI_DRIVE / "image_02" / "data" / f"{frame}.png"
        gt_rel = f"{KITTI_DRIVE}/proj_depth/groundtruth/image_02/{frame}.png"
        depth = (gt / KITTI_DATE / gt_rel) if nested else (gt / gt_rel)
        for src, dst in (
            (KITTI_DEMO / "rgb" / f"{frame}.png", rgb),
            (KITTI_DEMO / "depth" / f"{frame}.png", depth),
        ):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        lines.append(f"{KITTI_DATE}/{KITTI_DRIVE}/image_02/data/{frame}.png {gt_rel} 707.0493")
    tiny_rel = "2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000000.png"
    (raw / tiny_rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(KITTI_TINY / tiny_rel, raw / tiny_rel)
    lines.append(f"{tiny_rel} None 721.5377")
    split = root / "eigen_test_files_with_gt.txt"
    split.write_text("\n".join(lines) + "\n")
    return raw, gt, split


def build_nyu_tree(realdata: Path, root: Path) -> tuple[Path, Path]:
    """The real NYU sync frames under `<root>/sync/basement_0001a` with a BTS train-style split."""
    scene = root / "sync" / "basement_0001a"
    scene.mkdir(parents=True)
    lines = []
    for frame in NYU_FRAMES:
        shutil.copyfile(NYU_DEMO / "rgb" / f"rgb_{frame}.jpg", scene / f"rgb_{frame}.jpg")
        shutil.copyfile(
            NYU_DEMO / "depth" / f"sync_depth_{frame}.png", scene / f"sync_depth_{frame}.png"
        )
        lines.append(
            f"/basement_0001a/rgb_{frame}.jpg /basement_0001a/sync_depth_{frame}.png 518.8579"
        )
    split = root / "nyudepthv2_train_files_with_gt.txt"
    split.write_text("\n".join(lines) + "\n")
    return root / "sync", split
