"""Prompt templates as data files (``<name>.yaml`` beside this module, or any YAML path), validated on load.

The template is chosen by name, never by the model's name (REARANK's code silently falls back to the
RankGPT prompt for checkpoints whose name lacks 'le723z')."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import ftfy
import yaml

from rearank_core.config import TRUNCATE_UNITS
from rearank_core.errors import InputError
from rearank_core.records import Messages

HERE = Path(__file__).resolve().parent
BUILTIN = tuple(sorted(p.stem for p in HERE.glob("*.yaml")))
_IDENTIFIER = re.compile(r"\[(\d+)\]")
_LETTER_IDENTIFIER = re.compile(r"\[([A-Z])\]")
LETTERS = tuple(chr(c) for c in range(ord("A"), ord("Z") + 1))  # FIRST's identifiers: one token each in most vocabularies

# field -> (placeholders allowed, placeholders required)
_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "system": (set(), set()),
    "prefix": ({"num", "query"}, set()),
    "prefix_reply": (set(), set()),
    "passage": ({"rank", "content"}, {"rank", "content"}),
    "passage_reply": ({"rank"}, set()),
    "suffix": ({"num", "query"}, set()),
}
_META = {"name", "description", "layout", "answer_format", "truncate", "identifiers", "answer_prefix"}
LAYOUTS = ("multi_turn", "single_turn")
ANSWER_FORMATS = ("plain", "think_answer")
IDENTIFIERS = ("numbers", "letters")


@dataclass(frozen=True)
class Truncation:
    unit: str = "chars"
    length: int = 400


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    layout: str
    answer_format: str
    truncate: Truncation
    passage: str
    suffix: str
    system: str = ""
    prefix: str = ""
    prefix_reply: str = ""
    passage_reply: str = ""
    description: str = ""
    identifiers: str = "numbers"  # numbers: [1]..[n]; letters: [A]..[Z] (first mode: one token each)
    answer_prefix: str = ""  # what the answer starts with before its first identifier ("[" for "[B] > [A]")

    def identifier(self, rank: int) -> str:
        """The label of the ``rank``-th passage (1-based) as the prompt writes it between brackets."""
        return LETTERS[rank - 1] if self.identifiers == "letters" else str(rank)

    def with_truncation(self, unit: str | None = None, length: int | None = None) -> PromptTemplate:
        t = Truncation(unit or self.truncate.unit, length if length is not None else self.truncate.length)
        _check_truncation(t, f"template {self.name}")
        return replace(self, truncate=t)


def _placeholders(text: str, where: str, path: Path) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise InputError(f"bad placeholder syntax: {exc}", path, field=where) from exc


def _check_truncation(t: Truncation, path: object) -> None:
    if t.unit not in TRUNCATE_UNITS:
        raise InputError(f"unknown unit {t.unit!r}; one of {', '.join(TRUNCATE_UNITS)}", str(path), field="truncate.unit")
    if not isinstance(t.length, int) or t.length < 1:
        raise InputError(f"must be a positive integer, got {t.length!r}", str(path), field="truncate.length")


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """A built-in template by name (``rearank``, ``reasonrank``, ``rankgpt``) or a YAML file, validated."""
    path = Path(name_or_path)
    if not path.suffix:
        if str(name_or_path) not in BUILTIN:
            raise InputError(f"unknown prompt template {name_or_path!r}; built-in: {', '.join(BUILTIN)}, or a YAML path")
        path = HERE / f"{name_or_path}.yaml"
    if not path.is_file():
        raise InputError("prompt template file not found", path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {exc}", path, mark.line + 1 if mark else None) from exc
    if not isinstance(raw, dict):
        raise InputError("expected a mapping", path)
    unknown = set(raw) - set(_FIELDS) - _META
    if unknown:
        raise InputError(f"unknown key(s) {sorted(unknown)}", path, field=sorted(unknown)[0])
    for key in ("name", "layout", "answer_format", "passage", "suffix"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise InputError("missing or empty", path, field=key)
    if raw["layout"] not in LAYOUTS:
        raise InputError(f"must be one of {', '.join(LAYOUTS)}", path, field="layout")
    if raw["answer_format"] not in ANSWER_FORMATS:
        raise InputError(f"must be one of {', '.join(ANSWER_FORMATS)}", path, field="answer_format")
    for key, (allowed, required) in _FIELDS.items():
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise InputError("expected a string", path, field=key)
        found = _placeholders(value, key, path)
        if found - allowed:
            raise InputError(f"unknown placeholder(s) {sorted(found - allowed)}; allowed: {sorted(allowed) or 'none'}", path, field=key)
        if required - found:
            raise InputError(f"missing required placeholder(s) {sorted(required - found)}", path, field=key)
    if "query" not in _placeholders(raw.get("prefix", ""), "prefix", path) | _placeholders(raw["suffix"], "suffix", path):
        raise InputError("the query must appear: put {query} in 'prefix' or 'suffix'", path, field="suffix")
    if raw["layout"] == "multi_turn":
        for key in ("prefix", "prefix_reply", "passage_reply"):
            if not raw.get(key):
                raise InputError("a multi_turn template needs the opening turn and the assistant's replies", path, field=key)
    if raw.get("identifiers", "numbers") not in IDENTIFIERS:
        raise InputError(f"must be one of {', '.join(IDENTIFIERS)}", path, field="identifiers")
    if not isinstance(raw.get("answer_prefix", ""), str):
        raise InputError("expected a string", path, field="answer_prefix")
    trunc = raw.get("truncate") or {}
    if not isinstance(trunc, dict):
        raise InputError("expected a mapping {unit, length}", path, field="truncate")
    truncation = Truncation(trunc.get("unit", "chars"), trunc.get("length", 400))
    _check_truncation(truncation, path)
    fields = {k: raw.get(k, "") for k in _FIELDS}
    return PromptTemplate(name=raw["name"], layout=raw["layout"], answer_format=raw["answer_format"],
                          truncate=truncation, description=raw.get("description", ""),
                          identifiers=raw.get("identifiers", "numbers"), answer_prefix=raw.get("answer_prefix", ""),
                          **fields)


def clean_passage(text: str, letters: bool = False) -> str:
    """Fix mojibake, collapse whitespace, and rewrite ``[n]`` (with ``letters``, ``[A]`` too) to ``(n)`` so passage
    text can never be mistaken for a passage identifier in the answer."""
    text = _IDENTIFIER.sub(r"(\1)", " ".join(ftfy.fix_text(text).split()))
    return _LETTER_IDENTIFIER.sub(r"(\1)", text) if letters else text


Tokenizer = Callable[[str, int], str]  # (text, max tokens) -> truncated text


def truncate(text: str, t: Truncation, tokenizer: Tokenizer | None = None) -> str:
    if t.unit == "chars":
        return text[: t.length]
    if t.unit == "words":
        return " ".join(text.split()[: t.length])
    if tokenizer is None:
        raise InputError("token truncation needs the model's tokenizer; this backend has none: "
                         "use --truncate-unit chars or words")
    return tokenizer(text, t.length)


def render(template: PromptTemplate, query: str, passages: list[str], tokenizer: Tokenizer | None = None) -> Messages:
    """Chat messages for one window; passages are labelled [1]..[n] (letter templates: [A]..) in the given order."""
    num = len(passages)
    letters = template.identifiers == "letters"
    if letters and num > len(LETTERS):
        raise InputError(f"template {template.name!r} labels passages [A]..[Z]: at most {len(LETTERS)} per window, "
                         f"got {num}", field="window")
    query = " ".join(query.split())
    cut = [truncate(clean_passage(p, letters), template.truncate, tokenizer) for p in passages]
    messages: Messages = []
    if template.system:
        messages.append({"role": "system", "content": template.system})
    prefix = template.prefix.format(num=num, query=query)
    suffix = template.suffix.format(num=num, query=query)
    if template.layout == "multi_turn":
        messages.append({"role": "user", "content": prefix})
        messages.append({"role": "assistant", "content": template.prefix_reply})
        for rank, content in enumerate(cut, start=1):
            label = template.identifier(rank)
            messages.append({"role": "user", "content": template.passage.format(rank=label, content=content)})
            messages.append({"role": "assistant", "content": template.passage_reply.format(rank=label)})
        messages.append({"role": "user", "content": suffix})
    else:
        lines = [template.passage.format(rank=template.identifier(rank), content=content)
                 for rank, content in enumerate(cut, start=1)]
        body = "\n".join(part for part in (prefix, "\n".join(lines), suffix) if part)
        messages.append({"role": "user", "content": body})
    return messages
