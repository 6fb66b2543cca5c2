"""Cross-request batching with admission control: one worker thread owns the Reranker, and the requests that
arrive while it is busy are reranked together in its next ``Reranker.rerank`` call, where the cross-query
scheduler packs windows of several requests into each generate call.

Admission: the queue holds at most ``max_queue`` requests (``submit`` raises ``QueueFull`` beyond, the server's
503 with Retry-After), a request whose deadline passes while it waits is dropped before any work is spent on it
(``DeadlineExceeded``, 504), and a call takes requests up to ``max_windows`` windows (a request of many documents
costs more than one of three) and ``max_queries`` requests. Each request gets its own internal qid
(``rerank_documents``), so equal query texts never share a ranking. A call that fails is retried request by request,
so a request that makes the backend fail fails alone; the worker carries on with the next."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from rearank_core.rerank import Reranker
from rearank_core.rerank.documents import DocumentRanking, rerank_documents
from rearank_core.rerank.window import window_spans


class BatcherClosed(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


class QueueFull(RuntimeError):
    """The queue already holds ``max_queue`` requests."""


class DeadlineExceeded(TimeoutError):
    """The request waited in the queue past its deadline; it was dropped unanswered."""


@dataclass(frozen=True, slots=True)
class Ranked:
    ranking: DocumentRanking
    batch_queries: int  # requests reranked in the same call, this one included


@dataclass(frozen=True, slots=True)
class _Job:
    query: str
    documents: list[str]
    future: Future[Ranked]
    windows: int
    deadline: float | None  # time.monotonic() after which the request is not worth answering


class Batcher:
    """``submit`` queues a request and returns a future; the worker takes queued requests up to ``max_queries``
    requests and ``max_windows`` windows per ``Reranker.rerank`` call (a request larger than ``max_windows`` goes
    alone)."""

    def __init__(self, reranker: Reranker, max_queries: int = 32, max_queue: int = 256,
                 max_windows: int | None = None) -> None:
        for name, value in (("max_queries", max_queries), ("max_queue", max_queue), ("max_windows", max_windows)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.reranker = reranker
        self.max_queries = max_queries
        self.max_queue = max_queue
        self.max_windows = max_windows
        self._jobs: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self._calls = self._requests = self._largest_call = self._in_call = 0
        self._refused = self._dropped = self._retried_alone = 0

    def start(self) -> None:
        with self._wake:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._loop, name="rearank-batcher", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, fail the queued ones, and wait for the call in progress to finish."""
        with self._wake:
            self._running = False
            pending = list(self._jobs)
            self._jobs.clear()
            self._wake.notify_all()
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosed("the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._running and self._thread is not None and self._thread.is_alive()

    def windows_of(self, documents: list[str]) -> int:
        """The windows reranking these documents takes under the reranker's settings (at least 1: the call)."""
        cfg = self.reranker.config
        return max(1, len(window_spans(len(documents), cfg.window, cfg.step, cfg.top_k)))

    def submit(self, query: str, documents: list[str], timeout_s: float | None = None) -> Future[Ranked]:
        """Queue a request; ``timeout_s``: drop it unanswered if its call has not started by then."""
        future: Future[Ranked] = Future()
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        with self._wake:
            if not self._running:
                raise BatcherClosed("the reranker is not running")
            if len(self._jobs) >= self.max_queue:
                self._refused += 1
                raise QueueFull(f"{len(self._jobs)} requests are queued, the most this server holds")
            self._jobs.append(_Job(query, documents, future, self.windows_of(documents), deadline))
            self._wake.notify()
        return future

    def stats(self) -> dict[str, Any]:
        """Calls made and requests served so far (requests > calls: some were batched together), the requests in
        the call under way and those queued behind it, and the requests refused (queue full), dropped from the
        queue unanswered (past their deadline, or their client gone) and retried alone after a failed call."""
        with self._wake:
            return {"calls": self._calls, "requests": self._requests, "largest_call": self._largest_call,
                    "in_call": self._in_call, "queued": len(self._jobs), "max_queries_per_call": self.max_queries,
                    "max_windows_per_call": self.max_windows, "max_queue": self.max_queue,
                    "refused_queue_full": self._refused, "dropped": self._dropped,
                    "retried_alone": self._retried_alone}

    def _take(self) -> list[_Job] | None:
        """The queued requests the next call takes (waiting for the first); None once closed."""
        with self._wake:
            while self._running and not self._jobs:
                self._wake.wait()
            if not self._running:
                return None
            taken: list[_Job] = []
            windows, now = 0, time.monotonic()
            while self._jobs and len(taken) < self.max_queries:
                job = self._jobs[0]
                if taken and self.max_windows is not None and windows + job.windows > self.max_windows:
                    break
                self._jobs.popleft()
                # False: the client went away (or timed out) before its turn; once True, it can no longer be.
                if not job.future.set_running_or_notify_cancel():
                    self._dropped += 1
                    continue
                if job.deadline is not None and now > job.deadline:
                    self._dropped += 1
                    job.future.set_exception(DeadlineExceeded("the request waited in the queue past its deadline"))
                    continue
                taken.append(job)
                windows += job.windows
            self._in_call = len(taken)
            return taken

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            if jobs:
                self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        try:
            outcomes = self._rerank(jobs)
        finally:
            with self._wake:
                self._calls += 1
                self._requests += len(jobs)
                self._largest_call = max(self._largest_call, len(jobs))
                self._in_call = 0
        for job, (outcome, together) in zip(jobs, outcomes):
            if isinstance(outcome, Exception):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(Ranked(outcome, together))

    def _rerank(self, jobs: list[_Job]) -> list[tuple[DocumentRanking | Exception, int]]:
        """Each request's ranking or failure, with the number of requests its call held: one call for all; when it
        fails and held several, one call each, so only a request that makes the backend fail gets the failure. The
        HTTP layer decides what the client sees; the worker must survive."""
        try:
            return [(ranking, len(jobs)) for ranking in
                    rerank_documents(self.reranker, [(job.query, job.documents) for job in jobs])]
        except Exception as exc:
            if len(jobs) == 1:
                return [(exc, 1)]
        with self._wake:
            self._retried_alone += len(jobs)
        outcomes: list[tuple[DocumentRanking | Exception, int]] = []
        for job in jobs:
            try:
                outcomes.append((rerank_documents(self.reranker, [(job.query, job.documents)])[0], 1))
            except Exception as exc:
                outcomes.append((exc, 1))
        return outcomes
