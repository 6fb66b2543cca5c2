"""A backend that ranks each window by the qrels (an upper bound), answering in the REARANK format."""

from __future__ import annotations

import re
import threading

from rearank_core.backends.base import Completion
from rearank_core.errors import BackendError
from rearank_core.prompts import PromptTemplate, clean_passage, truncate
from rearank_core.records import Messages, Qrels, Request

_PASSAGE = re.compile(r"^\[(\d+)\] (.*)$")


class OracleBackend:
    name = "oracle"
    has_tokenizer = False

    def __init__(self, requests: list[Request], qrels: Qrels, template: PromptTemplate, max_batch_size: int = 8,
                 max_parallel_calls: int = 1):
        self.max_batch_size, self.max_parallel_calls = max_batch_size, max_parallel_calls
        self.grades: dict[tuple[str, str], int] = {}
        for r in requests:
            for c in r.candidates:
                key = (" ".join(r.query.text.split()), truncate(clean_passage(c.contents), template.truncate))
                self.grades[key] = qrels.get(r.query.qid, {}).get(c.docid, 0)
        self.calls: list[int] = []  # batch size of every call
        self._lock = threading.Lock()

    def _rank(self, messages: Messages) -> str:
        passages: dict[int, str] = {}
        for m in messages:
            if m["role"] == "user":
                for line in m["content"].split("\n"):
                    hit = _PASSAGE.match(line)
                    if hit:
                        passages[int(hit.group(1))] = hit.group(2)
        query = next(k[0] for k in self.grades if k[0] in messages[-1]["content"])
        order = sorted(passages, key=lambda i: -self.grades[(query, passages[i])])
        return "<think>ranked by the qrels</think><answer>" + " > ".join(f"[{i}]" for i in order) + "</answer>"

    def complete(self, prompts: list[Messages], max_new_tokens: int) -> list[Completion]:
        with self._lock:
            self.calls.append(len(prompts))
        return [Completion(self._rank(p), 0, 0, "stop", 0.0) for p in prompts]

    def count_tokens(self, text: str) -> int | None:
        return None

    def truncate(self, text: str, max_tokens: int) -> str:
        raise BackendError("the oracle has no tokenizer")

    def close(self) -> None:
        pass
