"""What a stage needs to know about its dataset: depth range, supervised-loss threshold and the
evaluation protocol, read from the shard manifest (the train loop itself knows nothing of KITTI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from depthkd.config.schema import ExperimentConfig
from depthkd.data.constants import KITTI_MAX_DEPTH, NYU_MAX_DEPTH
from depthkd.data.shards import split_entry
from depthkd.errors import ConfigError
from depthkd.storage import Location

# dataset family → (depth cap, SILog GT threshold as BTS/URCDC, default protocol)
_FAMILIES = {
    "kitti": (KITTI_MAX_DEPTH, 1.0, "kitti-garg-kbcrop"),
    "nyu": (NYU_MAX_DEPTH, 0.1, "nyu-eigen"),
}
_FAMILY_OF_SOURCE = {"kitti": "kitti", "nyu": "nyu", "nyu-mat": "nyu"}


@dataclass(frozen=True)
class DataProfile:
    family: str  # kitti | nyu | custom
    max_depth: float
    loss_min_depth: float  # default GT threshold of supervised losses (stage config may override)
    protocol: str

    def to_dict(self) -> dict:
        return asdict(self)


def data_profile(cfg: ExperimentConfig, shards: Location) -> DataProfile:
    """Depth range, loss threshold and protocol for `cfg`: explicit settings win, then the family
    of the dataset the train split was prepared from."""
    source = split_entry(shards, cfg.data.train_split).get("source", {}).get("dataset", "")
    family = _FAMILY_OF_SOURCE.get(source, "custom")
    if family == "custom":
        max_depth, protocol = cfg.model.max_depth, cfg.eval.protocol
        if max_depth is None or protocol is None:
            missing = [
                key
                for key, value in (("model.max_depth", max_depth), ("eval.protocol", protocol))
                if value is None
            ]
            raise ConfigError(
                f"shards in {shards} come from a {source!r} source with no known depth range: "
                f"set {' and '.join(missing)}"
            )
        return DataProfile(family, max_depth, 0.1, protocol)
    return family_profile(cfg, family)


def family_profile(cfg: ExperimentConfig, family: str) -> DataProfile:
    """The profile of a known dataset family ("kitti", "nyu"), explicit settings winning."""
    cap, threshold, protocol = _FAMILIES[family]
    return DataProfile(
        family=family,
        max_depth=cfg.model.max_depth or cap,
        loss_min_depth=threshold,
        protocol=cfg.eval.protocol or protocol,
    )
