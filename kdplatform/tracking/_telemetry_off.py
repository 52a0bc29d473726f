"""Turns MLflow's usage telemetry off before MLflow is first imported (this package imports it).

Its background thread sets and unsets an environment variable while other threads read the
environment: a sweep trial died of the resulting `KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'`
inside `requests`. It would also try to reach the internet, which these machines cannot. A user
who sets `MLFLOW_DISABLE_TELEMETRY` keeps their choice. Ray workers and the local MLflow server
inherit the variable from the driver.
"""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
