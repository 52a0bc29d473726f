"""The labelling teacher: a reference resolved to one local model file, its fingerprint, and the
depth (and confidence) maps of its output.

A reference is what `depthkd evaluate --model` takes: a model file (local or `s3://`), a
registered model (`name@alias`, `models:/...`) or a run id. The pass needs the *file*, not only
the model: its sha256 identifies the teacher in the output's record (so a rerun with other
weights is refused), and its bytes travel to the Ray actors through the object store, which
reaches every node of a cluster where a driver path would not.

Outputs: a plain teacher or a student returns depth `(B, 1, H, W)`; an acclimated teacher a
`TeacherOutput`, labelled with its own head (`.depth`, not the ghost decoder's); URCDC's
`CrossDistillModel` a `DualOutput`, labelled with its transformer branch (`teacher_depth`) and
that branch's `teacher_confidence`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthkd import storage
from depthkd.errors import CheckpointError
from depthkd.models.serialization import load_model, model_meta


@dataclass(frozen=True)
class TeacherFile:
    """A teacher as one local model file plus what the pass records and needs about it.

    Attributes:
        path: the local model file.
        fingerprint: reference as given, sha256 of the file, kind, max_depth; registered name,
            version and run id where it came from the registry.
        input_size: (height, width) from the file's meta, when it has one.
        max_depth: the depth cap of its head (metres), which sets the depth scale.
    """

    path: Path
    fingerprint: dict[str, Any]
    input_size: tuple[int, int] | None
    max_depth: float


def resolve_teacher(ref: str | Path, scratch: Path) -> TeacherFile:
    """The model file behind `ref` (downloaded into `scratch` when remote or registered), checked
    by loading it once.

    Raises:
        CheckpointError: the file does not rebuild a model.
        RegistryError: `ref` is neither a file nor a known model reference.
    """
    from depthkd.data.shards import sha256_file  # driver only: actors need no webdataset

    text = str(ref)
    registry: dict[str, Any] = {}
    if storage.is_remote(text):
        path = storage.download_file(text, scratch / "teacher.pt")
    elif Path(text).expanduser().exists():
        path = Path(text).expanduser().resolve()
    else:
        from depthkd.tracking.model_registry import download_model_file

        found = download_model_file(text, scratch)
        path = found.path
        registry = {
            "uri": found.uri,
            "registered_name": found.registered_name,
            "version": found.version,
            "run_id": found.run_id,
        }
    model = load_model(path)
    arch = getattr(model, "arch", {}) or {}
    size = model_meta(model).get("input_size")
    fingerprint = {
        "reference": text,
        "sha256": sha256_file(path),
        "kind": arch.get("kind"),
        "max_depth": float(model.max_depth),
        **registry,
    }
    return TeacherFile(
        path=path,
        fingerprint=fingerprint,
        input_size=(int(size[0]), int(size[1])) if size else None,
        max_depth=float(model.max_depth),
    )


def load_teacher(data: bytes) -> nn.Module:
    """The model of a model file's bytes, in eval mode with gradients off (an actor's copy)."""
    with tempfile.TemporaryDirectory(prefix="depthkd-teacher-") as scratch:
        path = Path(scratch) / "teacher.pt"
        path.write_bytes(data)
        model = load_model(path)
    model.requires_grad_(False)
    return model.eval()


def teacher_maps(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(depth, confidence or None) of a model output, each `(B, 1, H, W)`."""
    if isinstance(output, torch.Tensor):
        return output, None
    if hasattr(output, "teacher_depth"):  # URCDC's CrossDistillModel: the transformer branch
        return output.teacher_depth, getattr(output, "teacher_confidence", None)
    if hasattr(output, "depth"):  # an acclimated teacher: its own head, not the ghost's
        return output.depth, getattr(output, "confidence", None)
    raise CheckpointError(
        f"the teacher returns a {type(output).__name__}, which holds no depth map",
        hint="label with a depthkd teacher, acclimated teacher or student model file",
    )
