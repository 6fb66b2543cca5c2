"""FIRST's training objective (Reddy et al., EMNLP 2024; reference code gangiswag/llm-reranker,
``scripts/train_ranking.py`` and ``scripts/utils/loss.py``): the language-modelling loss on the gold order's
identifiers plus a weighted RankNet loss on the logits of the answer's first identifier, from window records.

A window becomes a prompt-completion row: the prompt rendered with a letters template (``first``), the completion
the gold order ``[B] > [A] > ...`` (passages by graded label, ties in window order). The first identifier's logits
are read where the first-mode reranker reads them: after the answer's opening text, which is the completion's
first token(s). RankNet runs over the pairs the labels order (label i > label j), each weighted 1/(r_i + r_j) with
r the 1-based gold positions, as the reference's ``weighted=True``: pairs near the top count most."""

from __future__ import annotations

from typing import Any

from rearank_core.errors import InputError
from rearank_core.io.training_data import WindowRecord
from rearank_core.prompts import LETTERS, PromptTemplate, render


def gold_order(labels: list[int]) -> list[int]:
    """Window positions by graded label, highest first; ties keep window order."""
    return sorted(range(len(labels)), key=lambda i: (-labels[i], i))


def first_rows(windows: list[WindowRecord], template: PromptTemplate) -> list[dict[str, Any]]:
    """TRL's conversational prompt-completion rows, each with its window's graded labels (``relevance``)."""
    if template.identifiers != "letters" or not template.answer_prefix:
        raise InputError(f"template {template.name!r} has no single-token identifiers and answer prefix; FIRST "
                         "training needs one like 'first' (identifiers: letters, answer_prefix: '[')",
                         field="first_prompt")
    rows = []
    for window in windows:
        if len(window.passages) > len(LETTERS):
            raise InputError(f"window {window.id} holds {len(window.passages)} passages; FIRST's identifiers "
                             f"[A]..[Z] label at most {len(LETTERS)}", field="passages")
        answer = " > ".join(f"[{template.identifier(i + 1)}]" for i in gold_order(window.labels))
        if not answer.startswith(template.answer_prefix):
            raise InputError(f"template {template.name!r}: the answer {answer[:12]!r}... does not start with its "
                             f"answer_prefix {template.answer_prefix!r}", field="answer_prefix")
        rows.append({"prompt": render(template, window.query, window.passages),
                     "completion": [{"role": "assistant", "content": answer}], "relevance": list(window.labels)})
    return rows


def weighted_ranknet(scores: Any, labels: list[int]) -> Any:
    """RankNet over the pairs ``labels`` order: mean of w_ij * -log sigmoid(s_i - s_j) for label_i > label_j, with
    w_ij = 1 / (r_i + r_j), r the 1-based gold positions (the reference: BCEWithLogitsLoss(weight=1/rank_sum),
    a plain mean over the pairs). A window whose labels are all equal has no pair: 0, no gradient."""
    import torch

    n = len(labels)
    rank = torch.empty(n, dtype=scores.dtype, device=scores.device)
    rank[gold_order(labels)] = torch.arange(1, n + 1, dtype=scores.dtype, device=scores.device)
    grades = torch.tensor(labels, device=scores.device)
    ordered = grades[:, None] > grades[None, :]
    if not bool(ordered.any()):
        return scores.sum() * 0.0
    diffs = (scores[:, None] - scores[None, :])[ordered]
    weights = 1.0 / (rank[:, None] + rank[None, :])[ordered]
    return (weights * torch.nn.functional.softplus(-diffs)).mean()


class RelevanceCollator:
    """TRL's collator for the tokenized rows, plus each row's graded labels, padded with -1 (``relevance``)."""

    def __init__(self, base: Any):
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        labels = [example["relevance"] for example in examples]
        batch = self.base([{k: v for k, v in example.items() if k != "relevance"} for example in examples])
        width = max(len(row) for row in labels)
        batch["relevance"] = torch.tensor([row + [-1] * (width - len(row)) for row in labels])
        return batch


def first_trainer_class() -> type:
    """TRL's SFTTrainer with FIRST's loss (imported on first use: TRL takes seconds to import)."""
    import torch
    from trl import SFTTrainer

    class FirstTrainer(SFTTrainer):
        """SFTTrainer whose loss adds ``ranknet_weight`` x weighted RankNet on the first identifier's logits; the
        LM loss is TRL's own (fused LM head). The final norm's output is caught on the same forward pass, so the
        RankNet term costs one LM-head row per window, not a second forward."""

        def __init__(self, *args: Any, identifier_ids: list[int], prefix_tokens: int, ranknet_weight: float,
                     **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.identifier_ids, self.prefix_tokens, self.ranknet_weight = identifier_ids, prefix_tokens, ranknet_weight
            self.data_collator = RelevanceCollator(self.data_collator)

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            relevance = inputs.pop("relevance")
            base = self.accelerator.unwrap_model(model)
            base = base.get_base_model() if hasattr(base, "get_base_model") else base
            caught: dict[str, Any] = {}
            hook = base.get_decoder().norm.register_forward_hook(lambda _m, _i, out: caught.__setitem__("h", out))
            try:
                lm = super().compute_loss(model, inputs, return_outputs=False, num_items_in_batch=num_items_in_batch)
            finally:
                hook.remove()
            labels = inputs["labels"]
            starts = (labels != -100).int().argmax(dim=1)  # each row's first completion token: the answer prefix
            at = starts + self.prefix_tokens - 1  # its last token's state predicts the first identifier
            rows = torch.arange(labels.shape[0], device=labels.device)
            expected = labels[rows, at + 1]
            ids = torch.tensor(self.identifier_ids, device=labels.device)
            if not bool(torch.isin(expected, ids).all()):
                raise RuntimeError("FIRST: the token after the answer prefix is not an identifier in every row; "
                                   "the completion does not start as the template's answer does")
            logits = base.get_output_embeddings()(caught["h"][rows, at]).float()[:, ids]
            losses = []
            for row, grades in enumerate(relevance.tolist()):
                grades = [g for g in grades if g >= 0]
                losses.append(weighted_ranknet(logits[row, :len(grades)], grades))
            rank = torch.stack(losses).mean()
            self._metrics["train" if self.model.training else "eval"]["ranknet_loss"].append(float(rank.detach()))
            # Where Trainer leaves gradient accumulation to the loss (TRL's LM term is then normalised by the tokens
            # of all accumulated micro-batches), the per-micro-batch RankNet mean is divided by their number too.
            scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (
                (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None)
            loss = lm + self.ranknet_weight * rank / (self.current_gradient_accumulation_steps if scaled else 1)
            return (loss, None) if return_outputs else loss

    return FirstTrainer
