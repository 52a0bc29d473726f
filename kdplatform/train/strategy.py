"""How one model trains across ranks: DDP (`ray.train.torch.prepare_model`) or DeepSpeed ZeRO.

The worker loop (`depthkd.train.loop`) is the same for both; a strategy owns what differs:
backward, the optimizer step, gradient sync during accumulation, the training state in a
checkpoint, and the model with full weights that evaluation and exports use.

* `ddp`: gradients scaled by `1/accumulate`, DDP `no_sync` on all but the last micro-batch, clipping
  and the fp16 grad scaler here, the optimizer and scheduler stepped here; the training state
  (model, optimizer, scheduler, grad scaler) goes into rank 0's `state.pt`.
* `deepspeed`: `deepspeed.initialize` wraps our AdamW and poly-LR scheduler. `engine.backward`
  scales by `1/gradient_accumulation_steps` and `engine.step()` follows every backward: DeepSpeed
  counts micro-batches and at each accumulation boundary reduces, clips, steps the optimizer and the
  scheduler. Every rank writes its ZeRO shards with `engine.save_checkpoint`; Ray merges the
  ranks' directories into one checkpoint, and every rank reads it back with
  `engine.load_checkpoint`. Weights stay fp32 (mixed precision is `torch_autocast`); under ZeRO-3,
  whose parameters are partitioned, evaluation and exports use a plain replica holding the
  gathered weights.
"""

from __future__ import annotations

import contextlib
import copy
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import ray.train.torch
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from depthkd.config.schema import ExperimentConfig, TrainConfig
from depthkd.errors import CheckpointError, ConfigError

DEEPSPEED_DIR = "deepspeed"  # the engine's files inside a checkpoint directory
_NEVER = 2**31 - 1  # DeepSpeed's steps_per_print: we log progress ourselves


def check_strategy(train: TrainConfig) -> None:
    """Rejects settings the chosen strategy cannot run, before anything is built."""
    if train.amp == "fp16" and not train.use_gpu:
        raise ConfigError(
            "train.amp=fp16 needs train.use_gpu=true", hint="on CPU use amp=bf16 or amp=off"
        )
    if train.strategy != "deepspeed":
        return
    if train.workers < 1:
        raise ConfigError(
            "train.strategy=deepspeed needs train.workers >= 1 (got 0)",
            hint="DeepSpeed runs in Ray Train worker processes; use strategy=ddp for local mode",
        )


def deepspeed_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The DeepSpeed config dict that matches our settings.

    Mixed precision uses DeepSpeed's `torch_autocast` (fp32 weights, autocast forward, low-precision
    gradient communication, a grad scaler for fp16) rather than its `bf16`/`fp16` sections: those
    cast the module itself to 16 bit, and our models mix in fp32 tensors (normalisation buffers,
    BatchNorm statistics), which then fail with dtype mismatches. It is also what `ddp` does.
    """
    train = cfg.train
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": train.accumulate,
        "gradient_clipping": train.grad_clip or 0.0,
        "zero_optimization": {"stage": train.zero_stage},
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
    }
    if train.amp != "off":
        dtype = "bfloat16" if train.amp == "bf16" else "float16"
        config["torch_autocast"] = {"enabled": True, "dtype": dtype}
    return config


class Strategy(ABC):
    """What differs between distributed back-ends; the loop calls the same methods on each.

    Attributes:
        name: the `train.strategy` value; stored in `state.pt` so a resume cannot mix them.
        model: the bare model (under ZeRO-3 its parameters are partitioned: see `full_model`).
        wrapped: what the stage's `step` runs (DDP module or DeepSpeed engine).
        scheduler: the poly-LR scheduler (stepped by the strategy at each optimizer step).
        every_rank_saves: every rank reports its checkpoint directory (Ray merges them).
    """

    name: str
    model: nn.Module
    wrapped: nn.Module
    scheduler: torch.optim.lr_scheduler.LRScheduler
    every_rank_saves: bool

    def micro_batch(self, *, last: bool) -> contextlib.AbstractContextManager:
        """Context of one micro-batch's forward and backward; `last` ends the accumulation."""
        return contextlib.nullcontext()

    @abstractmethod
    def backward(self, loss: Tensor) -> None:
        """Accumulates the gradients of one micro-batch's (unscaled) loss."""

    @abstractmethod
    def optimizer_step(self) -> None:
        """Ends one optimizer step of `accumulate` micro-batches."""

    def lr(self) -> float:
        """The decoder (last group's) learning rate after the latest step."""
        return float(self.scheduler.get_last_lr()[-1])

    @abstractmethod
    def save(self, directory: Path, step: int) -> dict[str, Any]:
        """Called on every rank: writes the strategy's files into `directory` and returns the
        entries rank 0 adds to `state.pt`."""

    @abstractmethod
    def load(self, directory: Path, state: dict[str, Any]) -> None:
        """Called on every rank: restores what `save` wrote (`state` is `state.pt`)."""

    def full_model(self) -> nn.Module:
        """Called on every rank (it may gather): the bare model with full, fp32 weights, for
        evaluation and exports. Do not train through it."""
        return self.model

    def _check_state(self, directory: Path, state: dict[str, Any]) -> None:
        saved = state.get("strategy", "ddp")
        if saved != self.name:
            raise CheckpointError(
                f"checkpoint {directory} was written by train.strategy={saved}, "
                f"this run uses train.strategy={self.name}",
                hint="resume with the strategy that wrote it, or start a new job id",
            )


