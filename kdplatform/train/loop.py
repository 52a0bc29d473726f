"""The worker loop every stage runs on Ray Train, in one fixed order:
validate config → models → `prepare_model` or `deepspeed.initialize` → resume from
`get_checkpoint()` → data → steps → `report(metrics, checkpoint)` on every rank.

* AdamW / Adam with the encoder at `backbone_lr_mult`, poly LR with warm-up, gradient clipping,
  bf16 autocast (CPU or GPU) or fp16 with a grad scaler (GPU), gradient accumulation (one optimizer
  step per `accumulate` micro-batches).
* `train.strategy` picks DDP or DeepSpeed ZeRO (`depthkd.train.strategy`); the loop is the same,
  the strategy owns backward, the optimizer step, the training state and the full-weight model.
* Periodic evaluation on the eval split (val) in fp32 through the shared evaluator; per-image
  metrics summed on each rank and all-reduced. Every evaluation goes through `ray.train.report`
  with the monotonic `eval_round`, checkpoint or not, so Tune's schedulers see whole curves.
* A checkpoint every `checkpoint_every` steps and at the end: the strategy's training state (model,
  optimizer, scheduler; DeepSpeed: every rank's ZeRO shards), step and RNG state. A resumed worker
  group continues at exactly the saved step; the training stream is keyed by (seed, epoch) and the
  batches already consumed in that epoch are skipped. It first reports the checkpoint's own
  evaluation again: a sweep driver stopped between that checkpoint and its result reaching Tune
  restores an older view, and a trial resumed at its last step would otherwise end without it.
* Metrics go to the tracking run through a buffer flushed at each checkpoint: after a crash the
  steps since the last checkpoint are logged again, so the history has no duplicates and no gaps.
* Where the work ran: every rank names its node at start, and at the end rank 0 logs each rank's
  node, training samples and evaluation images (`workers/<stage>.json` in the run's artifacts).
* Shards, the input models (teacher, student to copy) and the fault marker may live in `s3://`
  storage (multi-node clusters).
* A stage with `unlabeled_ratio > 0` draws every batch from the labeled shards and the job's
  frames without ground truth together (`mixed_train_loader`): pseudo-labelled ones for
  distill, the frames themselves for cross_distill.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from depthkd import storage
from depthkd.config.schema import ExperimentConfig
from depthkd.console import ProgressReporter
from depthkd.data.loader import eval_loader, mixed_train_loader, train_loader
from depthkd.eval.runner import evaluate_batches
from depthkd.models.serialization import save_model
from depthkd.tracking.logger import RunLogger
from depthkd.tracking.runs import JobRun
from depthkd.train.checkpoint import (
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
)
from depthkd.train.profile import DataProfile
from depthkd.train.schedule import build_optimizer, stage_scheduler
from depthkd.train.stages import STAGES, Stage
from depthkd.train.strategy import Strategy, build_strategy, check_strategy

FAULT_MARKER = ".depthkd-fault-injected"


@dataclass(frozen=True)
class WorkerJob:
    """What the driver resolved for the workers; crosses into Ray as a plain dict."""

    stage: str
    shards: str
    profile: dict
    run: dict | None
    inputs: dict[str, str]  # role → model file of the driver, or an s3:// object (multi-node)
    job_dir: str  # absolute or s3://; holds the fault-injection marker
    progress: str | None = None  # the driver's progress channel (`depthkd.console`)
    unlabeled: str | None = None  # pseudo-label shards mixed into the batches (absolute or s3://)

    def to_dict(self) -> dict:
        return asdict(self)


def train_worker(config: dict[str, Any]) -> None:
    """`train_loop_per_worker` of every stage."""
    cfg = ExperimentConfig.model_validate(config["experiment"])
    check_strategy(cfg.train)
    job = WorkerJob(**config["job"])
    profile = DataProfile(**job.profile)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    reporter = ProgressReporter(job.progress, stage=job.stage)
    reporter.line(
        "node",
        f"[{job.stage}] rank {rank}/{world} on node {_node_id()[:12]} (pid {os.getpid()})",
        rank=rank,
        world=world,
        node_id=_node_id(),
        pid=os.getpid(),
    )
    torch.manual_seed(cfg.seed)
    with _local_files(job.inputs) as inputs:  # the stage holds the loaded models
        stage = STAGES.get(job.stage).build(cfg, profile, inputs)
    model = stage.model.to(device)
    optimizer = build_optimizer(stage)
    strategy = build_strategy(
        cfg,
        model,
        optimizer,
        stage_scheduler(stage, optimizer),
        device=device,
        find_unused_parameters=stage.find_unused_parameters,
    )
    start, replay = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # after wrapping: DeepSpeed restores into its engine
        with checkpoint.as_directory() as directory:
            state = load_training_state(Path(directory))
            strategy.load(Path(directory), state)
        set_rng_state(state["rng"])
        start, replay = state["step"], state.get("report")
    interval = 10.0 if cfg.tracking.system_metrics else None
    logger = (
        RunLogger(JobRun.from_dict(job.run), rank=rank, system_metrics_interval=interval)
        if job.run
        else None
    )
    if logger and start == 0:
        logger.log_params(cfg.model_dump(mode="json"))

    runner = _Runner(cfg, stage, job, profile, strategy, logger, reporter)
    try:
        runner.train(start, replay=replay, rank=rank, world=world, device=device)
    finally:
        if logger:
            logger.close()
        reporter.close()


def _node_id() -> str:
    """The Ray node this process runs on ("local": Ray Train's local mode, no cluster)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


@contextlib.contextmanager
def _local_files(locations: dict[str, str]) -> Iterator[dict[str, Path]]:
    """`locations` as files of this node while the block runs: `s3://` objects are downloaded
    to a temporary dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="depthkd-inputs-") as scratch:
        yield {
            role: storage.download_file(location, Path(scratch) / f"{role}.pt")
            if storage.is_remote(location)
            else Path(location)
            for role, location in locations.items()
        }


def _plain(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` as Python numbers: `weights_only` loading refuses NumPy scalars."""
    return {k: v if isinstance(v, int) else float(v) for k, v in metrics.items()}


class _Runner:
    """The step loop of one worker (state shared by train, evaluate and checkpoint)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        stage: Stage,
        job: WorkerJob,
        profile: DataProfile,
        strategy: Strategy,
        logger: RunLogger | None,
        reporter: ProgressReporter,
    ) -> None:
        self.cfg, self.stage, self.job, self.profile = cfg, stage, job, profile
        self.strategy, self.logger, self.reporter = strategy, logger, reporter
        self.train_cfg = cfg.train
        self.shards = job.shards
        self.frame_size: tuple[int, int] | None = None  # of the eval frames, for the export
        self.train_samples = 0  # this rank's, in this attempt
        self.eval_images = 0  # this rank's share of the last evaluation

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        amp = self.train_cfg.amp
        if amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _micro_batches(self, start_micro: int, device: torch.device) -> Iterator[dict]:
        per_epoch = self.cfg.data.steps_per_epoch
        epoch, skip = divmod(start_micro, per_epoch)
        data = self.cfg.data
        ratio = self.stage.unlabeled_ratio
        unlabeled = self.job.unlabeled
        if ratio > 0 and not unlabeled:
            raise ValueError(f"stage {self.stage.name} mixes in unlabeled frames but got none")
        while True:
            if ratio > 0 and unlabeled:  # (given whenever ratio > 0, as checked above)
                stream = mixed_train_loader(
                    self.shards,
                    data.train_split,
                    data,
                    pseudo_labels=unlabeled,
                    pseudo_split=data.pseudo_split,
                    ratio=ratio,
                    seed=self.cfg.seed,
                    epoch=epoch,
                )
            else:
                stream = train_loader(
                    self.shards, data.train_split, data, seed=self.cfg.seed, epoch=epoch
                )
            for index, batch in enumerate(stream):
                if index >= skip:
                    yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            epoch, skip = epoch + 1, 0

    def train(
        self,
        start: int,
        *,
        replay: dict[str, float] | None,
        rank: int,
        world: int,
        device: torch.device,
    ) -> None:
        """Steps `start`..end; `replay` is the report of the checkpoint resumed from."""
        total, accumulate = self.stage.cfg.steps, self.train_cfg.accumulate
        if replay is not None:
            ray.train.report(replay)
        if rank == 0:
            self.reporter.start(start, total)
        strategy = self.strategy
        batches = self._micro_batches(start * accumulate, device)
        window: dict[str, float] = {}
        window_steps, window_samples, window_start = 0, 0, time.perf_counter()
        if start == 0 and self.stage.eval_before:
            self.evaluate(0, rank=rank, world=world, device=device)
        strategy.wrapped.train()
        for step in range(start, total):
            self._maybe_fail(step + 1, rank)
            self.stage.on_step(strategy.wrapped, step)
            for micro in range(accumulate):
                batch = next(batches)
                with strategy.micro_batch(last=micro == accumulate - 1):
                    with self._autocast(device):
                        terms = self.stage.step(strategy.wrapped, batch, step)
                    strategy.backward(terms["loss"])
                for name, value in terms.items():
                    window[name] = window.get(name, 0.0) + float(value.detach()) / accumulate
                window_samples += batch["image"].shape[0] * world
                self.train_samples += batch["image"].shape[0]
            strategy.optimizer_step()
            window_steps += 1
            done = step + 1
            if done % self.train_cfg.log_every == 0 or done == total:
                elapsed = time.perf_counter() - window_start
                metrics = {f"train/{k}": v / window_steps for k, v in window.items()}
                metrics["train/lr"] = strategy.lr()
                metrics["train/samples_per_s"] = window_samples / elapsed
                metrics["train/step_time_ms"] = 1000 * elapsed / window_steps
                self._log(metrics, done)
                if rank == 0:
                    self.reporter.step(
                        done,
                        total,
                        text=f"[{self.stage.name}] step {done}/{total} "
                        f"loss {metrics['train/loss']:.4f} "
                        f"{metrics['train/samples_per_s']:.1f} samples/s",
                        loss=metrics["train/loss"],
                        samples_per_s=metrics["train/samples_per_s"],
                    )
                window, window_steps, window_samples = {}, 0, 0
                window_start = time.perf_counter()
            elif rank == 0:
                self.reporter.step(done, total)
            evaluate = done % self.train_cfg.eval_every == 0 or done == total
            save = done % self.train_cfg.checkpoint_every == 0 or done == total
            if not (evaluate or save):
                continue
            report: dict[str, float] = {"step": done, "eval_round": self._eval_round(done)}
            if evaluate:
                report |= self.evaluate(done, rank=rank, world=world, device=device)
                strategy.wrapped.train()
            if save:
                self.checkpoint(done, report, rank=rank, final=done == total)
            else:  # every evaluation reaches Ray (and Tune's schedulers), not only checkpoints
                if self.logger and rank == 0:
                    # a trial that a scheduler stops now keeps its whole curve; after a crash the
                    # resumed run skips these steps as replays (see RunLogger)
                    self.logger.flush()
                ray.train.report(report)
        self._log_workers(rank, world)

    def _log_workers(self, rank: int, world: int) -> None:
        """Rank 0 logs where every rank ran and how much it did (a collective: all ranks call)."""
        mine = {
            "rank": rank,
            "node_id": _node_id(),
            "pid": os.getpid(),
            "train_samples": self.train_samples,
            "eval_images": self.eval_images,
        }
        records: list[Any] = [mine]
        if world > 1 and dist.is_available() and dist.is_initialized():
            records = [None] * world
            dist.all_gather_object(records, mine)
        if rank != 0:
            return
        for r in records:
            self.reporter.line(
                "workers",
                f"[{self.stage.name}] rank {r['rank']} on node {r['node_id'][:12]}: "
                f"{r['train_samples']} training samples in this attempt, {r['eval_images']} "
                f"{self.cfg.data.eval_split} images in the last evaluation",
                **r,
            )
        if self.logger:
            self.logger.log_dict({"workers": records}, f"workers/{self.stage.name}.json")

    def _eval_round(self, step: int) -> int:
        """Evaluations done by `step`: a progress counter that a resumed run continues (Tune's
        `training_iteration` restarts after `Tuner.restore`; ASHA counts rungs in this)."""
        every, total = self.train_cfg.eval_every, self.stage.cfg.steps
        return step // every + int(step == total and total % every != 0)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        """One tracking run per job: metric names carry the stage (`distill/train/loss`)."""
        if self.logger:
            self.logger.log_metrics({f"{self.stage.name}/{k}": v for k, v in metrics.items()}, step)

    def _maybe_fail(self, step: int, rank: int) -> None:
        """Test hook: rank 0 dies at `fail_at_step` once per job (a marker file remembers)."""
        if self.train_cfg.fail_at_step != step or rank != 0:
            return
        marker = storage.join(self.job.job_dir, FAULT_MARKER)
        if storage.exists(marker):
            return
        storage.write_bytes(marker, f"killed at step {step}\n".encode())
        self.reporter.line(
            "event", f"[{self.stage.name}] fault injection: rank 0 exits at step {step}", step=step
        )
        self.reporter.close()  # before the exit: the line must reach the driver
        os._exit(1)

    def evaluate(
        self, step: int, *, rank: int, world: int, device: torch.device
    ) -> dict[str, float]:
        """Metrics of the current model on the eval split (val), named `<split>/<metric>`.

        In fp32 whatever the training precision: metrics must not depend on `train.amp`.
        """
        model = self.strategy.full_model()  # on every rank: it may gather ZeRO-3 partitions
        model.eval()
        split, grid = self.cfg.data.eval_split, []
        stream = eval_loader(self.shards, split, self.cfg.data, rank=rank, world_size=world)
        local = evaluate_batches(
            lambda x: self.stage.predict(model, x),
            stream,
            self.profile.protocol,
            tta=self.cfg.eval.tta,
            device=device,
            max_batches=self.cfg.eval.max_batches,
            on_first=lambda batch, pred: grid.append((batch["image"], batch["depth"], pred)),
        )
        self.eval_images = local.n_images + local.n_skipped
        sums = local.all_reduce()
        if grid:  # the size the exported model is documented to work at
            self.frame_size = (int(grid[0][0].shape[-2]), int(grid[0][0].shape[-1]))
        means = {f"{split}/{k}": v for k, v in sums.means().items()}
        self._log(means, step)
        if self.logger and grid:
            self.logger.log_image_grid(step, *grid[0], max_depth=self.profile.max_depth)
        if rank == 0:
            self.reporter.line(
                "eval",
                f"[{self.stage.name}] eval step {step} ({split}, {self.profile.protocol}, "
                f"{sums.n_images} images): abs_rel {means[f'{split}/abs_rel']:.4f} "
                f"rmse {means[f'{split}/rmse']:.4f} d1 {means[f'{split}/d1']:.4f}",
                step=step,
                split=split,
                protocol=self.profile.protocol,
                images=sums.n_images,
                **{k.removeprefix(f"{split}/"): v for k, v in means.items()},
            )
        return means

    def checkpoint(self, step: int, metrics: dict[str, float], *, rank: int, final: bool) -> None:
        directory = Path(tempfile.mkdtemp(prefix=f"depthkd-{self.stage.name}-"))
        entries = self.strategy.save(directory, step)  # every rank: DeepSpeed writes its shards
        model = self.strategy.full_model() if final else None  # every rank: it may gather
        if rank == 0:
            save_training_state(
                directory,
                {
                    "stage": self.stage.name,
                    "strategy": self.strategy.name,
                    "step": step,
                    "rng": rng_state(),
                    "report": _plain(metrics),
                    "config": self.cfg.model_dump(mode="json"),
                    **entries,
                },
            )
            if model is not None:
                meta = {"input_size": list(self.frame_size)} if self.frame_size else {}
                for role, module in self.stage.exports(model).items():
                    save_model(module, directory / f"export_{role}.pt", meta=meta)
            if self.logger:
                self.logger.flush()  # before the report: see RunLogger on crash windows
        checkpoint = None
        if rank == 0 or self.strategy.every_rank_saves:  # Ray merges the ranks' directories
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
        # Ray copied it to storage; in local mode (no workers) the result points at it, so keep it
        if self.train_cfg.workers > 0:
            shutil.rmtree(directory, ignore_errors=True)
