"""RGB-only shard sets, tiny teacher files and one labelled set shared by the pseudo-label tests
(labelled once per session on an embedded Ray of 2 CPUs, shut down right after)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray
import webdataset as wds

from depthkd import atomic
from depthkd.config.schema import TeacherConfig
from depthkd.data import images
from depthkd.data.shards import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file
from depthkd.models.serialization import save_model
from depthkd.models.zoo import build_teacher
from depthkd.pseudolabel import PseudoLabelReport, label_shards

MAX_DEPTH = 10.0
SPLIT = "unlabeled"


def write_rgb_shards(
    root: Path,
    *,
    shards: int = 3,
    per_shard: int = 3,
    sizes: list[tuple[int, int]] | None = None,
    seed: int = 0,
    split: str = SPLIT,
) -> Path:
    """A shard set of RGB-only frames (has_gt false, no depth.png), as `data prepare` writes for
    an unlabeled source: keys hold '/' and a dotted folder; `sizes` cycles over the frames."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [(24, 32)]
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    frame = 0
    for s in range(shards):
        name = f"{split}-{s:06d}.tar"
        with wds.TarWriter(str(root / name), encoder=False, mtime=0.0) as tar:
            for _ in range(per_shard):
                height, width = sizes[frame % len(sizes)]
                rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                meta = {
                    "dataset": "synthetic-nyu",
                    "depth_scale": None,
                    "invalid_value": 0,
                    "focal": 100.0,
                    "height": height,
                    "width": width,
                    "has_gt": False,
                    "source": {"where": f"frame {frame}"},
                }
                tar.write(
                    {
                        "__key__": f"clips/take.{s}/frame_{frame:04d}",
                        "rgb.png": images.encode_rgb_png(rgb),
                        "meta.json": json.dumps(meta).encode(),
                    }
                )
                frame += 1
        entries.append(
            {
                "name": name,
                "samples": per_shard,
                "bytes": (root / name).stat().st_size,
                "sha256": sha256_file(root / name),
            }
        )
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "splits": {
            split: {
                "source": {"dataset": "synthetic-nyu"},
                "num_samples": shards * per_shard,
                "num_without_gt": shards * per_shard,
                "shards": entries,
            }
        },
    }
    atomic.write_json(root / MANIFEST, manifest)
    return root


def save_teacher(path: Path, *, seed: int = 0, meta: dict | None = None) -> Path:
    """A swin_micro teacher file with seeded random weights."""
    import torch

    torch.manual_seed(seed)
    model = build_teacher(TeacherConfig(name="swin_micro"), max_depth=MAX_DEPTH)
    return save_model(model, path, meta=meta)


@dataclass(frozen=True)
class Labelled:
    source: Path
    teacher: Path
    out: Path
    report: PseudoLabelReport


LABEL_SIZE = (32, 48)


@pytest.fixture(scope="session")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Labelled:
    """3 shards x 3 frames of two sizes (24x32, 30x40), labelled at 32x48 with batch 4."""
    root = tmp_path_factory.mktemp("labelled")
    source = write_rgb_shards(root / "source", sizes=[(24, 32), (30, 40)])
    teacher = save_teacher(root / "teacher.pt")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = label_shards(
            teacher, source, SPLIT, root / "out", size=LABEL_SIZE, batch_size=4, progress=False
        )
    finally:
        ray.shutdown()
    return Labelled(source, teacher, root / "out", report)
