"""The dev cluster's services for tests: outside CI a missing service skips its tests with the
reason; in CI (`CI` set, as `.ci/run` does) it fails them, since `.ci/run` installs them all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from depthkd.devcluster import services
from depthkd.devcluster.services import (  # noqa: F401  (re-exported for the tests)
    Postgres,
    S3Server,
    free_port,
    http_ok,
    spawn,
    stop_group,
    wait_until,
)


def unavailable(reason: str) -> None:
    """Skips the test outside CI; fails it in CI, where every service must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this service: {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def required(manager: contextlib.AbstractContextManager) -> Iterator:
    """`manager`'s service; a missing one skips (fails in CI), one that won't start fails."""
    try:
        with manager as value:
            yield value
    except services.ServiceUnavailable as exc:
        unavailable(f"{exc} ({exc.hint})" if exc.hint else str(exc))
    except services.ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


def s3_server(workdir: Path) -> contextlib.AbstractContextManager[S3Server]:
    return required(services.s3_server(workdir))


@contextlib.contextmanager
def s3_bucket(workdir: Path, name: str) -> Iterator[str]:
    """`s3://name` on a fresh S3 server, with this process's AWS environment pointing at it."""
    with s3_server(workdir) as server, mock.patch.dict(os.environ, server.env):
        yield server.create_bucket(name)


def postgres(workdir: Path) -> contextlib.AbstractContextManager[Postgres]:
    return required(services.postgres(workdir))
