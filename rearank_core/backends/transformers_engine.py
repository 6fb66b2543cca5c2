"""Decoding of token-id rows on a loaded Hugging Face causal LM, on CPU or one GPU: greedy (reranking) or
sampled (GRPO rollouts).

Two engines produce the same greedy tokens:

- ``loop`` (the default on CPU for Llama/Qwen/Mistral-style decoders): each distinct prompt is prefilled once on
  its own (no padding, causal flash attention; a GRPO group of identical prompts costs one prefill), its KV cache
  is copied right-aligned into one preallocated batch slab, and the batch decodes one token per step writing the cache in place (no ``torch.cat`` of
  the whole cache per step). Rows that end drop out of the batch and leading padding columns are cut.
  On a CPU the batched ``generate`` path is several times slower: a left-padded prefill takes SDPA's
  masked (non-flash) kernel and the dynamic cache copies itself on every step.
- ``generate``: ``model.generate`` with left padding (GPUs and any other architecture).

``TransformersBackend`` (``transformers_backend``) loads the model and tokenizer, renders chat prompts to
token ids and turns decoded ids into ``Completion`` records; this module only decodes.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

from rearank_core.errors import BackendError

ENGINES = ("auto", "loop", "generate")
# Decoder families whose HF forward takes (input_ids, attention_mask, position_ids, past_key_values) and
# keeps plain per-layer KV tensors: the ``loop`` engine supports exactly these.
LOOP_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Elsewhere torch emulates bf16
    matmuls, over a hundred times slower than float32 (about 1 vs 125-149 GFLOP/s on a 2-core AVX2 EPYC)."""
    import torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # pragma: no cover - private torch helpers
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[1].split()) & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str):
    """"auto": bf16 on CUDA (fp16 where bf16 is missing) and on CPUs with hardware bf16, else float32."""
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "cpu":
            return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
        return torch.float32
    if dtype not in names:
        raise BackendError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return names[dtype]


