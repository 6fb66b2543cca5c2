"""Training data: augmentation (determinism, thresholds), the leakage guard, the gold teacher, a model teacher
against a real 127.0.0.1 server (malformed answers, a server that dies, kill -9 of the CLI, resume), the
self-consistency filter and the SFT/GRPO records."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import DATA, DL19, ROOT
from typer.testing import CliRunner

from rearank_core.cli import app as cli
from rearank_core.config import (
    DataConfig,
    DataSource,
    EvalSet,
    FilterConfig,
    TeacherConfig,
)
from rearank_core.data.augment import AugmentStats, augment
from rearank_core.data.build import build_records
from rearank_core.data.filter import filter_records
from rearank_core.data.leakage import check_leakage, load_eval_queries, normalise_query
from rearank_core.data.teacher import distill, gold_answer, journal_path
from rearank_core.errors import InputError
from rearank_core.evaluation import window_ndcg
from rearank_core.io.auto import read_any_qrels
from rearank_core.io.requests import read_candidates
from rearank_core.io.training_data import TeacherRecord, WindowRecord, read_records
from rearank_core.prompts import clean_passage, load_template, render

DL21 = DATA / "msmarco" / "dl21"
DL21_SOURCE = DataSource("dl21", str(DL21 / "rank_llm_BM25_retrieve_results_dl21.json"),
                         str(DL21 / "qrels.dl21-passage.txt"))
EVAL_SETS = (EvalSet("dl19", str(DL19 / "topics.dl19-passage.txt"), "msmarco-passage"),
             EvalSet("dl20", str(DATA / "msmarco" / "dl20" / "topics.dl20.txt"), "msmarco-passage"),
             EvalSet("scifact-test", str(DATA / "beir" / "scifact" / "queries.test.jsonl")))


@pytest.fixture(scope="module")
def dl21() -> tuple[list, dict]:
    return read_candidates(DL21_SOURCE.candidates), read_any_qrels(DL21_SOURCE.qrels)


def windows_of(dl21: tuple[list, dict], **knobs: object) -> tuple[list[WindowRecord], AugmentStats]:
    stats = AugmentStats()
    return augment(dl21[0], dl21[1], "dl21", replace(DataConfig(per_query=4), **knobs), stats), stats


def test_same_seed_same_windows_other_seed_other_windows(dl21: tuple[list, dict]) -> None:
    first, _ = windows_of(dl21, seed=7)
    again, _ = windows_of(dl21, seed=7)
    other, _ = windows_of(dl21, seed=8)
    assert [w.to_dict() for w in first] == [w.to_dict() for w in again]
    assert [w.docids for w in first] != [w.docids for w in other]
    # A query's windows do not depend on the other queries: drop the first query, the rest stay the same.
    later = augment(dl21[0][1:], dl21[1], "dl21", DataConfig(per_query=4, seed=7))
    assert [w.to_dict() for w in later] == [w.to_dict() for w in first if w.qid != dl21[0][0].query.qid]


def test_windows_carry_labels_passages_and_initial_ndcg(dl21: tuple[list, dict]) -> None:
    windows, stats = windows_of(dl21, min_ndcg=0.0)
    requests, qrels = dl21
    by_qid = {r.query.qid: r for r in requests}
    assert stats.queries == 53 and stats.drawn == 53 * 4 and stats.kept == len(windows)
    assert len({w.id for w in windows}) == len(windows)
    for w in windows:
        pool = {c.docid: c for c in by_qid[w.qid].candidates[:100]}
        assert len(w.docids) == len(set(w.docids)) == 20 and set(w.docids) <= set(pool)
        assert w.labels == [qrels[w.qid].get(d, 0) for d in w.docids] and any(w.labels)
        assert w.passages == [clean_passage(pool[d].contents) for d in w.docids]
    assert [w.initial_ndcg10 for w in windows] == pytest.approx(window_ndcg([w.labels for w in windows]), abs=1e-6)
    assert sum(w.docids != [c.docid for c in by_qid[w.qid].candidates if c.docid in w.docids] for w in windows) > 0


def test_thresholds_drop_windows(dl21: tuple[list, dict]) -> None:
    everything, loose = windows_of(dl21, min_ndcg=0.0)
    strict, tight = windows_of(dl21, min_ndcg=0.5)
    assert loose.dropped_no_relevant == tight.dropped_no_relevant > 0  # the same draws, seed 0
    assert tight.dropped_low_ndcg > 0 and all(w.initial_ndcg10 >= 0.5 for w in strict)
    assert tight.kept + tight.dropped_low_ndcg + tight.dropped_no_relevant == tight.drawn
    assert {w.id for w in strict} == {w.id for w in everything if w.initial_ndcg10 >= 0.5}
    small, counts = windows_of(dl21, window=5, top_n=10, per_query=2)
    assert all(len(w.docids) == 5 for w in small)
    assert counts.kept_ideal == sum(w.initial_ndcg10 == 1.0 for w in small) > 0  # kept, and counted in the card


def test_sliding_windows_are_the_rerankers_windows_in_first_stage_order(dl21: tuple[list, dict]) -> None:
    windows, stats = windows_of(dl21, draw="sliding", window=10, step=5, top_n=32, min_ndcg=0.0)
    requests, qrels = dl21
    first = requests[0]
    ranked = [c.docid for c in first.candidates[:32]]
    # 0-10, 5-15, 10-20, 15-25, 20-30 and a last one ending at rank 32, so every candidate is in a window
    expected = [ranked[s:s + 10] for s in (0, 5, 10, 15, 20, 22)]
    assert [w.docids for w in windows if w.qid == first.query.qid] == [d for d in expected
                                                                       if any(qrels[first.query.qid].get(x, 0) for x in d)]
    assert stats.drawn == 53 * 6 and stats.kept + stats.dropped_no_relevant == stats.drawn
    assert [w.docids for w in windows_of(dl21, draw="sliding", window=10, step=5, top_n=32, seed=9)[0]] == \
        [w.docids for w in windows]  # no randomness: the seed does not matter

def test_leakage_guard_by_normalised_text_and_by_id_within_a_namespace(dl21: tuple[list, dict]) -> None:
    evals = load_eval_queries(EVAL_SETS)
    check_leakage(dl21[0], DL21_SOURCE.candidates, evals, EVAL_SETS, "msmarco-passage")  # DL21 shares nothing
    dl19_qid, dl19_text = (DL19 / "topics.dl19-passage.txt").read_text().splitlines()[0].split("\t")
    by_id = replace(dl21[0][0], query=replace(dl21[0][0].query, qid=dl19_qid))
    with pytest.raises(InputError) as caught:
        check_leakage([by_id], "train.jsonl", evals, EVAL_SETS, "msmarco-passage")
    assert str(caught.value).startswith("train.jsonl: field 'query': query " + dl19_qid)
    assert "evaluation set dl19" in str(caught.value)
    assert "the same query id in id namespace 'msmarco-passage'" in str(caught.value)
    check_leakage([by_id], "train.jsonl", evals, EVAL_SETS)  # a source of no namespace: its id is another query's
    by_text = replace(dl21[0][0], query=replace(dl21[0][0].query, qid="my-own-7", text=f"  {dl19_text.upper()} ?"))
    with pytest.raises(InputError, match=r"evaluation set dl19 \(.*\): the same query text \(normalised\)"):
        check_leakage([by_text], "train.jsonl", evals, EVAL_SETS)
    assert normalise_query("What IS  a flea's life-cycle?") == "what is a flea s life cycle"


def test_cli_augment_runs_anywhere_and_guards_by_text_not_by_a_colliding_id(tmp_path: Path) -> None:
    """Outside a project (no data_job in its params): a user's own queries numbered 1.. pass although SciFact's test
    set has a query "1"; a DL19 query's text under the user's own id is refused. Cards land beside --out."""
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"data": {"eval_sets": [{"name": e.name, "topics": e.topics,
                                                          "id_namespace": e.id_namespace} for e in EVAL_SETS]},
                                  "tracking": {"enabled": False}}))
    dl19_text = (DL19 / "topics.dl19-passage.txt").read_text().splitlines()[0].split("\t")[1]
    requests = json.loads((DL19 / "rank_llm_BM25_retrieve_results_dl19.json").read_text())[:1]
    qid = requests[0]["hits"][0]["qid"]
    mine = [{"query": "how do penguins keep their eggs warm in winter",
             "hits": [{**hit, "qid": "1"} for hit in requests[0]["hits"]]}]
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(line.replace(f"{qid} ", "1 ", 1) for line in
                             (DL19 / "qrels.dl19-passage.txt").read_text().splitlines(keepends=True)
                             if line.startswith(f"{qid} ")))
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    with contextlib.chdir(tmp_path):
        done = CliRunner().invoke(cli, ["data", "augment", "--candidates", "mine.json", "--qrels", "qrels.txt",
                                        "--out", "out/windows.jsonl", "--per-query", "2", "--window", "5", "-q"],
                                  env={"NO_COLOR": "1", "COLUMNS": "200"})
        assert done.exit_code == 0, done.stderr
        assert {json.loads(line)["qid"] for line in Path("out/windows.jsonl").read_text().splitlines()} == {"1"}
        assert json.loads(Path("out/cards/windows.json").read_text())["eval_sets_checked"] == [
            "dl19", "dl20", "scifact-test"]
        (tmp_path / "theirs.json").write_text(json.dumps([{**mine[0], "query": dl19_text}]))
        refused = CliRunner().invoke(cli, ["data", "augment", "--candidates", "theirs.json", "--qrels", "qrels.txt",
                                           "--out", "out/refused.jsonl", "-q"], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert refused.exit_code == 2 and "Traceback" not in refused.stderr
    assert "query 1 " in refused.stderr and "evaluation set dl19" in refused.stderr
    assert "the same query text (normalised)" in refused.stderr and not (tmp_path / "out/refused.jsonl").exists()


def test_gold_teacher_ranks_by_qrels_and_says_so() -> None:
    window = WindowRecord("s/q/000", "s", "q", "how long do fleas live", ["a", "b", "c", "d"],
                          ["Cats sleep.", "Fleas live a year.", "Dogs", "How fleas live"], [0, 2, 0, 2], 0.5)
    record = gold_answer(window)
    assert record.final == [2, 4, 1, 3] and record.relevant == [2, 4] and record.teacher == "gold"
    assert "[2] contains long? " not in record.reasoning
    assert "[2] contains fleas, live." in record.reasoning and "[1] contains no query term." in record.reasoning
    assert "teacher: gold; not model reasoning" in record.reasoning


class TeacherServer(ThreadingHTTPServer):
    """A Chat Completions server on 127.0.0.1 for teacher prompts; ``answer(n, index)`` gives the reply text for
    a window of n passages (None: HTTP 503; a text without ``</answer>`` is cut off by the token limit),
    ``delay_s`` slows every reply; ``seen`` counts the requests per window (by its first passage)."""

    daemon_threads = True

    def __init__(self, answer: Callable[[int, int], str | None], delay_s: float = 0.0):
        super().__init__(("127.0.0.1", 0), _TeacherHandler)
        self.answer, self.delay_s, self.lock, self.seen = answer, delay_s, threading.Lock(), Counter()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"


class _TeacherHandler(BaseHTTPRequestHandler):
    server: TeacherServer

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        n = int(re.search(r"Finally rank all (\d+) passages", prompt).group(1))
        first = re.search(r"^\[1\] (.*)$", prompt, re.M).group(1)
        with self.server.lock:
            index = sum(self.server.seen.values())
            self.server.seen[first] += 1
        time.sleep(self.server.delay_s)
        text = self.server.answer(n, index)
        if text is None:
            self.send_response(503)
            self.end_headers()
            return
        data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                        "finish_reason": "stop" if "</answer>" in text else "length"}],
                           "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def good(n: int, index: int) -> str:
    return (f"<think>passage 2 answers it</think><relevant>[2], [1]</relevant><answer>"
            f"{' > '.join(f'[{i}]' for i in [2, 1, *range(3, n + 1)])}</answer>")


@pytest.fixture
def serve() -> Iterator[Callable[..., TeacherServer]]:
    servers: list[TeacherServer] = []

    def start(answer: Callable[[int, int], str | None], delay_s: float = 0.0) -> TeacherServer:
        server = TeacherServer(answer, delay_s)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def small_windows(n: int = 12) -> list[WindowRecord]:
    return [WindowRecord(f"s/q{i}/000", "s", f"q{i}", f"query {i}", [f"d{i}-{j}" for j in range(5)],
                         [f"w{i} passage {j}" for j in range(5)], [0, 1, 0, 2, 0], 0.4) for i in range(n)]


def teacher_cfg(server: TeacherServer, **knobs: object) -> TeacherConfig:
    return TeacherConfig(model="r1", base_url=server.url, concurrency=3, max_retries=0, timeout_s=10, **knobs)


def test_model_teacher_records_answers_and_the_reasons_for_none(serve, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")

    def mixed(n: int, index: int) -> str:
        return [good(n, index), "<think>hm</think><answer>[1] > [1]</answer>", "<think>x</think><answer>"
                + " > ".join(f"[{i}]" for i in range(1, n + 1)) + "</answer>"][index % 3]

    server = serve(mixed)
    out = tmp_path / "teacher.jsonl"
    stats = distill(small_windows(), out, teacher_cfg(server, price_prompt_per_mtok=1.0, price_completion_per_mtok=2.0))
    records = read_records(out, TeacherRecord)
    assert [r.id for r in records] == [w.id for w in small_windows()]  # window order, one each
    assert Counter(r.status for r in records) == {"ok": 4, "malformed": 4, "no_relevant": 4} == stats.status
    ok = next(r for r in records if r.status == "ok")
    assert ok.final == [2, 1, 3, 4, 5] and ok.relevant == [2, 1] and ok.reasoning == "passage 2 answers it"
    assert all(r.error for r in records if r.status != "ok")
    assert stats.prompt_tokens == 12_000 and stats.cost == pytest.approx((12_000 * 1.0 + 1_200 * 2.0) / 1e6)
    assert not journal_path(out).exists()


def test_a_server_that_dies_half_way_loses_nothing_and_the_rerun_resumes(serve, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    back = threading.Event()  # the server answers 503 after its sixth answer until it is back
    server = serve(lambda n, index: good(n, index) if index < 6 or back.is_set() else None)
    out = tmp_path / "teacher.jsonl"
    first = distill(small_windows(), out, teacher_cfg(server))
    assert first.status == {"ok": 6, "failed": 6}
    failed = [r for r in read_records(out, TeacherRecord) if r.status == "failed"]
    assert all("503" in r.error for r in failed)
    done_before = {r.id for r in read_records(out, TeacherRecord) if r.status == "ok"}

    back.set()
    sent = sum(server.seen.values())
    second = distill(small_windows(), out, teacher_cfg(server))
    assert second.resumed == 6 and second.status == {"ok": 12}
    assert sum(server.seen.values()) - sent == 6  # only the failed windows were sent again
    records = read_records(out, TeacherRecord)
    assert len(records) == len({r.id for r in records}) == 12 and done_before < {r.id for r in records}


@pytest.mark.integration  # a teacher server and two CLI processes, one killed: ~20 s
def test_kill_9_of_the_teacher_command_keeps_every_finished_record_once(serve, tmp_path: Path) -> None:
    slow = serve(good, delay_s=0.3)
    windows = tmp_path / "windows.jsonl"
    windows.write_text("".join(json.dumps(w.to_dict()) + "\n" for w in small_windows(30)))
    out = tmp_path / "teacher.jsonl"
    cmd = [sys.executable, "-m", "rearank_core.cli", "data", "teacher", "--windows", str(windows), "--out", str(out),
           "--model", "r1", "--base-url", slow.url, "--concurrency", "2", "--cards", str(tmp_path / "cards"),
           "--params", str(tmp_path / "none.yaml"), "-q"]
    env = {**os.environ, "OPENAI_API_KEY": "test-key", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = journal_path(out)
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or journal.read_text().count("\n") < 8):
        assert proc.poll() is None, proc.stderr.read().decode()  # still running, not failed early
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    text = journal.read_text()
    before = {json.loads(line)["id"]: line for line in text[:text.rfind("\n") + 1].splitlines()}
    assert 8 <= len(before) < 30

    rerun = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(before)} resumed)" in rerun.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [w.id for w in small_windows(30)]
    assert all(json.dumps(r) in {json.dumps(json.loads(line)) for line in before.values()}
               for r in records if r["id"] in before)  # finished records kept as they were
    assert not journal.exists()


def test_filter_keeps_self_consistent_samples() -> None:
    base = gold_answer(small_windows(1)[0])
    inverted = replace(base, id="b", final=list(reversed(base.final)))  # relevant passages ranked last
    broken = replace(base, id="c", status="malformed", final=[], relevant=[], error="x")
    kept, stats = filter_records([base, inverted, broken], FilterConfig(alpha=0.6))  # inverted: nDCG 0.50
    assert [r.id for r in kept] == [base.id] and stats.dropped_self == 1 and stats.dropped_status == {"malformed": 1}
    kept, _ = filter_records([base, inverted], FilterConfig(alpha=0.0))
    assert len(kept) == 2
    window = small_windows(1)[0]
    graded = replace(base, id=window.id, final=[2, 4, 1, 3, 5], relevant=[2, 4])  # grade-1 before grade-2
    kept, stats = filter_records([graded], FilterConfig(alpha=0.4, min_gold_ndcg=0.99), {window.id: window})
    assert kept == [] and stats.dropped_gold == 1
    with pytest.raises(InputError, match="windows file"):
        filter_records([graded], FilterConfig(min_gold_ndcg=0.5))


def test_records_use_the_rerankers_prompt_and_reward_columns(dl21: tuple[list, dict]) -> None:
    windows, _ = windows_of(dl21, per_query=1)
    answers = {w.id: gold_answer(w) for w in windows[:5]}
    sft, grpo = build_records(windows, answers, load_template("rearank"))
    assert [r.id for r in sft] == [w.id for w in windows[:5]] and len(grpo) == len(windows)
    for record, window in zip(sft, windows, strict=False):
        assert record.messages[:-1] == render(load_template("rearank"), window.query, window.passages)
        content = record.messages[-1]["content"]
        assert re.fullmatch(r"<think>.+</think>\n<answer>(\[\d+\])( > \[\d+\])*</answer>", content, re.S)
    for record, window in zip(grpo, windows, strict=True):
        assert record.labels == window.labels
        assert record.relevant == [i + 1 for i, g in enumerate(window.labels) if g > 0]
        assert sorted(record.gold) == list(range(1, 21)) and window.labels[record.gold[0] - 1] == max(window.labels)


def rearank(*args: str | Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in the repository (params.yaml's relative paths hold there), tracking into ``tmp_path``; in this
    process (Typer's runner): the teacher's kill -9 test above runs the data commands as a real subprocess."""
    env = {"NO_COLOR": "1", "COLUMNS": "200", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    with contextlib.chdir(DATA.parent):
        done = CliRunner().invoke(cli, [str(a) for a in args], env=env)
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


def test_cli_augment_is_byte_identical_per_seed(tmp_path: Path, root: Path) -> None:
    common = ("data", "augment", "--candidates", DL21_SOURCE.candidates, "--qrels", DL21_SOURCE.qrels,
              "--per-query", "3", "--cards", tmp_path / "cards", "--params", root / "params.yaml", "-q")
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        result = rearank(*common, "--out", tmp_path / f"{name}.jsonl", "--seed", seed, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    card = json.loads((tmp_path / "cards" / "windows.json").read_text())
    assert card["seed"] == 2 and card["windows_drawn"] == 53 * 3
    assert (tmp_path / "cards" / "windows.md").read_text().startswith("# Dataset card: windows")


def test_cli_leakage_is_exit_2_naming_file_query_and_set(tmp_path: Path, root: Path) -> None:
    dl19 = json.loads((DL19 / "rank_llm_BM25_retrieve_results_dl19.json").read_text())[:1]
    leaked = tmp_path / "leaked.json"
    leaked.write_text(json.dumps(dl19))
    result = rearank("data", "augment", "--candidates", leaked, "--qrels", DL19 / "qrels.dl19-passage.txt",
                     "--out", tmp_path / "w.jsonl", "--cards", tmp_path, "--params", root / "params.yaml", tmp_path=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{leaked}: field 'query': query {dl19[0]['hits'][0]['qid']}" in result.stderr
    assert "evaluation set dl19" in result.stderr and not (tmp_path / "w.jsonl").exists()


def test_cli_validate_fails_naming_the_planted_rows(tmp_path: Path, root: Path) -> None:
    windows = [w.to_dict() for w in small_windows(4)]
    windows[2]["labels"] = [0, 0, 0, 0, 0]  # no relevant passage
    windows[3]["labels"] = [0, 7, 0, 2, 0]  # a grade out of range
    path = tmp_path / "windows.jsonl"
    path.write_text("".join(json.dumps(w) + "\n" for w in windows))
    result = rearank("data", "validate", path, "--kind", "windows", "--report", tmp_path / "report",
                     "--params", root / "params.yaml", "-q", tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "FAILED" in result.stdout and "a label > 0: line 3 (id s/q2/000)" in result.stdout
    assert "labels in 0..3: line 4 (id s/q3/000)" in result.stdout
    assert (tmp_path / "report" / "data_docs" / "index.html").is_file()
    windows[2]["labels"] = windows[3]["labels"] = [0, 1, 0, 2, 0]
    path.write_text("".join(json.dumps(w) + "\n" for w in windows))
    assert rearank("data", "validate", path, "--kind", "windows", "--params", root / "params.yaml", "-q",
                   tmp_path=tmp_path).returncode == 0


def test_a_rerun_resends_exactly_the_windows_a_prompt_or_token_limit_change_affects(
        serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same request is never paid twice; another one always is. Window 1's first answer is cut off by the
    token limit: a higher limit resends that window alone; another prompt template resends every window."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    cut_off = "<think>passage 2 answers it, and then passage"
    server = serve(lambda n, index: cut_off if index == 1 else good(n, index))
    out, windows = tmp_path / "teacher.jsonl", small_windows(4)
    cfg = replace(teacher_cfg(server), concurrency=1, max_new_tokens=100)  # one at a time: window i is request i
    first = distill(windows, out, cfg)
    assert first.status == {"ok": 3, "malformed": 1} and sum(server.seen.values()) == 4
    cut = {r.id: r for r in read_records(out, TeacherRecord)}["s/q1/000"]
    assert (cut.finish_reason, cut.max_new_tokens) == ("length", 100)

    assert distill(windows, out, cfg).resumed == 4 and sum(server.seen.values()) == 4  # the same request: kept
    raised = distill(windows, out, replace(cfg, max_new_tokens=400))
    assert raised.resumed == 3 and raised.status == {"ok": 4}
    assert sum(server.seen.values()) == 5 and server.seen["w1 passage 0"] == 2  # only the cut-off window again

    template = yaml.safe_load((ROOT / "rearank_core" / "prompts" / "teacher.yaml").read_text())
    template["name"] = "teacher-terse"
    template["system"] = template["system"] + " Be terse."
    (tmp_path / "terse.yaml").write_text(yaml.safe_dump(template))
    reworded = distill(windows, out, replace(cfg, max_new_tokens=400, prompt=str(tmp_path / "terse.yaml")))
    assert reworded.resumed == 0 and sum(server.seen.values()) == 9  # every window, asked another way


def test_a_resumed_run_reuses_records_only_for_the_same_window_and_teacher(serve, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    server = serve(good)
    out = tmp_path / "teacher.jsonl"
    distill(small_windows(4), out, teacher_cfg(server))
    changed = small_windows(4)
    changed[1] = replace(changed[1], passages=list(reversed(changed[1].passages)))  # same id, other content
    again = distill(changed, out, teacher_cfg(server))
    assert again.resumed == 3 and sum(server.seen.values()) == 5
    other = distill(changed, out, replace(teacher_cfg(server), model="another-teacher"))
    assert other.resumed == 0 and sum(server.seen.values()) == 9
