"""Locations that are a local path or an `s3://bucket/key` URL, read and written the same way.

A cluster's nodes share no disk, so shard sets, Ray checkpoints and the teacher handed to workers
live in object storage there. Endpoint and credentials come only from the standard AWS
environment (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ..., or a profile),
never from configs: nothing here prints or logs them.

Object reads and writes go through boto3 (one client per process: DataLoader workers make their
own). Ray's checkpoint storage gets a `pyarrow.fs.S3FileSystem` with the endpoint set explicitly,
because pyarrow ignores `AWS_ENDPOINT_URL_S3` (apache/arrow #49643).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from depthkd import atomic
from depthkd.errors import DataError

S3_SCHEME = "s3://"

Location = str | Path


def is_remote(location: Location | None) -> bool:
    """Whether `location` is an object-storage URL (not a local path)."""
    return isinstance(location, str) and location.startswith(S3_SCHEME)


def parse_location(value: Any) -> Location:
    """A config value as a location: `s3://bucket/prefix` (checked, no trailing slash) or an
    absolute local path (Ray workers run in another directory)."""
    if isinstance(value, str) and "://" in value:
        if not value.startswith(S3_SCHEME):
            scheme = value.split("://", 1)[0]
            raise ValueError(f"unsupported storage scheme {scheme!r}: use a local path or s3://")
        bucket, _ = split_url(value)
        if not bucket:
            raise ValueError(f"{value!r} names no bucket (expected s3://bucket/prefix)")
        return value.rstrip("/")
    return Path(value).expanduser().resolve()


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://` URL."""
    parts = urlsplit(url)
    return parts.netloc, parts.path.lstrip("/")


def join(location: Location, *names: str) -> Location:
    """`location / name / ...`, keeping the kind of location."""
    if is_remote(location):
        return "/".join([str(location).rstrip("/"), *names])
    return Path(location).joinpath(*names)


def endpoint_url() -> str | None:
    """The S3 endpoint of the AWS environment (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@cache
def _client(pid: int, endpoint: str | None) -> Any:
    import boto3

    del pid  # part of the cache key only: a forked process must not reuse its parent's client
    return boto3.session.Session().client("s3", endpoint_url=endpoint)


def s3_client() -> Any:
    """This process's boto3 S3 client for the endpoint the AWS environment names now."""
    return _client(os.getpid(), endpoint_url())


def _describe(url: str, exc: Exception) -> DataError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
    hint = "check the URL and the AWS environment (AWS_ENDPOINT_URL_S3, credentials)"
    return DataError(f"{url}: {code}", hint=hint)


def open_read(location: Location) -> BinaryIO:
    """A binary stream of a local file or an S3 object (streamed, not read into memory)."""
    if not is_remote(location):
        return Path(location).open("rb")
    bucket, key = split_url(str(location))
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as exc:  # botocore's errors are generated classes
        raise _describe(str(location), exc) from None


def read_bytes(location: Location) -> bytes:
    with open_read(location) as stream:
        return stream.read()


def exists(location: Location) -> bool:
    if not is_remote(location):
        return Path(location).exists()
    bucket, key = split_url(str(location))
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return False
        raise _describe(str(location), exc) from None
    return True


def write_bytes(location: Location, data: bytes) -> None:
    """Writes a whole object or file atomically (an S3 PUT is atomic; files go tmp + rename)."""
    if not is_remote(location):
        atomic.write_bytes(Path(location), data)
        return
    bucket, key = split_url(str(location))
    try:
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
    except Exception as exc:
        raise _describe(str(location), exc) from None


def delete(location: Location) -> None:
    """Removes a file or object; a missing one is not an error."""
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    bucket, key = split_url(str(location))
    try:
        s3_client().delete_object(Bucket=bucket, Key=key)  # S3 answers 204 for a missing key
    except Exception as exc:
        raise _describe(str(location), exc) from None


def upload_file(path: Path, location: Location) -> None:
    """Copies a local file to `location` (multipart for large files; atomic for readers)."""
    if not is_remote(location):
        target = Path(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        return
    bucket, key = split_url(str(location))
    try:
        s3_client().upload_file(str(path), bucket, key)
    except Exception as exc:
        raise _describe(str(location), exc) from None


def download_file(location: Location, path: Path) -> Path:
    """Copies `location` to the local file `path` (tmp + rename) and returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open_read(location) as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    tmp.replace(path)
    return path


def list_keys(url: str) -> Iterator[tuple[str, int]]:
    """(key relative to `url`, size) of every object under the prefix `url`."""
    bucket, prefix = split_url(url)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    try:
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][len(prefix) :], item["Size"]
    except Exception as exc:
        raise _describe(url, exc) from None


def arrow_filesystem(url: str) -> tuple[Any, str]:
    """(pyarrow S3FileSystem, `bucket/prefix`) for Ray's `storage_filesystem`/`storage_path`."""
    from pyarrow import fs

    options: dict[str, Any] = {}
    endpoint = endpoint_url()
    if endpoint:
        parts = urlsplit(endpoint)
        options = {
            "endpoint_override": parts.netloc or parts.path,
            "scheme": parts.scheme or "https",
        }
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    bucket, key = split_url(url)
    return fs.S3FileSystem(**options), f"{bucket}/{key}".rstrip("/")
