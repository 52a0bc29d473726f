"""The models a user names: a file exported by training (local or `s3://`), a registered model
(`name@alias`, `name/version`) or a run id, loaded the same way wherever one is accepted."""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from pathlib import Path

from torch import nn

from depthkd import storage
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model
from depthkd.tracking import model_registry


def load_model_reference(
    ref: str, *, expect: ModelKind | Collection[ModelKind] | None = None
) -> nn.Module:
    """A model from a file exported by training (local or `s3://`), a registered model or a run
    id; of the kind (or kinds) `expect` names, exactly (`load_model`)."""
    if storage.is_remote(ref):
        with tempfile.TemporaryDirectory(prefix="depthkd-model-") as scratch:
            path = storage.download_file(ref, Path(scratch) / "model.pt")
            return load_model(path, expect=expect)
    path = Path(ref).expanduser()
    if path.exists():
        return load_model(path, expect=expect)
    return model_registry.load_registered_model(
        model_registry.resolve_model_reference(ref), expect=expect
    )
