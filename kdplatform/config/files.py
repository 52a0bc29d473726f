"""The config files the project ships: `configs/` of the repository, installed as the package data
`depthkd.configs` (so a non-editable install finds them too): the demo's default and the
benchmarks' own."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CONFIG_DIR = Path(str(resources.files("depthkd.configs")))
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"  # the embedded default experiment (`make demo`)
SWEEP_DEMO_CONFIG = CONFIG_DIR / "sweep_demo.yaml"  # the demo sweep (`depthkd sweep`)
BENCH_KD_CONFIG = CONFIG_DIR / "bench_kd.yaml"
BENCH_SWEEP_CONFIG = CONFIG_DIR / "sweep_bench.yaml"
