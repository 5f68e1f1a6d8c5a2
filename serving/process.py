"""Starting and stopping the API server: `expansion serve` and the tests' servers.

`serve()` runs `bentoml serve serving.service:ExpansionService` (`SERVICE_TARGET`) in a child
process of its own session, with the settings passed as `EXPANSION_*` environment variables
(`server_env`), and stops it and its workers on SIGINT, SIGTERM or SIGHUP. With authentication
on and no key (or a key under 16 characters) it refuses to start (`serving.auth`).

Each worker runs on one thread (`OMP_NUM_THREADS=1`, set by `server_env`): a request explains a
few rows, and OpenMP costs more than one row takes, and 100x more on a busy machine.

This module does not import the service: BentoML imports `serving.service` in the server
process, by the target string.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from serving.auth import check_auth_config
from serving.settings import Settings, get_settings

SERVICE_TARGET = "serving.service:ExpansionService"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def server_env(settings: Settings, reload: float | None = None) -> dict[str, str]:
    """The environment for `bentoml serve`: these settings as EXPANSION_* variables."""
    env = dict(os.environ)
    for name in Settings.model_fields:
        value = getattr(settings, name)
        key = f"EXPANSION_{name.upper()}"
        if value is None:
            env.pop(key, None)
            if name == "tracking_uri":
                env.pop("MLFLOW_TRACKING_URI", None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[key] = str(value.resolve() if isinstance(value, Path) else value)
    if settings.tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    if reload is not None:
        env["EXPANSION_RELOAD_SECONDS"] = str(reload)
    env.setdefault("OMP_NUM_THREADS", "1")  # see the module docstring: one row, one thread
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env


def start_server(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    reload: float | None = None,
    output: Any = None,
) -> subprocess.Popen:
    """Start `bentoml serve` for this service in a child process (its own process group)."""
    check_auth_config(settings)
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE_TARGET,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(PROJECT_ROOT),
    ]
    return subprocess.Popen(
        command,
        env=server_env(settings, reload),
        cwd=PROJECT_ROOT,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
    )


def wait_until_ready(
    url: str, process: subprocess.Popen | None = None, timeout: float = 90.0
) -> None:
    """Poll `<url>/readyz` until it answers 200; fail early if the server process exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")


def stop_server(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a server started by `start_server` and every process under it.

    SIGTERM to its group, SIGKILL if it lingers. BentoML's workers run in sessions of their
    own, out of reach of the group's signals, and the arbiter stops them on SIGTERM; a worker
    that outlives it (the arbiter killed) would keep the port, so whatever remains of the
    processes found under it is killed too.
    """
    import psutil

    if process.poll() is not None:
        return
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=timeout)


class _Stopped(Exception):
    """SIGTERM, SIGINT or SIGHUP arrived while serving in the foreground."""


def serve(host: str = "127.0.0.1", port: int = 3000, settings: Settings | None = None) -> int:
    """Run the API in the foreground until interrupted; returns the server's exit code.

    SIGINT (Ctrl-C), SIGTERM (`kill`, a service manager) and SIGHUP (the terminal closed) stop
    the server and its workers before returning 0: the server runs in its own session, so
    without this it would outlive us and keep the port.
    Raises `AuthConfigError` before starting when authentication is on and no key is set.
    Bind `host="0.0.0.0"` to accept connections from other machines (e.g. in a container).
    """
    settings = settings or get_settings()

    def stopped(signum: int, frame: Any) -> None:
        raise _Stopped(signal.Signals(signum).name)

    # Installed before the child starts: a signal in between must not orphan it. SIGINT too,
    # though Python raises KeyboardInterrupt for it: a shell starting `expansion serve &` from a
    # script ignores SIGINT for it, and `kill -INT` should stop it all the same.
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stopped) for sig in stops}
    process: subprocess.Popen | None = None
    try:
        process = start_server(settings, host=host, port=port)
        return process.wait()
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        # No second signal may cut the stop short (it ends with SIGKILL within 2 x 15 s).
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            if process is not None:
                stop_server(process)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
