"""The great-expectations gate of the training data: one suite per record kind, run over a DataFrame of the
file's records plus derived columns (lengths, permutation checks, passages counted in the prompt, the evaluation
set a query belongs to), so every bad row is named by its line and id before it reaches training.

Derived columns are computed in Python because GX cannot look inside list or chat columns; GX then checks them
as ordinary columns, which keeps each rule visible by name in the report and in the Data Docs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from rearank_core.data.leakage import EvalQueries
from rearank_core.errors import InputError
from rearank_core.io.files import atomic_write, hash_path, iter_lines, write_json
from rearank_core.io.training_data import (
    KINDS,
    RECORD_TYPES,
    TEACHER_OK,
    TEACHER_STATUSES,
    GRPORecord,
    SFTRecord,
    TeacherRecord,
    WindowRecord,
    read_records,
)
from rearank_core.records import Messages

__all__ = ["Failure", "ValidationReport", "validate_file"]

logger = logging.getLogger(__name__)

CountTokens = Callable[[Messages], int]
MAX_ROWS = 20  # offending rows named per failure; ``count`` says how many there were in all
MAX_LABEL = 3
DOCS_SITE = "report"
_PROMPT_KINDS = ("sft", "grpo")  # the kinds whose records hold a prompt
_PASSAGE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)  # how every built-in template starts a passage
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_IDENTIFIER = re.compile(r"\[(\d+)\]")
ANSWER_PATTERN = r"(?s)^\s*<think>.*</think>\s*<answer>\s*\[\d+\](?:\s*>\s*\[\d+\])*\s*</answer>\s*$"


@dataclass
class Failure:
    expectation: str  # the readable name, e.g. "labels in 0..3"
    column: str
    lines: list[int]  # 1-based line numbers of the offending rows, sorted, at most MAX_ROWS
    ids: list[str]  # the ids of those rows, in the same order
    count: int  # offending rows in all (0 for a table-level expectation)
    detail: str = ""  # GX's error message when the expectation could not be evaluated

    def describe(self) -> str:
        text = f"FAILED  {self.expectation}"
        if self.lines:
            more = f" and {self.count - len(self.lines)} more" if self.count > len(self.lines) else ""
            ids = ", ".join(self.ids[:3]) + (", ..." if self.count > 3 else "")
            plural = "s" if self.count > 1 else ""
            text += f": line{plural} {', '.join(map(str, self.lines))}{more} (id{plural} {ids})"
        if self.detail:
            text += f": {self.detail}"
        return text


@dataclass
class ValidationReport:
    path: str
    kind: str
    records: int
    success: bool
    expectations: int  # how many expectations the suite ran
    failures: list[Failure] = field(default_factory=list)
    data_docs: str | None = None  # the Data Docs index.html, when a report folder was given

    def summary(self) -> str:
        verdict = "passed" if self.success else f"{len(self.failures)} of {self.expectations} expectations FAILED"
        head = f"{self.kind} {self.path}: {self.records} records, {verdict}"
        if self.success:
            head += f" ({self.expectations} expectations)"
        lines = [head, *(f.describe() for f in self.failures)]
        if self.data_docs:
            lines.append(f"Data Docs: {self.data_docs}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Derive:
    """What the derived columns need beyond the record: the evaluation sets and the token counter."""

    evals: EvalQueries
    namespaces: Mapping[str, str | None]  # source name -> its id namespace
    count_tokens: CountTokens | None

    def eval_set(self, record_id: str, qid: str, query: str | None = None) -> str | None:
        """The evaluation set the record's query is in; its source is the first part of its id."""
        leak = self.evals.find(qid, query, self.namespaces.get(record_id.split("/", 1)[0]))
        return leak.eval_set if leak else None

    def tokens(self, prompt: Messages) -> int | None:
        return self.count_tokens(prompt) if self.count_tokens else None


def _is_permutation(ids: list[int], n: int) -> bool:
    return n >= 1 and sorted(ids) == list(range(1, n + 1))


def _labels_in_range(labels: list[int]) -> bool:
    return all(0 <= label <= MAX_LABEL for label in labels)


def _count_passages(messages: Messages) -> int:
    """Distinct passage numbers the user turns show, each at the start of a line as ``[i] ``."""
    return len({n for m in messages if m.get("role") == "user" for n in _PASSAGE.findall(m.get("content", ""))})


