"""Named evaluation suites: params.yaml's ``suites`` checked on load (every error names the file, the line and the
field), ``rearank evaluate-model --suite NAME``, and BRIGHT evaluated for real from a fixture in its published
Hugging Face layout, with both first stages (a ReasonIR-style run file, and BM25 over a Lucene index built from the
domain's documents), through the local ranking server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from test_formats import (
    DOCUMENTS_SCHEMA,
    EXAMPLES_SCHEMA,
    bright_examples,
    write_parquet,
)
from typer.testing import CliRunner

from rearank_core.cli import app as cli
from rearank_core.config import load_params
from rearank_core.errors import InputError
from rearank_core.evaluation import evaluate
from rearank_core.io.bright import DOMAINS
from rearank_core.io.requests import read_candidates
from rearank_core.io.trec import read_run, write_run

EXCLUDED = "insects_attracted_to_light/Moth_0.txt"  # query 0's excluded document, retrieved by both first stages
SPACED = "breathe_out_of_one_nostril/Nasal cycle notes_0.txt"  # BRIGHT's StackOverflow ids hold spaces too


# ------------------------------------------------------------------------------------------------ config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


SUITES = """suite:
  name: {name}
suites:
  - name: quick
    datasets:
      - {{name: dl19, candidates: c.json, qrels: q.txt}}
{entry}"""


@pytest.mark.parametrize("name, entry, line, key, says", [
    ("quick", "      - {name: b, bright: biolgy, first_stage: bm25}\n", 7, "suites[0].datasets[1].bright",
     "expected one of biology, earth_science"),
    ("quick", "      - {name: b, top_k: 5}\n", 7, "suites[0].datasets[1].candidates",
     "an entry needs candidates and qrels, or bright: DOMAIN with its first_stage"),
    ("quick", "      - name: b\n        bright: pony\n        first_stage: reasonir\n", 7, "suites[0].datasets[1].run",
     "reasonir needs its run, e.g. data/bright/runs/reasonir/pony.trec"),
    ("quick", "      - name: b\n        bright: pony\n        run: r.trec\n", 7, "suites[0].datasets[1].first_stage",
     "a BRIGHT entry needs its first stage: one of bm25, reasonir"),
    ("quick", "      - name: b\n        candidates: c.json\n        qrels: q.txt\n        bright: pony\n", 10,
     "suites[0].datasets[1].bright", "either candidates and qrels or bright, not both"),
    ("quick", "      - {name: dl19, bright: pony, first_stage: bm25}\n", 7, "suites[0].datasets[1].name",
     "duplicate dataset name 'dl19' (also datasets[0])"),
    ("quick", "      - {name: b, bright: pony, first_stage: dense}\n", 7, "suites[0].datasets[1].first_stage",
     "expected one of bm25, reasonir"),
    ("bright", "", 2, "suite.name", "no suite named 'bright'; suites: quick"),
])
def test_suite_errors_name_the_file_line_and_field(tmp_path: Path, name: str, entry: str, line: int, key: str,
                                                   says: str) -> None:
    path = write(tmp_path, SUITES.format(name=name, entry=entry))
    with pytest.raises(InputError) as caught:
        load_params(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: field '{key}': "), message
    assert says in message


@pytest.mark.parametrize("text, line, key, says", [
    ("suite:\n  metrics: m\n", 1, "suite.name", "no suite named 'quick'; suites: none (no suites section)"),
    ("suites:\n  name: quick\n", 1, "suites", "expected a list of EvalSuite entries"),
    ("suites:\n  - name: quick\n    datasets: []\n", 3, "suites[0].datasets", "a suite needs at least one dataset"),
    ("suites:\n  - name: quick\n    datasets:\n      - name: a\n        candidates: c\n        qrel: q\n", 6,
     "suites[0].datasets[0].qrel", "unknown key"),
    ("suites:\n  - name: quick\n    datasets:\n      - dl19\n", 4, "suites[0].datasets[0]", "expected a mapping"),
])
def test_suites_section_errors(tmp_path: Path, text: str, line: int, key: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}:{line}: field '{key}': "), str(caught.value)
    assert says in str(caught.value)


def test_the_shipped_suites(root: Path) -> None:
    """quick (the pipeline's) and bright cover every BRIGHT domain in both first stages; embedded is the suite the
    shipped adapter's README table was measured on."""
    params = load_params(root / "params.yaml")
    assert params.evaluation_suite().name == "quick" == params.suite.name
    quick, embedded, bright = (params.evaluation_suite(name) for name in ("quick", "embedded", "bright"))
    for suite in (quick, bright):
        entries = {(d.bright, d.first_stage) for d in suite.datasets if d.bright}
        assert len(entries) == 24 and {d for d, _ in entries} == set(DOMAINS)
        for dataset in suite.datasets:
            if dataset.first_stage == "reasonir":
                assert (root / str(dataset.run)).is_file()
    assert {d.top_k for d in bright.datasets} == {100} and {d.queries for d in bright.datasets} == {None}
    assert [(d.name, d.top_k, d.queries) for d in embedded.datasets] == [("dl19", 30, None), ("dl20", 30, None),
                                                                          ("scifact", 20, 30)]
    report = json.loads((root / params.suite.report("trained", "embedded")).read_text())
    assert report["suite"] == "embedded" and set(report["datasets"]) == {"dl19", "dl20", "scifact"}


def test_cli_unknown_suite_is_one_line(tmp_path: Path, root: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "rearank_core.cli", "evaluate-model", "--suite", "nope",
                             "--params", str(root / "params.yaml")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {root / 'params.yaml'}: field '--suite': no suite named 'nope'; suites: quick, embedded, bright"]


# ------------------------------------------------------------------------------------------------ BRIGHT


def test_a_run_docid_may_hold_spaces(tmp_path: Path) -> None:
    """The published ReasonIR StackOverflow run names documents like 'x/Memory Management_2_0.txt'."""
    path = tmp_path / "run.trec"
    path.write_text("4 Q0 x/Memory Management_2_0.txt 1 0.6 reasonir\n4 Q0 x/b_0.txt 2 0.5 reasonir\n")
    assert read_run(path) == {"4": [("x/Memory Management_2_0.txt", 0.6), ("x/b_0.txt", 0.5)]}
    write_run(path, read_run(path))
    assert read_run(path) == {"4": [("x/Memory Management_2_0.txt", 0.6), ("x/b_0.txt", 0.5)]}


def make_bright(root: Path) -> tuple[Path, list[dict]]:
    """BRIGHT's biology split in the published layout: the three real examples (query 0 excluding one document)
    and a handful of documents: each query's gold documents, written so BM25 finds them, and distractors."""
    examples = bright_examples()
    examples[0]["excluded_ids"] = [EXCLUDED]
    write_parquet(root / "examples" / "biology-00000-of-00001.parquet", examples, EXAMPLES_SCHEMA)
    documents = [{"id": docid, "content": f"{ex['reasoning']} ({docid})"} for ex in examples for docid in ex["gold_ids"]]
    documents += [
        {"id": EXCLUDED, "content": examples[0]["query"]},  # the query itself: BM25's first hit, were it kept
        {"id": SPACED, "content": "Breathing through one nostril alternates during the day."},
        {"id": "robots/lidar_0.txt", "content": "A robot maps a room with a lidar sensor."},
        {"id": "smells/perfume_0.txt", "content": "Perfume makers mix smells from a few hundred molecules."},
    ]
    write_parquet(root / "documents" / "biology-00000-of-00001.parquet", documents, DOCUMENTS_SCHEMA)
    return root, examples


def reasonir_run(path: Path, examples: list[dict]) -> Path:
    """A tiny first-stage run in the published runs' format: document ids only, the excluded one included."""
    run = {}
    for ex in examples:
        others = [d for e in examples if e is not ex for d in e["gold_ids"][:2]]
        ranking = [EXCLUDED, *others[:3], SPACED, *ex["gold_ids"]] if ex["id"] == "0" else \
            [*others[:3], SPACED, *ex["gold_ids"]]
        run[ex["id"]] = [(docid, 10.0 - rank) for rank, docid in enumerate(ranking)]
    write_run(path, run, tag="reasonir")
    return path


def in_process(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command in this process (Typer's runner), from ``cwd`` with ``env`` added."""
    with contextlib.chdir(cwd):
        done = CliRunner().invoke(cli, args, env=env)
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


def test_bright_in_both_first_stages_through_the_cli(ranking_server, tmp_path: Path, root: Path) -> None:
    bright, examples = make_bright(tmp_path / "BRIGHT")
    run_file = reasonir_run(tmp_path / "runs" / "biology.trec", examples)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["rerank"].update(backend="openai", base_url=f"http://127.0.0.1:{ranking_server.server_port}/v1",
                            window=5, step=5, truncate_unit="words", truncate_length=20)
    params["suite"].update(metrics=str(tmp_path / "metrics"), work=str(tmp_path / "work"), bright_root=str(bright))
    bright_suite = {"name": "bright", "datasets": [
        {"name": "bio_bm25", "bright": "biology", "first_stage": "bm25", "top_k": 5, "queries": 2},
        {"name": "bio_reasonir", "bright": "biology", "first_stage": "reasonir", "run": str(run_file), "top_k": 5,
         "queries": 2},
        {"name": "pony_bm25", "bright": "pony", "first_stage": "bm25", "top_k": 5, "queries": 2}]}
    params["suites"] = [params["suites"][0], bright_suite]  # quick stays the default; --suite picks bright
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "NO_COLOR": "1", "COLUMNS": "160"}
    command = ["evaluate-model", "--model", "served", "--label", "served", "--suite", "bright", "--params",
               str(tmp_path / "params.yaml"), "-q"]
    result = in_process(command, tmp_path, env)  # test_evaluate_model runs evaluate-model as a subprocess
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "metrics" / "bright" / "served.json").read_text())
    assert report["suite"] == "bright" and list(report["datasets"]) == ["bio_bm25", "bio_reasonir", "pony_bm25"]
    qrels = {ex["id"]: {d: 1 for d in ex["gold_ids"]} for ex in examples}
    work = tmp_path / "work" / "bright" / "served"
    for name, stage in (("bio_bm25", "bm25"), ("bio_reasonir", "reasonir")):
        row = report["datasets"][name]
        assert (row["first_stage"], row["queries"], row["top_k"], row["windows"]) == (stage, 2, 5, 2)
        assert row["excluded_removed"] == 1
        requests = read_candidates(work / f"{name}.candidates.jsonl")
        assert [r.query.qid for r in requests] == ["0", "1"]
        assert all(c.contents for r in requests for c in r.candidates)  # the documents' text, from the parquet
        reranked = read_run(work / f"{name}.trec")
        assert EXCLUDED not in {d for d, _ in reranked["0"]}  # excluded for query 0 only
        # the first stage is scored on the very candidates the model reranks, the reranked run on the same qrels
        first = {r.query.qid: [(c.docid, c.score) for c in r.candidates] for r in requests}
        assert row[stage] == evaluate(first, qrels).metrics
        assert row["reranked"] == evaluate(reranked, qrels).metrics
        assert json.loads((tmp_path / "metrics" / "bright" / "served" / f"{name}.json").read_text())["ndcg@10"] == \
            round(row["reranked"]["ndcg@10"], 4)
    # The run's order survives for ReasonIR (its tail past the top-5 untouched), spaces in ids included.
    reasonir = read_candidates(work / "bio_reasonir.candidates.jsonl")
    assert [c.docid for c in reasonir[1].candidates] == [d for d, _ in read_run(run_file)["1"]]
    assert SPACED in {d for d, _ in read_run(work / "bio_reasonir.trec")["1"]}
    # BM25 ranks query 0's gold documents first once the excluded copy of the query is gone.
    bm25 = read_candidates(work / "bio_bm25.candidates.jsonl")
    assert bm25[0].candidates[0].docid in qrels["0"]
    index = tmp_path / "work" / "bright" / "biology" / "index"
    assert any(index.glob("segments_*"))

    reason = f"no examples/pony-*.parquet in folder {bright}"
    assert report["datasets"]["pony_bm25"] == {"status": "not evaluated", "reason": reason, "first_stage": "bm25"}
    assert "pony_bm25" in result.stderr and "not evaluated" in result.stderr
    assert f"- pony_bm25: not evaluated: {reason}" in (tmp_path / "metrics" / "bright" / "served.md").read_text()
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("rearank").experiment_id],
                                "tags.`rearank.stage` = 'evaluate-model-served'")
    assert run.data.params["suite"] == "bright"
    assert run.data.metrics["ndcg_at_10_bio_reasonir"] == report["datasets"]["bio_reasonir"]["reranked"]["ndcg@10"]
    assert run.data.tags["not_evaluated_pony_bm25"] == reason
    assert not any(key.endswith("_pony_bm25") for key in run.data.metrics)

    # A rerun reuses the index and resumes every window from the traces: nothing is built or asked again.
    built = (index.parent / "index.source.json").stat().st_mtime_ns
    asked = sum(ranking_server.per_query.values())
    again = in_process(command, tmp_path, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sum(ranking_server.per_query.values()) == asked
    assert (index.parent / "index.source.json").stat().st_mtime_ns == built
    assert json.loads((tmp_path / "metrics" / "bright" / "served.json").read_text()) == report


def test_the_report_table_in_the_summary_and_the_adapter_card() -> None:
    """A report written before suites (BM25 rows without ``first_stage``) and a not-evaluated row both render."""
    from rearank_core.io.reports import report_markdown
    from rearank_core.training.export import training_card

    report = {"label": "trained", "model": "m", "suite": "quick", "datasets": {
        "dl19": {"queries": 43, "top_k": 30, "format_valid_rate": 0.9069, "exact_rate": None, "windows": 215,
                 "bm25": {"ndcg@10": 0.50583}, "reranked": {"ndcg@10": 0.50467}},
        "bright_pony_bm25": {"status": "not evaluated", "reason": "no documents/pony-*.parquet in folder B",
                             "first_stage": "bm25"}}}
    card = training_card("models/x", "embedded", {}, {}, report)
    for text in (card, report_markdown(report)):
        assert "| dl19 | bm25 | 43 | 30 | 0.5058 | 0.5047 | 90.7% | not computed |" in text
        assert "| bright_pony_bm25 | bm25 | | | not evaluated | not evaluated | | |" in text
        assert "- bright_pony_bm25: not evaluated: no documents/pony-*.parquet in folder B" in text
    assert "| dataset | first stage | queries | top-k | first stage nDCG@10 | this model nDCG@10 |" in card
    assert "reasoning reranker" in card and "rearank rerank --model models/x " in card
    first = training_card("models/first-x", "embedded", {}, {}, None, mode="first")  # a FIRST model runs in first mode
    assert "FIRST reranker" in first and "rearank rerank --mode first --model models/first-x " in first