class DDPStrategy(Strategy):
    """`prepare_model` (DDP with more than one worker) plus a plain torch optimizer step."""

    name = "ddp"
    every_rank_saves = False

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train: TrainConfig,
        *,
        device: torch.device,
        find_unused_parameters: bool,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.accumulate, self.grad_clip = train.accumulate, train.grad_clip
        self.scaler = torch.amp.GradScaler(device.type, enabled=train.amp == "fp16")
        self.wrapped = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters}
        )

    def micro_batch(self, *, last: bool) -> contextlib.AbstractContextManager:
        if last or not isinstance(self.wrapped, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.wrapped.no_sync()  # gradients stay local until the last micro-batch

    def backward(self, loss: Tensor) -> None:
        self.scaler.scale(loss / self.accumulate).backward()

    def optimizer_step(self) -> None:
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def save(self, directory: Path, step: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),  # fp16: loss scale and growth tracker; else {}
        }

    def load(self, directory: Path, state: dict[str, Any]) -> None:
        self._check_state(directory, state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # absent in checkpoints written before it was saved, {} from a run without fp16: the
        # scaler then starts afresh (GradScaler refuses an empty state)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


class DeepSpeedStrategy(Strategy):
    """A DeepSpeed engine (ZeRO 0–3) around our model, optimizer and scheduler."""

    name = "deepspeed"
    every_rank_saves = True

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        cfg: ExperimentConfig,
        *,
        device: torch.device,
    ) -> None:
        # DeepSpeed picks its accelerator once, on first use, from DS_ACCELERATOR or by probing for
        # CUDA. A CPU worker on a host that has GPUs would get the CUDA accelerator, and the engine
        # would move the model to a GPU and expect NCCL; so name the device of this worker. On CPU
        # the engine then uses the gloo process group Ray Train already set up.
        os.environ["DS_ACCELERATOR"] = device.type
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        accelerator = get_accelerator().device_name()
        if accelerator != device.type:
            raise RuntimeError(
                f"DeepSpeed already chose the {accelerator} accelerator in this process, "
                f"but this worker trains on {device.type}"
            )
        train = cfg.train
        self.accumulate = train.accumulate
        self.scheduler = scheduler
        # ZeRO-3 partitions the module's parameters: evaluation (uneven eval shards per rank)
        # and exports then run a plain copy that receives the gathered weights
        self._replica = copy.deepcopy(model) if train.zero_stage == 3 else None
        engine, _, _, engine_scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg)
        )
        if engine_scheduler is not scheduler:
            raise RuntimeError("DeepSpeed replaced the client LR scheduler")
        self.engine = engine
        self.wrapped = engine
        self.model = engine.module

    def backward(self, loss: Tensor) -> None:
        # DeepSpeed wants step() after every backward: it counts micro-batches and only at the
        # accumulation boundary reduces, clips and steps optimizer and scheduler
        self.engine.backward(loss)  # scales by 1 / gradient_accumulation_steps
        self.engine.step()

    def optimizer_step(self) -> None:
        if self.engine.micro_steps % self.accumulate:
            raise RuntimeError(
                f"DeepSpeed is at micro-batch {self.engine.micro_steps}, not at an accumulation "
                f"boundary of {self.accumulate}"
            )

    def save(self, directory: Path, step: int) -> dict[str, Any]:
        tag = f"step{step}"
        target = directory / DEEPSPEED_DIR
        target.mkdir(parents=True, exist_ok=True)
        self.engine.save_checkpoint(str(target), tag=tag)
        return {"deepspeed_tag": tag}

    def load(self, directory: Path, state: dict[str, Any]) -> None:
        self._check_state(directory, state)
        tag = state["deepspeed_tag"]
        path, _ = self.engine.load_checkpoint(str(directory / DEEPSPEED_DIR), tag=tag)
        if path is None:
            raise CheckpointError(f"no DeepSpeed checkpoint {tag} in {directory / DEEPSPEED_DIR}")

    def full_model(self) -> nn.Module:
        self._broadcast_buffers()
        if self._replica is None:  # ZeRO 0–2: every rank's module holds all (fp32) weights
            return self.model
        import deepspeed

        # ZeRO-3: gather the partitions (collective), copy them into the plain replica
        with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._replica.load_state_dict(state)
        return self._replica

    def _broadcast_buffers(self) -> None:
        """Rank 0's BatchNorm statistics on every rank (DDP syncs them in each forward, DeepSpeed
        does not), so every rank evaluates and exports the same model."""
        if dist.is_initialized() and dist.get_world_size() > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)


def build_strategy(
    cfg: ExperimentConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    device: torch.device,
    find_unused_parameters: bool,
) -> Strategy:
    """Wraps `model` (already on `device`) for `cfg.train.strategy`."""
    if cfg.train.strategy == "deepspeed":
        return DeepSpeedStrategy(model, optimizer, scheduler, cfg, device=device)
    return DDPStrategy(
        model,
        optimizer,
        scheduler,
        cfg.train,
        device=device,
        find_unused_parameters=find_unused_parameters,
    )