def _turns_ok(messages: Messages) -> bool:
    """Every turn has a role and content; an optional system turn, then user and assistant alternating."""
    if not messages or any("role" not in m or "content" not in m for m in messages):
        return False
    roles = [m["role"] for m in messages]
    if roles[0] == "system":
        roles = roles[1:]
    return bool(roles) and all(role == ("user", "assistant")[i % 2] for i, role in enumerate(roles))


def _split_answer(messages: Messages) -> tuple[Messages, str]:
    """The prompt (without a final assistant turn) and that turn's content ("" when the last turn is not one)."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1], messages[-1].get("content", "")
    return messages, ""


def _answer_ids(answer: str) -> list[int]:
    match = _ANSWER.search(answer)
    return [int(n) for n in _IDENTIFIER.findall(match.group(1))] if match else []


def _derive_windows(r: WindowRecord, d: _Derive) -> dict[str, Any]:
    return {"n_docids": len(r.docids), "n_passages": len(r.passages), "n_labels": len(r.labels),
            "docids_unique": len(set(r.docids)) == len(r.docids), "labels_in_range": _labels_in_range(r.labels),
            "has_relevant": any(label > 0 for label in r.labels), "eval_set": d.eval_set(r.id, r.qid, r.query)}


def _derive_teacher(r: TeacherRecord, d: _Derive) -> dict[str, Any]:
    return {"n_final": len(r.final), "final_is_permutation": _is_permutation(r.final, len(r.final)),
            "n_relevant": len(r.relevant), "relevant_within_window": set(r.relevant) <= set(r.final),
            "eval_set": d.eval_set(r.id, r.qid)}


def _derive_sft(r: SFTRecord, d: _Derive) -> dict[str, Any]:
    prompt, answer = _split_answer(r.messages)
    n_passages = _count_passages(prompt)
    return {"n_messages": len(r.messages), "turns_ok": _turns_ok(r.messages),
            "last_role": r.messages[-1].get("role", "") if r.messages else "", "answer": answer,
            "n_passages": n_passages, "answer_is_permutation": _is_permutation(_answer_ids(answer), n_passages),
            "prompt_tokens": d.tokens(prompt), "eval_set": d.eval_set(r.id, r.qid)}


def _derive_grpo(r: GRPORecord, d: _Derive) -> dict[str, Any]:
    n = len(r.labels)
    return {"n_labels": n, "labels_in_range": _labels_in_range(r.labels),
            "has_relevant": any(label > 0 for label in r.labels), "gold_is_permutation": _is_permutation(r.gold, n),
            "n_relevant": len(r.relevant), "relevant_within_window": all(1 <= i <= n for i in r.relevant),
            "n_passages": _count_passages(r.prompt), "prompt_tokens": d.tokens(r.prompt),
            "eval_set": d.eval_set(r.id, r.qid)}


_DERIVE: dict[str, Callable[[Any, _Derive], dict[str, Any]]] = {
    "windows": _derive_windows, "teacher": _derive_teacher, "sft": _derive_sft, "grpo": _derive_grpo}


@cache
def _gx() -> ModuleType:
    """great_expectations, imported on first use (it takes seconds) and kept quiet: its INFO chatter (some of its
    modules set their own loggers to INFO) and the DeprecationWarnings of its own imports are not the user's."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations as gx
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "great_expectations"]:
        logging.getLogger(name).setLevel(logging.WARNING)
    return gx


def _common(e: Any, kind: str) -> list[Any]:
    return [*(e.ExpectColumnToExist(column=f.name, description=f"field {f.name} present")
              for f in fields(RECORD_TYPES[kind])),
            e.ExpectColumnValuesToBeUnique(column="id", description="id unique"),
            e.ExpectColumnValuesToMatchRegex(column="qid", regex=r"\S", description="qid non-empty"),
            e.ExpectColumnValuesToBeNull(column="eval_set", description="no evaluation query")]


def _true(e: Any, column: str, name: str, **kwargs: Any) -> Any:
    return e.ExpectColumnValuesToBeInSet(column=column, value_set=[True], description=name, **kwargs)


def _labels(e: Any) -> list[Any]:
    return [_true(e, "labels_in_range", f"labels in 0..{MAX_LABEL}"),
            _true(e, "has_relevant", "a label > 0")]


def _prompt_fits(e: Any, max_prompt_tokens: int | None) -> list[Any]:
    if max_prompt_tokens is None:
        return []
    return [e.ExpectColumnValuesToBeBetween(column="prompt_tokens", max_value=max_prompt_tokens,
                                            description=f"prompt tokens <= {max_prompt_tokens}")]


