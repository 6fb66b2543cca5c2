"""Teacher distillation (ReasonRank's recipe): every window through a teacher, one record per window.

Two teachers:
- a model behind any OpenAI-compatible server (the existing backend: retries, timeouts, ``reasoning_content``
  kept as ``<think>``), asked for its reasoning, the relevant passages and the final ranking;
- ``gold``, for machines without a teacher server: the ranking is the qrels order (ties keep the window's
  order) and the "reasoning" is a short rationale built only from facts visible in the text, marked
  ``teacher: gold`` so that nobody mistakes it for model reasoning.

Model answers are journalled as they finish (``<out>.partial.jsonl``, one flushed line each): a crash,
``kill -9``, Ctrl-C or a dead server loses no finished record, and the same command resumes from the journal
and from an earlier output, retrying only the windows whose call failed. A record is reused only for the same
request: the same window (id, query and passages: ``window_sha``) asked the same way (``request_fingerprint``:
the rendered prompt, so the template and the truncation, the teacher model, its server and the reasoning-model
switch). The token limit is kept beside it: an answer the limit cut off is asked again when the limit changes,
one that ended by itself is kept (raising a limit to rescue the cut answers resends only those). The output is
written atomically, in window order, once every window has a record, and the journal is then removed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rearank_core.backends.base import Backend, Completion
from rearank_core.config import TeacherConfig
from rearank_core.errors import BackendError, InputError
from rearank_core.io.files import write_jsonl
from rearank_core.io.training_data import (
    TEACHER_FAILED,
    TEACHER_MALFORMED,
    TEACHER_NO_RELEVANT,
    TEACHER_OK,
    TeacherRecord,
    WindowRecord,
    read_records,
)
from rearank_core.progress import progress_bar
from rearank_core.prompts import PromptTemplate, load_template, render
from rearank_core.records import Messages
from rearank_core.prompts.parsing import OK, identifiers, parse_window

log = logging.getLogger(__name__)

GOLD = "gold"
_THINK = re.compile(r"<think>(.*?)</think>", re.S | re.I)
_RELEVANT = re.compile(r"<relevant>(.*?)</relevant>", re.S | re.I)
# Words that say nothing about a passage's topic; left out of the gold rationale's query terms.
_STOPWORDS = frozenset("""a an and are as at be by can do does for from how i in is it of on or that the this to
was what when where which who why will with you your""".split())


def gold_order(labels: list[int]) -> list[int]:
    """1-based passage numbers by grade, best first; ties keep the window's order."""
    return sorted(range(1, len(labels) + 1), key=lambda i: -labels[i - 1])


def gold_answer(window: WindowRecord) -> TeacherRecord:
    """The gold teacher's record: qrels order (stable), relevant = grade > 0, a rationale from visible facts."""
    final = gold_order(window.labels)
    relevant = [i for i in final if window.labels[i - 1] > 0]
    return TeacherRecord(id=window.id, qid=window.qid, window_sha=window.sha(), teacher=GOLD, status=TEACHER_OK,
                         reasoning=gold_rationale(window.query, window.passages, final), final=final,
                         relevant=relevant, completion="", prompt_tokens=0, completion_tokens=0, latency_s=0.0,
                         error="")


def gold_rationale(query: str, passages: list[str], final: list[int]) -> str:
    """Which query terms each passage contains and which passages the ranking puts first: nothing else."""
    terms = list(dict.fromkeys(w for w in re.findall(r"\w+", query.lower()) if w not in _STOPWORDS))
    lines = [f"Query terms: {', '.join(terms) or '(none)'}."]
    for number, text in enumerate(passages, start=1):
        words = set(re.findall(r"\w+", text.lower()))
        found = [t for t in terms if t in words]
        lines.append(f"[{number}] contains {', '.join(found)}." if found else f"[{number}] contains no query term.")
    top = " > ".join(f"[{i}]" for i in final[:3])
    lines.append(f"Ranked first, by the relevance judgments: {top}. (teacher: gold; not model reasoning)")
    return "\n".join(lines)


