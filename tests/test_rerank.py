"""The reranking loop: every candidate exactly once, the oracle reaches the best achievable nDCG@10 on DL19,
windows are scheduled across queries, and an interrupted run resumes from its traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DL19, DL19_CANDIDATES
from oracle import OracleBackend

from rearank_core.backends.base import Completion
from rearank_core.config import RerankConfig, TrackingConfig
from rearank_core.errors import BackendError, InputError
from rearank_core.evaluation import evaluate
from rearank_core.io.requests import read_retrieve_results
from rearank_core.io.traces import read_traces
from rearank_core.io.trec import read_qrels
from rearank_core import prompts
from rearank_core.prompts import load_template
from rearank_core.records import (
    Candidate,
    Messages,
    Query,
    Request,
    requests_to_run,
    results_to_run,
)
from rearank_core.rerank import Reranker
from rearank_core.stages.rerank import rerank_stage


@pytest.fixture(scope="module")
def dl19() -> tuple[list[Request], dict]:
    return (read_retrieve_results(DL19 / "rank_llm_BM25_retrieve_results_dl19.json"),
            read_qrels(DL19 / "qrels.dl19-passage.txt"))


def test_oracle_reaches_the_best_achievable_ndcg10_on_dl19(dl19: tuple[list[Request], dict]) -> None:
    requests, qrels = dl19
    template = load_template("rearank")
    oracle = OracleBackend(requests, qrels, template)
    results, summary = Reranker(RerankConfig(), backend=oracle, template=template).rerank(requests)
    ideal = {}
    for r in requests:
        by_grade = sorted((c.docid for c in r.candidates), key=lambda d: -qrels[r.query.qid].get(d, 0))
        ideal[r.query.qid] = [(d, float(len(by_grade) - i)) for i, d in enumerate(by_grade)]
    best = evaluate(ideal, qrels).metrics["ndcg@10"]
    got = evaluate(results_to_run(results), qrels).metrics["ndcg@10"]
    bm25 = evaluate(requests_to_run(requests), qrels).metrics["ndcg@10"]
    assert bm25 == pytest.approx(0.5058, abs=1e-4)
    assert got == pytest.approx(best, abs=1e-9) and best > 0.8
    assert summary.windows == 43 * 9 and summary.status["ok"] == summary.windows
    for request, result in zip(requests, results):
        assert sorted(c.docid for c in result.candidates) == sorted(c.docid for c in request.candidates)


def test_windows_of_many_queries_share_batches(dl19: tuple[list[Request], dict]) -> None:
    requests, qrels = dl19
    template = load_template("rearank")
    oracle = OracleBackend(requests[:10], qrels, template, max_batch_size=4)
    Reranker(RerankConfig(), backend=oracle, template=template).rerank(requests[:10])
    assert sum(oracle.calls) == 90
    assert max(oracle.calls) == 4 and len(oracle.calls) == 23  # ceil(90 / 4): batches stay full across queries


def test_top_k_leaves_the_tail_in_order_and_short_lists_get_one_window(dl19: tuple[list[Request], dict]) -> None:
    requests, qrels = dl19
    short = Request(requests[0].query, requests[0].candidates[:15])
    template = load_template("rearank")
    oracle = OracleBackend([requests[1], short], qrels, template)
    cfg = RerankConfig(top_k=30)
    results, summary = Reranker(cfg, backend=oracle, template=template).rerank([requests[1], short])
    assert [c.docid for c in results[0].candidates[30:]] == [c.docid for c in requests[1].candidates[30:]]
    assert [len(r.traces) for r in results] == [2, 1]
    assert results[1].traces[0].start == 0 and results[1].traces[0].end == 15


class _Scripted:
    """Replies with fixed completions in turn; fails after ``fail_after`` windows."""

    name, max_batch_size, max_parallel_calls, has_tokenizer = "scripted", 1, 1, False

    def __init__(self, replies: list[str], fail_after: int | None = None):
        self.replies, self.fail_after, self.seen = replies, fail_after, 0

    def complete(self, prompts: list[Messages], max_new_tokens: int) -> list[Completion]:
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise RuntimeError("backend went away")
        text = self.replies[self.seen % len(self.replies)]
        self.seen += 1
        return [Completion(text, 10, 5, "length" if "</answer>" not in text else "stop", 0.01)]

    def count_tokens(self, text: str) -> int | None:
        return None

    def truncate(self, text: str, max_tokens: int) -> str:
        raise BackendError("no tokenizer")

    def close(self) -> None:
        pass


def _request(qid: str, n: int) -> Request:
    return Request(Query(qid, f"query {qid}"), [Candidate(f"{qid}-d{i}", float(n - i), {"contents": f"passage {i}"}) for i in range(n)])


def test_diagnostics_and_traces(tmp_path: Path) -> None:
    replies = ["<think>t</think><answer>[2] > [1] > [2]</answer>", "<think>cut off [3] > [1]"]
    traces = tmp_path / "traces.jsonl"
    results, summary = Reranker(RerankConfig(window=3, step=2), backend=_Scripted(replies)).rerank(
        [_request("q", 5)], traces_path=traces)
    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["repaired", "truncated"]
    assert rows[0]["duplicates"] == 1 and rows[0]["missing"] == 1 and rows[1]["order"] == [0, 1, 2]
    assert rows[0]["docids"] == ["q-d2", "q-d3", "q-d4"] and (rows[0]["start"], rows[0]["end"]) == (2, 5)
    assert [c.docid for c in results[0].candidates] == ["q-d0", "q-d1", "q-d3", "q-d2", "q-d4"]
    assert summary.format_valid_rate == 0.5 and summary.repaired_rate == 0.5
    assert summary.prompt_tokens == 20 and summary.completion_tokens == 10


def test_interrupted_run_resumes_from_its_traces(tmp_path: Path) -> None:
    requests = [_request("a", 30), _request("b", 30)]
    reply = ["<think>t</think><answer>[3] > [1] > [2]</answer>"]
    cfg = RerankConfig(window=20, step=10)
    full, _ = Reranker(cfg, backend=_Scripted(reply)).rerank(requests)
    traces = tmp_path / "traces.jsonl"
    with pytest.raises(RuntimeError, match="went away"):
        Reranker(cfg, backend=_Scripted(reply, fail_after=3)).rerank(requests, traces_path=traces)
    assert len(read_traces(traces)) == 3  # finished windows were kept
    resumed_backend = _Scripted(reply)
    resumed, summary = Reranker(cfg, backend=resumed_backend).rerank(requests, traces_path=traces, resume=True)
    assert resumed_backend.seen == 1 and summary.resumed_windows == 3 and summary.windows == 4
    assert summary.completion_tokens == 20 and summary.generated_tokens == 5
    assert results_to_run(resumed) == results_to_run(full)
    assert len(read_traces(traces)) == 4


def test_resume_refuses_traces_from_other_settings(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    reply = ["<think>t</think><answer>[1]</answer>"]
    Reranker(RerankConfig(window=20, step=10), backend=_Scripted(reply)).rerank([_request("a", 30)], traces_path=traces)
    with pytest.raises(InputError, match="does not match") as info:
        Reranker(RerankConfig(window=10, step=5), backend=_Scripted(reply)).rerank([_request("a", 30)], traces_path=traces, resume=True)
    assert f"{traces}:1" in str(info.value)


def test_the_rerank_stage_replays_traces_only_for_the_job_that_wrote_them(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights 1")
    traces = tmp_path / "traces.jsonl"
    reply = ["<think>t</think><answer>[2] > [1]</answer>"]

    def asked(cfg: RerankConfig) -> int:
        backend = _Scripted(reply)
        rerank_stage(DL19_CANDIDATES, tmp_path / "run.trec", cfg,
                     TrackingConfig(enabled=False), traces_out=traces, resume=True, limit=2, show_progress=False,
                     reranker=Reranker(cfg, backend=backend))
        return backend.seen

    cfg = RerankConfig(model=str(model), window=20, step=10, top_k=30)
    first = asked(cfg)
    assert first == 2 * 2  # two queries, two windows each
    assert asked(cfg) == 0  # the same job: every window replayed from the traces
    (model / "model.safetensors").write_bytes(b"weights 2")  # retrained in place
    assert asked(cfg) == first
    assert asked(RerankConfig(model=str(model), window=20, step=10, top_k=30, max_new_tokens=64)) == first
    # A prompt template file edited in place (same name, same path) is another request: every window again.
    template = tmp_path / "mine.yaml"
    text = Path(prompts.__file__).parent / "rearank.yaml"
    template.write_text(text.read_text(encoding="utf-8"), encoding="utf-8")
    mine = RerankConfig(model=str(model), window=20, step=10, top_k=30, prompt=str(template))
    assert asked(mine) == first and asked(mine) == 0
    template.write_text(text.read_text(encoding="utf-8").replace("Rank the", "Please rank the", 1), encoding="utf-8")
    assert asked(mine) == first
