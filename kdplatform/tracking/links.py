"""Links into the MLflow UI that land on a run itself.

MLflow 3.17's sidebar toggle (GenAI / model training) lives in the browser's local storage and
defaults to GenAI whatever the experiment's kind (upstream issue 24498), so a fresh browser that
opens the UI's front page or an experiment lands on the GenAI overview (traces, token usage). The
run page (`#/experiments/<id>/runs/<run id>`) is the same in both modes.
"""

from __future__ import annotations

from depthkd.tracking.runs import JobRun

UI_PORT = 5000  # `mlflow ui`'s default


def run_page_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The UI page of one run under the server at `base_url`."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def run_page_lines(run: JobRun, *, port: int = UI_PORT) -> list[str]:
    """What a user types or opens to see `run`: its page on the tracking server, or for a local
    store the `mlflow ui` command (bound to 127.0.0.1) and then the page."""
    if run.tracking_uri.startswith(("http://", "https://")):
        return [run_page_url(run.tracking_uri, run.experiment_id, run.run_id)]
    base = f"http://127.0.0.1:{port}"
    return [
        f"mlflow ui --backend-store-uri {run.tracking_uri} --host 127.0.0.1 --port {port}",
        f"then open {run_page_url(base, run.experiment_id, run.run_id)}",
    ]
