"""The great-expectations gate of the training data, with real GX: small valid files of each kind pass, and each
expectation fails on a planted bad row, naming that row's line and id."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rearank_core.data import validation
from rearank_core.data.leakage import EvalQueries, normalise_query
from rearank_core.data.validation import validate_file
from rearank_core.errors import InputError
from rearank_core.prompts import load_template, render
from rearank_core.records import Messages

TEMPLATE = load_template("rearank")
PASSAGES = ["The cat sat on the mat.", "Dogs bark at night.", "Cats purr when happy."]
ANSWER = "<think>[3] and [1] are about cats.</think>\n<answer>[3] > [1] > [2]</answer>"
PLANTED = 2  # index of the record a case spoils: it sits on line 4, after a blank line 2
PLANTED_LINE = 4


def count_words(messages: Messages) -> int:
    return sum(len(m["content"].split()) for m in messages)


def window(i: int) -> dict[str, Any]:
    return {"id": f"msmarco/q{i}/000", "source": "msmarco", "qid": f"q{i}", "query": f"what is topic {i}",
            "docids": [f"d{i}1", f"d{i}2", f"d{i}3"], "passages": list(PASSAGES), "labels": [2, 0, 3],
            "initial_ndcg10": 0.6}


def teacher(i: int) -> dict[str, Any]:
    status = {4: "failed", 5: "no_relevant"}.get(i, "ok")
    ok = status == "ok"
    return {"id": f"msmarco/q{i}/000", "qid": f"q{i}", "window_sha": f"sha{i}", "teacher": "gold", "status": status,
            "reasoning": "cats first" if ok else "", "final": [3, 1, 2] if ok else [], "relevant": [3, 1] if ok else [],
            "completion": "", "prompt_tokens": 120, "completion_tokens": 30, "latency_s": 0.5,
            "error": "" if ok else "the teacher gave no answer"}


def sft(i: int) -> dict[str, Any]:
    messages = render(TEMPLATE, f"what is topic {i}", PASSAGES) + [{"role": "assistant", "content": ANSWER}]
    return {"id": f"msmarco/q{i}/000", "qid": f"q{i}", "teacher": "gold", "messages": messages}


def grpo(i: int) -> dict[str, Any]:
    return {"id": f"msmarco/q{i}/000", "qid": f"q{i}", "prompt": render(TEMPLATE, f"what is topic {i}", PASSAGES),
            "labels": [2, 0, 3], "relevant": [3, 1], "gold": [3, 1, 2]}


MAKE: dict[str, Callable[[int], dict[str, Any]]] = {"windows": window, "teacher": teacher, "sft": sft, "grpo": grpo}


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    """JSONL with a blank line 2, so record positions and file lines differ."""
    lines = [json.dumps(r) for r in records]
    path.write_text("\n".join([lines[0], "", *lines[1:]]) + "\n", encoding="utf-8")
    return path


def records(kind: str) -> list[dict[str, Any]]:
    return [MAKE[kind](i) for i in range(1, 6)]


def token_limit(kind: str) -> int | None:
    """A limit every valid prompt fits under, with room to spare (windows and teacher records hold no prompt)."""
    if kind not in ("sft", "grpo"):
        return None
    prompts = [r["messages"][:-1] if kind == "sft" else r["prompt"] for r in records(kind)]
    return max(map(count_words, prompts)) + 20


@pytest.mark.parametrize("kind", list(MAKE))
def test_a_valid_file_passes(tmp_path: Path, kind: str, capfd: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / f"{kind}.jsonl", records(kind))
    report = validate_file(path, kind, max_prompt_tokens=token_limit(kind), count_tokens=count_words)
    assert report.success, report.summary()
    assert report.failures == []
    assert report.records == 5 and report.expectations > 5
    assert report.summary().startswith(f"{kind} {path}: 5 records, passed")
    assert "Calculating Metrics" not in capfd.readouterr().err  # GX's progress bars stay off


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: r.update(values)


def _sft_answer(content: str) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["messages"][-1].update(content=content)


def _long_prompt(kind: str) -> Callable[[dict[str, Any]], None]:
    def spoil(r: dict[str, Any]) -> None:
        prompt = render(TEMPLATE, "what is topic 3", ["word " * 300, *PASSAGES[1:]])
        if kind == "sft":
            r["messages"] = prompt + [r["messages"][-1]]
        else:
            r["prompt"] = prompt
    return spoil


def _second_turn_assistant(r: dict[str, Any]) -> None:
    r["messages"][1]["role"] = "assistant"


CASES: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
    *((kind, "id unique", _set(id="msmarco/q1/000")) for kind in MAKE),
    *((kind, "qid non-empty", _set(qid=" ")) for kind in MAKE),
    ("windows", "one passage per docid", _set(passages=PASSAGES[:2])),
    ("windows", "one label per docid", _set(labels=[2, 0, 3, 1])),
    ("windows", "docids unique in the window", _set(docids=["d1", "d1", "d3"])),
    ("windows", "window of >= 2 passages", _set(docids=["d1"], passages=PASSAGES[:1], labels=[1])),
    ("windows", "labels in 0..3", _set(labels=[2, 4, 3])),
    ("windows", "a label > 0", _set(labels=[0, 0, 0])),
    ("windows", "initial_ndcg10 in 0..1", _set(initial_ndcg10=1.5)),
    ("windows", "initial_ndcg10 is a number", _set(initial_ndcg10=math.nan)),
    ("teacher", "status known", _set(status="maybe", error="odd")),
    ("teacher", "ok: final is a permutation of 1..n", _set(final=[3, 1, 1])),
    ("teacher", "ok: final ranks >= 2 passages", _set(final=[1], relevant=[1])),
    ("teacher", "ok: relevant non-empty", _set(relevant=[])),
    ("teacher", "ok: relevant within final", _set(relevant=[3, 4])),
    ("teacher", "ok: no error", _set(error="timeout")),
    ("teacher", "not ok: error given", _set(status="malformed", error="")),
    ("sft", "turns: system?, then user/assistant alternating", _second_turn_assistant),
    ("sft", "last turn is the assistant's", lambda r: r["messages"].pop()),
    ("sft", "answer is <think>...</think><answer>[i] > [j] ...</answer>",
     _sft_answer("<answer>[3] > [1] > [2]</answer>")),
    ("sft", "answer ranks each prompt passage once", _sft_answer("<think>x</think><answer>[3] > [1]</answer>")),
    ("sft", "prompt tokens <= {limit}", _long_prompt("sft")),
    ("grpo", "labels in 0..3", _set(labels=[2, -1, 3])),
    ("grpo", "a label > 0", _set(labels=[0, 0, 0])),
    ("grpo", "gold is a permutation of 1..len(labels)", _set(gold=[3, 1, 3])),
    ("grpo", "relevant non-empty", _set(relevant=[])),
    ("grpo", "relevant within 1..len(labels)", _set(relevant=[3, 4])),
    ("grpo", "one prompt passage per label", _set(prompt=render(TEMPLATE, "what is topic 3", PASSAGES[:2]))),
    ("grpo", "prompt tokens <= {limit}", _long_prompt("grpo")),
]


@pytest.mark.parametrize(("kind", "expectation", "spoil"), CASES, ids=[f"{k}: {e}" for k, e, _ in CASES])
def test_a_planted_bad_row_fails_its_expectation(tmp_path: Path, kind: str, expectation: str,
                                                 spoil: Callable[[dict[str, Any]], None]) -> None:
    rows = records(kind)
    spoil(rows[PLANTED])
    limit = token_limit(kind)
    report = validate_file(write(tmp_path / f"{kind}.jsonl", rows), kind, max_prompt_tokens=limit,
                           count_tokens=count_words)
    assert not report.success
    named = {f.expectation: f for f in report.failures}
    failure = named[expectation.format(limit=limit)]
    assert PLANTED_LINE in failure.lines
    assert rows[PLANTED]["id"] in failure.ids
    assert f"FAILED  {failure.expectation}: line" in report.summary()


@pytest.mark.parametrize("kind", list(MAKE))
def test_an_evaluation_qid_is_leakage_within_its_id_namespace(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path / f"{kind}.jsonl", records(kind))
    evals = EvalQueries(by_text={}, by_id={("msmarco-passage", "q3"): "dl19"})
    report = validate_file(path, kind, evals=evals, namespaces={"msmarco": "msmarco-passage"})
    (failure,) = report.failures
    assert failure.expectation == "no evaluation query"
    assert failure.lines == [PLANTED_LINE] and failure.ids == ["msmarco/q3/000"]
    # The same id from a source of another namespace, or of none, is another query.
    assert validate_file(path, kind, evals=evals, namespaces={"msmarco": "beir-scifact"}).success
    assert validate_file(path, kind, evals=evals).success


def test_an_evaluation_query_text_is_leakage(tmp_path: Path) -> None:
    path = write(tmp_path / "windows.jsonl", records("windows"))
    report = validate_file(path, "windows", evals=EvalQueries({normalise_query("What is  TOPIC 3?"): "dl20"}, {}))
    (failure,) = report.failures
    assert (failure.expectation, failure.column, failure.lines) == ("no evaluation query", "eval_set", [PLANTED_LINE])
    assert validate_file(path, "windows", evals=EvalQueries({"what is topic 33": "dl20"}, {})).success


def test_normalise_query() -> None:
    assert normalise_query("  What's   the\tU.S. GDP?? ") == "what s the u s gdp"
    assert normalise_query("flea's life-cycle") == normalise_query("Flea s  LIFE cycle")


def test_many_offending_rows_are_counted_and_capped(tmp_path: Path) -> None:
    rows = [window(i) for i in range(1, 31)]
    for row in rows[1:]:
        row["labels"] = [0, 0, 0]
    report = validate_file(write(tmp_path / "windows.jsonl", rows), "windows")
    (failure,) = report.failures
    assert failure.count == 29 and failure.lines == list(range(3, 23)) and len(failure.ids) == 20
    assert "lines 3, 4, 5" in report.summary() and "and 9 more" in report.summary()


def test_a_report_folder_gets_summary_json_and_data_docs(tmp_path: Path) -> None:
    rows = records("grpo")
    rows[PLANTED]["labels"] = [0, 0, 0]
    path = write(tmp_path / "grpo.jsonl", rows)
    out = tmp_path / "report"
    for _ in range(2):  # a second run replaces the first one's site
        report = validate_file(path, "grpo", report_dir=out)
    assert (out / "summary.txt").read_text(encoding="utf-8") == report.summary() + "\n"
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["failures"][0]["expectation"] == "a label > 0" and saved["failures"][0]["lines"] == [PLANTED_LINE]
    assert report.data_docs == str(out / "data_docs" / "index.html") and Path(report.data_docs).is_file()
    pages = list((out / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and "a label > 0" in pages[0].read_text(encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == ["data_docs", "report.json", "summary.txt"]


def test_the_verdict_is_the_same_bytes_for_the_same_data_and_changes_with_it(tmp_path: Path) -> None:
    good, bad = records("grpo"), records("grpo")
    bad[PLANTED]["labels"] = [0, 0, 0]
    verdict = tmp_path / "validation.json"
    windows = write(tmp_path / "windows.jsonl", records("windows"))
    grpo = write(tmp_path / "grpo.jsonl", good)
    for path, kind in ((windows, "windows"), (grpo, "grpo")):
        validation.record_verdict(verdict, validate_file(path, kind, report_dir=tmp_path / "report" / kind))
    first = verdict.read_bytes()
    validation.record_verdict(verdict, validate_file(grpo, "grpo", report_dir=tmp_path / "report" / "grpo"))
    assert verdict.read_bytes() == first  # validated again, the Data Docs rebuilt: the trainers see no change
    entries = json.loads(first)
    assert sorted(entries) == ["grpo", "windows"] and entries["grpo"]["passed"] and entries["grpo"]["records"] == 5
    assert entries["grpo"]["sha256"] == hashlib.sha256(grpo.read_bytes()).hexdigest()

    write(grpo, bad)
    validation.record_verdict(verdict, validate_file(grpo, "grpo"))
    entries = json.loads(verdict.read_text())
    assert not entries["grpo"]["passed"] and entries["grpo"]["failed"][0].startswith("FAILED  a label > 0: line 4")
    assert entries["windows"] == json.loads(first)["windows"]


def test_the_schema_expectations_guard_a_frame_missing_a_field() -> None:
    """read_records stops a file missing a field first; the suite still checks every field, shown here on a frame."""
    frame = pd.DataFrame({"id": ["a"], "qid": ["q"], "eval_set": [None], "line": [1]})
    result = validation._run(frame, "teacher", "frame", validation._expectations("teacher", None), None)
    failed = {f.expectation: f for f in (validation._failure(r) for r in result.results if not r.success)}
    assert {"field status present", "field final present", "field error present"} <= set(failed)
    assert "field id present" not in failed
    assert failed["ok: no error"].detail == "name 'status' is not defined"  # GX's own error is kept, not dropped


def test_an_unknown_kind_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown record kind 'pairs'"):
        validate_file(write(tmp_path / "x.jsonl", records("windows")), "pairs")


def test_a_schema_broken_line_is_an_input_error(tmp_path: Path) -> None:
    rows = records("windows")
    del rows[PLANTED]["labels"]
    path = write(tmp_path / "windows.jsonl", rows)
    with pytest.raises(InputError) as info:
        validate_file(path, "windows")
    assert (info.value.path, info.value.line, info.value.field) == (str(path), PLANTED_LINE, "labels")


def test_an_empty_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="file is empty"):
        validate_file(tmp_path / "empty.jsonl", "sft")


def test_a_token_limit_needs_a_counter(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="token counter"):
        validate_file(write(tmp_path / "sft.jsonl", records("sft")), "sft", max_prompt_tokens=100)

