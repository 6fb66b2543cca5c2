"""The four training-data record kinds, one JSON object per line, and their checked reader (the file contract
between the data stages and training).

- window: a labelled window drawn from a query's candidates (REARANK augmentation)
- teacher: a teacher's answer for one window (reasoning, final ranking, relevant set) or why there is none
- sft: chat messages whose assistant turn is ``<think>…</think><answer>…</answer>``
- grpo: the prompt plus the reward columns (``labels`` for REARANK's reward, ``relevant``/``gold`` for ReasonRank's)

Passage numbers in ``final``, ``relevant`` and ``gold`` are 1-based positions in the window, as the prompt shows
them; ``labels`` are the graded qrels of the window's passages in prompt order."""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from rearank_core.errors import InputError
from rearank_core.io.files import iter_jsonl
from rearank_core.records import Messages

T = TypeVar("T")

KINDS = ("windows", "teacher", "sft", "grpo")
TEACHER_OK, TEACHER_MALFORMED, TEACHER_NO_RELEVANT, TEACHER_FAILED = "ok", "malformed", "no_relevant", "failed"
TEACHER_STATUSES = (TEACHER_OK, TEACHER_MALFORMED, TEACHER_NO_RELEVANT, TEACHER_FAILED)


@dataclass(slots=True)
class WindowRecord:
    """One labelled window; ``sha()`` fingerprints what a teacher sees of it."""

    id: str  # "<source>/<qid>/<draw>": unique and stable for a seed
    source: str
    qid: str
    query: str
    docids: list[str]
    passages: list[str]
    labels: list[int]  # graded relevance of each passage, in window order
    initial_ndcg10: float  # nDCG@10 of the window in its given order against ``labels``

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sha(self) -> str:
        payload = json.dumps([self.query, self.docids, self.passages], ensure_ascii=False).encode("utf-8")
        return hashlib.sha1(payload).hexdigest()


@dataclass(slots=True)
class TeacherRecord:
    id: str  # the window's id
    qid: str
    window_sha: str  # fingerprint of the window's query and passages: a resumed run reuses a record only if equal
    teacher: str  # "gold" or the teacher model's name
    status: str  # one of TEACHER_STATUSES
    reasoning: str
    final: list[int]  # the teacher's ranking, 1-based passage numbers
    relevant: list[int]  # the passages the teacher calls relevant, 1-based
    completion: str  # raw teacher output ("" for gold)
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error: str  # why there is no answer ("" when status is ok)
    # What the answer was asked with (teacher.request_fingerprint): a resumed run reuses a record only when equal.
    # Empty for gold records and for records written before the field existed (those are asked again).
    request_sha: str = ""
    finish_reason: str = ""  # the server's: "length" when the token limit cut the answer
    max_new_tokens: int = 0  # the limit it was asked with: a cut answer is asked again under another limit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class SFTRecord:
    id: str
    qid: str
    teacher: str
    messages: Messages  # the reranker's prompt, then the assistant's <think>…</think><answer>…</answer>

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class GRPORecord:
    id: str
    qid: str
    prompt: Messages  # the reranker's prompt (TRL's conversational "prompt" column)
    labels: list[int]  # REARANK reward: graded relevance in prompt order
    relevant: list[int]  # ReasonRank reward: relevant passages, 1-based
    gold: list[int]  # ReasonRank reward: the reference ranking for RBO, 1-based

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECORD_TYPES: dict[str, type] = {"windows": WindowRecord, "teacher": TeacherRecord, "sft": SFTRecord, "grpo": GRPORecord}


def _check(value: Any, hint: Any) -> bool:
    origin = getattr(hint, "__origin__", None)
    if origin is list:
        (item,) = hint.__args__
        return isinstance(value, list) and all(_check(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def read_records(path: str | Path, cls: type[T]) -> list[T]:
    """Every line of a JSONL file as ``cls``; a missing field or a value of the wrong type is an error naming the
    file, the line and the field (deeper rules are the validation gate's)."""
    hints = get_type_hints(cls, localns={"Messages": Messages})
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    optional = {f.name for f in fields(cls) if f.default is not MISSING}  # type: ignore[arg-type]
    records = []
    for number, obj in iter_jsonl(path):
        for name in names:
            if name not in obj:
                if name in optional:
                    continue
                raise InputError("missing", path, number, name)
            if not _check(obj[name], hints[name]):
                raise InputError(f"expected {getattr(hints[name], '__name__', str(hints[name]))}, got "
                                 f"{type(obj[name]).__name__}", path, number, name)
        records.append(cls(**{name: obj[name] for name in names if name in obj}))
    return records
