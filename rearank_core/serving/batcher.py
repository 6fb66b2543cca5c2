"""Cross-request batching: one worker thread owns the Reranker, and every request that arrives while it is busy
is reranked together in its next ``Reranker.rerank`` call, where the cross-query scheduler packs windows of
several requests into each generate call.

Each request gets its own internal qid (``rerank_documents``), so equal query texts never share a ranking; a
call that fails fails only its own requests, and the worker carries on with the next."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from rearank_core.rerank import Reranker
from rearank_core.rerank.documents import DocumentRanking, rerank_documents


class BatcherClosed(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass(frozen=True, slots=True)
class Ranked:
    ranking: DocumentRanking
    batch_queries: int  # requests reranked in the same call, this one included


@dataclass(frozen=True, slots=True)
class _Job:
    query: str
    documents: list[str]
    future: Future[Ranked]


class Batcher:
    """``submit`` queues a request and returns a future; the worker takes up to ``max_queries`` queued requests
    per ``Reranker.rerank`` call."""

    def __init__(self, reranker: Reranker, max_queries: int = 32) -> None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be at least 1, got {max_queries}")
        self.reranker = reranker
        self.max_queries = max_queries
        self._jobs: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self._calls = self._requests = self._largest_call = self._in_call = 0

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

    def submit(self, query: str, documents: list[str]) -> Future[Ranked]:
        future: Future[Ranked] = Future()
        with self._wake:
            if not self._running:
                raise BatcherClosed("the reranker is not running")
            self._jobs.append(_Job(query, documents, future))
            self._wake.notify()
        return future

    def stats(self) -> dict[str, Any]:
        """Calls made and requests served so far (requests > calls: some were batched together), the requests in
        the call under way and those queued behind it."""
        with self._wake:
            return {"calls": self._calls, "requests": self._requests, "largest_call": self._largest_call,
                    "in_call": self._in_call, "queued": len(self._jobs), "max_queries_per_call": self.max_queries}

    def _take(self) -> list[_Job] | None:
        """Everything queued (up to ``max_queries``), waiting for the first; None once closed."""
        with self._wake:
            while self._running and not self._jobs:
                self._wake.wait()
            if not self._running:
                return None
            taken: list[_Job] = []
            while self._jobs and len(taken) < self.max_queries:
                job = self._jobs.popleft()
                # False: the client went away before its turn; once True, the future can no longer be cancelled.
                if job.future.set_running_or_notify_cancel():
                    taken.append(job)
            self._in_call = len(taken)
            return taken

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            if jobs:
                self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        try:
            rankings = rerank_documents(self.reranker, [(job.query, job.documents) for job in jobs])
        except Exception as exc:  # the HTTP layer decides what the client sees; the worker must survive
            for job in jobs:
                job.future.set_exception(exc)
            return
        finally:
            with self._wake:
                self._calls += 1
                self._requests += len(jobs)
                self._largest_call = max(self._largest_call, len(jobs))
                self._in_call = 0
        for job, ranking in zip(jobs, rankings):
            job.future.set_result(Ranked(ranking, len(jobs)))
