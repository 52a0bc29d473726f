"""What a sweep prints while it runs: one line per trial event and a short table now and then,
instead of Ray Tune's status walls (Tune runs with `verbose=0`)."""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

TABLE_EVERY_S = 60.0


def _draw(trial: Any, keys: list[str]) -> str:
    values = trial.config
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(values.get(k))}" for k in keys)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class SweepConsole(Callback):
    """Prints trial events and, every `TABLE_EVERY_S`, a table of all trials.

    It prints (no logger attribute): Tune pickles its callbacks with the sweep state.
    """

    def __init__(self, metric: str, keys: list[str]) -> None:
        self.metric, self.keys = metric, keys
        self._last_table = time.monotonic()

    @staticmethod
    def log(line: str) -> None:
        print(line, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log(f"trial {trial.trial_id} started: {_draw(trial, self.keys)}")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if self.metric in result:
            self.log(
                f"trial {trial.trial_id} round {result.get('eval_round')}: "
                f"{self.metric} {result[self.metric]:.4f}"
            )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rounds, shown = self._latest(trial)
        self.log(f"trial {trial.trial_id} ended after {rounds} round(s): {self.metric} {shown}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log(f"trial {trial.trial_id} FAILED (see {trial.local_path})")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_table >= TABLE_EVERY_S:
            self._last_table = time.monotonic()
            self.log(self.table(trials))

    def table(self, trials: list) -> str:
        """Trial id, status, rounds and latest metric of every trial."""
        rows = [f"  {'trial':14} {'status':11} {'rounds':>6} {self.metric:>12}"]
        for trial in trials:
            rounds, shown = self._latest(trial)
            rows.append(f"  {trial.trial_id:14} {trial.status:11} {rounds:>6} {shown:>12}")
        return "\n".join(rows)

    def _latest(self, trial: Any) -> tuple[int, str]:
        """The trial's last evaluation round and metric value as shown ("-" before any)."""
        last = trial.last_result or {}
        value = last.get(self.metric)
        return last.get("eval_round", 0), f"{value:.4f}" if isinstance(value, float) else "-"
