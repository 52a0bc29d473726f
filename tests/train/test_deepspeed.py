"""The DeepSpeed strategy: its config mapping and refusals without Ray; real 2-worker jobs on CPU
(gloo): ZeRO-2 checkpoints every rank's shards and resumes under the same job id; ZeRO-3 with bf16
and accumulation exports the gathered weights.

The first DeepSpeed engine on a machine JIT-compiles a small CPU op with g++/ninja (about a minute
and a half on two cores); later runs load it from the torch extensions cache.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from depthkd.errors import ConfigError
from depthkd.models.serialization import load_model
from depthkd.train.checkpoint import load_training_state
from depthkd.train.jobs import prepare_job, run_job
from depthkd.train.strategy import DEEPSPEED_DIR, check_strategy, deepspeed_config
from tests.train.helpers import tiny_config

DEEPSPEED = {"workers": 2, "cpus_per_worker": 1, "strategy": "deepspeed", "zero_stage": 2}


@pytest.fixture
def fp16_on_cpu(tmp_path: Path):
    return tiny_config(tmp_path, train={**DEEPSPEED, "amp": "fp16"})


@pytest.fixture
def deepspeed_local_mode(tmp_path: Path):
    return tiny_config(tmp_path, train={**DEEPSPEED, "workers": 0})


def _history(ctx, key: str) -> list[int]:
    client = mlflow.MlflowClient(ctx.run.tracking_uri)
    return [m.step for m in client.get_metric_history(ctx.run.run_id, key)]


def test_deepspeed_config_follows_our_settings(tmp_path: Path) -> None:
    train = {**DEEPSPEED, "accumulate": 3, "grad_clip": None, "zero_stage": 3, "amp": "bf16"}
    config = deepspeed_config(tiny_config(tmp_path, train=train))
    assert config["train_micro_batch_size_per_gpu"] == 2  # data.batch_size
    assert config["gradient_accumulation_steps"] == 3
    assert config["gradient_clipping"] == 0.0
    assert config["zero_optimization"] == {"stage": 3}
    assert config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert "bf16" not in config and "fp16" not in config
    assert "torch_autocast" not in deepspeed_config(tiny_config(tmp_path, train=DEEPSPEED))


def test_deepspeed_fp16_needs_a_gpu(fp16_on_cpu) -> None:
    with pytest.raises(ConfigError, match=r"amp=fp16 needs train\.use_gpu"):
        check_strategy(fp16_on_cpu.train)


def test_deepspeed_needs_ray_workers(deepspeed_local_mode) -> None:
    with pytest.raises(ConfigError, match=r"deepspeed needs train\.workers >= 1"):
        check_strategy(deepspeed_local_mode.train)


@pytest.mark.ray
@pytest.mark.slow
def test_deepspeed_zero2_job_checkpoints_and_resumes(embedded_ray, home: Path) -> None:
    cfg = tiny_config(
        home, name="ds", train={**DEEPSPEED, "checkpoint_every": 2}, supervised={"steps": 4}
    )
    ctx = run_job(prepare_job(cfg, "supervised", progress=False), log=lambda *_: None)
    result = ctx.results["supervised"]
    assert result.metrics["step"] == 4
    assert _history(ctx, "supervised/train/loss") == [1, 2, 3, 4]
    # Ray merged both ranks' directories: rank 0's state.pt and model states, each rank's shard
    checkpoint = Path(result.checkpoint)
    state = load_training_state(checkpoint)
    assert (state["strategy"], state["step"], state["deepspeed_tag"]) == ("deepspeed", 4, "step4")
    shards = sorted(p.name for p in (checkpoint / DEEPSPEED_DIR / "step4").glob("*optim_states.pt"))
    assert shards == [f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)]

    # the same job id again, asked for 6 steps: every rank loads its shard and continues at step 4
    longer = cfg.model_copy(update={"supervised": cfg.supervised.model_copy(update={"steps": 6})})
    again = run_job(prepare_job(longer, "supervised", progress=False), log=lambda *_: None)
    assert again.run.run_id == ctx.run.run_id and again.run.resumed
    assert again.results["supervised"].metrics["step"] == 6
    assert _history(again, "supervised/train/loss") == [1, 2, 3, 4, 5, 6]
    # strict load into a freshly built student: every tensor is whole
    student = load_model(again.results["supervised"].exports["student"], expect="student")
    assert all(torch.isfinite(p).all() for p in student.parameters())


@pytest.mark.ray
@pytest.mark.slow
def test_deepspeed_zero3_exports_the_gathered_weights(embedded_ray, home: Path) -> None:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    train = {**DEEPSPEED, "zero_stage": 3, "amp": "bf16", "accumulate": 2, "eval_every": 2}
    cfg = tiny_config(home, name="ds3", train=train, supervised={"steps": 2})
    ctx = run_job(prepare_job(cfg, "supervised", progress=False), log=lambda *_: None)
    result = ctx.results["supervised"]
    assert result.metrics["step"] == 2 and "val/abs_rel" in result.metrics
    # every rank held a partition; the export equals DeepSpeed's own consolidation of the shards
    shards = Path(result.checkpoint) / DEEPSPEED_DIR
    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(shards), tag="step2")
    student = load_model(result.exports["student"], expect="student")
    exported = student.state_dict()
    assert consolidated.keys() <= exported.keys()
    for name, tensor in consolidated.items():
        torch.testing.assert_close(exported[name], tensor.to(exported[name].dtype), msg=name)
