"""What a benchmark result was measured on: CPU, cores, memory, OS, Python, library versions, GPU.

Read from `/proc` where it is there (Linux), else from the standard library; a figure that cannot
be read is "unknown", never a guess.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "ray", "mlflow", "webdataset", "onnxruntime", "boto3", "numpy")
UNKNOWN = "unknown"


def hostname() -> str:
    """This host's name, safe in a file name (`[A-Za-z0-9._-]`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-") or "host"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or UNKNOWN


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 2**30
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _gpu() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"name": "none", "count": 0, "cuda": None}
    return {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
    }


def machine_info() -> dict[str, Any]:
    """The machine and software a result belongs to, as plain JSON values."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = _memory_gib()
    return {
        "hostname": hostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(memory, 1) if memory is not None else UNKNOWN,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in LIBRARIES},
        "gpu": _gpu(),
    }
