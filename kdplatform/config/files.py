"""The config files the project ships in `configs/` (beside the packages, and in every
`ray job submit --working-dir .` upload): the demo's default and the benchmarks' own."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"  # the embedded default experiment (`make demo`)
SWEEP_DEMO_CONFIG = CONFIG_DIR / "sweep_demo.yaml"  # the demo sweep (`depthkd sweep`)
BENCH_KD_CONFIG = CONFIG_DIR / "bench_kd.yaml"
BENCH_SWEEP_CONFIG = CONFIG_DIR / "sweep_bench.yaml"
