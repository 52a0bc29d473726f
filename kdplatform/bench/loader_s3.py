"""Loader benchmark over S3: the shard loader streaming shards vs the per-file loader reading each
rgb/depth file as its own object, both from the same endpoint.

The frames, decode, augmentation, collation, batch size and worker processes are those of the
local loader benchmark (`depthkd.bench.loader`); only the storage differs. The raw NYU layout
is uploaded one object per file (`<url>/raw/<scene>/rgb_*.jpg`, ...) and the prepared shards with
`upload_shards` (`<url>/shards/`), then both loaders are timed alternately. The per-file split
file stays local, as a BTS-style loader keeps its file list.

Endpoint and credentials come from the AWS environment only (see `depthkd.storage`); the
result names the endpoint (without any user info in its URL), never a credential. DataLoader
workers inherit the environment of this process, so it must point at the endpoint before the
benchmark runs.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from depthkd import storage
from depthkd.bench.loader import (
    LoaderComparison,
    alternating_rates,
    bench_data,
    per_file_loader,
    shard_loader,
)
from depthkd.console import Log
from depthkd.data.shards import upload_shards
from depthkd.errors import DataError

UPLOAD_THREADS = 8  # boto3 clients are thread-safe; many small PUTs are latency-bound
GET_PROBES = 40  # raw objects read one by one to measure the endpoint's GET latency


def describe_endpoint() -> str:
    """The S3 endpoint of the AWS environment as a URL without user info, or AWS's own."""
    endpoint = storage.endpoint_url()
    if not endpoint:
        return "AWS S3 (default endpoint)"
    parts = urlsplit(endpoint)
    host = parts.hostname or parts.path
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else f"{host}{port}"


def upload_tree(root: Path, url: str, *, threads: int = UPLOAD_THREADS) -> tuple[int, int]:
    """Uploads every file under `root` to `url/<relative path>`, one object per file, and checks
    the listing. Returns (objects, bytes)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())

    def put(path: Path) -> None:
        storage.upload_file(path, storage.join(url, *path.relative_to(root).parts))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, files))
    listed = dict(storage.list_keys(url))
    missing = [p for p in files if p.relative_to(root).as_posix() not in listed]
    if missing:
        raise DataError(f"{url}: {len(missing)} uploaded files are not listed (first {missing[0]})")
    return len(files), sum(p.stat().st_size for p in files)


def get_latency_ms(url: str, keys: list[str]) -> float:
    """Median wall time of reading each of `keys` under `url` whole, one after another, from
    this process: the per-object cost a per-file loader pays on top of decoding."""
    times = []
    for key in keys:
        start = time.perf_counter()
        storage.read_bytes(storage.join(url, key))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def delete_prefix(url: str) -> int:
    """Deletes every object under the prefix `url` (the benchmark's upload); returns how many."""
    bucket, prefix = storage.split_url(url)
    keys = [f"{prefix.rstrip('/')}/{key}" for key, _ in storage.list_keys(url)]
    client = storage.s3_client()
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        chunk = [{"Key": key} for key in keys[start : start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
    return len(keys)


@dataclass(kw_only=True)
class S3LoaderBenchResult(LoaderComparison):
    """Figures of one S3 run (samples/s are medians over rounds)."""

    endpoint: str
    url: str
    raw_objects: int
    raw_mb: float
    shard_objects: int
    shards_mb: float
    upload_seconds: float
    get_ms: float  # median GET of one raw object (see get_latency_ms)


def run_s3_loader_benchmark(
    work: Path,
    url: str,
    *,
    n: int = 1000,
    height: int = 480,
    width: int = 640,
    workers: int = 2,
    batch_size: int = 8,
    batches: int = 40,
    rounds: int = 3,
    seed: int = 0,
    progress: bool = True,
    log: Log | None = print,
) -> S3LoaderBenchResult:
    """Uploads the benchmark's frames (cached under `work`) both ways under `url`, then times the
    two loaders alternately, reading from S3 only."""
    data = bench_data(
        work,
        n=n,
        height=height,
        width=width,
        workers=workers,
        seed=seed,
        force=False,
        progress=progress,
    )
    raw_url, shards_url = storage.join(url, "raw"), storage.join(url, "shards")
    started = time.perf_counter()
    raw_objects, raw_bytes = upload_tree(data.raw, str(raw_url))
    shard_objects = upload_shards(data.shards, str(shards_url), progress=progress)
    upload_seconds = time.perf_counter() - started
    shard_bytes = sum(size for _, size in storage.list_keys(str(shards_url)))
    raw_keys = sorted(key for key, _ in storage.list_keys(str(raw_url)))
    get_ms = get_latency_ms(str(raw_url), raw_keys[:: max(1, len(raw_keys) // GET_PROBES)])
    rates = alternating_rates(
        {
            "baseline": lambda r: per_file_loader(
                raw_url, data.split_file, batch_size=batch_size, workers=workers, seed=seed + r
            ),
            "shards": lambda r: shard_loader(
                shards_url,
                batch_size=batch_size,
                workers=workers,
                batches=batches,
                seed=seed,
                epoch=r,
            ),
        },
        rounds=rounds,
        batches=batches,
        batch_size=batch_size,
        log=log,
    )
    return S3LoaderBenchResult(
        endpoint=describe_endpoint(),
        url=url,
        n_samples=data.report.num_samples,
        height=height,
        width=width,
        workers=workers,
        batch_size=batch_size,
        batches=batches,
        rounds=rounds,
        raw_objects=raw_objects,
        raw_mb=raw_bytes / 1e6,
        shard_objects=shard_objects,
        shards_mb=shard_bytes / 1e6,
        upload_seconds=upload_seconds,
        get_ms=get_ms,
        baseline_samples_per_s=statistics.median(rates["baseline"]),
        shards_samples_per_s=statistics.median(rates["shards"]),
        baseline_rounds=rates["baseline"],
        shards_rounds=rates["shards"],
    )