def _slab_layer_class():
    """A DynamicLayer over a preallocated [batch, heads, capacity, dim] buffer, written in place."""
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        def __init__(self, keys, values, length: int):
            super().__init__()
            self.buf_k, self.buf_v, self.length = keys, values, length
            self.dtype, self.device = keys.dtype, keys.device
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            self.buf_k[:, :, self.length:end].copy_(key_states)
            self.buf_v[:, :, self.length:end].copy_(value_states)
            self.length = end
            self.keys, self.values = self.buf_k[:, :, :end], self.buf_v[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

    return SlabLayer


def loop_supported(model: object) -> bool:
    """Whether the ``loop`` engine can decode ``model`` (see LOOP_MODEL_TYPES)."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = model.config
    if getattr(config, "model_type", None) not in LOOP_MODEL_TYPES:
        return False
    if getattr(config, "final_logit_softcapping", None):
        return False
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return False
    layers = DynamicCache(config=config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@dataclass(frozen=True)
class Sampling:
    """Sampling instead of greedy choice, as HF's ``generate`` does it: logits / temperature, then the top-k
    tokens (0: all), then the smallest set holding ``top_p`` of the probability."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


class Decoder:
    """Decoding of prompt token ids (EOS or a stop string ends a row) with one of the two engines, greedy or
    with ``sampling`` (torch's global RNG, so a seeded trainer samples reproducibly).

    ``min_new_tokens``: EOS is suppressed until a row has this many tokens (HF's option of the same name; stop
    strings still end it). ``last_stats``: time split of the last ``generate`` call (seconds), for benchmarks."""

    def __init__(self, model: object, tokenizer: object, device: str, stop_strings: tuple[str, ...] = (),
                 min_new_tokens: int = 0, engine: str = "auto", sampling: Sampling | None = None):
        from transformers import GenerationConfig

        if engine not in ENGINES:
            raise BackendError(f"unknown engine {engine!r}: use {', '.join(ENGINES)}")
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.min_new_tokens = max(0, int(min_new_tokens))
        tok = tokenizer
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        if tok.eos_token_id is not None:
            eos_ids.add(tok.eos_token_id)
        self.eos_ids = sorted(eos_ids)
        if sampling is not None and sampling.temperature <= 0:
            raise BackendError(f"sampling temperature must be above 0, got {sampling.temperature}")
        self.sampling = sampling
        sample_args = ({"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
                        "top_k": sampling.top_k or None} if sampling else {"do_sample": False})
        self.generation_config = GenerationConfig(
            **sample_args, num_beams=1, eos_token_id=self.eos_ids or None, pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id, use_cache=True, stop_strings=list(self.stop_strings) or None,
            min_new_tokens=self.min_new_tokens or None)
        # Tokens a stop string can span (every token decodes to at least one character, bar specials).
        self._stop_window = max((len(s) for s in self.stop_strings), default=0) + 8
        if engine == "auto":
            engine = "loop" if device == "cpu" and loop_supported(model) else "generate"
        elif engine == "loop" and not loop_supported(model):
            raise BackendError(f"engine 'loop' does not support model type "
                               f"{getattr(model.config, 'model_type', '?')!r}; use engine 'generate'")
        self.engine = engine
        self.last_stats: dict[str, float] = {}

    def generate(self, rows: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], str]]:
        """Each row's generated ids and why it ended ("stop" or "length")."""
        if self.engine == "loop":
            return self._generate_loop(rows, max_new_tokens)
        return self._generate_hf(rows, max_new_tokens)

    def next_token_logprobs(self, rows: list[list[int]], token_ids: list[int]) -> list[list[float]]:
        """Log-probabilities of ``token_ids`` as the token after each row: one forward pass, no decoding (first
        mode). The ``loop`` engine runs each row on its own (no padding: SDPA's causal flash kernel) and applies
        the LM head to the last position only; ``generate`` pads the batch and keeps one position's logits."""
        import torch

        wanted = torch.tensor(token_ids, device=self.device)
        scores = []
        with torch.inference_mode():
            if self.engine == "loop":
                decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
                for ids in rows:
                    hidden = decoder(input_ids=torch.tensor([ids], device=self.device)).last_hidden_state[0, -1]
                    scores.append(head(hidden).float().log_softmax(-1)[wanted].tolist())
            else:
                pad = self.tokenizer.pad_token_id
                width = max(len(r) for r in rows)
                ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
                logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
                scores = logits.float().log_softmax(-1)[:, wanted].tolist()
        return scores

    def _stop_hit(self, ids: list[int]) -> bool:
        """Whether the newest token completed a stop string (only the tail is decoded)."""
        tail = self.tokenizer.decode(ids[-self._stop_window:], skip_special_tokens=True)
        return any(s in tail for s in self.stop_strings)

    def text(self, ids: list[int]) -> str:
        """Decoded ids, cut after the first stop string."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        hits = [text.find(s) + len(s) for s in self.stop_strings if s in text]
        return text[:min(hits)] if hits else text

    def _finish_generate_row(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], str]:
        """Cut one ``generate`` row (padded after its end) to its real tokens; return them and the reason."""
        eos = set(self.eos_ids)
        for i, token in enumerate(ids):
            if token in eos:
                return ids[:i + 1], "stop"
            if self.stop_strings and self._stop_hit(ids[:i + 1]):
                return ids[:i + 1], "stop"
        return ids, ("length" if len(ids) >= max_new_tokens else "stop")

    def _generate_hf(self, rows: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], str]]:
        import copy

        import torch

        enc = self.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
        config = copy.deepcopy(self.generation_config)
        config.max_new_tokens = max_new_tokens
        kwargs = {"tokenizer": self.tokenizer} if self.stop_strings else {}
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.model.generate(input_ids=enc["input_ids"].to(self.device),
                                      attention_mask=enc["attention_mask"].to(self.device),
                                      generation_config=config, **kwargs)
        width = enc["input_ids"].shape[1]
        return [self._finish_generate_row(row, max_new_tokens) for row in out[:, width:].tolist()]

    def _next_tokens(self, hidden, generated: int) -> list[int]:
        """Next tokens of [batch, hidden] states, ``generated`` tokens into every row. (V x H) @ (H x B) is up to
        2x faster than F.linear for small batches on CPU BLAS; argmax does not care about the layout."""
        import torch

        logits = torch.mm(self.model.get_output_embeddings().weight, hidden.t())
        if generated < self.min_new_tokens and self.eos_ids:
            logits[self.eos_ids] = float("-inf")
        if self.sampling is None:
            return logits.argmax(0).tolist()
        return self._sample(logits.t().float() / self.sampling.temperature)

    def _sample(self, logits) -> list[int]:
        """One token per row of [batch, vocab] tempered logits, top-k then top-p filtered."""
        import torch

        top_k, top_p = self.sampling.top_k, self.sampling.top_p
        if 0 < top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            ordered, order = torch.sort(logits, dim=-1, descending=True)
            mass = ordered.softmax(-1).cumsum(-1)
            drop = mass - ordered.softmax(-1) >= top_p  # keep the tokens until the mass first reaches top_p
            logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
        return torch.multinomial(logits.softmax(-1), 1).squeeze(-1).tolist()

    def _generate_loop(self, rows: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], str]]:
        import torch
        from transformers import DynamicCache

        SlabLayer = _slab_layer_class()
        model, device = self.model, self.device
        decoder = model.get_decoder()
        eos = set(self.eos_ids)
        n = len(rows)
        lens = [len(r) for r in rows]
        width = max(lens)
        capacity = width + max_new_tokens
        keys: list = []
        values: list = []
        last: list = []  # each row's final prompt state: its first token is chosen from it
        seen: dict[tuple[int, ...], int] = {}  # prompt -> the first row that holds it
        stats = self.last_stats
        t0 = time.perf_counter()
        with torch.inference_mode():
            # Prefill each distinct prompt once, on its own: no padding, so SDPA runs its causal flash kernel.
            for i, ids in enumerate(rows):
                pad = width - lens[i]
                twin = seen.setdefault(tuple(ids), i)
                if twin != i:
                    for buffer in keys + values:
                        buffer[i].copy_(buffer[twin])
                    last.append(last[twin])
                    continue
                cache = DynamicCache(config=model.config)
                out = decoder(input_ids=torch.tensor([ids], device=device), past_key_values=cache, use_cache=True)
                last.append(out.last_hidden_state[0, -1])
                for layer_idx, layer in enumerate(cache.layers):
                    k, v = layer.keys, layer.values
                    if i == 0:
                        shape_k = (n, k.shape[1], capacity, k.shape[3])
                        shape_v = (n, v.shape[1], capacity, v.shape[3])
                        keys.append(torch.empty(shape_k, dtype=k.dtype, device=device))
                        values.append(torch.empty(shape_v, dtype=v.dtype, device=device))
                    keys[layer_idx][i, :, :pad].zero_()  # masked, but must not hold NaN/inf garbage
                    values[layer_idx][i, :, :pad].zero_()
                    keys[layer_idx][i, :, pad:width].copy_(k[0])
                    values[layer_idx][i, :, pad:width].copy_(v[0])
                del cache, out
            first = self._next_tokens(torch.stack(last), 0)

            t1 = time.perf_counter()
            stats["prefill_s"] = stats.get("prefill_s", 0.0) + t1 - t0
            mask = torch.zeros((n, capacity), dtype=torch.long, device=device)
            for i, length in enumerate(lens):
                mask[i, width - length:width] = 1
            positions = torch.tensor(lens, dtype=torch.long, device=device)  # next position id per row
            generated: list[list[int]] = [[] for _ in range(n)]
            reasons: list[str | None] = [None] * n
            active = list(range(n))  # batch slot -> prompt index
            end = width  # cache columns [0, end) of the slab are filled
            tokens = first
            cache = None
            while True:
                still = []
                for slot, (row, token) in enumerate(zip(active, tokens)):
                    generated[row].append(token)
                    if token in eos or (self.stop_strings and self._stop_hit(generated[row])):
                        reasons[row] = "stop"
                    elif len(generated[row]) >= max_new_tokens:
                        reasons[row] = "length"
                    else:
                        still.append(slot)
                if not still:
                    break
                if len(still) < len(active):
                    # Drop finished rows; cut the leading columns that only they needed.
                    keep = torch.tensor(still, device=device)
                    active = [active[s] for s in still]
                    tokens = [tokens[s] for s in still]
                    mask = mask.index_select(0, keep)
                    cut = int((mask[:, :end] == 0).all(0).long().cumprod(0).sum())
                    keys = [k[:, :, cut:].index_select(0, keep) for k in keys]  # one copy each
                    values = [v[:, :, cut:].index_select(0, keep) for v in values]
                    mask = mask[:, cut:].contiguous()
                    positions = positions.index_select(0, keep)
                    end -= cut
                    cache = None
                if cache is None:
                    cache = DynamicCache(config=model.config)
                    cache.layers = [SlabLayer(k, v, end) for k, v in zip(keys, values)]
                mask[:, end] = 1
                out = decoder(input_ids=torch.tensor(tokens, device=device)[:, None],
                              attention_mask=mask[:, :end + 1], position_ids=positions[:, None],
                              past_key_values=cache, use_cache=True)
                tokens = self._next_tokens(out.last_hidden_state[:, -1], len(generated[active[0]]))
                positions += 1
                end += 1
                stats["decode_steps"] = stats.get("decode_steps", 0) + 1
            stats["decode_s"] = stats.get("decode_s", 0.0) + time.perf_counter() - t1
        return [(generated[i], reasons[i] or "length") for i in range(n)]

