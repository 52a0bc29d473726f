"""A finished stage's result, kept beside its exported models: a job run again under the same name
takes it from there instead of starting Ray Train workers only to find the last checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from depthkd import atomic
from depthkd.train.launcher import StageResult

RESULT_FILE = "result.json"


def record_finished(out_dir: Path, result: StageResult, steps: int) -> None:
    """Records `result` of a stage that ran to `steps` (its exports lie in `out_dir`)."""
    atomic.write_json(
        out_dir / RESULT_FILE,
        {
            "steps": steps,
            "metrics": result.metrics,
            "exports": {role: path.name for role, path in result.exports.items()},
            "checkpoint": result.checkpoint,
        },
    )


def finished_result(out_dir: Path, stage: str, steps: int) -> StageResult | None:
    """The recorded result of `stage` when it ran to exactly `steps` and its exports are still
    there; None when it must run (never started, stopped early, or now configured longer)."""
    path = out_dir / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    exports = {role: out_dir / name for role, name in saved["exports"].items()}
    if saved["steps"] != steps or not all(p.is_file() for p in exports.values()):
        return None
    return StageResult(stage, saved["metrics"], exports, saved["checkpoint"], seconds=0.0)
