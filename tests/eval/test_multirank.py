"""MetricSums.all_reduce over a real 2-process gloo group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from depthkd.eval.metrics import MetricSums, compute_metrics
from tests.ranks import join_group, run_ranks

pytestmark = pytest.mark.multiproc
WORLD = 2


def _rank_main(rank: int, port: int, out: str) -> None:
    join_group(rank, port, WORLD)
    sums = MetricSums()
    if rank == 0:  # two images: abs_rel 0.5 and 0; one skipped
        sums.add(compute_metrics(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 4.0])))
        sums.add(compute_metrics(torch.tensor([3.0]), torch.tensor([3.0])))
        sums.add(None)
    else:  # one image: abs_rel 1.0; two skipped
        sums.add(compute_metrics(torch.tensor([2.0]), torch.tensor([1.0])))
        sums.add(None)
        sums.add(None)
    reduced = sums.all_reduce()
    Path(out, f"rank{rank}.json").write_text(
        json.dumps(
            {"n_images": reduced.n_images, "n_skipped": reduced.n_skipped, **reduced.means()}
        )
    )
    dist.destroy_process_group()


def test_all_reduce_sums_over_two_gloo_ranks(tmp_path):
    run_ranks(_rank_main, str(tmp_path), world=WORLD)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert results[0] == results[1]  # every rank holds the global result
    assert results[0]["n_images"] == 3 and results[0]["n_skipped"] == 3
    assert results[0]["abs_rel"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert results[0]["d1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
