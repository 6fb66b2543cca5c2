"""Prompt templates: built-ins render as the papers describe; bad templates fail on load, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rearank_core.backends.base import hf_count_tokens, hf_truncate
from rearank_core.config import RerankConfig
from rearank_core.errors import InputError
from rearank_core import prompts
from rearank_core.prompts import BUILTIN, clean_passage, load_template, render
from rearank_core.records import Candidate, Query, Request
from rearank_core.rerank import Reranker

PASSAGES = ["First passage cites [2] and [10].", "Second   passage\nwith  spaces.", "Third " + "word " * 500]


def test_builtins_load() -> None:
    assert set(BUILTIN) == {"first", "rankgpt", "rearank", "reasonrank", "teacher"}
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


def test_reasonrank_single_message_and_token_truncation(embedded_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)  # the embedded model's real tokenizer
    messages = render(load_template("reasonrank"), "q", PASSAGES, tokenizer=lambda text, n: hf_truncate(tokenizer, text, n))
    assert [m["role"] for m in messages] == ["system", "user"]
    lines = messages[1]["content"].split("\n")
    assert "[1] First passage cites (2) and (10)." in lines
    third = next(line for line in lines if line.startswith("[3] "))[4:]
    assert ("Third " + "word " * 500).startswith(third)
    assert hf_count_tokens(tokenizer, third) == 100  # the template's 100 tokens, counted by the tokenizer itself


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


class _NoTokenizer:
    name, max_batch_size, max_parallel_calls, has_tokenizer = "none", 1, 1, False


@pytest.mark.parametrize("prompt", ["rearank", "rankgpt"])
def test_template_never_depends_on_the_model(prompt: str) -> None:
    # REARANK's code switches to the RankGPT prompt for checkpoints whose name lacks 'le723z'; ours renders the
    # chosen template the same whatever the model's name, and different templates differently.
    request = Request(Query("q1", "what is x?"), [Candidate(f"d{i}", 1.0, {"contents": p}) for i, p in enumerate(PASSAGES)])
    rendered = [Reranker(RerankConfig(model=model, prompt=prompt), backend=_NoTokenizer()).prompt_for(request, 0, 3)
                for model in ("le723z/Rearank-7B", "Qwen/Qwen2.5-7B-Instruct", "embedded")]
    assert rendered[0] == rendered[1] == rendered[2] == render(load_template(prompt), "what is x?", PASSAGES)
    other = "rankgpt" if prompt == "rearank" else "rearank"
    assert rendered[0] != render(load_template(other), "what is x?", PASSAGES)


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


def test_the_first_template_labels_passages_with_letters_and_keeps_letter_brackets_out_of_passages() -> None:
    template = load_template("first")
    assert (template.identifiers, template.answer_prefix) == ("letters", "[")
    messages = render(template, "q", ["see [B] and [2]", "two", "three"])
    body = messages[-1]["content"]
    assert "[A] see (B) and (2)\n[B] two\n[C] three" in body and "[D]" not in body.split("e.g.")[0]
    with pytest.raises(InputError, match="at most 26"):
        render(template, "q", ["p"] * 27)
    assert clean_passage("keep [B] as is") == "keep [B] as is"  # number templates do not touch letters


def test_a_template_with_unknown_identifiers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    text = (Path(prompts.__file__).parent / "first.yaml").read_text(encoding="utf-8")
    path.write_text(text.replace("identifiers: letters", "identifiers: roman"), encoding="utf-8")
    with pytest.raises(InputError, match="identifiers"):
        load_template(path)
