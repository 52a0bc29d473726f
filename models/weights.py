"""Encoder weights from where users keep them, fetched to a file on this node.

`model.student` / `model.teacher` start from random weights unless they name one source:

* `pretrained: true`: timm's default pretrained weights for the encoder's timm model, from the
  Hugging Face repo timm's pretrained config names (`timm/<model>.<tag>`);
* `weights: hf-hub:ORG/NAME[@REVISION]`: timm weights in any Hugging Face model repo;
* `weights: s3://bucket/key`: an object, downloaded once per node into
  `$DEPTHKD_HOME/cache/weights/` (under a lock, tmp + rename: the ranks of a node share it);
* `weights: /path/file.safetensors` (or `.pth`): a local file. On a cluster whose nodes share
  no disk, the driver puts it beside the job's checkpoints (`depthkd.train.launcher`).

Hub files go through huggingface_hub's own cache, so `HF_HOME` and `HF_HUB_OFFLINE=1` (read the
cache only) apply as everywhere else. The driver fetches and checks every source before a worker
starts (`check_encoder_weights`), with a deadline: a machine without network fails in seconds,
with the alternatives named, instead of a worker hanging.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path

import timm

from depthkd import storage
from depthkd.config.schema import HF_HUB_PREFIX, EncoderWeights, depthkd_home
from depthkd.errors import CheckpointError
from depthkd.locking import exclusive_lock

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repos hold, in order
FETCH_DEADLINE_S = 25.0  # a hub or object store that does not answer in this is unreachable


def pretrained_repo(timm_name: str) -> str | None:
    """The Hugging Face repo of timm's default pretrained weights for `timm_name` (with a
    `.tag`: those weights), or None when timm has none."""
    try:
        cfg = timm.models.get_pretrained_cfg(timm_name)
    except RuntimeError:  # a tag the architecture does not have
        return None
    return cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else None


def weights_location(encoder: EncoderWeights, timm_name: str) -> str | None:
    """Where `encoder` says its weights are (`hf-hub:`, `s3://` or a file), None: random init.

    Raises:
        CheckpointError: `pretrained: true` for a timm model without pretrained weights.
    """
    if encoder.weights is not None:
        return encoder.weights
    if not encoder.pretrained:
        return None
    repo = pretrained_repo(timm_name)
    if repo is None:
        raise CheckpointError(
            f"timm {timm.__version__} has no pretrained weights for {timm_name!r}",
            hint="drop pretrained, or set weights to a file, s3:// URL or hf-hub:ORG/NAME",
        )
    return HF_HUB_PREFIX + repo


def is_local_file(location: str | None) -> bool:
    """Whether weights `location` is a file of this machine (not a hub repo or an object)."""
    return location is not None and not (
        location.startswith(HF_HUB_PREFIX) or storage.is_remote(location)
    )


def fetch_weights(location: str) -> Path:
    """The local file holding the weights at `location` (downloaded to this node if needed).

    Raises:
        CheckpointError: the file, object or repo does not exist or cannot be reached; says
            which and what to do instead.
    """
    if location.startswith(HF_HUB_PREFIX):
        return _from_hub(location)
    if not is_local_file(location):
        return _from_object_storage(location)
    path = Path(location)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    return path


def fetch_with_deadline(location: str, deadline_s: float = FETCH_DEADLINE_S) -> Path:
    """`fetch_weights` that gives up when the source does not answer within `deadline_s` (a
    firewall that drops packets makes a client wait far longer). The deadline bounds finding the
    source, a cached copy or the hub's or object store's first answer, not a large download that
    is under way."""
    answered = threading.Event()

    def ask() -> None:
        with contextlib.suppress(Exception):  # fetch_weights below says what is wrong
            _first_answer(location)
        answered.set()

    # a daemon: a source that never answers must not keep the process alive after the error
    threading.Thread(target=ask, name="depthkd-weights", daemon=True).start()
    if not answered.wait(deadline_s):
        raise CheckpointError(
            f"no answer from {location} in {deadline_s:.0f} s", hint=_OFFLINE_HINT
        )
    return fetch_weights(location)


def _first_answer(location: str) -> None:
    """Returns once the source of `location` has answered (or is a cached or local file)."""
    if location.startswith(HF_HUB_PREFIX):
        from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

        repo, _, revision = location.removeprefix(HF_HUB_PREFIX).partition("@")
        if any(
            isinstance(try_to_load_from_cache(repo, name, revision=revision or None), str)
            for name in HUB_FILES
        ):
            return
        get_hf_file_metadata(hf_hub_url(repo, HUB_FILES[0], revision=revision or None))
    elif not is_local_file(location):
        bucket, key = storage.split_url(location)
        storage.s3_client().head_object(Bucket=bucket, Key=key)


_OFFLINE_HINT = (
    "without network, give the weights as a local file (weights: /path/model.safetensors), or "
    "fill the Hugging Face cache beforehand (`hf download ORG/NAME` with the same HF_HOME on "
    "every node) and set HF_HUB_OFFLINE=1"
)


def _from_hub(location: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    repo, _, revision = location.removeprefix(HF_HUB_PREFIX).partition("@")
    failures: list[Exception] = []
    for filename in HUB_FILES:
        try:
            return Path(hf_hub_download(repo, filename, revision=revision or None))
        except (LocalEntryNotFoundError, RemoteEntryNotFoundError) as exc:
            failures.append(exc)  # not cached here / not in the repo: the other file may be
        except Exception as exc:  # no such repo or revision, no access
            raise CheckpointError(
                f"cannot fetch {location} ({type(exc).__name__}: {str(exc)[:300]})",
                hint=_OFFLINE_HINT,
            ) from None
    if any(isinstance(exc, LocalEntryNotFoundError) for exc in failures):
        raise CheckpointError(
            f"cannot fetch {location}: not in the Hugging Face cache, and the hub cannot be "
            f"reached ({str(failures[-1])[:200]})",
            hint=_OFFLINE_HINT,
        )
    raise CheckpointError(
        f"{location} holds neither of {', '.join(HUB_FILES)}",
        hint="name a repo of timm weights, or give a file",
    )


def _from_object_storage(url: str) -> Path:
    """`url` in this node's cache: downloaded once, whatever the number of ranks asking; an object
    replaced at the same URL (another ETag) is downloaded again."""
    bucket, key = storage.split_url(url)
    try:
        etag = storage.s3_client().head_object(Bucket=bucket, Key=key)["ETag"]
    except Exception as exc:
        raise CheckpointError(f"cannot read weights {url}: {exc}") from None
    digest = hashlib.sha256(f"{url} {etag}".encode()).hexdigest()[:16]
    target = depthkd_home() / "cache" / "weights" / digest / Path(url).name
    with exclusive_lock(target.parent / ".lock"):
        if not target.is_file():
            try:
                storage.download_file(url, target)
            except Exception as exc:
                raise CheckpointError(f"cannot download weights {url}: {exc}") from None
    return target
