"""What a job keeps in each stage's folder beside the exported models, so that running the job
again under the same name is safe and cheap:

* `inputs.json`: the sha256 of each input model the stage started from. A stage whose input models
  changed since (a longer teacher, another checkpoint or ghost source) would quietly resume from
  the old ones, so that is refused before any worker starts.
* `result.json`: the result of a stage that ran to its last step, with the settings it ran with.
  The same stage with the same settings is taken from there instead of starting Ray Train workers
  only to find the last checkpoint; anything else runs (resumes) as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from depthkd import atomic
from depthkd.config.schema import ExperimentConfig, StageConfig
from depthkd.data.shards import sha256_file
from depthkd.errors import ConfigError
from depthkd.storage import Location
from depthkd.train.launcher import StageResult

INPUTS_FILE = "inputs.json"
RESULT_FILE = "result.json"


def check_same_inputs(folder: Path, job: str, stage: str, inputs: dict[str, Path]) -> None:
    """Records the stage's input models on its first start; refuses other ones later.

    Raises:
        ConfigError: an input model differs from the one the stage started from.
    """
    record = folder / INPUTS_FILE
    now = {role: sha256_file(path) for role, path in sorted(inputs.items())}
    if not record.is_file():
        atomic.write_json(record, now)
        return
    before = json.loads(record.read_text())
    if before != now:
        changed = sorted(r for r in before.keys() | now.keys() if before.get(r) != now.get(r))
        raise ConfigError(
            f"job {job!r}: stage {stage} was started from other input models "
            f"({', '.join(changed)} changed since; recorded in {record}), and resuming it would "
            "keep training from the old ones",
            hint="give the job a new name (name=...) to start it from the new models, or "
            "restore the settings it ran with",
        )


def stage_settings(cfg: ExperimentConfig, section: StageConfig, shards: Location) -> dict[str, Any]:
    """What decides a stage's model besides its input models, as JSON-ready values: its own
    section (`section`, steps included), the model (its teacher's licence aside: a label), the
    data and where it is, the seed."""
    return {
        "stage": section.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json", exclude={"teacher": {"licence"}}),
        "data": cfg.data.model_dump(mode="json"),
        "shards": str(shards),
        "seed": cfg.seed,
    }


def record_finished(
    folder: Path, result: StageResult, *, steps: int, roles: set[str], settings: dict[str, Any]
) -> None:
    """Records `result` when the stage reached its last step (`steps`) and exported every model
    it produces (`roles`); `settings` are what it ran with, as JSON-ready values."""
    if result.metrics.get("step") != steps or set(result.exports) != roles:
        return
    atomic.write_json(
        folder / RESULT_FILE,
        {
            "step": steps,
            "settings": settings,
            "metrics": result.metrics,
            "exports": {role: path.name for role, path in result.exports.items()},
            "checkpoint": result.checkpoint,
        },
    )


def finished_result(
    folder: Path, stage: str, *, steps: int, settings: dict[str, Any]
) -> StageResult | None:
    """The recorded result of `stage` when it ran to exactly `steps` with the same `settings` and
    its exports are still there; None when it must run (never finished, configured otherwise)."""
    path = folder / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    exports = {role: folder / name for role, name in saved["exports"].items()}
    if (
        saved["step"] != steps
        or saved["settings"] != settings
        or not all(p.is_file() for p in exports.values())
    ):
        return None
    return StageResult(stage, saved["metrics"], exports, saved["checkpoint"], seconds=0.0)
