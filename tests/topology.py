"""infra/compose.yaml's topology without containers, for the tests: a real PostgreSQL from Debian's packages, and the
MLflow server, Prefect server and Prefect worker started by the same infra/bin scripts, every one on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
INFRA_BIN = ROOT / "infra" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], seconds: float, what: str) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = check()
        except requests.ConnectionError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def postgres_bin() -> Path:
    """Debian's server binaries (/usr/lib/postgresql/N/bin), or initdb's folder on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) were not found: run infra/system-deps.sh "
                           "(installs Debian's postgresql package)")
    return Path(initdb).parent


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with password (SCRAM) authentication. As root it runs as the
    ``postgres`` system user, which Debian's package creates (the server refuses to run as root)."""

    user = "rearank"

    def __init__(self, password: str) -> None:
        self.password = password
        self.port = free_port()
        self.bin = postgres_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="rearank-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")

    def _as_owner(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)

    def _run(self, *argv: str) -> str:
        """A pg_ctl or initdb command; the server it starts writes to ``-l`` LOG, never to the captured pipes."""
        done = subprocess.run(self._as_owner(*argv), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        if not self.data.exists():
            pwfile = self.folder / "pwfile"
            pwfile.write_text(self.password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres")
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                      "-A", "scram-sha-256")
            pwfile.unlink()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder}")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "restart",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder}")

    def env(self) -> dict[str, str]:
        """libpq's variables: what infra/bin's scripts and psql read."""
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": self.user, "PGPASSWORD": self.password}

    def psql(self, database: str, *args: str) -> str:
        done = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", database, *args],
                              env={**os.environ, **self.env()}, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout

    def dump(self, database: str) -> str:
        """Everything a database holds, as SQL text."""
        done = subprocess.run([str(self.bin / "pg_dump"), "-d", database], env={**os.environ, **self.env()},
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr}")
        return done.stdout

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Service:
    """A server or worker in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, logs: Path) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def processes(self) -> list[psutil.Process]:
        """The service and everything it started (a worker's flow-run subprocesses included)."""
        if self.process is None or self.process.poll() is not None:
            return []
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def stop(self) -> None:
        """SIGINT, as Ctrl-C would, then SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        for child in self.processes():
            child.kill()

    def kill(self) -> None:
        """SIGKILL the service and every process it started, as when its machine dies."""
        for process in self.processes():
            process.kill()
        if self.process is not None:
            self.process.wait(timeout=30)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
