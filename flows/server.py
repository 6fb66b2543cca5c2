"""A temporary Prefect server for a flow run from the command line, which never outlives the process that started it.

Without PREFECT_API_URL, Prefect starts its own temporary server as a plain child process and stops it at exit:
a flow process ended by SIGKILL (the OOM killer) left that server running, an orphan per run. This one is
`prefect server start` (Prefect's own server, state under PREFECT_HOME) with Linux's parent-death signal set, so
the kernel stops it when the flow's process ends, however it ends; elsewhere it is stopped at exit as Prefect's is."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from rearank_core.supervise import die_with_parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def temporary_server(timeout_s: float | None = None) -> Iterator[str | None]:
    """Yields the API URL of a server started for the block, or None when PREFECT_API_URL names one already."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield None
        return
    timeout_s = timeout_s or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    port, parent = _free_port(), os.getpid()
    home = Path(os.environ.get("PREFECT_HOME", ".prefect"))
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with (home / "server.log").open("ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port), "--no-services"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT,
                                  preexec_fn=lambda: die_with_parent(parent, signal.SIGTERM))
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server exited with {server.returncode}; its log: "
                                   f"{home / 'server.log'}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the temporary Prefect server did not answer within {timeout_s:.0f} s; its log: "
                                   f"{home / 'server.log'}")
            time.sleep(0.5)
        with temporary_settings({PREFECT_API_URL: url}):
            try:
                yield url
            finally:  # the flow's last logs reach the server before it stops (else: "Error logging to API" at exit)
                APILogWorker.drain_all(timeout=10)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
