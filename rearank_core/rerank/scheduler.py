"""Listwise reranking: sliding windows per query, scheduled across queries onto a backend. In reasoning mode each
window's completion is parsed for its permutation; in first mode (FIRST) the window is ordered by the
log-probabilities of its identifiers as the answer's first token, one forward pass and no decoding.

Every query's next window is queued the moment its previous one finishes, and the backend is kept as
full as it allows: ``max_batch_size`` windows per call, ``max_parallel_calls`` calls in flight. Traces
are appended and flushed as windows finish, so an interrupted run resumes from its traces file."""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rearank_core.backends.base import Backend, Completion, IdentifierScores
from rearank_core.backends.registry import make_backend
from rearank_core.config import RerankConfig, validated
from rearank_core.errors import BackendError, InputError
from rearank_core.io.traces import read_traces, write_trace
from rearank_core.progress import progress_bar
from rearank_core.prompts import LETTERS, PromptTemplate, load_template, render
from rearank_core.prompts.parsing import OK, REPAIRED, parse_window
from rearank_core.records import Messages, Request, Result, WindowTrace
from rearank_core.rerank.summary import RerankSummary
from rearank_core.rerank.window import check_window, window_spans


@dataclass
class _QueryState:
    request: Request
    spans: list[tuple[int, int]]
    ranking: list  # Candidate, current order
    traces: list[WindowTrace] = field(default_factory=list)

    @property
    def next_window(self) -> int:
        return len(self.traces)

    @property
    def done(self) -> bool:
        return self.next_window >= len(self.spans)

    def record(self, trace: WindowTrace) -> None:
        """Reorder the trace's span as it says and keep the trace."""
        window = self.ranking[trace.start:trace.end]
        self.ranking[trace.start:trace.end] = [window[i] for i in trace.order]
        self.traces.append(trace)


