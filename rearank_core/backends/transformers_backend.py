"""Local greedy generation with Hugging Face transformers, on CPU or one GPU.

Two engines produce the same greedy tokens:

- ``loop`` (the default on CPU for Llama/Qwen/Mistral-style decoders): each prompt is prefilled on its own
  (no padding, causal flash attention), its KV cache is copied right-aligned into one preallocated
  batch slab, and the batch decodes one token per step writing the cache in place (no ``torch.cat`` of
  the whole cache per step). Rows that end drop out of the batch and leading padding columns are cut.
  On a CPU the batched ``generate`` path is several times slower: a left-padded prefill takes SDPA's
  masked (non-flash) kernel and the dynamic cache copies itself on every step.
- ``generate``: ``model.generate`` with left padding (GPUs and any other architecture).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from rearank_core.backends.base import BackendError, Completion, Messages, check_call, local_model

DEFAULT_BATCH_SIZE = 16
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


class TransformersBackend:
    """Greedy batched generation (EOS or a stop string ends a sequence); see the module docstring."""

    name = "transformers"
    max_parallel_calls = 1

    def __init__(self, model: str, cache_dir: Path = Path("work/models"), batch_size: int = DEFAULT_BATCH_SIZE,
                 dtype: str = "auto", device: str = "auto", stop_strings: tuple[str, ...] = ("</answer>",),
                 threads: int | None = None, engine: str = "auto", min_new_tokens: int = 0):
        """``min_new_tokens``: EOS is suppressed until a sequence has this many tokens (HF's option of the same
        name; stop strings still end it). Throughput benchmarks set it to the generation limit so that every
        window decodes as long as a reasoning model's would."""
        if batch_size < 1:
            raise BackendError(f"batch_size must be at least 1, got {batch_size}")
        if engine not in ("auto", "loop", "generate"):
            raise BackendError(f"unknown engine {engine!r}: use auto, loop or generate")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.model_name = model
        self.max_batch_size = batch_size
        self.min_new_tokens = max(0, int(min_new_tokens))
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.path = local_model(model, cache_dir)
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype,
                                                              attn_implementation="sdpa")
        except Exception as exc:  # OSError (missing / not cached), ValueError (not a causal LM), ...
            hint = ("; HF_HUB_OFFLINE is set, so a hub id loads only from the local Hugging Face cache"
                    if offline and not Path(self.path).is_dir() else "")
            raise BackendError(f"cannot load model {model!r} ({self.path}): {type(exc).__name__}: {exc}{hint}") from exc
        try:
            self.model.to(self.device)
        except Exception as exc:
            raise BackendError(f"cannot move model {model!r} to device {self.device!r}: {exc}") from exc
        self.model.eval()

        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise BackendError(f"model {model!r} has no chat template in its tokenizer; use an instruct/chat model")
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        eos = self.model.generation_config.eos_token_id if self.model.generation_config is not None else None
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        if tok.eos_token_id is not None:
            eos_ids.add(tok.eos_token_id)
        self.eos_ids = sorted(eos_ids)
        self.generation_config = GenerationConfig(
            do_sample=False, num_beams=1, eos_token_id=self.eos_ids or None, pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id, use_cache=True, stop_strings=list(self.stop_strings) or None,
            min_new_tokens=self.min_new_tokens or None)
        # Tokens a stop string can span (every token decodes to at least one character, bar specials).
        self._stop_window = max((len(s) for s in self.stop_strings), default=0) + 8
        if engine == "auto":
            engine = "loop" if self.device == "cpu" and self._loop_supported() else "generate"
        elif engine == "loop" and not self._loop_supported():
            raise BackendError(f"engine 'loop' does not support model type "
                               f"{getattr(self.model.config, 'model_type', '?')!r}; use engine 'generate'")
        self.engine = engine
        # Time split of the last ``complete`` call (seconds, summed over its sub-batches), for benchmarks.
        self.last_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    def _loop_supported(self) -> bool:
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        config = self.model.config
        if getattr(config, "model_type", None) not in LOOP_MODEL_TYPES:
            return False
        if getattr(config, "final_logit_softcapping", None):
            return False
        head = self.model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear) or head.bias is not None:
            return False
        layers = DynamicCache(config=config).layers
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def count_tokens(self, text: str) -> int | None:
        if self.tokenizer is None:
            return None
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(self, prompts: list[Messages]) -> list[list[int]]:
        texts = [self.tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        # The chat template already holds the special tokens (BOS, role markers).
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _stop_hit(self, ids: list[int]) -> bool:
        """Whether the newest token completed a stop string (only the tail is decoded)."""
        tail = self.tokenizer.decode(ids[-self._stop_window:], skip_special_tokens=True)
        return any(s in tail for s in self.stop_strings)

    def _text(self, ids: list[int]) -> str:
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

    # ------------------------------------------------------------------ API
    def complete(self, prompts: list[Messages], max_new_tokens: int) -> list[Completion]:
        if not prompts:
            return []
        check_call(self.name, self.model, max_new_tokens)
        results: list[Completion] = []
        self.last_stats = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0, "total_s": 0.0}
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = prompts[start:start + self.max_batch_size]
            started = time.perf_counter()
            rows = self._prompt_ids(chunk)
            try:
                if self.engine == "loop":
                    outs = self._generate_loop(rows, max_new_tokens)
                else:
                    outs = self._generate_hf(rows, max_new_tokens)
            except BackendError:
                raise
            except Exception as exc:
                raise BackendError(f"generation with model {self.model_name!r} failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
            latency = time.perf_counter() - started
            self.last_stats["total_s"] += latency
            for prompt_ids, (ids, reason) in zip(rows, outs):
                results.append(Completion(text=self._text(ids), prompt_tokens=len(prompt_ids),
                                          completion_tokens=len(ids), finish_reason=reason, latency_s=latency))
        return results

    # ------------------------------------------------------------------ engines
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
        """Greedy next tokens of [batch, hidden] states, ``generated`` tokens into every row. (V x H) @ (H x B)
        is up to 2x faster than F.linear for small batches on CPU BLAS; argmax does not care about the layout."""
        import torch

        logits = torch.mm(self.model.get_output_embeddings().weight, hidden.t())
        if generated < self.min_new_tokens and self.eos_ids:
            logits[self.eos_ids] = float("-inf")
        return logits.argmax(0).tolist()

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
        first: list[int] = []
        stats = self.last_stats
        t0 = time.perf_counter()
        with torch.inference_mode():
            # Prefill one prompt at a time: no padding, so SDPA runs its causal flash kernel.
            for i, ids in enumerate(rows):
                cache = DynamicCache(config=model.config)
                out = decoder(input_ids=torch.tensor([ids], device=device), past_key_values=cache, use_cache=True)
                first.extend(self._next_tokens(out.last_hidden_state[:, -1], 0))
                for layer_idx, layer in enumerate(cache.layers):
                    k, v = layer.keys, layer.values
                    if i == 0:
                        shape_k = (n, k.shape[1], capacity, k.shape[3])
                        shape_v = (n, v.shape[1], capacity, v.shape[3])
                        keys.append(torch.empty(shape_k, dtype=k.dtype, device=device))
                        values.append(torch.empty(shape_v, dtype=v.dtype, device=device))
                    pad = width - lens[i]
                    keys[layer_idx][i, :, :pad].zero_()  # masked, but must not hold NaN/inf garbage
                    values[layer_idx][i, :, :pad].zero_()
                    keys[layer_idx][i, :, pad:width].copy_(k[0])
                    values[layer_idx][i, :, pad:width].copy_(v[0])
                del cache, out

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

    def close(self) -> None:
        self.model = None
        self.tokenizer = None

