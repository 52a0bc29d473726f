"""The registry side of the promotion gate: versions and their tags, the champion alias, and
one MLflow run of kind `promotion` per decision (the append-only record `registry history` reads).

Decisions live in two places: tags on the candidate version (its latest decision, for someone
looking at the version) and a run in the `depthkd-promotions` experiment (every decision in
order, with the comparison table as an artifact).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from depthkd.errors import RegistryError
from depthkd.tracking.runs import ensure_job_experiment
from depthkd.tracking.store import client_for, tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"
PROMOTION_EXPERIMENT = "depthkd-promotions"
KIND_TAG = "depthkd.kind"
TAG_PREFIX = "promotion."  # version tags written by the gate


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as the gate sees it."""

    name: str
    version: int
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def ref(self) -> str:
        """A reference `load_registered_model` accepts."""
        return f"models:/{self.name}/{self.version}"


def find_version(name: str, candidate: str | int, *, home: Path | None = None) -> VersionInfo:
    """The version `candidate` names: a version number or an alias of registered model `name`.

    Raises:
        RegistryError: no such registered model, version or alias (the hint lists the aliases).
    """
    client = client_for(tracking_uri(home))
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(f"no registered model {name!r}") from exc
    text = str(candidate).strip()
    try:
        if text.isdigit():
            mv = client.get_model_version(name, text)
        else:
            mv = client.get_model_version_by_alias(name, text.removeprefix("@"))
    except MlflowException as exc:
        aliases = ", ".join(f"{a} (v{v})" for a, v in sorted(model.aliases.items())) or "none"
        what = f"version {text}" if text.isdigit() else f"alias {text!r}"
        raise RegistryError(
            f"registered model {name!r} has no {what}", hint=f"aliases: {aliases}"
        ) from exc
    return _info(client, name, mv)


def champion(name: str, *, home: Path | None = None) -> VersionInfo | None:
    """The version `name@champion` points at, or None before the first promotion."""
    client = client_for(tracking_uri(home))
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return _info(client, name, mv)


def move_champion(name: str, version: int, *, home: Path | None = None) -> None:
    client_for(tracking_uri(home)).set_registered_model_alias(name, CHAMPION, str(version))


def tag_version(name: str, version: int, tags: dict[str, Any], *, home: Path | None = None) -> None:
    """Sets `promotion.<key>` tags on a version (values as text)."""
    client = client_for(tracking_uri(home))
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), f"{TAG_PREFIX}{key}", str(value))


def log_decision(
    name: str,
    record: dict[str, Any],
    table: str,
    *,
    home: Path | None = None,
) -> str:
    """One finished run of kind `promotion` holding `record` (tags and metrics) and the
    comparison `table` (markdown) plus `record` as JSON artifacts; returns its run id."""
    client = client_for(tracking_uri(home))
    experiment = ensure_job_experiment(PROMOTION_EXPERIMENT, home=home)
    tags = {KIND_TAG: "promotion", "registered_model": name} | {
        k: str(v) for k, v in record.items() if not isinstance(v, dict)
    }
    run = client.create_run(
        experiment, run_name=f"{record['decision']}-v{record['challenger']}", tags=tags
    )
    for side in ("challenger_metrics", "champion_metrics"):
        for metric, value in (record.get(side) or {}).items():
            client.log_metric(run.info.run_id, f"{side.removesuffix('_metrics')}/{metric}", value)
    with tempfile.TemporaryDirectory(prefix="depthkd-promotion-") as tmp:
        (Path(tmp) / "comparison.md").write_text(table + "\n")
        (Path(tmp) / "decision.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        client.log_artifacts(run.info.run_id, tmp)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def decision_history(name: str, *, home: Path | None = None) -> list[dict[str, str]]:
    """Every recorded decision about `name`, oldest first (the tags of its promotion runs)."""
    client = client_for(tracking_uri(home))
    experiment = client.get_experiment_by_name(PROMOTION_EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.registered_model = '{name}' and tags.`{KIND_TAG}` = 'promotion'",
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    return [dict(r.data.tags) | {"run_id": r.info.run_id} for r in runs]


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _info(client: Any, name: str, mv: Any) -> VersionInfo:
    aliases = client.get_registered_model(name).aliases  # {alias: version}
    mine = tuple(sorted(a for a, v in aliases.items() if str(v) == str(mv.version)))
    return VersionInfo(name=name, version=int(mv.version), tags=dict(mv.tags or {}), aliases=mine)
