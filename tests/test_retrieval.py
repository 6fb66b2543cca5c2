"""Real Lucene indexes built and searched in the test, and the published SciFact BM25 figure end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rearank_core.config import BM25Config
from rearank_core.errors import InputError
from rearank_core.io.collection import Document
from rearank_core.io.requests import read_requests
from rearank_core.io.trec import read_run
from rearank_core.records import Query
from rearank_core.retrieval.bm25 import BM25Searcher, bm25_run, build_index, check_index
from rearank_core.stages.bm25 import retrieve_stage

DOCS = [
    Document("d1", "The flea life cycle lasts from two weeks to a year depending on conditions."),
    Document("d2", "Goldfish grow according to the size of their tank and water quality."),
    Document("d3", "Fleas lay eggs on the host; larvae hatch in carpets."),
    Document("d4", "Bluetooth and wifi are both wireless standards with different ranges."),
]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("idx") / "index"
    stats = build_index(DOCS, index, threads=1, show_progress=False)
    assert stats.documents == 4
    return index


def test_search_ranks_matching_documents_first(small_index: Path) -> None:
    searcher = BM25Searcher(small_index)
    assert searcher.num_docs == 4
    results = dict((q.qid, c) for q, c in searcher.search(
        [Query("q1", "flea life cycle"), Query("q2", "wifi bluetooth")], k=10, with_text=True, show_progress=False))
    assert [c.docid for c in results["q1"]][:2] == ["d1", "d3"]
    assert results["q2"][0].docid == "d4"
    assert results["q2"][0].contents == DOCS[3].contents
    scores = [c.score for c in results["q1"]]
    assert scores == sorted(scores, reverse=True)


def test_query_without_matches_gets_empty_ranking(small_index: Path) -> None:
    run, _ = bm25_run(small_index, [Query("q", "zzzyx")], k=5, show_progress=False)
    assert run == {"q": []}


def test_rebuild_replaces_index_atomically(tmp_path: Path) -> None:
    index = tmp_path / "index"
    build_index(DOCS[:2], index, threads=1, show_progress=False)
    build_index(DOCS, index, threads=1, show_progress=False)
    assert BM25Searcher(index).num_docs == 4
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temporary folder left behind


def test_empty_corpus_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no documents"):
        build_index([], tmp_path / "index", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_folder_that_is_not_an_index(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a Lucene index") as info:
        check_index(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_same_run_as_pyserini_lucene_searcher(small_index: Path, tmp_path: Path) -> None:
    """Our direct SimpleSearcher call must equal pyserini's LuceneSearcher, hit for hit (in a fresh process:
    pyserini.search.lucene needs the JVM booted our way first)."""
    queries = [Query("q1", "flea life cycle"), Query("q2", "goldfish tank"), Query("q3", "wireless ranges")]
    ours, _ = bm25_run(small_index, queries, k=10, show_progress=False)
    script = (
        "import json,sys\n"
        "from rearank_core.retrieval.jvm import start_jvm\nstart_jvm()\n"
        "from pyserini.search.lucene import LuceneSearcher\n"
        f"s = LuceneSearcher({str(small_index)!r}); s.set_bm25(0.9, 0.4)\n"
        f"res = s.batch_search({[q.text for q in queries]!r}, {[q.qid for q in queries]!r}, k=10, threads=1)\n"
        "print(json.dumps({q: [[h.docid, h.score] for h in hs] for q, hs in res.items()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OPENAI_API_KEY": "unused"})  # pyserini builds an OpenAI client on import
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {q: [[d, pytest.approx(s)] for d, s in r] for q, r in ours.items()} == theirs


def test_scifact_end_to_end_through_the_cli(tmp_path: Path, root: Path) -> None:
    """rearank index + retrieve + evaluate on BEIR SciFact: published Lucene BM25 flat nDCG@10 0.679."""
    rearank = [sys.executable, "-m", "rearank_core.cli"]
    data = root / "data" / "beir" / "scifact"
    index, run, cands = tmp_path / "index", tmp_path / "bm25.trec", tmp_path / "cands.jsonl"
    subprocess.run([*rearank, "index", "--corpus", str(data / "corpus.jsonl"), "--index", str(index), "-q"],
                   check=True, cwd=tmp_path)
    subprocess.run([*rearank, "retrieve", "--index", str(index), "--topics", str(data / "queries.test.jsonl"),
                    "--run", str(run), "--candidates", str(cands), "-q"], check=True, cwd=tmp_path)
    proc = subprocess.run([*rearank, "evaluate", "--run", str(run), "--qrels", str(data / "qrels" / "test.tsv"),
                           "--json", "--no-track"], check=True, cwd=tmp_path, capture_output=True, text=True)
    metrics = json.loads(proc.stdout)
    assert metrics["ndcg@10"] == pytest.approx(0.679, abs=0.005)
    assert metrics["queries_evaluated"] == 300
    ranking = read_run(run)
    assert len(ranking) == 300 and all(0 < len(r) <= 100 for r in ranking.values())
    assert sum(len(r) == 100 for r in ranking.values()) > 250
    requests = read_requests(cands)
    assert [r.query.qid for r in requests] == list(ranking)
    assert [c.docid for c in requests[0].candidates] == [d for d, _ in ranking[requests[0].query.qid]]
    assert all(c.contents for c in requests[0].candidates)


def test_retrieve_writes_nothing_when_topics_are_bad(small_index: Path, tmp_path: Path) -> None:
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tflea\nq2 no tab here\n")
    with pytest.raises(InputError) as info:
        retrieve_stage(small_index, topics, tmp_path / "out.trec", BM25Config(), show_progress=False)
    assert f"{topics}:2" in str(info.value)
    assert not (tmp_path / "out.trec").exists()