def _expectations(kind: str, max_prompt_tokens: int | None) -> list[Any]:
    e = _gx().expectations
    if kind == "windows":
        specific = [
            e.ExpectColumnPairValuesToBeEqual(column_A="n_docids", column_B="n_passages",
                                              description="one passage per docid"),
            e.ExpectColumnPairValuesToBeEqual(column_A="n_docids", column_B="n_labels",
                                              description="one label per docid"),
            _true(e, "docids_unique", "docids unique in the window"),
            e.ExpectColumnValuesToBeBetween(column="n_docids", min_value=2, description="window of >= 2 passages"),
            *_labels(e),
            e.ExpectColumnValuesToNotBeNull(column="initial_ndcg10", description="initial_ndcg10 is a number"),
            e.ExpectColumnValuesToBeBetween(column="initial_ndcg10", min_value=0, max_value=1,
                                            description="initial_ndcg10 in 0..1"),
        ]
    elif kind == "teacher":
        from great_expectations.expectations.row_conditions import Column

        ok, not_ok = Column("status") == TEACHER_OK, Column("status") != TEACHER_OK
        specific = [
            e.ExpectColumnValuesToBeInSet(column="status", value_set=list(TEACHER_STATUSES),
                                          description="status known"),
            _true(e, "final_is_permutation", "ok: final is a permutation of 1..n", row_condition=ok),
            e.ExpectColumnValuesToBeBetween(column="n_final", min_value=2, row_condition=ok,
                                            description="ok: final ranks >= 2 passages"),
            e.ExpectColumnValuesToBeBetween(column="n_relevant", min_value=1, row_condition=ok,
                                            description="ok: relevant non-empty"),
            _true(e, "relevant_within_window", "ok: relevant within final", row_condition=ok),
            e.ExpectColumnValuesToBeInSet(column="error", value_set=[""], row_condition=ok,
                                          description="ok: no error"),
            e.ExpectColumnValuesToMatchRegex(column="error", regex=r"\S", row_condition=not_ok,
                                             description="not ok: error given"),
        ]
    elif kind == "sft":
        specific = [
            _true(e, "turns_ok", "turns: system?, then user/assistant alternating"),
            e.ExpectColumnValuesToBeInSet(column="last_role", value_set=["assistant"],
                                          description="last turn is the assistant's"),
            e.ExpectColumnValuesToMatchRegex(column="answer", regex=ANSWER_PATTERN,
                                             description="answer is <think>...</think><answer>[i] > [j] ...</answer>"),
            _true(e, "answer_is_permutation", "answer ranks each prompt passage once"),
            *_prompt_fits(e, max_prompt_tokens),
        ]
    else:
        specific = [
            *_labels(e),
            _true(e, "gold_is_permutation", "gold is a permutation of 1..len(labels)"),
            e.ExpectColumnValuesToBeBetween(column="n_relevant", min_value=1, description="relevant non-empty"),
            _true(e, "relevant_within_window", "relevant within 1..len(labels)"),
            e.ExpectColumnPairValuesToBeEqual(column_A="n_passages", column_B="n_labels",
                                              description="one prompt passage per label"),
            *_prompt_fits(e, max_prompt_tokens),
        ]
    return _common(e, kind) + specific


def _frame(records: list[Any], lines: list[int], derive: Callable[[Any], dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{**r.to_dict(), **derive(r), "line": n} for r, n in zip(records, lines, strict=True)])


