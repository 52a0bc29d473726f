"""Labeled + pseudo-labelled batches: the configured mix in every batch, on two real ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from depthkd.config.schema import AugmentConfig, DataConfig, TeacherConfig
from depthkd.data.loader import mix_batches, mixed_train_loader, unlabeled_batch_size
from depthkd.data.sources.synthetic import write_synthetic
from depthkd.errors import DataError
from depthkd.models.serialization import save_model
from depthkd.models.zoo import build_teacher
from depthkd.pseudolabel import label_shards
from tests.conftest import prepare
from tests.ranks import join_group, run_ranks

WORLD, BATCH, RATIO, STEPS = 2, 4, 0.5, 6


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory) -> tuple[Path, Path]:
    """Labeled train shards, and pseudo-labels of an unlabeled split by a tiny teacher."""
    tmp = tmp_path_factory.mktemp("mixed")
    synth = write_synthetic(
        "nyu", tmp / "raw", 12, seed=3, height=32, width=48, test_fraction=0.0,
        val_fraction=0.0, unlabeled_n=10, progress=False,
    )  # fmt: skip
    for split, listed in (("train", synth.train_split), ("unlabeled", synth.unlabeled_split)):
        prepare(tmp, dataset="nyu", root=synth.root, split_file=listed, split=split, shard_size=3)
    torch.manual_seed(0)
    teacher = save_model(
        build_teacher(TeacherConfig(name="swin_micro"), max_depth=10.0), tmp / "teacher.pt"
    )
    label_shards(teacher, tmp / "shards", "unlabeled", tmp / "pseudo", batch_size=4, progress=False)
    return tmp / "shards", tmp / "pseudo"


def _rank_main(rank: int, port: int, shards: str, pseudo: str, out: str) -> None:
    join_group(rank, port, WORLD)
    cfg = DataConfig(
        batch_size=BATCH,
        num_workers=1,
        steps_per_epoch=STEPS,
        shuffle_buffer=4,
        augment=AugmentConfig(crop=(24, 40), rotation_deg=2.0),
    )
    rows = []
    for batch in mixed_train_loader(
        Path(shards), "train", cfg, pseudo_labels=Path(pseudo), pseudo_split="unlabeled",
        ratio=RATIO, seed=0,
    ):  # fmt: skip
        dist.all_reduce(torch.ones(1))  # like DDP's gradient all-reduce: hangs if counts differ
        pseudo_rows = (batch["pseudo"] > 0).flatten(1).any(1)
        confidence = batch["confidence"]
        rows.append(
            {
                "keys": batch["key"],
                "labeled": batch["has_gt"].tolist(),
                "pseudo": pseudo_rows.tolist(),
                "valid": batch["valid"].flatten(1).any(1).tolist(),
                "shape": list(batch["image"].shape),
                "confidence_ok": bool(((confidence >= 0) & (confidence <= 1)).all()),
            }
        )  # fmt: skip
    Path(out, f"rank{rank}.json").write_text(json.dumps(rows))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.multiproc
def test_every_batch_holds_the_configured_mix_on_two_ranks(mixed_data, tmp_path):
    shards, pseudo = mixed_data
    run_ranks(_rank_main, str(shards), str(pseudo), str(tmp_path), world=WORLD)
    unlabeled = unlabeled_batch_size(BATCH, RATIO)
    assert unlabeled == 2
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for rows in per_rank:
        assert len(rows) == STEPS  # equal counts on both ranks: DDP cannot hang
        for row in rows:
            assert row["shape"] == [BATCH + unlabeled, 3, 24, 40]
            # labeled rows first, with ground truth and no pseudo-label; then pseudo-labelled rows
            assert row["labeled"] == [True] * BATCH + [False] * unlabeled
            assert row["pseudo"] == [False] * BATCH + [True] * unlabeled
            assert row["valid"][BATCH:] == [False] * unlabeled
            assert row["confidence_ok"]
        labeled = sum(r["labeled"].count(True) for r in rows)
        assert labeled * RATIO == sum(r["pseudo"].count(True) for r in rows)  # over the epoch
    keys = [(k, i < BATCH) for rows in per_rank for r in rows for i, k in enumerate(r["keys"])]
    assert not {k for k, lab in keys if lab} & {k for k, lab in keys if not lab}
    assert per_rank[0] != per_rank[1]  # each rank draws its own frames


def test_frames_of_another_size_are_refused_with_a_hint():
    labeled = {
        "image": torch.zeros(2, 3, 8, 8),
        "depth": torch.zeros(2, 1, 8, 8),
        "key": ["a", "b"],
    }
    unlabeled = {"image": torch.zeros(1, 3, 8, 10), "depth": torch.zeros(1, 1, 8, 10), "key": ["c"]}
    with pytest.raises(DataError, match=r"differ in size") as caught:
        mix_batches(labeled, unlabeled)
    assert "--size" in caught.value.hint
