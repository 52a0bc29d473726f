"""Real multi-process ranks for tests: a gloo group of WORLD processes on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp

from depthkd.ports import free_port


def join_group(rank: int, port: int, world: int) -> None:
    """Joins this process to the gloo group of `world` ranks rendezvousing on `port`."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )


def run_ranks(main: Callable[..., None], *args: object, world: int = 2) -> None:
    """Runs `main(rank, port, *args)` in `world` spawned processes and waits for all of them."""
    mp.start_processes(
        main, args=(free_port(), *args), nprocs=world, join=True, start_method="spawn"
    )
