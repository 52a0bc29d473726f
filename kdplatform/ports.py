"""Free loopback ports for the local services a job or sweep starts (embedded Ray's dashboard,
the sweep's MLflow server): two of them on one machine must never collide on a fixed port."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]
