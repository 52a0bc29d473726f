"""The frames without ground truth a stage mixes into its batches, made ready on the driver.

`distill` mixes in pseudo-labelled frames: `data.pseudo_labels`, or a pass of a depth teacher
over the unlabeled frames (`data.unlabeled`, else the bundled set's unlabeled split, else the
labeled training frames themselves), written once into a folder of the job or sweep and found
complete when it resumes. `cross_distill` mixes in the frames themselves: its teacher branch
labels them online. Jobs and sweeps both come here, so a sweep labels once for all its trials.
"""

from __future__ import annotations

from pathlib import Path

from depthkd.config.schema import ExperimentConfig
from depthkd.console import Log
from depthkd.pseudolabel import label_shards
from depthkd.pseudolabel.source import frame_size, open_source
from depthkd.storage import Location

PSEUDO_LABEL_DIR = "pseudo_labels"  # in a job's (or sweep's) folder: the pass over its frames


def mixes_unlabeled(cfg: ExperimentConfig, stage: str) -> bool:
    """Whether `stage` of `cfg` mixes frames without ground truth into its batches."""
    return stage in ("distill", "cross_distill") and getattr(cfg, stage).unlabeled_ratio > 0


def needs_labelling(cfg: ExperimentConfig, stage: str) -> bool:
    """Whether the frames `stage` mixes in must be pseudo-labelled first (by a depth teacher):
    distill's, unless `data.pseudo_labels` holds them labelled already."""
    return stage == "distill" and cfg.data.pseudo_labels is None


def labels_frames(cfg: ExperimentConfig, stage: str) -> bool:
    """Whether `stage` of `cfg` mixes in frames that a pass must label before it starts."""
    return mixes_unlabeled(cfg, stage) and needs_labelling(cfg, stage)


def unlabeled_source(cfg: ExperimentConfig, shards: Location) -> Location:
    """The RGB shard set holding split `cfg.data.pseudo_split`: `data.unlabeled`, else the
    labeled set `shards` (the bundled set's unlabeled split sits beside its labeled ones)."""
    return cfg.data.unlabeled or shards


def unlabeled_frames(
    cfg: ExperimentConfig,
    stage: str,
    shards: Location,
    *,
    teacher: Path | str | None,
    out_dir: Path,
    log: Log,
) -> Location:
    """The shard set `stage` mixes in, for a stage that mixes frames without ground truth in.

    Args:
        cfg: the experiment (or a sweep's base experiment).
        stage: the stage about to run.
        shards: the labeled shard set.
        teacher: the depth teacher that labels the frames when a pass is needed (a model file,
            `name@alias`, run id...; an acclimated teacher labels with its own head).
        out_dir: the job's (or sweep's) folder; the pass goes to its `PSEUDO_LABEL_DIR`.
        log: one line per event.
    """
    if not needs_labelling(cfg, stage):
        return cfg.data.pseudo_labels or unlabeled_source(cfg, shards)
    if teacher is None:
        raise ValueError("the pseudo-label pass needs a depth teacher")
    # at the labeled frames' size, so both pass through one augmentation
    size, _ = frame_size(open_source(shards, cfg.data.train_split))
    out = out_dir / PSEUDO_LABEL_DIR
    name = Path(str(teacher)).name
    log(f"[pseudo-label] {cfg.data.pseudo_split} frames labelled by {name} at {size}")
    report = label_shards(
        teacher,
        unlabeled_source(cfg, shards),
        cfg.data.pseudo_split,
        out,
        size=size,
        batch_size=cfg.data.eval_batch_size,
        progress=False,
        log=log,
    )
    if report.frames:
        log(
            f"[pseudo-label] {report.frames} frames in {report.seconds:.0f} s "
            f"({report.frames_per_s:.0f} frames/s) → {out}"
        )
    return out
