"""Shard sets as MLflow datasets: the pseudo-label pass as a run, and dataset lineage of training.

A shard set (a pseudo-label set or any prepared one) is logged as an `mlflow.data`
`MetaDataset`: metadata only, nothing is uploaded. Its digest is the manifest fingerprint
(`depthkd.data.shards.manifest_fingerprint`: every shard's sha256, 32 hex digits, within
MLflow's 36-character digest limit), so the same shards give the same digest wherever they are
stored, and its source is the set's location (`file://` or `s3://`). The input tags say what it
is: split names, frame count and, for pseudo-labels, the teacher's sha256 and size.

* `log_pseudo_label_run`: one MLflow run per pass (params, frames, frames/s, teacher
  fingerprint) with the set it wrote as a dataset input of context "pseudo-labels".
* `log_dataset_input`: records a shard set as an input of an existing run (a student's training
  run, context "training"), which links the student to the teacher that labelled its data.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

from depthkd import storage
from depthkd.data.shards import manifest_fingerprint, read_manifest
from depthkd.storage import Location
from depthkd.tracking.runs import ensure_job_experiment
from depthkd.tracking.store import client_for, tracking_uri

PSEUDO_LABEL_EXPERIMENT = "depthkd-pseudo-labels"
CONTEXT_TAG = "mlflow.data.context"  # the tag MLflow's UI shows as the dataset's context
_PARAM_MAX = 6000  # MLflow's param value limit


def shard_set_dataset(location: Location, *, name: str | None = None) -> MetaDataset:
    """The shard set at `location` as an MLflow `MetaDataset` (name, digest, source).

    Raises:
        DataError: `location` holds no shard manifest.
    """
    manifest = read_manifest(location)
    uri = str(location) if storage.is_remote(location) else Path(location).resolve().as_uri()
    default = str(location).rstrip("/").rsplit("/", 1)[-1]
    with warnings.catch_warnings():
        # MLflow 3.17 registers its local artifact source twice and warns that a file:// URI
        # "can be interpreted in multiple ways" (both ways are the same class)
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
        source = resolve_dataset_source(uri)
    # MLflow's MetaDataset leaves Dataset.profile abstract; Dataset is no ABC, so it is made
    return MetaDataset(  # type: ignore[abstract]
        source, name=name or default, digest=manifest_fingerprint(manifest)
    )


def dataset_tags(location: Location) -> dict[str, str]:
    """What the input tags say about the set: splits, frames, and the pseudo-label record."""
    manifest = read_manifest(location)
    tags = {
        "depthkd.splits": ",".join(sorted(manifest["splits"])),
        "depthkd.frames": str(sum(e["num_samples"] for e in manifest["splits"].values())),
    }
    record = manifest.get("pseudo_labels")
    if record:
        tags |= {
            "depthkd.pseudo_labels": "true",
            "depthkd.teacher": str(record["teacher"].get("reference")),
            "depthkd.teacher_sha256": str(record["teacher"].get("sha256")),
            "depthkd.source": str(record["source"].get("location")),
            "depthkd.source_sha256": str(record["source"].get("sha256")),
            "depthkd.size": "x".join(str(v) for v in record["size"]),
        }
    return tags


def log_dataset_input(
    run_id: str,
    location: Location,
    *,
    context: str = "training",
    name: str | None = None,
    uri: str | None = None,
    home: Path | None = None,
) -> str:
    """Logs the shard set at `location` as a dataset input of run `run_id`; returns its digest.

    Args:
        run_id: an existing run (e.g. a student's training run).
        location: shard dir or `s3://` prefix with a manifest.
        context: the input's context tag ("training", "evaluation", "pseudo-labels").
        name: dataset name (default: the location's last path component).
        uri: tracking URI (default: `tracking_uri(home)`).
        home: local state root for the default store.
    """
    dataset = shard_set_dataset(location, name=name)
    tags = [InputTag(CONTEXT_TAG, context)]
    tags += [InputTag(k, v) for k, v in dataset_tags(location).items()]
    fields = dataset.to_dict()
    entity = Dataset(
        name=fields["name"],
        digest=fields["digest"],
        source_type=fields["source_type"],
        source=fields["source"],
        schema=fields.get("schema"),
        profile=fields.get("profile"),
    )
    client = client_for(uri or tracking_uri(home))
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=tags)])
    return dataset.digest


def log_pseudo_label_run(
    location: Location,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    teacher: Mapping[str, Any],
    experiment: str = PSEUDO_LABEL_EXPERIMENT,
    run_name: str | None = None,
    home: Path | None = None,
) -> str:
    """Logs one pseudo-label pass as a finished MLflow run; returns its run id.

    Args:
        location: the pseudo-label set the pass wrote (logged as its dataset input).
        params: pass settings (split, size, batch size, actors, source, ...).
        metrics: figures (frames, frames_per_s, seconds, shards_written, ...).
        teacher: the teacher fingerprint (reference, sha256, registered name and version...),
            logged as `teacher.*` params.
        experiment: MLflow experiment, created if missing.
        run_name: default `pseudo-label-<output folder>`.
        home: local state root for the default store.
    """
    uri = tracking_uri(home)
    client = client_for(uri)
    experiment_id = ensure_job_experiment(experiment, home=home)
    folder = str(location).rstrip("/").rsplit("/", 1)[-1]
    run = client.create_run(
        experiment_id,
        run_name=run_name or f"pseudo-label-{folder}",
        tags={"depthkd.kind": "pseudo-label"},
    )
    run_id = run.info.run_id
    try:
        values = {**params, **{f"teacher.{k}": v for k, v in teacher.items() if v is not None}}
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:_PARAM_MAX]) for k, v in values.items()],
        )
        log_dataset_input(run_id, location, context="pseudo-labels", uri=uri)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id
