"""Training checkpoints: a directory holding `state.pt` with the stage, the optimizer step,
model / optimizer / scheduler state, RNG state and the validated config. Written atomically and
read with `weights_only=True`. Exported models use `depthkd.models.serialization` instead."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from depthkd import atomic
from depthkd.errors import CheckpointError

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (where CUDA is available) per-device CUDA RNG state, in types
    `weights_only` loading accepts, so a resumed run draws the same numbers on GPU as well (the
    fp16 grad scaler's state is the strategy's, see `strategy.DDPStrategy.save`)."""
    # numpy's stub types this call by its legacy=False overload; the default, legacy=True, gives
    # the MT19937 tuple
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, gauss = numpy_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()  # one ByteTensor per visible device
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores `rng_state()`. CUDA states are restored device by device for the devices this
    process and the checkpoint both have; a checkpoint without them (written on CPU, or before
    they were saved) or from a host with another device count still loads."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for device, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


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