class Reranker:
    """``Reranker(config).rerank(requests)``: the Python API behind ``rearank rerank``."""

    def __init__(self, config: RerankConfig | None = None, backend: Backend | None = None,
                 template: PromptTemplate | None = None):
        self.config = validated(config or RerankConfig(), "rerank")
        check_window(self.config.window, self.config.step)
        self.template = (template or load_template(self.config.template)).with_truncation(
            self.config.truncate_unit, self.config.truncate_length)
        self.first = self.config.mode == "first"
        if self.first and self.template.identifiers == "letters" and self.config.window > len(LETTERS):
            raise InputError(f"first mode's template {self.template.name!r} labels passages [A]..[Z]: a window holds "
                             f"at most {len(LETTERS)}, got {self.config.window}", field="window")
        # First mode scores every window against the identifiers of a full one (a shorter window reads its own).
        self.identifiers = [self.template.identifier(rank) for rank in range(1, self.config.window + 1)] \
            if self.first else []
        if backend is None:
            backend = make_backend(self.config, stop_strings=("</answer>",) if self.template.answer_format == "think_answer" else ())
        if self.template.truncate.unit == "tokens" and not backend.has_tokenizer:
            raise InputError(f"prompt {self.template.name!r} truncates passages in tokens, but the {backend.name} "
                             "backend has no tokenizer: use --truncate-unit chars or words", field="truncate_unit")
        if self.first:  # an empty call checks the identifiers (one token each, within the backend's limits)
            backend.score_identifiers([], self.template.answer_prefix, self.identifiers)
        self.backend = backend

    def prompt_for(self, request: Request, start: int, end: int, ranking: list | None = None) -> Messages:
        ranking = ranking if ranking is not None else request.candidates
        cut = self.backend.truncate if self.backend.has_tokenizer else None
        return render(self.template, request.query.text, [c.contents for c in ranking[start:end]], cut)

    def _apply(self, state: _QueryState, completion: Completion) -> WindowTrace:
        start, end = state.spans[state.next_window]
        window = state.ranking[start:end]
        parsed = parse_window(completion.text, len(window), self.template.answer_format, completion.finish_reason)
        trace = WindowTrace(
            qid=state.request.query.qid, window=state.next_window, start=start, end=end,
            docids=[c.docid for c in window], order=parsed.order, status=parsed.status,
            duplicates=parsed.duplicates, out_of_range=parsed.out_of_range, missing=parsed.missing,
            strict_format=parsed.strict_format, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens, finish_reason=completion.finish_reason,
            latency_s=round(completion.latency_s, 4), completion=completion.text,
        )
        state.record(trace)
        return trace

    def _apply_first(self, state: _QueryState, scores: IdentifierScores) -> WindowTrace:
        """First mode: the window's passages by their identifiers' log-probabilities, highest first; identifiers
        the backend returned none for keep their input order after the others (counted as missing)."""
        start, end = state.spans[state.next_window]
        window = state.ranking[start:end]
        logprobs = [lp if math.isfinite(lp) else None for lp in scores.logprobs[:len(window)]]
        order = sorted(range(len(window)), key=lambda i: (logprobs[i] is None, -(logprobs[i] or 0.0), i))
        missing = sum(lp is None for lp in logprobs)
        trace = WindowTrace(
            qid=state.request.query.qid, window=state.next_window, start=start, end=end,
            docids=[c.docid for c in window], order=order, status=REPAIRED if missing else OK, duplicates=0,
            out_of_range=0, missing=missing, strict_format=False, prompt_tokens=scores.prompt_tokens,
            completion_tokens=0, finish_reason="stop", latency_s=round(scores.latency_s, 4), completion="",
            logprobs=logprobs)
        state.record(trace)
        return trace

    def _replay(self, states: dict[str, _QueryState], traces: list[WindowTrace], source: str | Path) -> int:
        """Re-apply finished windows from an earlier run's traces; they must match this run's windows exactly."""
        replayed = 0
        for number, trace in enumerate(traces, start=1):
            state = states.get(trace.qid)
            if state is None or state.done or trace.window != state.next_window or \
                    (trace.start, trace.end) != state.spans[trace.window] or \
                    trace.docids != [c.docid for c in state.ranking[trace.start:trace.end]]:
                raise InputError("trace does not match this run's candidates and window settings; "
                                 "rerun without --resume", source, number)
            state.record(trace)
            replayed += 1
        return replayed

    def rerank(self, requests: list[Request], traces_path: str | Path | None = None, resume: bool = False,
               show_progress: bool = False) -> tuple[list[Result], RerankSummary]:
        cfg = self.config
        states = {r.query.qid: _QueryState(r, window_spans(len(r.candidates), cfg.window, cfg.step, cfg.top_k),
                                           list(r.candidates)) for r in requests}
        summary = RerankSummary(queries=len(requests))
        if resume and traces_path is not None and Path(traces_path).is_file() and Path(traces_path).stat().st_size:
            summary.resumed_windows = self._replay(states, read_traces(traces_path), traces_path)
        total = sum(len(s.spans) for s in states.values())
        sink: IO[str] | None = None
        if traces_path is not None:
            Path(traces_path).parent.mkdir(parents=True, exist_ok=True)
            sink = open(traces_path, "a" if resume else "w", encoding="utf-8")
        started = time.perf_counter()
        try:
            with progress_bar("reranking", total=total, unit="windows", enabled=show_progress,
                              extra="valid {task.fields[valid]}", valid="-") as bar:
                bar.update(summary.resumed_windows)
                summary.generated_tokens = self._run(states, sink, bar)
        finally:
            if sink is not None:
                sink.close()
        summary.wall_s = time.perf_counter() - started
        for state in states.values():
            for t in state.traces:
                summary.windows += 1
                summary.status[t.status] += 1
                summary.prompt_tokens += t.prompt_tokens
                summary.completion_tokens += t.completion_tokens
        results = [Result(s.request.query, s.ranking, s.traces) for s in states.values()]
        return results, summary

    def _run(self, states: dict[str, _QueryState], sink: IO[str] | None, bar: Any) -> int:
        """Run every remaining window; returns the completion tokens generated in this call."""
        backend = self.backend
        ready = deque(s for s in states.values() if not s.done)
        in_flight: dict[Future, list[_QueryState]] = {}
        valid = done = generated = 0
        with ThreadPoolExecutor(max_workers=max(1, backend.max_parallel_calls)) as pool:
            try:
                while ready or in_flight:
                    while ready and len(in_flight) < max(1, backend.max_parallel_calls):
                        batch = [ready.popleft() for _ in range(min(max(1, backend.max_batch_size), len(ready)))]
                        prompts = [self.prompt_for(s.request, *s.spans[s.next_window], ranking=s.ranking) for s in batch]
                        call = (pool.submit(backend.score_identifiers, prompts, self.template.answer_prefix,
                                            self.identifiers) if self.first
                                else pool.submit(backend.complete, prompts, self.config.max_new_tokens))
                        in_flight[call] = batch
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        batch = in_flight.pop(future)
                        answers = future.result()
                        if len(answers) != len(batch):
                            what = "scored windows" if self.first else "completions"
                            raise BackendError(f"backend {backend.name} returned {len(answers)} {what} for "
                                               f"{len(batch)} prompts")
                        for state, answer in zip(batch, answers):
                            trace = self._apply_first(state, answer) if self.first else self._apply(state, answer)
                            if sink is not None:
                                write_trace(sink, trace)
                            done += 1
                            generated += trace.completion_tokens
                            valid += trace.status in (OK, REPAIRED)
                            if not state.done:
                                ready.append(state)
                        bar.update(len(batch), valid=f"{valid / done:.0%}")
            except BaseException:
                for future in in_flight:
                    future.cancel()
                raise
        return generated
