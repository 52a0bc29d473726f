"""The error hierarchy of depthkd.

Every error a user can cause (bad config, bad data, bad checkpoint, unknown registry name) is a
`DepthKDError`; the CLI prints its message plus an optional hint and exits non-zero. Messages name
the file, line, key and value that are wrong, so the user can fix them without reading our code.
"""

from __future__ import annotations


class DepthKDError(Exception):
    """Base class of every error depthkd reports to a user.

    Args:
        message: what is wrong and where.
        hint: optional advice on how to fix it, printed on its own line by the CLI.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(DepthKDError):
    """A config file, key, value or command-line override is invalid."""


class DataError(DepthKDError):
    """Input data (split files, images, depth maps, shards, manifests) is missing or invalid."""


class CheckpointError(DepthKDError):
    """A checkpoint or weights file cannot be read or does not match the model."""


class RegistryError(DepthKDError):
    """A name was looked up in a registry that does not hold it."""
