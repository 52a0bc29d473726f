"""What a row of `depthkd bench all` is: its spec, the sizes and context it runs with, what it
measured, and the registry rows add themselves to with `@row` (in `depthkd.bench.rows`; the
suite in `depthkd.bench.suite` runs them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depthkd.config.schema import ExperimentConfig, ModelConfig
from depthkd.registry import Registry


@dataclass(frozen=True)
class Figure:
    label: str
    value: float
    unit: str


@dataclass
class Outcome:
    """What a row's benchmark measured (or why it did not run)."""

    figures: list[Figure] = field(default_factory=list)
    ratio: float | None = None
    protocol: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # ok | skipped | not run | failed
    note: str = ""
    baseline: str | None = None  # replaces the spec's text once the models are known
    candidate: str | None = None


@dataclass(frozen=True)
class Sizes:
    """Counts and sizes of one suite run (`FULL` by default, `QUICK` with --quick)."""

    loader_n: int
    loader_batch_size: int
    loader_batches: int
    loader_rounds: int
    latency_size: tuple[int, int]
    latency_repeats: int
    onnx_size: tuple[int, int]
    onnx_repeats: int
    train_steps: int
    train_warmup: int
    train_batch_size: int
    train_size: tuple[int, int]
    train_rounds: int
    gpu_steps: int
    gpu_warmup: int
    gpu_batch_size: int
    gpu_size: tuple[int, int]
    gpu_rounds: int
    nodes_steps: int
    nodes_rounds: int


FULL = Sizes(
    loader_n=1000,
    loader_batch_size=8,
    loader_batches=40,
    loader_rounds=3,
    latency_size=(352, 704),
    latency_repeats=10,
    onnx_size=(352, 704),
    onnx_repeats=20,
    train_steps=20,
    train_warmup=3,
    train_batch_size=8,
    train_size=(224, 288),
    train_rounds=3,
    gpu_steps=30,
    gpu_warmup=10,
    gpu_batch_size=8,
    gpu_size=(352, 704),
    gpu_rounds=2,
    nodes_steps=60,
    nodes_rounds=2,
)
QUICK = Sizes(
    loader_n=32,
    loader_batch_size=4,
    loader_batches=4,
    loader_rounds=2,
    latency_size=(128, 256),
    latency_repeats=3,
    onnx_size=(128, 256),
    onnx_repeats=5,
    train_steps=2,
    train_warmup=1,
    train_batch_size=2,
    train_size=(64, 96),
    train_rounds=2,
    gpu_steps=5,
    gpu_warmup=3,
    gpu_batch_size=8,
    gpu_size=(352, 704),
    gpu_rounds=1,
    nodes_steps=10,
    nodes_rounds=1,
)


@dataclass
class SuiteContext:
    """Everything the rows share: sizes, folders, the options and the models."""

    sizes: Sizes
    quick: bool
    work: Path  # caches and logs ($DEPTHKD_HOME/bench)
    out: Path
    workers: int
    threads: int
    train_cfg: ExperimentConfig  # the distill step of the `train` and `gpu` rows
    models: ModelConfig  # student and teacher of the `latency`, `onnx` and `gpu` rows
    s3: str | None = None
    asha: bool = False
    asha_json: Path | None = None
    gpu: bool = False
    secrets: set[str] = field(default_factory=set)  # values never to write
    cleanup: list[Callable[[], None]] = field(default_factory=list)  # run once at the end


@dataclass(frozen=True)
class RowSpec:
    name: str
    title: str
    compared: str
    baseline: str
    candidate: str
    unit: str
    ratio_of: str  # what the ratio divides, e.g. "shards / per-file"
    run: Callable[[SuiteContext], Outcome]
    target: str | None = None


ROWS: Registry[RowSpec] = Registry("benchmark row")
ROW_ORDER: list[str] = []


def row(**spec: Any) -> Callable[[Callable[[SuiteContext], Outcome]], Callable]:
    """Registers a row's benchmark under `spec["name"]`; rows run in registration order."""

    def add(run: Callable[[SuiteContext], Outcome]) -> Callable[[SuiteContext], Outcome]:
        ROWS.register(spec["name"])(RowSpec(run=run, **spec))
        ROW_ORDER.append(spec["name"])
        return run

    return add