def request_fingerprint(prompt: Messages, cfg: TeacherConfig) -> str:
    """SHA-256 of what makes a teacher's answer, but its token limit: the rendered prompt (template, window,
    truncation), the model, the server it is asked on (``base_url``, else OPENAI_BASE_URL) and how it is asked."""
    asked = {"prompt": prompt, "model": cfg.model, "base_url": cfg.base_url or os.environ.get("OPENAI_BASE_URL"),
             "reasoning_model": cfg.reasoning_model}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def reusable(record: TeacherRecord, window_sha: str, request_sha: str, teacher: str, max_new_tokens: int) -> bool:
    """Whether a finished record answers this very request (see the module docstring)."""
    return (record.status != TEACHER_FAILED and record.teacher == teacher and record.window_sha == window_sha
            and record.request_sha == request_sha
            and not (record.finish_reason == "length" and record.max_new_tokens != max_new_tokens))


def parse_teacher(window: WindowRecord, completion: Completion, teacher: str, request_sha: str = "",
                  max_new_tokens: int = 0) -> TeacherRecord:
    """A teacher completion as a record: ok only with a clean permutation and a non-empty relevant set."""
    n = len(window.docids)
    parsed = parse_window(completion.text, n, "think_answer", completion.finish_reason)
    think = _THINK.search(completion.text)
    relevant_block = _RELEVANT.search(completion.text)
    relevant = list(dict.fromkeys(identifiers(relevant_block.group(1)))) if relevant_block else []
    status, error = TEACHER_OK, ""
    if parsed.status != OK:
        status = TEACHER_MALFORMED
        error = (f"answer {parsed.status}: {parsed.duplicates} duplicate, {parsed.out_of_range} out-of-range, "
                 f"{parsed.missing} missing ids; finish_reason {completion.finish_reason}")
    elif think is None:
        status, error = TEACHER_MALFORMED, "no <think> block"
    elif not relevant or any(not 1 <= r <= n for r in relevant):
        status = TEACHER_NO_RELEVANT
        error = "no <relevant> block" if relevant_block is None else f"relevant set {relevant} not within 1..{n}"
    return TeacherRecord(id=window.id, qid=window.qid, window_sha=window.sha(), teacher=teacher, status=status,
                         reasoning=think.group(1).strip() if think else "",
                         final=[p + 1 for p in parsed.order] if status != TEACHER_MALFORMED else [],
                         relevant=relevant if status == TEACHER_OK else [], completion=completion.text,
                         prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                         latency_s=round(completion.latency_s, 4), error=error, request_sha=request_sha,
                         finish_reason=completion.finish_reason, max_new_tokens=max_new_tokens)


def failed(window: WindowRecord, teacher: str, exc: BackendError, request_sha: str = "",
           max_new_tokens: int = 0) -> TeacherRecord:
    return TeacherRecord(id=window.id, qid=window.qid, window_sha=window.sha(), teacher=teacher,
                         status=TEACHER_FAILED, reasoning="",
                         final=[], relevant=[], completion="", prompt_tokens=0, completion_tokens=0,
                         latency_s=0.0, error=str(exc), request_sha=request_sha, max_new_tokens=max_new_tokens)


@dataclass
class TeacherStats:
    teacher: str = ""
    windows: int = 0
    resumed: int = 0
    status: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"teacher": self.teacher, "windows": self.windows, "resumed": self.resumed,
                "status": dict(self.status), "ok_rate": round(self.status[TEACHER_OK] / self.windows, 4)
                if self.windows else None, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost": self.cost}


def journal_path(out: str | Path) -> Path:
    return Path(f"{out}.partial.jsonl")


