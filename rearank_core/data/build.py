"""Training records from windows (and filtered teacher records): SFT chat records and GRPO prompt records,
rendered with the same prompt templates the reranker uses, so training and inference see the same prompts."""

from __future__ import annotations

from rearank_core.data.teacher import gold_order
from rearank_core.io.training_data import (
    GRPORecord,
    SFTRecord,
    TeacherRecord,
    WindowRecord,
)
from rearank_core.prompts import PromptTemplate, Tokenizer, render


def assistant_turn(record: TeacherRecord) -> str:
    return f"<think>{record.reasoning}</think>\n<answer>{' > '.join(f'[{i}]' for i in record.final)}</answer>"


def build_records(windows: list[WindowRecord], teacher: dict[str, TeacherRecord] | None, template: PromptTemplate,
                  tokenizer: Tokenizer | None = None) -> tuple[list[SFTRecord], list[GRPORecord]]:
    """SFT records for the windows that have a teacher record; GRPO records for every window (``relevant`` and
    ``gold`` from its teacher record where there is one, else from its labels)."""
    sft: list[SFTRecord] = []
    grpo: list[GRPORecord] = []
    for window in windows:
        prompt = render(template, window.query, window.passages, tokenizer)
        answer = (teacher or {}).get(window.id)
        if answer is not None:
            sft.append(SFTRecord(id=window.id, qid=window.qid, teacher=answer.teacher,
                                 messages=[*prompt, {"role": "assistant", "content": assistant_turn(answer)}]))
        relevant = answer.relevant if answer else [i for i in gold_order(window.labels) if window.labels[i - 1] > 0]
        gold = answer.final if answer else gold_order(window.labels)
        grpo.append(GRPORecord(id=window.id, qid=window.qid, prompt=prompt, labels=list(window.labels),
                               relevant=sorted(relevant), gold=gold))
    return sft, grpo
