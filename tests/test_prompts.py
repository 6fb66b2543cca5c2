"""Prompt templates: built-ins render as the papers describe; bad templates fail on load, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rearank_core.errors import InputError
from rearank_core.prompts import BUILTIN, clean_passage, load_template, render

PASSAGES = ["First passage cites [2] and [10].", "Second   passage\nwith  spaces.", "Third " + "word " * 500]


def test_builtins_load() -> None:
    assert set(BUILTIN) == {"rankgpt", "rearank", "reasonrank"}
    assert load_template("rearank").answer_format == "think_answer"
    assert load_template("rankgpt").answer_format == "plain"


def test_rearank_multi_turn_feed_with_400_char_passages() -> None:
    messages = render(load_template("rearank"), "what is x?", PASSAGES)
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[3]["content"] == "[1] First passage cites (2) and (10)."
    assert messages[4]["content"] == "Received passage [1]."
    assert messages[5]["content"] == "[2] Second passage with spaces."
    assert len(messages[7]["content"]) == len("[3] ") + 400
    assert "<think>" in messages[-1]["content"] and "<answer>" in messages[-1]["content"]
    assert "what is x?" in messages[-1]["content"] and "3 passages" in messages[-1]["content"]


def test_reasonrank_single_message_and_token_truncation() -> None:
    def first_n_words(text: str, n: int) -> str:  # stands in for a tokenizer
        return " ".join(text.split()[:n])

    messages = render(load_template("reasonrank"), "q", PASSAGES, tokenizer=first_n_words)
    assert [m["role"] for m in messages] == ["system", "user"]
    lines = messages[1]["content"].split("\n")
    assert "[1] First passage cites (2) and (10)." in lines
    assert f"[3] Third {' '.join(['word'] * 99)}" in lines


def test_token_truncation_without_a_tokenizer_is_an_error() -> None:
    with pytest.raises(InputError, match="tokenizer"):
        render(load_template("reasonrank"), "q", PASSAGES)


def test_rankgpt_words_and_override() -> None:
    t = load_template("rankgpt")
    assert render(t, "q", PASSAGES)[7]["content"].count("word") == 299
    assert render(t.with_truncation("chars", 10), "q", PASSAGES)[3]["content"] == "[1] First pass"


def test_clean_passage_neutralises_identifiers_and_mojibake() -> None:
    assert clean_passage("see [12] and  [a]\n") == "see (12) and [a]"
    assert clean_passage("cafÃ©") == "café"


def test_template_never_depends_on_the_model() -> None:
    # The same template renders the same prompt whatever the model; there is no model argument at all.
    assert render(load_template("rearank"), "q", PASSAGES) == render(load_template("rearank"), "q", PASSAGES)


GOOD = """name: mine
layout: single_turn
answer_format: think_answer
truncate: {unit: chars, length: 100}
passage: "[{rank}] {content}"
suffix: "Query: {query}. Rank the {num} passages."
"""


def test_custom_template_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    t = load_template(path)
    assert render(t, "q", ["a"])[-1]["content"] == "[1] a\nQuery: q. Rank the 1 passages."


@pytest.mark.parametrize(("change", "field", "says"), [
    (('passage: "[{rank}] {content}"', 'passage: "[{rank}]"'), "passage", "missing required placeholder"),
    (('suffix: "Query: {query}. Rank the {num} passages."', 'suffix: "Rank {num} by {relevance}."'), "suffix", "unknown placeholder"),
    (('suffix: "Query: {query}. Rank the {num} passages."', 'suffix: "Rank the {num} passages."'), "suffix", "{query}"),
    (("layout: single_turn", "layout: zigzag"), "layout", "must be one of"),
    (("answer_format: think_answer", "answer_format: xml"), "answer_format", "must be one of"),
    (("unit: chars", "unit: lines"), "truncate.unit", "unknown unit"),
    (("length: 100", "length: 0"), "truncate.length", "positive"),
    (("name: mine", "name: mine\ncolour: red"), "colour", "unknown key"),
    (("layout: single_turn", "layout: multi_turn"), "prefix", "multi_turn"),
    (('passage: "[{rank}] {content}"', 'passage: "[{rank] {content}"'), "passage", "placeholder syntax"),
])
def test_bad_templates(tmp_path: Path, change: tuple[str, str], field: str, says: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(InputError, match=None) as info:
        load_template(path)
    assert info.value.field == field and says in str(info.value) and str(path) in str(info.value)


def test_unknown_template_name() -> None:
    with pytest.raises(InputError, match="unknown prompt template"):
        load_template("rankzephyr")
