"""Exact resume: the RNG streams and the fp16 grad scaler come back from `state.pt` as they were
saved, read with `weights_only=True`; older or differently shaped checkpoints still load."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import ray.train.torch
import torch

from depthkd.config.schema import TrainConfig
from depthkd.train.checkpoint import (
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
)
from depthkd.train.strategy import DDPStrategy


def _draws() -> tuple:
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_rng_round_trip_through_state_pt_repeats_the_draws(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    _draws()  # somewhere mid-stream, not at a seed
    save_training_state(tmp_path, {"rng": rng_state()})
    expected = _draws()
    _draws()  # the run goes on, then dies
    set_rng_state(load_training_state(tmp_path)["rng"])
    assert _draws() == expected


class _FakeCuda:
    """Two CUDA devices' generator states, on a CPU-only host."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, states: list[torch.Tensor]) -> None:
        self.states, self.restored = states, {}
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(torch.cuda, "set_rng_state", self._set)

    def _set(self, state: torch.Tensor, device: int) -> None:
        self.restored[device] = state.clone()


def test_cuda_rng_of_every_device_is_saved_and_restored(tmp_path, monkeypatch) -> None:
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    cuda = _FakeCuda(monkeypatch, states)
    save_training_state(tmp_path, {"rng": rng_state()})
    loaded = load_training_state(tmp_path)["rng"]
    assert [s.tolist() for s in loaded["cuda"]] == [s.tolist() for s in states]
    set_rng_state(loaded)
    assert {d: s.tolist() for d, s in cuda.restored.items()} == {
        0: states[0].tolist(),
        1: states[1].tolist(),
    }
    # resumed on a host with one device: that one gets its state, nothing fails
    cuda.states, cuda.restored = states[:1], {}
    set_rng_state(loaded)
    assert list(cuda.restored) == [0] and cuda.restored[0].tolist() == states[0].tolist()


def test_checkpoint_without_cuda_rng_restores_the_rest(tmp_path, monkeypatch) -> None:
    save_training_state(tmp_path, {"rng": rng_state()})  # CPU host: no "cuda" entry
    expected = _draws()
    cuda = _FakeCuda(monkeypatch, [torch.zeros(16, dtype=torch.uint8)])  # resumed on a GPU host
    set_rng_state(load_training_state(tmp_path)["rng"])
    assert cuda.restored == {} and _draws() == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_round_trip_on_a_real_device(tmp_path: Path) -> None:
    torch.cuda.manual_seed_all(4)
    save_training_state(tmp_path, {"rng": rng_state()})
    expected = torch.rand(4, device="cuda").tolist()
    torch.rand(4, device="cuda")
    set_rng_state(load_training_state(tmp_path)["rng"])
    assert torch.rand(4, device="cuda").tolist() == expected


def _strategy(monkeypatch: pytest.MonkeyPatch, amp: str) -> DDPStrategy:
    # outside a Ray Train worker prepare_model has no context; one local worker gets no DDP anyway
    monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model, **_: model)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return DDPStrategy(
        model,
        optimizer,
        scheduler,
        TrainConfig(amp=amp),
        device=torch.device("cpu"),
        find_unused_parameters=False,
    )


def _step(strategy: DDPStrategy, *, overflow: bool) -> None:
    loss = strategy.wrapped(torch.ones(2, 3)).sum()
    strategy.backward(loss * float("inf") if overflow else loss)
    strategy.optimizer_step()


def test_grad_scaler_state_survives_a_resume(tmp_path, monkeypatch) -> None:
    strategy = _strategy(monkeypatch, "fp16")
    _step(strategy, overflow=False)
    _step(strategy, overflow=True)  # an overflow halves the loss scale
    _step(strategy, overflow=False)  # a good step towards the next growth
    saved = strategy.scaler.state_dict()
    assert saved["scale"] == 2.0**15 and saved["_growth_tracker"] == 1
    save_training_state(tmp_path, {"strategy": "ddp", **strategy.save(tmp_path, 3)})

    resumed = _strategy(monkeypatch, "fp16")
    resumed.load(tmp_path, load_training_state(tmp_path))
    assert resumed.scaler.state_dict() == saved
    _step(strategy, overflow=False)
    _step(resumed, overflow=False)
    assert resumed.scaler.state_dict() == strategy.scaler.state_dict()


@pytest.mark.parametrize("written_with", ["no scaler entry", "amp off"])
def test_checkpoints_without_scaler_state_still_load(tmp_path, monkeypatch, written_with) -> None:
    old = _strategy(monkeypatch, "off")
    entries = old.save(tmp_path, 0)
    if written_with == "no scaler entry":  # written before the scaler was saved
        entries.pop("scaler", None)
    save_training_state(tmp_path, {"strategy": "ddp", **entries})
    resumed = _strategy(monkeypatch, "fp16")
    resumed.load(tmp_path, load_training_state(tmp_path))
    assert resumed.scaler.state_dict()["scale"] == 2.0**16  # a fresh scaler
    assert torch.equal(resumed.model.weight, old.model.weight)
