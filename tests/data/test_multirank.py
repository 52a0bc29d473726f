"""World size 2 in real processes: equal training batch counts, exactly-once evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from depthkd.config.schema import AugmentConfig, DataConfig
from depthkd.data.loader import eval_loader, train_loader
from depthkd.data.sources.synthetic import write_synthetic
from tests.conftest import prepare
from tests.ranks import join_group, run_ranks

pytestmark = pytest.mark.multiproc
WORLD = 2


def _rank_main(rank: int, port: int, shards: str, out: str) -> None:
    join_group(rank, port, WORLD)
    cfg = DataConfig(
        batch_size=2,
        num_workers=2,
        steps_per_epoch=5,
        shuffle_buffer=4,
        eval_batch_size=2,
        augment=AugmentConfig(crop=(32, 48)),
    )
    train_keys = []
    for batch in train_loader(Path(shards), "train", cfg, seed=0):
        step = torch.ones(1)
        dist.all_reduce(step)  # like DDP's gradient all-reduce: hangs if counts differ
        train_keys.append(batch["key"])
    eval_keys = [k for b in eval_loader(Path(shards), "test", cfg) for k in b["key"]]
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"train_keys": train_keys, "eval_keys": eval_keys})
    )
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_equal_train_batches_and_exactly_once_eval(tmp_path):
    synth = write_synthetic(
        "nyu", tmp_path / "raw", 16, seed=2, height=40, width=56, test_fraction=0.45, progress=False
    )
    prepare(
        tmp_path,
        dataset="nyu",
        root=synth.root,
        split_file=synth.train_split,
        split="train",
        shard_size=3,
    )
    prepare(
        tmp_path,
        dataset="nyu",
        root=synth.root,
        split_file=synth.test_split,
        split="test",
        shard_size=3,
    )  # 7 test samples: shards of 3, 3, 1 → ranks get 4 and 3
    run_ranks(_rank_main, str(tmp_path / "shards"), str(tmp_path), world=WORLD)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [len(r["train_keys"]) for r in results] == [5, 5]
    assert results[0]["train_keys"] != results[1]["train_keys"]  # ranks draw their own shards
    keys = [k for r in results for k in r["eval_keys"]]
    assert sorted(len(r["eval_keys"]) for r in results) == [3, 4]
    assert len(keys) == len(set(keys)) == synth.n_test == 7
