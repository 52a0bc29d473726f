"""Shared fixtures: the real sample frames in ../shared/realdata, small raw dataset trees, an
isolated `$DEPTHKD_HOME`, an embedded Ray of our own and (plugin) a real `ray start` cluster.

Two session-wide caches keep fresh homes cheap without faking anything in them: an MLflow
database whose schema is created once (`migrated_db`, copied into every `home`) and the bundled
synthetic data sets, built once per config and relocated into the home of each job that asks
for one (`tests/bundled_cache.py`; not under tests/data, whose tests build their own).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow.store.db.utils
import pytest
import ray
import sqlalchemy

from depthkd.config.schema import PrepareConfig
from depthkd.data import bundled
from depthkd.data.shards import PrepareReport, prepare_shards
from depthkd.data.sources import build_source
from depthkd.tracking.store import DB_FILE
from tests.bundled_cache import BundledCache, seeding_build

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


class _SharedRay:
    """The embedded Ray of the modules whose tests ask for `embedded_ray`: started by the first
    such test and kept while the next modules use it too, stopped before a module that does not
    (whose tests find no Ray, as they would alone). `pytest_collection_modifyitems` runs the
    modules of a folder that use it one after another, so that they start it once."""

    running = False  # this fixture's Ray is up

    @classmethod
    def ensure(cls) -> None:
        if cls.running and ray.is_initialized():
            return
        # our own local instance: never attach to another cluster that happens to run on this host
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        cls.running = True

    @classmethod
    def stop(cls) -> None:
        if cls.running:
            ray.shutdown()
            cls.running = False


def _uses_embedded_ray(item: pytest.Item) -> bool:
    return "embedded_ray" in getattr(item, "fixturenames", ())


RAY_MODULES = pytest.StashKey[set[Path]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Within each folder, the modules that use `embedded_ray` run one after another, from the
    place of the first one; every module keeps its own order."""
    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)
    with_ray = [path for path, its in modules.items() if any(map(_uses_embedded_ray, its))]
    config.stash[RAY_MODULES] = set(with_ray)
    ordered: list[pytest.Item] = []
    placed: set[Path] = set()
    for path in modules:
        if path in placed:
            continue  # moved up to the first module of its folder that uses Ray
        group = [path]
        if path in with_ray:
            group += [o for o in with_ray if o != path and o.parent == path.parent]
        for module in group:
            ordered += modules[module]
            placed.add(module)
    items[:] = ordered


@pytest.fixture(scope="module", autouse=True)
def _no_ray_left_from_other_modules(request: pytest.FixtureRequest) -> None:
    """Stops the shared embedded Ray before a module none of whose tests uses it."""
    if request.node.path not in request.config.stash.get(RAY_MODULES, set()):
        _SharedRay.stop()


@pytest.fixture(scope="session", autouse=True)
def _ray_stopped_at_the_end() -> Iterator[None]:
    yield
    _SharedRay.stop()


@pytest.fixture
def embedded_ray() -> None:
    """An embedded Ray of our own (2 CPUs), shared with the tests of the modules around that
    use it too (`_SharedRay`)."""
    _SharedRay.ensure()


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema created once, by MLflow's own initialisation
    (what a store does on first use when the database has no tables: ~1 s of migrations). A
    store opened on a copy adds its default experiment itself, as on a new database."""
    path = tmp_path_factory.mktemp("mlflow-template") / DB_FILE
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        mlflow.store.db.utils._initialize_tables(engine)
    finally:
        engine.dispose()
    return path


def seed_store(home: Path, migrated_db: Path) -> None:
    """Gives `home` (a `$DEPTHKD_HOME`) the migrated database its store would create."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_db, home / DB_FILE)


@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BundledCache]:
    """Bundled sets built once per session; while a test runs with `_bundled_from_cache`, every
    in-process build of a bundled set in a new folder starts from a relocated copy."""
    cache = BundledCache(tmp_path_factory.mktemp("bundled-cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bundled, "_build_bundled", seeding_build(cache, bundled._build_bundled))
        yield cache


@pytest.fixture(autouse=True)
def _bundled_from_cache(bundled_cache: BundledCache) -> Iterator[None]:
    """Cached bundled sets for this test (tests/data/conftest.py turns this off there)."""
    bundled_cache.enabled = True
    yield
    bundled_cache.enabled = False


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_db: Path) -> Path:
    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seed_store(tmp_path, migrated_db)
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
