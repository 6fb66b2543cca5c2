"""Listwise reranking: sliding windows per query, scheduled across queries onto a backend.

Every query's next window is queued the moment its previous one finishes, and the backend is kept as
full as it allows: ``max_batch_size`` windows per call, ``max_parallel_calls`` calls in flight. Traces
are appended and flushed as windows finish, so an interrupted run resumes from its traces file."""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rearank_core.backends.base import Backend, Completion, Messages
from rearank_core.errors import InputError
from rearank_core.fileio import iter_jsonl
from rearank_core.parsing import OK, REPAIRED, parse_window
from rearank_core.progress import progress_bar
from rearank_core.prompts import PromptTemplate, Tokenizer, load_template, render
from rearank_core.records import Request, Result, WindowTrace
from rearank_core.window import check_window, window_spans


@dataclass
class RerankConfig:
    """Every knob of ``rearank rerank`` (params.yaml section ``rerank``)."""

    backend: str = "transformers"  # transformers | openai | vllm
    model: str = "embedded"  # "embedded", a HF hub id, or a local folder
    prompt: str = "rearank"  # built-in template name or a YAML path
    window: int = 20
    step: int = 10
    top_k: int = 100
    max_new_tokens: int = 256
    truncate_unit: str | None = None  # None: the template's own
    truncate_length: int | None = None
    batch_size: int = 16  # transformers / vllm: windows per generate call
    dtype: str = "auto"  # transformers: auto (bf16 where the CPU/GPU supports it) | bfloat16 | float32
    model_cache: str = "work/models"
    base_url: str | None = None  # openai
    concurrency: int = 8  # openai: requests in flight
    timeout_s: float = 120.0
    max_retries: int = 5


@dataclass
class RerankSummary:
    queries: int = 0
    windows: int = 0
    resumed_windows: int = 0
    status: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    @property
    def format_valid_rate(self) -> float | None:
        return (self.status[OK] + self.status[REPAIRED]) / self.windows if self.windows else None

    @property
    def repaired_rate(self) -> float | None:
        return self.status[REPAIRED] / self.windows if self.windows else None

    def to_dict(self) -> dict[str, Any]:
        new = self.windows - self.resumed_windows
        return {
            "queries": self.queries, "windows": self.windows, "resumed_windows": self.resumed_windows,
            "status": dict(self.status), "format_valid_rate": self.format_valid_rate,
            "repaired_rate": self.repaired_rate, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "wall_s": round(self.wall_s, 3),
            "windows_per_s": round(new / self.wall_s, 4) if self.wall_s and new else None,
            "completion_tokens_per_s": round(self.completion_tokens / self.wall_s, 2) if self.wall_s and new else None,
        }


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


def read_traces(path: str | Path) -> list[WindowTrace]:
    names = WindowTrace.__slots__  # type: ignore[attr-defined]
    traces = []
    for number, obj in iter_jsonl(path):
        missing = [n for n in names if n not in obj]
        if missing:
            raise InputError("missing", path, number, missing[0])
        traces.append(WindowTrace(**{n: obj[n] for n in names}))
    return traces


class Reranker:
    """``Reranker(config).rerank(requests)``: the Python API behind ``rearank rerank``."""

    def __init__(self, config: RerankConfig | None = None, backend: Backend | None = None,
                 template: PromptTemplate | None = None):
        self.config = config or RerankConfig()
        check_window(self.config.window, self.config.step)
        if self.config.max_new_tokens < 1:
            raise InputError(f"max-new-tokens must be at least 1, got {self.config.max_new_tokens}", field="max_new_tokens")
        self.template = (template or load_template(self.config.prompt)).with_truncation(
            self.config.truncate_unit, self.config.truncate_length)
        if backend is None:
            from rearank_core.backends import make_backend

            backend = make_backend(self.config, stop_strings=("</answer>",) if self.template.answer_format == "think_answer" else ())
        self.backend = backend
        self._tokenizer = self._truncating_tokenizer()

    def _truncating_tokenizer(self) -> Tokenizer | None:
        tok = getattr(self.backend, "tokenizer", None)
        if tok is None:
            return None

        def cut(text: str, limit: int) -> str:
            ids = tok.encode(text, add_special_tokens=False)
            return text if len(ids) <= limit else tok.decode(ids[:limit])

        return cut

    def prompt_for(self, request: Request, start: int, end: int, ranking: list | None = None) -> Messages:
        ranking = ranking if ranking is not None else request.candidates
        return render(self.template, request.query.text, [c.contents for c in ranking[start:end]], self._tokenizer)

    def _apply(self, state: _QueryState, completion: Completion) -> WindowTrace:
        start, end = state.spans[state.next_window]
        window = state.ranking[start:end]
        parsed = parse_window(completion.text, len(window), self.template.answer_format, completion.finish_reason)
        state.ranking[start:end] = [window[i] for i in parsed.order]
        trace = WindowTrace(
            qid=state.request.query.qid, window=state.next_window, start=start, end=end,
            docids=[c.docid for c in window], order=parsed.order, status=parsed.status,
            duplicates=parsed.duplicates, out_of_range=parsed.out_of_range, missing=parsed.missing,
            strict_format=parsed.strict_format, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens, finish_reason=completion.finish_reason,
            latency_s=round(completion.latency_s, 4), completion=completion.text,
        )
        state.traces.append(trace)
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
            window = state.ranking[trace.start:trace.end]
            state.ranking[trace.start:trace.end] = [window[i] for i in trace.order]
            state.traces.append(trace)
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
                self._run(states, summary, sink, bar)
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

    def _run(self, states: dict[str, _QueryState], summary: RerankSummary, sink: IO[str] | None, bar: Any) -> None:
        backend = self.backend
        ready = deque(s for s in states.values() if not s.done)
        in_flight: dict[Future, list[_QueryState]] = {}
        valid = done = 0
        with ThreadPoolExecutor(max_workers=max(1, backend.max_parallel_calls)) as pool:
            try:
                while ready or in_flight:
                    while ready and len(in_flight) < max(1, backend.max_parallel_calls):
                        batch = [ready.popleft() for _ in range(min(max(1, backend.max_batch_size), len(ready)))]
                        prompts = [self.prompt_for(s.request, *s.spans[s.next_window], ranking=s.ranking) for s in batch]
                        in_flight[pool.submit(backend.complete, prompts, self.config.max_new_tokens)] = batch
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        batch = in_flight.pop(future)
                        completions = future.result()
                        if len(completions) != len(batch):
                            raise RuntimeError(f"backend {backend.name} returned {len(completions)} completions for {len(batch)} prompts")
                        for state, completion in zip(batch, completions):
                            trace = self._apply(state, completion)
                            if sink is not None:
                                sink.write(json.dumps(trace.to_dict(), ensure_ascii=False) + "\n")
                                sink.flush()
                            done += 1
                            valid += trace.status in (OK, REPAIRED)
                            if not state.done:
                                ready.append(state)
                        bar.update(len(batch), valid=f"{valid / done:.0%}")
            except BaseException:
                for future in in_flight:
                    future.cancel()
                raise
