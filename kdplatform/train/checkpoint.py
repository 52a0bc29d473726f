"""Training checkpoints: a directory holding `state.pt` with the stage, the optimizer step,
model / optimizer / scheduler state, RNG state and the validated config. Written atomically and
read with `weights_only=True`. Exported models use `models.serialization` instead."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdplatform import atomic
from kdplatform.errors import CheckpointError

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG state in types `weights_only` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])


def _save(obj: dict[str, Any], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def save_training_state(directory: Path, state: dict[str, Any]) -> Path:
    """Writes `state` (see module docstring) as `directory/state.pt`."""
    path = Path(directory) / STATE_FILE
    _save(state, path)
    return path


def load_training_state(directory: Path) -> dict[str, Any]:
    return _load(Path(directory) / STATE_FILE)