def read_journal(path: Path) -> dict[str, TeacherRecord]:
    """Finished records by window id, the last one per id winning. A last line cut off by a kill is dropped
    (and cut from the file, so appends start on a clean line); any other bad line is an error."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        log.warning("%s: dropping a cut-off last line (%d bytes) left by an interrupted run", path, len(data) - cut)
        with open(path, "r+b") as handle:
            handle.truncate(cut)
    records: dict[str, TeacherRecord] = {}
    for number, line in enumerate(data[:cut].decode("utf-8").splitlines(), start=1):
        try:
            record = TeacherRecord(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise InputError(f"not a teacher record ({exc}); delete the journal to start over", path, number) from None
        records[record.id] = record
    return records


def _append(sink: IO[str], record: TeacherRecord) -> None:
    sink.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    sink.flush()


def distill(windows: list[WindowRecord], out: str | Path, cfg: TeacherConfig, backend: Backend | None = None,
            template: PromptTemplate | None = None, show_progress: bool = False) -> TeacherStats:
    """One teacher record per window into ``out``; see the module docstring for resuming."""
    ids = [w.id for w in windows]
    if len(set(ids)) != len(ids):
        raise InputError("window ids are not unique", field="id")
    stats = TeacherStats(teacher=GOLD if cfg.model == GOLD else cfg.model, windows=len(windows))
    if cfg.model == GOLD:
        records = [gold_answer(w) for w in windows]
    else:
        records = _distill_with_model(windows, out, cfg, backend, template, stats, show_progress)
    for record in records:
        stats.status[record.status] += 1
        stats.prompt_tokens += record.prompt_tokens
        stats.completion_tokens += record.completion_tokens
    if cfg.price_prompt_per_mtok is not None and cfg.price_completion_per_mtok is not None:
        stats.cost = round((stats.prompt_tokens * cfg.price_prompt_per_mtok
                            + stats.completion_tokens * cfg.price_completion_per_mtok) / 1e6, 4)
    write_jsonl(out, [r.to_dict() for r in records])
    journal_path(out).unlink(missing_ok=True)
    return stats


def _distill_with_model(windows: list[WindowRecord], out: str | Path, cfg: TeacherConfig, backend: Backend | None,
                        template: PromptTemplate | None, stats: TeacherStats, show_progress: bool) -> list[TeacherRecord]:
    template = template or load_template(cfg.prompt)
    if backend is None:
        from rearank_core.backends.openai_backend import OpenAIBackend

        backend = OpenAIBackend(cfg.model, base_url=cfg.base_url, concurrency=cfg.concurrency, timeout_s=cfg.timeout_s,
                                max_retries=cfg.max_retries, reasoning_model=cfg.reasoning_model)
    cut = backend.truncate if backend.has_tokenizer else None
    journal = journal_path(out)
    journal.parent.mkdir(parents=True, exist_ok=True)
    earlier = {r.id: r for r in read_records(out, TeacherRecord)} if Path(out).is_file() else {}
    earlier.update(read_journal(journal))
    prompts = {w.id: render(template, w.query, w.passages, cut) for w in windows}
    asked = {w.id: request_fingerprint(prompts[w.id], cfg) for w in windows}
    done = {w.id: earlier[w.id] for w in windows if w.id in earlier and reusable(
        earlier[w.id], w.sha(), asked[w.id], stats.teacher, cfg.max_new_tokens)}
    stats.resumed = len(done)
    todo = [w for w in windows if w.id not in done]
    log.info("teacher %s: %d windows, %d already done, %d to send", cfg.model, len(windows), stats.resumed, len(todo))
    with open(journal, "a", encoding="utf-8") as sink, \
            progress_bar("teacher", total=len(windows), unit="windows", enabled=show_progress) as bar:
        bar.update(stats.resumed)
        for record in _ask(backend, prompts, asked, todo, cfg.max_new_tokens, stats.teacher):
            _append(sink, record)
            done[record.id] = record
            bar.update()
    return [done[w.id] for w in windows]


def _ask(backend: Backend, prompts: dict[str, Messages], asked: dict[str, str], windows: list[WindowRecord],
         max_new_tokens: int, teacher: str) -> Iterator[TeacherRecord]:
    """Records as their calls finish, ``backend.max_parallel_calls`` calls in flight."""
    pending = iter(windows)
    in_flight: dict[Future, WindowRecord] = {}
    with ThreadPoolExecutor(max_workers=max(1, backend.max_parallel_calls)) as pool:
        try:
            while True:
                while len(in_flight) < max(1, backend.max_parallel_calls):
                    window = next(pending, None)
                    if window is None:
                        break
                    in_flight[pool.submit(backend.complete, [prompts[window.id]], max_new_tokens)] = window
                if not in_flight:
                    return
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    window = in_flight.pop(future)
                    try:
                        (completion,) = future.result()
                    except BackendError as exc:
                        yield failed(window, teacher, exc, asked[window.id], max_new_tokens)
                        continue
                    yield parse_teacher(window, completion, teacher, asked[window.id], max_new_tokens)
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
