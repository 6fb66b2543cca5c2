"""Every input/output format reader and writer, on real files written to tmp_path and on the data the repo carries.

Malformed input must raise ``InputError`` whose message names the file, the line (where the format has lines)
and the field (where one is at fault)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rearank_core.errors import InputError
from rearank_core.io.auto import read_any_qrels, read_any_topics
from rearank_core.io.beir import read_beir_folder, read_beir_qrels, read_beir_queries
from rearank_core.io.bright import (
    BrightDomain,
    iter_bright_documents,
    load_bright_domain,
    resolve_bright_root,
)
from rearank_core.io.collection import Document, corpus_files, iter_corpus
from rearank_core.io.requests import (
    read_candidates,
    read_requests,
    read_retrieve_results,
    write_requests,
)
from rearank_core.io.trec import (
    check_run_queries,
    read_exclusions,
    read_qrels,
    read_run,
    read_topics,
    write_exclusions,
    write_qrels,
    write_run,
    write_topics,
)
from rearank_core.records import Candidate, Query, Request, requests_to_run

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

DL = {
    # name: (topics file, qrels file, queries in the BM25 run and retrieve results, queries in the topics)
    "dl19": ("topics.dl19-passage.txt", "qrels.dl19-passage.txt", 43, 43),
    "dl20": ("topics.dl20.txt", "qrels.dl20-passage.txt", 54, 200),
    "dl21": ("topics.dl21.txt", "qrels.dl21-passage.txt", 53, 477),
}


def dl_file(name: str, kind: str) -> Path:
    topics, qrels, _, _ = DL[name]
    folder = DATA / "msmarco" / name
    return folder / {
        "topics": topics,
        "qrels": qrels,
        "run": f"rank_llm_BM25_trec_results_{name}.txt",
        "results": f"rank_llm_BM25_retrieve_results_{name}.json",
    }[kind]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_lines(path: Path, rows: list) -> Path:
    """JSONL: dicts are dumped, strings are written as they are (to plant broken lines)."""
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def check_error(exc: pytest.ExceptionInfo[InputError], path: Path, line: int | None = None,
                field: str | None = None, says: str | None = None) -> None:
    """The error names the file, the line as ``path:line`` and the field as ``field 'name'``."""
    err = exc.value
    text = str(err)
    assert str(path) in text, text
    assert err.path == str(path)
    if line is not None:
        assert err.line == line, text
        assert f"{path}:{line}: " in text, text
    else:
        assert err.line is None, text
    if field is not None:
        assert err.field == field, text
        assert f"field '{field}'" in text, text
    if says is not None:
        assert says in text, text


# --------------------------------------------------------------------------------------------- TREC topics


def test_read_topics_keeps_order_text_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "topics.tsv", "42\twhat is a flea\n\n7\t  how long  do fleas live \n1002\tq\twith tab\n")
    assert read_topics(path) == [Query("42", "what is a flea"), Query("7", "how long  do fleas live"),
                                 Query("1002", "q\twith tab")]


def test_read_topics_gzip(tmp_path: Path) -> None:
    path = tmp_path / "topics.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("1\tfirst query\n2\tsecond query\n")
    assert [q.qid for q in read_topics(path)] == ["1", "2"]


def test_write_topics_round_trip_flattens_whitespace(tmp_path: Path) -> None:
    queries = [Query("1", "multi\nline  query"), Query("b", "café ünïcode")]
    path = tmp_path / "out" / "topics.tsv"
    write_topics(path, queries)
    assert path.read_text(encoding="utf-8") == "1\tmulti line query\nb\tcafé ünïcode\n"
    assert read_topics(path) == [Query("1", "multi line query"), Query("b", "café ünïcode")]


@pytest.mark.parametrize("name", sorted(DL))
def test_read_topics_real_dl(name: str) -> None:
    queries = read_topics(dl_file(name, "topics"))
    assert len(queries) == DL[name][3]
    assert len({q.qid for q in queries}) == len(queries)
    assert all(q.text.strip() for q in queries)


def test_read_topics_dl19_first_query() -> None:
    assert read_topics(dl_file("dl19", "topics"))[0] == Query("156493", "do goldfish grow")


def test_topics_line_without_tab(tmp_path: Path) -> None:
    path = write(tmp_path / "topics.tsv", "1\tok\n2 no tab here\n")
    with pytest.raises(InputError) as exc:
        read_topics(path)
    check_error(exc, path, 2, says="qid<TAB>query text")


def test_topics_duplicate_qid(tmp_path: Path) -> None:
    path = write(tmp_path / "topics.tsv", "1\tone\n2\ttwo\n\n1\tagain\n")
    with pytest.raises(InputError) as exc:
        read_topics(path)
    check_error(exc, path, 4, "qid", says="first on line 1")


# --------------------------------------------------------------------------------------------- qrels


def test_read_qrels_graded(tmp_path: Path) -> None:
    path = write(tmp_path / "qrels.txt", "1 0 d1 2\n1 0 d2 0\n2\tQ0\td1\t1\n")
    assert read_qrels(path) == {"1": {"d1": 2, "d2": 0}, "2": {"d1": 1}}


def test_write_qrels_round_trip(tmp_path: Path) -> None:
    qrels = {"q1": {"a": 3, "b": 0}, "q2": {"a": 1}}
    path = tmp_path / "qrels.txt"
    write_qrels(path, qrels)
    assert path.read_text().splitlines() == ["q1 0 a 3", "q1 0 b 0", "q2 0 a 1"]
    assert read_qrels(path) == qrels


@pytest.mark.parametrize("name, queries, judgments", [("dl19", 43, 9260), ("dl20", 54, 11386), ("dl21", 53, 10828)])
def test_read_qrels_real_dl(name: str, queries: int, judgments: int) -> None:
    qrels = read_qrels(dl_file(name, "qrels"))
    assert len(qrels) == queries
    assert sum(len(j) for j in qrels.values()) == judgments
    assert {g for j in qrels.values() for g in j.values()} == {0, 1, 2, 3}


@pytest.mark.parametrize("body, line, field, says", [
    ("1 0 d1 1\n1 0 d2\n", 2, None, "expected 4 columns"),
    ("1 0 d1 1\n\n1 0 d2 1 extra\n", 3, None, "got 5"),
    ("1 0 d1 1\n1 0 d2 rel\n", 2, "relevance", "not an integer: 'rel'"),
    ("1 0 d1 1.5\n", 1, "relevance", "not an integer: '1.5'"),
    ("1 0 d1 1\n1 0 d1 2\n", 2, "docid", "duplicate judgment"),
])
def test_qrels_malformed(tmp_path: Path, body: str, line: int, field: str | None, says: str) -> None:
    path = write(tmp_path / "qrels.txt", body)
    with pytest.raises(InputError) as exc:
        read_qrels(path)
    check_error(exc, path, line, field, says)


# --------------------------------------------------------------------------------------------- runs


def test_read_run_orders_by_score_descending_like_trec_eval(tmp_path: Path) -> None:
    # ranks disagree with scores on purpose: the score decides, the rank only breaks ties
    path = write(tmp_path / "run.trec", "\n".join([
        "q1 Q0 low 1 1.5 tag",
        "q1 Q0 high 2 9.25 tag",
        "q1 Q0 tie_b 4 3.0 tag",
        "q1 Q0 tie_a 3 3.0 tag",
        "q2 Q0 neg -1 -2 tag",
        "q2 Q0 zero 5 0 tag",
    ]) + "\n")
    run = read_run(path)
    assert list(run) == ["q1", "q2"]
    assert run["q1"] == [("high", 9.25), ("tie_a", 3.0), ("tie_b", 3.0), ("low", 1.5)]
    assert run["q2"] == [("zero", 0.0), ("neg", -2.0)]


def test_write_run_round_trip(tmp_path: Path) -> None:
    run = {"q1": [("d3", 12.3456789), ("d1", 2.0), ("d2", -0.5)], "q2": [("d9", 1.0)]}
    path = tmp_path / "sub" / "run.trec"
    write_run(path, run, tag="mytag")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d3 1 12.345679 mytag"
    assert [line.split()[3] for line in lines] == ["1", "2", "3", "1"]
    back = read_run(path)
    assert {q: [d for d, _ in r] for q, r in back.items()} == {q: [d for d, _ in r] for q, r in run.items()}
    for qid, ranking in run.items():
        assert [s for _, s in back[qid]] == pytest.approx([s for _, s in ranking], abs=1e-6)
    assert not [p for p in path.parent.iterdir() if p.name != "run.trec"], "atomic_write left a temporary file"


def test_write_run_keeps_order_of_equal_scores(tmp_path: Path) -> None:
    # scores that round to the same 6 decimals: the rank column keeps the given order on reading back
    run = {"q": [("b", 1.0000002), ("a", 1.0000001), ("c", 1.0)]}
    path = tmp_path / "run.trec"
    write_run(path, run)
    assert [d for d, _ in read_run(path)["q"]] == ["b", "a", "c"]


@pytest.mark.parametrize("name", sorted(DL))
def test_read_run_real_dl(name: str) -> None:
    run = read_run(dl_file(name, "run"))
    assert len(run) == DL[name][2]
    assert all(len(r) == 100 for r in run.values())
    for ranking in run.values():
        scores = [s for _, s in ranking]
        assert scores == sorted(scores, reverse=True)
    assert set(run) <= set(read_qrels(dl_file(name, "qrels")))
    check_run_queries(run, read_topics(dl_file(name, "topics")), dl_file(name, "run"), dl_file(name, "topics"))


def test_read_run_dl19_top_hit() -> None:
    docid, score = read_run(dl_file("dl19", "run"))["264014"][0]
    assert docid == "5611210"
    assert score == pytest.approx(15.780599594116211)


@pytest.mark.parametrize("body, line, field, says", [
    ("q Q0 d1 1 1.0 t\nq Q0 d2 2 0.5\n", 2, None, "expected 6 columns"),
    ("q Q0 d1 one 1.0 t\n", 1, "rank", "not an integer: 'one'"),
    ("q Q0 d1 1 1.0 t\nq Q0 d2 2 high t\n", 2, "score", "not a number: 'high'"),
    ("q Q0 d1 1 nan t\n", 1, "score", "not a finite number"),
    ("q Q0 d1 1 inf t\n", 1, "score", "not a finite number"),
    ("q Q0 d1 1 3.0 t\nq Q0 d2 2 2.0 t\n\nq Q0 d1 3 1.0 t\n", 4, "docid", "first on line 1"),
])
def test_run_malformed(tmp_path: Path, body: str, line: int, field: str | None, says: str) -> None:
    path = write(tmp_path / "run.trec", body)
    with pytest.raises(InputError) as exc:
        read_run(path)
    check_error(exc, path, line, field, says)


def test_run_same_docid_in_two_queries_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "run.trec", "q1 Q0 d 1 1.0 t\nq2 Q0 d 1 1.0 t\n")
    assert read_run(path) == {"q1": [("d", 1.0)], "q2": [("d", 1.0)]}


def test_run_names_query_the_topics_lack(tmp_path: Path) -> None:
    topics = write(tmp_path / "topics.tsv", "1\tone\n2\ttwo\n")
    run_path = write(tmp_path / "run.trec", "1 Q0 a 1 2.0 t\n999 Q0 a 1 2.0 t\n")
    run = read_run(run_path)
    with pytest.raises(InputError) as exc:
        check_run_queries(run, read_topics(topics), run_path, topics)
    check_error(exc, run_path, None, "qid", says="'999'")
    assert str(topics) in str(exc.value)
    check_run_queries({"1": run["1"]}, read_topics(topics), run_path, topics)  # known queries pass


@pytest.mark.parametrize("reader", [read_topics, read_qrels, read_run, read_requests, read_beir_queries,
                                    read_beir_qrels, read_retrieve_results, read_candidates])
def test_empty_file(tmp_path: Path, reader) -> None:
    path = write(tmp_path / "empty.txt", "\n  \n")
    with pytest.raises(InputError) as exc:
        reader(path)
    check_error(exc, path, None, says="file is empty")


@pytest.mark.parametrize("reader", [read_topics, read_qrels, read_run, read_exclusions, read_requests,
                                    read_retrieve_results, read_candidates, read_beir_queries])
def test_missing_file(tmp_path: Path, reader) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(InputError) as exc:
        reader(path)
    check_error(exc, path, None, says="file not found")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        read_run(tmp_path)
    check_error(exc, tmp_path, None, says="not a file")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    path.write_bytes(b"q Q0 caf\xe9 1 1.0 t\n")
    with pytest.raises(InputError) as exc:
        read_run(path)
    check_error(exc, path, None, says="not UTF-8")


def test_retrieve_results_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(b'[{"query": "caf\xe9", "hits": []}]')
    for reader in (read_retrieve_results, read_candidates):
        with pytest.raises(InputError) as exc:
            reader(path)
        check_error(exc, path, None, says="not UTF-8")


def test_gz_that_is_not_gzip(tmp_path: Path) -> None:
    path = write(tmp_path / "run.trec.gz", "q Q0 d 1 1.0 t\n")
    with pytest.raises(InputError) as exc:
        read_run(path)
    check_error(exc, path, None, says="not a valid gzip file")


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(dl_file("dl19", "run").read_bytes())
    path = tmp_path / "run.trec.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        read_run(path)
    check_error(exc, path, None, says="not a valid gzip file")


def test_gzip_run_reads_like_plain(tmp_path: Path) -> None:
    path = tmp_path / "run.trec.gz"
    path.write_bytes(gzip.compress(dl_file("dl19", "run").read_bytes()))
    assert read_run(path) == read_run(dl_file("dl19", "run"))


# --------------------------------------------------------------------------------------------- exclusions


def test_read_exclusions(tmp_path: Path) -> None:
    path = write(tmp_path / "exclude.txt", "q1 d1\nq1 d2\n\nq2\td1\nq1 d1\n")
    assert read_exclusions(path) == {"q1": {"d1", "d2"}, "q2": {"d1"}}


def test_write_exclusions_round_trip(tmp_path: Path) -> None:
    excluded = {"0": {"a/b_1.txt", "a/b_2.txt"}, "1": ["x.txt"]}
    path = tmp_path / "exclude.txt"
    write_exclusions(path, excluded)
    assert read_exclusions(path) == {"0": {"a/b_1.txt", "a/b_2.txt"}, "1": {"x.txt"}}


def test_exclusions_for_a_domain_without_any_round_trip(tmp_path: Path) -> None:
    # most BRIGHT domains exclude nothing: the empty file write_exclusions writes must read back as no exclusions
    path = tmp_path / "exclude.txt"
    write_exclusions(path, {})
    assert path.read_text() == ""
    assert read_exclusions(path) == {}


@pytest.mark.parametrize("body, line", [("q1 d1\nq1\n", 2), ("q1 d1 extra\n", 1)])
def test_exclusions_wrong_column_count(tmp_path: Path, body: str, line: int) -> None:
    path = write(tmp_path / "exclude.txt", body)
    with pytest.raises(InputError) as exc:
        read_exclusions(path)
    check_error(exc, path, line, says="expected 2 columns")


# --------------------------------------------------------------------------------------------- rank_llm requests


def request_row(qid: str = "q1", docids: tuple = ("d1", "d2")) -> dict:
    return {"query": {"qid": qid, "text": f"text of {qid}"},
            "candidates": [{"docid": d, "score": 10.0 - i, "doc": {"contents": f"passage {d}"}}
                           for i, d in enumerate(docids)]}


def test_read_requests(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "cands.jsonl", [
        request_row("q1", ("d1", "d2")),
        "",
        {"query": {"qid": 7, "text": "numeric ids"},
         "candidates": [{"docid": 123, "doc": {"title": "T", "text": "body"}},
                        {"docid": "x", "score": 3, "doc": {"segment": "seg"}}]},
        {"query": {"qid": "empty", "text": "no candidates"}, "candidates": []},
    ])
    requests = read_requests(path)
    assert [r.query for r in requests] == [Query("q1", "text of q1"), Query("7", "numeric ids"),
                                          Query("empty", "no candidates")]
    assert [(c.docid, c.score, c.contents) for c in requests[0].candidates] == [
        ("d1", 10.0, "passage d1"), ("d2", 9.0, "passage d2")]
    assert [(c.docid, c.score, c.contents) for c in requests[1].candidates] == [
        ("123", 0.0, "T body"), ("x", 3.0, "seg")]
    assert requests[2].candidates == []
    assert read_candidates(path) == requests


def test_write_requests_round_trip(tmp_path: Path) -> None:
    requests = [
        Request(Query("q1", "first"), [Candidate("d1", 2.5, {"contents": "über passage"}),
                                       Candidate("d2", 1.0, {"title": "t", "text": "x"})]),
        Request(Query("q2", "second"), []),
    ]
    path = tmp_path / "out" / "cands.jsonl"
    assert write_requests(path, requests) == 2
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    assert "über" in path.read_text(encoding="utf-8")
    assert read_requests(path) == requests
    assert [r.to_dict() for r in read_candidates(path)] == [r.to_dict() for r in requests]


@pytest.mark.parametrize("row, field, says", [
    ('{"query": {"qid": "q2", "text": "x"}, "candidates": [', None, "invalid JSON"),
    ("[1, 2]", None, "expected a JSON object, got list"),
    ({"candidates": []}, "query", "missing"),
    ({"query": {"text": "x"}, "candidates": []}, "query.qid", "missing"),
    ({"query": {"qid": "q2", "text": "  "}, "candidates": []}, "query.text", "empty"),
    ({"query": {"qid": ["q2"], "text": "x"}, "candidates": []}, "query.qid", "expected a string, got list"),
    ({"query": {"qid": "q2", "text": "x"}}, "candidates", "missing or not a list"),
    ({"query": {"qid": "q2", "text": "x"}, "candidates": {"d": 1}}, "candidates", "missing or not a list"),
    ({"query": {"qid": "q2", "text": "x"}, "candidates": ["d1"]}, "candidates[0]", "expected an object"),
    ({"query": {"qid": "q2", "text": "x"},
      "candidates": [{"docid": "a", "doc": {"contents": "p"}}, {"doc": {"contents": "p"}}]},
     "candidates[1].docid", "missing"),
    ({"query": {"qid": "q2", "text": "x"}, "candidates": [{"docid": "a"}]}, "candidates[0].doc", "missing"),
    ({"query": {"qid": "q2", "text": "x"}, "candidates": [{"docid": "a", "doc": {"url": "u"}}]},
     "candidates[0].doc", "no passage text"),
    ({"query": {"qid": "q2", "text": "x"}, "candidates": [{"docid": "a", "score": "1.0", "doc": {"contents": "p"}}]},
     "candidates[0].score", "expected a finite number"),
    ({"query": {"qid": "q2", "text": "x"}, "candidates": [{"docid": "a", "score": True, "doc": {"contents": "p"}}]},
     "candidates[0].score", "expected a finite number"),
    (request_row("q2", ("a", "b", "a")), "candidates[2].docid", "appears twice"),
    (request_row("q1"), "query.qid", "duplicate query 'q1' (first on line 1)"),
])
def test_requests_malformed(tmp_path: Path, row, field: str | None, says: str) -> None:
    path = write_lines(tmp_path / "cands.jsonl", [request_row("q1"), "", row])
    with pytest.raises(InputError) as exc:
        read_requests(path)
    check_error(exc, path, 3, field, says)


# --------------------------------------------------------------------------------------------- retrieve results


def hit(qid, docid, score=1.0, content=None) -> dict:
    return {"content": content if content is not None else f"passage {docid}", "qid": qid, "docid": docid,
            "rank": 1, "score": score}


def test_read_retrieve_results(tmp_path: Path) -> None:
    data = [{"query": "first query", "hits": [hit(11, "a", 3.5), hit(11, "b", 2)]},
            {"query": "second query", "hits": [hit("22", 5, 1.25)]}]
    path = write(tmp_path / "results.json", "\n  " + json.dumps(data, indent=2))
    requests = read_retrieve_results(path)
    assert [r.query for r in requests] == [Query("11", "first query"), Query("22", "second query")]
    assert [(c.docid, c.score, c.doc) for c in requests[0].candidates] == [
        ("a", 3.5, {"contents": "passage a"}), ("b", 2.0, {"contents": "passage b"})]
    assert requests[1].candidates[0].docid == "5"
    assert read_candidates(path) == requests  # auto-detected by the leading '['


def test_read_candidates_detects_gzipped_retrieve_results(tmp_path: Path) -> None:
    path = tmp_path / "results.json.gz"
    path.write_bytes(gzip.compress(json.dumps([{"query": "q", "hits": [hit(1, "a")]}]).encode()))
    assert read_candidates(path) == [Request(Query("1", "q"), [Candidate("a", 1.0, {"contents": "passage a"})])]


@pytest.mark.parametrize("name", sorted(DL))
def test_read_retrieve_results_real_dl(name: str) -> None:
    requests = read_retrieve_results(dl_file(name, "results"))
    assert len(requests) == DL[name][2]
    assert all(len(r.candidates) == 100 for r in requests)
    assert all(c.contents.strip() for r in requests for c in r.candidates)
    # the JSON and the TREC run that rank_llm published together hold the same ranking
    run = read_run(dl_file(name, "run"))
    from_json = requests_to_run(requests)
    assert set(from_json) == set(run)
    for qid, ranking in from_json.items():
        assert {d for d, _ in ranking} == {d for d, _ in run[qid]}
        assert [s for _, s in ranking] == pytest.approx([s for _, s in run[qid]], rel=1e-6)


def test_read_candidates_real_dl19_autodetects() -> None:
    requests = read_candidates(dl_file("dl19", "results"))
    assert len(requests) == 43
    first = requests[0]
    assert first.query == Query("264014", "how long is life cycle of flea")
    assert first.candidates[0].docid == "5611210"
    assert first.candidates[0].contents.startswith("5. Cancel. A flea can live up to a year")


def test_retrieve_results_invalid_json_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "results.json", '[\n  {"query": "q",\n   "hits": [,]}\n]\n')
    with pytest.raises(InputError) as exc:
        read_retrieve_results(path)
    check_error(exc, path, 3, None, "invalid JSON")


def test_retrieve_results_not_a_list(tmp_path: Path) -> None:
    path = write(tmp_path / "results.json", json.dumps({"query": "q", "hits": [hit(1, "a")]}))
    with pytest.raises(InputError) as exc:
        read_retrieve_results(path)
    check_error(exc, path, None, None, "expected a JSON list")
    with pytest.raises(InputError) as exc:  # not starting with '[': read_candidates takes it for Request JSONL
        read_candidates(path)
    check_error(exc, path, 1, "query", "missing or not an object")


@pytest.mark.parametrize("data, field, says", [
    ([{"query": "q", "hits": [hit(1, "a")]}, "oops"], "[1]", "expected an object"),
    ([{"query": "q", "hits": [hit(1, "a")]}, {"query": "r"}], "[1].hits", "missing, empty or not a list"),
    ([{"query": "q", "hits": []}], "[0].hits", "missing, empty or not a list"),
    ([{"query": "q", "hits": {"docid": "a"}}], "[0].hits", "missing, empty or not a list"),
    ([{"hits": [hit(1, "a")]}], "[0].query", "missing or not a non-empty string"),
    ([{"query": 5, "hits": [hit(1, "a")]}], "[0].query", "missing or not a non-empty string"),
    ([{"query": "q", "hits": [hit(1, "a"), "b"]}], "[0].hits[1]", "expected an object"),
    ([{"query": "q", "hits": [hit(1, "a"), {"qid": 1, "content": "c"}]}], "[0].hits[1].docid", "missing"),
    ([{"query": "q", "hits": [{"qid": 1, "docid": "a"}]}], "[0].hits[0].content", "missing"),
    ([{"query": "q", "hits": [hit(1, "a", content="")]}], "[0].hits[0].content", "empty"),
    ([{"query": "q", "hits": [hit(1, {"id": "a"})]}], "[0].hits[0].docid", "expected a string, got dict"),
    ([{"query": "q", "hits": [hit(1, "a", score="high")]}], "[0].hits[0].score", "expected a finite number"),
    ([{"query": "q", "hits": [hit(1, "a"), hit(2, "b")]}], "[0].hits[1].qid", "differs"),
    ([{"query": "q", "hits": [hit(1, "a"), hit(1, "b"), hit(1, "a")]}], "[0].hits[2].docid", "appears twice"),
    ([{"query": "q", "hits": [hit(1, "a")]}, {"query": "q", "hits": [hit(1, "b")]}], "[1].hits[0].qid",
     "duplicate query '1'"),
])
def test_retrieve_results_malformed(tmp_path: Path, data, field: str | None, says: str) -> None:
    # one JSON document: errors name the entry and hit index instead of a line
    path = write(tmp_path / "results.json", json.dumps(data))
    for reader in (read_retrieve_results, read_candidates):
        with pytest.raises(InputError) as exc:
            reader(path)
        check_error(exc, path, None, field, says)


# --------------------------------------------------------------------------------------------- BEIR


def make_beir(folder: Path, queries_name: str = "queries.jsonl", header: bool = True) -> Path:
    write_lines(folder / "corpus.jsonl", [{"_id": "d1", "title": "Title one", "text": "first text"},
                                         {"_id": "d2", "title": "", "text": "second text"},
                                         {"_id": "d3", "text": "third text"}])
    write_lines(folder / queries_name, [{"_id": "q3", "text": "third  query\n"}, {"_id": "q1", "text": "first query"},
                                       {"_id": "q2", "text": "unjudged in test"}])
    write(folder / "qrels" / "test.tsv", ("query-id\tcorpus-id\tscore\n" if header else "") + "q1\td1\t1\nq3\td2\t2\n")
    write(folder / "qrels" / "dev.tsv", "query-id\tcorpus-id\tscore\nq2\td3\t1\n")
    return folder


def test_read_beir_folder(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "mini")
    beir = read_beir_folder(folder)
    assert beir.corpus == folder / "corpus.jsonl"
    assert beir.qrels_path == folder / "qrels" / "test.tsv"
    assert beir.queries == [Query("q3", "third query"), Query("q1", "first query")]  # judged ones, file order
    assert beir.qrels == {"q1": {"d1": 1}, "q3": {"d2": 2}}
    dev = read_beir_folder(folder, split="dev")
    assert dev.queries == [Query("q2", "unjudged in test")]


def test_read_beir_folder_split_queries_file(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "mini", queries_name="queries.test.jsonl")
    assert [q.qid for q in read_beir_folder(folder).queries] == ["q3", "q1"]


def test_read_beir_folder_real_scifact() -> None:
    folder = DATA / "beir" / "scifact"
    beir = read_beir_folder(folder)
    assert len(beir.queries) == 300
    assert sum(len(j) for j in beir.qrels.values()) == 339
    assert beir.queries[0] == Query("1", "0-dimensional biomaterials show inductive properties.")
    assert read_any_topics(folder / "queries.test.jsonl") == beir.queries
    assert read_any_qrels(folder / "qrels" / "test.tsv") == beir.qrels


@pytest.mark.parametrize("header", [True, False])
def test_read_beir_qrels_with_and_without_header(tmp_path: Path, header: bool) -> None:
    folder = make_beir(tmp_path / "mini", header=header)
    assert read_beir_qrels(folder / "qrels" / "test.tsv") == {"q1": {"d1": 1}, "q3": {"d2": 2}}


def test_auto_readers_tell_formats_apart(tmp_path: Path) -> None:
    beir_q = write_lines(tmp_path / "q.jsonl", [{"_id": "1", "text": "beir query"}])
    trec_q = write(tmp_path / "q.tsv", "1\ttrec query\n")
    assert read_any_topics(beir_q) == [Query("1", "beir query")]
    assert read_any_topics(trec_q) == [Query("1", "trec query")]
    beir_noheader = write(tmp_path / "beir.tsv", "1\td\t2\n")
    trec = write(tmp_path / "trec.txt", "1 0 d 2\n")
    assert read_any_qrels(beir_noheader) == read_any_qrels(trec) == {"1": {"d": 2}}


@pytest.mark.parametrize("rows, line, field, says", [
    ([{"_id": "1", "text": "a"}, '{"_id": "2", "text": }'], 2, None, "invalid JSON"),
    ([{"_id": "1", "text": "a"}, {"text": "no id"}], 2, "_id", "missing"),
    ([{"_id": "1", "text": "a"}, {"_id": "2"}], 2, "text", "missing"),
    ([{"_id": "1", "text": "a"}, {"_id": "2", "text": ""}], 2, "text", "empty"),
    ([{"_id": "1", "text": "a"}, {"_id": "2", "text": ["a"]}], 2, "text", "expected a string"),
    ([{"_id": "1", "text": "a"}, {"_id": "1", "text": "b"}], 2, "_id", "duplicate query id '1'"),
])
def test_beir_queries_malformed(tmp_path: Path, rows: list, line: int, field: str | None, says: str) -> None:
    path = write_lines(tmp_path / "queries.jsonl", rows)
    with pytest.raises(InputError) as exc:
        read_beir_queries(path)
    check_error(exc, path, line, field, says)


@pytest.mark.parametrize("body, line, field, says", [
    ("query-id\tcorpus-id\tscore\nq1\td1\n", 2, None, "expected 3 tab-separated columns"),
    ("query-id\tcorpus-id\tscore\nq1 d1 1\n", 2, None, "got 1"),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\tyes\n", 3, "score", "not an integer: 'yes'"),
    ("q1\td1\t1\nq1\td1\t0\n", 2, "corpus-id", "duplicate judgment"),
])
def test_beir_qrels_malformed(tmp_path: Path, body: str, line: int, field: str | None, says: str) -> None:
    path = write(tmp_path / "test.tsv", body)
    with pytest.raises(InputError) as exc:
        read_beir_qrels(path)
    check_error(exc, path, line, field, says)


@pytest.mark.parametrize("remove, says", [
    ("corpus.jsonl", "missing corpus.jsonl"),
    ("queries.jsonl", "missing queries.jsonl"),
    ("qrels/test.tsv", "missing qrels/test.tsv"),
])
def test_beir_folder_incomplete(tmp_path: Path, remove: str, says: str) -> None:
    folder = make_beir(tmp_path / "mini")
    (folder / remove).unlink()
    with pytest.raises(InputError) as exc:
        read_beir_folder(folder)
    check_error(exc, folder, None, says=says)


def test_beir_folder_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        read_beir_folder(tmp_path / "absent")
    check_error(exc, tmp_path / "absent", None, says="not found")


def test_beir_folder_judged_query_without_text(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "mini")
    write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq404\td2\t1\n")
    with pytest.raises(InputError) as exc:
        read_beir_folder(folder)
    check_error(exc, folder / "qrels" / "test.tsv", None, says="q404")


# --------------------------------------------------------------------------------------------- collections


def test_iter_corpus_json_collection_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "contents": "alpha"}, "", {"id": 2, "contents": "beta"}])
    assert list(iter_corpus(path)) == [Document("a", "alpha"), Document("2", "beta")]


def test_iter_corpus_json_collection_folder(tmp_path: Path) -> None:
    folder = tmp_path / "collection"
    write_lines(folder / "part-b.jsonl", [{"id": "b1", "contents": "b one"}])
    write_lines(folder / "part-a.jsonl", [{"id": "a1", "contents": "a one"}, {"id": "a2", "contents": "a two"}])
    (folder / "part-c.jsonl.gz").write_bytes(gzip.compress(b'{"id": "c1", "contents": "c one"}\n'))
    write(folder / "README.md", "not a corpus file\n")
    assert corpus_files(folder) == [folder / "part-a.jsonl", folder / "part-b.jsonl", folder / "part-c.jsonl.gz"]
    assert [d.docid for d in iter_corpus(folder)] == ["a1", "a2", "b1", "c1"]


def test_iter_corpus_beir_file_and_folder(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "mini")
    expected = [Document("d1", "Title one first text"), Document("d2", "second text"), Document("d3", "third text")]
    assert list(iter_corpus(folder / "corpus.jsonl")) == expected
    assert list(iter_corpus(folder)) == expected  # a BEIR folder means its corpus.jsonl only
    assert corpus_files(folder) == [folder / "corpus.jsonl"]


def test_iter_corpus_real_scifact() -> None:
    docs = list(iter_corpus(DATA / "beir" / "scifact" / "corpus.jsonl"))
    assert len(docs) == 5183
    assert len({d.docid for d in docs}) == 5183
    assert docs[0].docid == "4983"
    assert docs[0].contents.startswith("Microstructural development of human newborn cerebral white matter")
    assert all(d.contents.strip() for d in docs)


@pytest.mark.parametrize("row, field, says", [
    ('{"id": "b", "contents": "x"', None, "invalid JSON"),
    ('"just a string"', None, "expected a JSON object, got str"),
    ({"id": "b"}, "contents", "missing"),
    ({"id": "b", "text": "text is not JsonCollection"}, "contents", "missing"),
    ({"id": "b", "contents": " "}, "contents", "empty"),
    ({"id": None, "contents": "x"}, "id", "missing"),
    ({"docid": "b", "contents": "x"}, "id", "expected '_id' (BEIR corpus) or 'id'"),
    ({"_id": "b", "title": "t"}, "text", "missing"),
    ({"_id": "b", "title": "", "text": ""}, "text", "both title and text are empty"),
    ({"_id": "", "text": "x"}, "_id", "empty"),
    ({"_id": "b", "title": 5, "text": "x"}, "title", "expected a string, got int"),
    ({"id": "a", "contents": "again"}, "id", "duplicate docid 'a'"),
])
def test_corpus_malformed(tmp_path: Path, row, field: str | None, says: str) -> None:
    path = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "contents": "alpha"}, "", row])
    with pytest.raises(InputError) as exc:
        list(iter_corpus(path))
    check_error(exc, path, 3, field, says)


def test_corpus_duplicate_docid_across_files_names_both(tmp_path: Path) -> None:
    folder = tmp_path / "collection"
    first = write_lines(folder / "a.jsonl", [{"id": "x", "contents": "one"}, {"id": "dup", "contents": "two"}])
    second = write_lines(folder / "b.jsonl", [{"id": "dup", "contents": "three"}])
    with pytest.raises(InputError) as exc:
        list(iter_corpus(folder))
    check_error(exc, second, 1, "id", says=f"first at {first}:2")


def test_corpus_folder_without_jsonl(tmp_path: Path) -> None:
    write(tmp_path / "notes.txt", "hello\n")
    with pytest.raises(InputError) as exc:
        corpus_files(tmp_path)
    check_error(exc, tmp_path, None, says="no corpus.jsonl")
    with pytest.raises(InputError) as exc:
        corpus_files(tmp_path / "absent")
    check_error(exc, tmp_path / "absent", None, says="corpus not found")


# --------------------------------------------------------------------------------------------- BRIGHT

EXAMPLES_SCHEMA = pa.schema([
    ("query", pa.string()), ("reasoning", pa.string()), ("id", pa.string()),
    ("excluded_ids", pa.list_(pa.string())), ("gold_ids_long", pa.list_(pa.string())),
    ("gold_ids", pa.list_(pa.string())), ("gold_answer", pa.string()),
])
DOCUMENTS_SCHEMA = pa.schema([("id", pa.string()), ("content", pa.string())])
EXCLUDED = ["insects_attracted_to_light/Moth_0.txt", "insects_attracted_to_light/Moth_1.txt"]


def bright_examples() -> list[dict]:
    """Three real BRIGHT biology examples (copied from the published dataset into tests/fixtures)."""
    return [json.loads(line) for line in (FIXTURES / "bright_biology_examples.jsonl").read_text("utf-8").splitlines()]


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def make_bright(root: Path, examples: list[dict] | None = None) -> tuple[Path, list[dict]]:
    """The Hugging Face layout of xlangai/BRIGHT for the biology split: examples/, documents/, long_documents/."""
    examples = bright_examples() if examples is None else examples
    write_parquet(root / "examples" / "biology-00000-of-00001.parquet", examples, EXAMPLES_SCHEMA)
    short_ids = [d for ex in examples for d in ex["gold_ids"]] + EXCLUDED
    long_ids = [d for ex in examples for d in ex["gold_ids_long"]]
    write_parquet(root / "documents" / "biology-00000-of-00001.parquet",
                  [{"id": d, "content": f"content of {d}"} for d in short_ids], DOCUMENTS_SCHEMA)
    write_parquet(root / "long_documents" / "biology-00000-of-00001.parquet",
                  [{"id": d, "content": f"long content of {d}"} for d in long_ids], DOCUMENTS_SCHEMA)
    # another domain beside it, as in the real folder
    write_parquet(root / "examples" / "economics-00000-of-00001.parquet",
                  [{**examples[0], "id": "e0"}], EXAMPLES_SCHEMA)
    return root, examples


def test_bright_fixture_rows_are_the_published_fields() -> None:
    rows = bright_examples()
    assert len(rows) == 3
    assert all(list(r) == EXAMPLES_SCHEMA.names for r in rows)
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert all(r["excluded_ids"] == ["N/A"] for r in rows)


def test_load_bright_domain(tmp_path: Path) -> None:
    root, examples = make_bright(tmp_path / "BRIGHT")
    domain = load_bright_domain(root, "biology")
    assert isinstance(domain, BrightDomain)
    assert domain.domain == "biology"
    assert domain.queries == [Query(ex["id"], ex["query"]) for ex in examples]
    assert domain.queries[1].text.startswith("Why do I only breathe out of one nostril?")
    assert domain.qrels == {ex["id"]: {d: 1 for d in ex["gold_ids"]} for ex in examples}
    assert domain.qrels["0"] == {
        "insects_attracted_to_light/Proximate_and_ultimate_causation_0.txt": 1,
        "insects_attracted_to_light/Proximate_and_ultimate_causation_1.txt": 1,
        "insects_attracted_to_light/Phototaxis_0.txt": 1,
        "insects_attracted_to_light/Phototaxis_3.txt": 1,
        "insects_attracted_to_light/Phototaxis_4.txt": 1,
    }
    assert domain.excluded == {"0": set(), "1": set(), "2": set()}  # ["N/A"] means none
    assert domain.documents_files == [root / "documents" / "biology-00000-of-00001.parquet"]


def test_load_bright_domain_long(tmp_path: Path) -> None:
    root, examples = make_bright(tmp_path / "BRIGHT")
    domain = load_bright_domain(root, "biology", long=True)
    assert domain.qrels["1"] == {"breathe_out_of_one_nostril/Nasal_cycle.txt": 1}
    assert domain.qrels == {ex["id"]: {d: 1 for d in ex["gold_ids_long"]} for ex in examples}
    assert domain.documents_files == [root / "long_documents" / "biology-00000-of-00001.parquet"]
    docs = list(iter_bright_documents(domain.documents_files))
    assert {d.docid for d in docs} == {d for ex in examples for d in ex["gold_ids_long"]}


def test_bright_excluded_ids(tmp_path: Path) -> None:
    examples = bright_examples()
    examples[0]["excluded_ids"] = EXCLUDED
    examples[2]["excluded_ids"] = None
    root, _ = make_bright(tmp_path / "BRIGHT", examples)
    domain = load_bright_domain(root, "biology")
    assert domain.excluded == {"0": set(EXCLUDED), "1": set(), "2": set()}
    path = tmp_path / "exclude.txt"
    write_exclusions(path, domain.excluded)
    assert read_exclusions(path) == {"0": set(EXCLUDED)}


def test_iter_bright_documents(tmp_path: Path) -> None:
    root, examples = make_bright(tmp_path / "BRIGHT")
    domain = load_bright_domain(root, "biology")
    docs = list(iter_bright_documents(domain.documents_files))
    gold = [d for ex in examples for d in ex["gold_ids"]]
    assert [d.docid for d in docs] == gold + EXCLUDED
    assert docs[0] == Document(gold[0], f"content of {gold[0]}")
    assert all(docid in {d.docid for d in docs} for judged in domain.qrels.values() for docid in judged)


def test_iter_bright_documents_streams_several_shards(tmp_path: Path) -> None:
    ids = [f"doc_{i}.txt" for i in range(5000)]  # more than one record batch
    first = write_parquet(tmp_path / "documents" / "biology-00000-of-00002.parquet",
                          [{"id": d, "content": d} for d in ids[:4500]], DOCUMENTS_SCHEMA)
    second = write_parquet(tmp_path / "documents" / "biology-00001-of-00002.parquet",
                           [{"id": d, "content": d} for d in ids[4500:]], DOCUMENTS_SCHEMA)
    assert [d.docid for d in iter_bright_documents([first, second])] == ids


def test_load_bright_domain_several_example_shards(tmp_path: Path) -> None:
    root, examples = make_bright(tmp_path / "BRIGHT")
    (root / "examples" / "biology-00000-of-00001.parquet").unlink()
    write_parquet(root / "examples" / "biology-00000-of-00002.parquet", examples[:2], EXAMPLES_SCHEMA)
    write_parquet(root / "examples" / "biology-00001-of-00002.parquet", examples[2:], EXAMPLES_SCHEMA)
    assert [q.qid for q in load_bright_domain(root, "biology").queries] == ["0", "1", "2"]


def test_resolve_bright_root_local_folder(tmp_path: Path) -> None:
    root, _ = make_bright(tmp_path / "BRIGHT")
    assert resolve_bright_root(root) == root
    assert resolve_bright_root(str(root)) == root


def test_resolve_bright_root_folder_without_examples(tmp_path: Path) -> None:
    write_parquet(tmp_path / "documents" / "biology-00000-of-00001.parquet", [{"id": "a", "content": "x"}],
                  DOCUMENTS_SCHEMA)
    with pytest.raises(InputError) as exc:
        resolve_bright_root(tmp_path)
    check_error(exc, tmp_path, None, says="expected an 'examples/' subfolder")


def test_bright_unknown_domain(tmp_path: Path) -> None:
    root, _ = make_bright(tmp_path / "BRIGHT")
    with pytest.raises(InputError) as exc:
        load_bright_domain(root, "biolgy")
    assert "unknown BRIGHT domain 'biolgy'" in str(exc.value)
    assert "biology" in str(exc.value)


def test_bright_domain_without_split_files(tmp_path: Path) -> None:
    root, _ = make_bright(tmp_path / "BRIGHT")
    with pytest.raises(InputError) as exc:
        load_bright_domain(root, "pony")
    check_error(exc, root / "examples", None, says="no parquet files for split 'pony'")
    with pytest.raises(InputError) as exc:  # examples exist for economics, documents do not
        load_bright_domain(root, "economics")
    check_error(exc, root / "documents", None, says="'economics'")


def test_bright_folder_without_examples(tmp_path: Path) -> None:
    (tmp_path / "documents").mkdir()
    with pytest.raises(InputError) as exc:
        load_bright_domain(tmp_path, "biology")
    check_error(exc, tmp_path / "examples", None, says="no parquet files")


@pytest.mark.parametrize("column", ["id", "query", "excluded_ids", "gold_ids"])
def test_bright_examples_missing_column(tmp_path: Path, column: str) -> None:
    schema = pa.schema([f for f in EXAMPLES_SCHEMA if f.name != column])
    rows = [{k: v for k, v in ex.items() if k != column} for ex in bright_examples()]
    path = write_parquet(tmp_path / "examples" / "biology-00000-of-00001.parquet", rows, schema)
    with pytest.raises(InputError) as exc:
        load_bright_domain(tmp_path, "biology")
    check_error(exc, path, None, column, "missing column")


def test_bright_long_setting_needs_gold_ids_long(tmp_path: Path) -> None:
    schema = pa.schema([f for f in EXAMPLES_SCHEMA if f.name != "gold_ids_long"])
    rows = [{k: v for k, v in ex.items() if k != "gold_ids_long"} for ex in bright_examples()]
    path = write_parquet(tmp_path / "examples" / "biology-00000-of-00001.parquet", rows, schema)
    write_parquet(tmp_path / "documents" / "biology-00000-of-00001.parquet", [{"id": "a", "content": "x"}],
                  DOCUMENTS_SCHEMA)
    assert len(load_bright_domain(tmp_path, "biology").queries) == 3  # the short setting does not need it
    with pytest.raises(InputError) as exc:
        load_bright_domain(tmp_path, "biology", long=True)
    check_error(exc, path, None, "gold_ids_long", "missing column")


@pytest.mark.parametrize("change, field, says", [
    ({"id": ""}, "id", "missing or empty"),
    ({"query": " "}, "query", "missing or empty"),
    ({"id": "0"}, "id", "duplicate query id '0'"),
    ({"gold_ids": ["N/A"]}, "gold_ids", "no relevant documents"),
    ({"gold_ids": []}, "gold_ids", "no relevant documents"),
])
def test_bright_examples_bad_row(tmp_path: Path, change: dict, field: str, says: str) -> None:
    examples = bright_examples()
    examples[2].update(change)
    root, _ = make_bright(tmp_path / "BRIGHT", examples)
    with pytest.raises(InputError) as exc:
        load_bright_domain(root, "biology")
    check_error(exc, root / "examples" / "biology-00000-of-00001.parquet", 3, field, says)


def test_bright_excluded_ids_wrong_type(tmp_path: Path) -> None:
    schema = pa.schema([f if f.name != "excluded_ids" else pa.field("excluded_ids", pa.string())
                        for f in EXAMPLES_SCHEMA])
    rows = [{**ex, "excluded_ids": "N/A"} for ex in bright_examples()]
    path = write_parquet(tmp_path / "examples" / "biology-00000-of-00001.parquet", rows, schema)
    with pytest.raises(InputError) as exc:
        load_bright_domain(tmp_path, "biology")
    check_error(exc, path, 1, "excluded_ids", "expected a list of strings")


@pytest.mark.parametrize("rows, schema, line, field, says", [
    ([{"id": "a", "text": "x"}], pa.schema([("id", pa.string()), ("text", pa.string())]), None, "content",
     "missing column"),
    ([{"id": "a", "content": "x"}, {"id": "a", "content": "y"}], DOCUMENTS_SCHEMA, 2, "id", "duplicate document id"),
    ([{"id": "a", "content": "x"}, {"id": None, "content": "y"}], DOCUMENTS_SCHEMA, 2, "id", "missing or empty"),
    ([{"id": "a", "content": None}], DOCUMENTS_SCHEMA, 1, "content", "missing"),
])
def test_bright_documents_malformed(tmp_path: Path, rows, schema, line, field, says) -> None:
    path = write_parquet(tmp_path / "documents" / "biology-00000-of-00001.parquet", rows, schema)
    with pytest.raises(InputError) as exc:
        list(iter_bright_documents([path]))
    check_error(exc, path, line, field, says)


def test_bright_file_that_is_not_parquet(tmp_path: Path) -> None:
    root, _ = make_bright(tmp_path / "BRIGHT")
    broken = write(root / "examples" / "biology-00000-of-00001.parquet", "<html>rate limited</html>\n")
    with pytest.raises(InputError) as exc:
        load_bright_domain(root, "biology")
    check_error(exc, broken, None, says="cannot read parquet")
    docs = write(root / "documents" / "biology-00000-of-00001.parquet", "")
    with pytest.raises(InputError) as exc:
        list(iter_bright_documents([docs]))
    check_error(exc, docs, None, says="cannot read parquet")


def test_evaluation_averages_over_the_run_queries_only() -> None:
    from rearank_core.evaluation import evaluate

    qrels = {"1": {"a": 1}, "2": {"b": 1}}
    result = evaluate({"1": [("a", 1.0)]}, qrels)
    assert result.metrics["ndcg@10"] == 1.0
    assert result.queries_evaluated == 1 and result.judged_queries_missing_from_run == ["2"]
