"""A tiny experiment for training tests: synthetic NYU-like 64×96 frames, the smallest models."""

from __future__ import annotations

from pathlib import Path

from depthkd.config.schema import ExperimentConfig


def tiny_config(home: Path, **sections: dict) -> ExperimentConfig:
    """Seconds per stage on one CPU; `sections` update top-level sections (`train={...}`)."""
    base: dict = {
        "name": "tiny",
        "data": {
            "synthetic": {"layout": "nyu", "n": 30, "height": 64, "width": 96},
            "batch_size": 2,
            "eval_batch_size": 4,
            "num_workers": 0,
            "shuffle_buffer": 8,
            "steps_per_epoch": 5,
            "augment": {"rotation_deg": 0, "crop": None},
        },
        "model": {
            "student": {"name": "mobilenetv2_050", "decoder_channels": [8, 8, 16, 16]},
            "teacher": {"name": "swin_micro"},
        },
        "train": {
            "workers": 0,
            "log_every": 1,
            "eval_every": 100,
            "checkpoint_every": 2,
            "storage": str(home / "ray_results"),
        },
        "eval": {"max_batches": 1},
        # a fresh teacher and ghost: no teacher / student stages before acclimation (the
        # DisDepth path, `acclimate_stages`, has its own tests)
        "acclimate": {"steps": 2, "pretrain_teacher": False, "ghost": "fresh"},
        "teacher": {"steps": 2},
        "distill": {"steps": 4},
        "supervised": {"steps": 4},
        "cross_distill": {"steps": 2},
        "tracking": {"experiment": "tests", "system_metrics": False},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return ExperimentConfig.model_validate(base)
