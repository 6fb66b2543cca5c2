"""A stage run as a child process whose death by a signal is reported, not left to a bare exit code.

The kernel's OOM killer ends a process with SIGKILL: no Python handler runs, so the process itself cannot say
what happened. Its parent can: the CLI (what `dvc repro` runs) and the Prefect pipeline run each stage in a
child, sample the child's process tree for its peak resident size, and turn a signal into one line naming the
stage, the signal and that peak. The stage's finished work survives, as every stage writes atomically and
resumes, and the next run starts again at that stage."""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from rearank_core.memory import GIB, PeakSampler

SUPERVISED = "REARANK_SUPERVISED"  # set in the child: it runs the stage itself
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """In a child: have Linux send it ``sig`` when its parent ends, however the parent ends (SIGKILL included); if
    the parent ``parent`` has already ended, exit now. Elsewhere only the second check holds."""
    name = ctypes.util.find_library("c")
    if name and sys.platform.startswith("linux"):
        ctypes.CDLL(name).prctl(PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:
        os._exit(1)


def killed_message(stage: str, returncode: int, peak_bytes: int) -> str | None:
    """The report for a child that ended with ``returncode`` (negative: the signal that ended it), or None when
    it exited by itself."""
    if returncode >= 0:
        return None
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    cause = " (out of memory?)" if number == signal.SIGKILL else ""
    return (f"stage '{stage}' killed by signal {number} ({name}){cause}; peak memory seen {peak_bytes / GIB:.2f} GiB "
            "resident (its process tree); finished stages are kept and a rerun resumes at this one")


def supervise(command: list[str], stage: str) -> int:
    """Run ``command`` as a child (with SUPERVISED set) and return its exit status, 128 + N for signal N after
    printing ``killed_message`` to stderr. SIGTERM (what `dvc repro`, Prefect and service managers send) is passed
    on to the child; SIGINT is not, as Ctrl-C already reaches the child with the rest of its process group, and a
    second one would cut its clean stop short. The child ends with the parent: `kill -9` of the command a user
    started ends the work, as it did before the command had a child."""
    parent = os.getpid()
    child = subprocess.Popen(command, env={**os.environ, SUPERVISED: "1"}, preexec_fn=lambda: die_with_parent(parent))
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda number, _frame: child.send_signal(number))}
    try:
        with PeakSampler(child.pid) as sampler:
            returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    message = killed_message(stage, returncode, sampler.peak)
    if message is None:
        return returncode
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 128 - returncode


@dataclass(frozen=True)
class ChildRun:
    """What a stage's child returned, with the peak resident size of its process tree and its wall time."""

    value: Any
    peak_bytes: int
    seconds: float


class StageKilled(RuntimeError):
    """A stage's child process ended by a signal (``killed_message`` says which, and the peak memory seen)."""


def _child(target: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str], parent: int,
           conn: Connection) -> None:
    die_with_parent(parent)
    os.environ.update(env)
    try:
        result = target(*args)
    except BaseException as exc:
        traceback.print_exc()
        try:
            conn.send(("error", pickle.dumps(exc)))
        except Exception:  # an exception that does not pickle travels as its text
            conn.send(("error", pickle.dumps(RuntimeError("".join(traceback.format_exception(exc))))))
        raise SystemExit(1) from None
    conn.send(("ok", result))


def run_in_child(target: Callable[..., Any], *args: Any, stage: str, env: dict[str, str] | None = None) -> ChildRun:
    """``target(*args)`` in a fresh Python process (spawned: nothing of this process's threads or memory is
    inherited); returns its result (with its peak memory and wall time) or raises its exception here. A child ended
    by a signal raises ``StageKilled`` with ``killed_message``. ``target`` must be importable by name (a
    module-level function); ``env`` is set in the child before it runs."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(target, args, {**(env or {}), SUPERVISED: "1"}, os.getpid(), send),
                            name=f"stage-{stage}")
    started = time.perf_counter()
    child.start()
    send.close()
    with PeakSampler(child.pid) as sampler:
        try:
            kind, payload = receive.recv()
        except EOFError:  # the child died before it could answer
            kind, payload = "died", None
        child.join()
    message = killed_message(stage, child.exitcode or 0, sampler.peak)
    if message is not None:
        raise StageKilled(message)
    if kind == "ok":
        return ChildRun(payload, sampler.peak, time.perf_counter() - started)
    if kind == "error":
        raise pickle.loads(payload)
    raise RuntimeError(f"stage '{stage}' exited with status {child.exitcode} without a result")