@contextmanager
def _staged_dir(target: Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` that replaces it only when the block succeeds: Data Docs are many files,
    and neither a half-built site nor pages of an earlier run may sit under the report's name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _run(frame: pd.DataFrame, kind: str, asset: str, expectations: list[Any], docs_dir: Path | None) -> Any:
    """Validate the whole DataFrame with one suite in a fresh ephemeral context; with ``docs_dir``, also build
    that context's Data Docs (this validation only) into it."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("records").add_dataframe_asset(asset)
             .add_batch_definition_whole_dataframe("all rows"))
    suite = context.suites.add(gx.ExpectationSuite(name=f"rearank-{kind}", expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=f"{kind} gate", data=batch,
                                                                            suite=suite))
    # every offending row, named by its line and id rather than by its DataFrame index
    result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": ["line", "id"]}
    result = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    if docs_dir is not None:
        context.add_data_docs_site(DOCS_SITE, {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        })
        context.build_data_docs(site_names=[DOCS_SITE])
    return result


def _exception_message(info: Mapping[str, Any]) -> str:
    """GX's error for an expectation it could not evaluate; its info is one record or one per metric."""
    infos = [info] if "raised_exception" in info else [i for i in info.values() if isinstance(i, Mapping)]
    return "; ".join(dict.fromkeys(str(i.get("exception_message")) for i in infos if i.get("raised_exception")))


def _failure(result: Any) -> Failure:
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or ", ".join(kwargs[k] for k in ("column_A", "column_B") if k in kwargs)
    offending = result.result.get("unexpected_index_list") or []
    rows = sorted({int(row["line"]): str(row["id"]) for row in offending}.items())
    return Failure(expectation=config.description or config.type, column=column,
                   lines=[line for line, _ in rows[:MAX_ROWS]], ids=[i for _, i in rows[:MAX_ROWS]], count=len(rows),
                   detail=_exception_message(result.exception_info or {}))


def _write(report: ValidationReport, report_dir: Path) -> None:
    write_json(report_dir / "report.json", report.to_dict())
    with atomic_write(report_dir / "summary.txt") as handle:
        handle.write(report.summary() + "\n")


def record_verdict(verdict: str | Path, report: ValidationReport) -> None:
    """Merge the gate's outcome for one file into ``verdict`` (JSON, one entry per kind): the file's SHA-256, its
    records and the verdict. Validating unchanged data again rewrites the same bytes (the Data Docs carry run
    times), so the trainers depend on this file, not on the reports: re-validation alone retrains nothing."""
    verdict = Path(verdict)
    try:
        entries = json.loads(verdict.read_text()) if verdict.exists() else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"not a validation verdict file ({exc})", verdict, exc.lineno) from None
    digest = hashlib.sha256()
    hash_path(digest, Path(report.path))
    entries[report.kind] = {"file": report.path, "sha256": digest.hexdigest(), "records": report.records,
                            "expectations": report.expectations, "passed": report.success,
                            "failed": [f.describe() for f in report.failures]}
    write_json(verdict, dict(sorted(entries.items())))


def validate_file(path: str | Path, kind: str, *, max_prompt_tokens: int | None = None,
                  count_tokens: CountTokens | None = None, evals: EvalQueries | None = None,
                  namespaces: Mapping[str, str | None] | None = None,
                  report_dir: str | Path | None = None) -> ValidationReport:
    """Run the ``kind`` suite over a JSONL file of training records and report each failed expectation with the
    lines and ids of its offending rows.

    ``evals`` names the queries that must not be trained on (``leakage.EvalQueries``: by normalised text, windows
    only, as the other kinds hold no query text; by id where the record's source, the first part of its id, has the
    evaluation set's id namespace in ``namespaces``). ``max_prompt_tokens`` (sft and grpo)
    needs ``count_tokens``. With ``report_dir``: ``summary.txt``, ``report.json`` and ``data_docs/index.html``.
    A file that cannot be read as ``kind`` records is an InputError naming its file, line and field."""
    if kind not in KINDS:
        raise InputError(f"unknown record kind {kind!r}; one of {', '.join(KINDS)}", path)
    max_prompt_tokens = max_prompt_tokens if kind in _PROMPT_KINDS else None
    if max_prompt_tokens is not None and count_tokens is None:
        raise InputError("max_prompt_tokens needs a token counter (the model's tokenizer)", path)
    records = read_records(path, RECORD_TYPES[kind])
    lines = [number for number, _ in iter_lines(path)]  # the lines read_records parsed, one per record
    derive = _Derive(evals or EvalQueries({}, {}), namespaces or {}, count_tokens)
    frame = _frame(records, lines, lambda r: _DERIVE[kind](r, derive))
    expectations = _expectations(kind, max_prompt_tokens)
    out = Path(report_dir).resolve() if report_dir is not None else None  # GX needs an absolute site folder
    if out is None:
        result = _run(frame, kind, Path(path).name, expectations, None)
    else:
        with _staged_dir(out / "data_docs") as staging:
            result = _run(frame, kind, Path(path).name, expectations, staging)
    order = {expectation.description: i for i, expectation in enumerate(expectations)}
    failures = sorted((_failure(r) for r in result.results if not r.success), key=lambda f: order[f.expectation])
    report = ValidationReport(path=str(path), kind=kind, records=len(records), success=bool(result.success),
                              expectations=len(result.results), failures=failures,
                              data_docs=str(out / "data_docs" / "index.html") if out is not None else None)
    if out is not None:
        _write(report, out)
    logger.info("%s", report.summary())
    return report
