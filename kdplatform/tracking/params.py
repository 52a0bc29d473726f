"""Nested configs as MLflow params: dotted keys and string values within MLflow's limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value (characters)
MAX_TAG_VALUE = 8000  # MLflow's limit on a tag value (characters)


def flatten_params(params: Mapping[str, Any], *, prefix: str = "") -> dict[str, str]:
    """`{"train": {"lr": 0.1}}` → `{"train.lr": "0.1"}`; values as `str()`, cut to 6000 chars.

    Nested mappings become dotted keys; anything else (lists, None, paths) is a leaf. An empty
    mapping is kept as the leaf `"{}"` so the key still shows up.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_VALUE]
    return flat
