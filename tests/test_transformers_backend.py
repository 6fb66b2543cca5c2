"""The transformers backend on the real embedded model (float32, greedy) and on a tiny random Llama."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rearank_core.backends import transformers_engine  # noqa: E402
from rearank_core.backends.base import Completion  # noqa: E402
from rearank_core.backends.transformers_backend import TransformersBackend  # noqa: E402
from rearank_core.backends.transformers_engine import pick_dtype  # noqa: E402
from rearank_core.errors import BackendError  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Write a haiku about the sea, then explain it in detail."}],
    [{"role": "user", "content": "Count from 1 to 50, one number per line."}],
]


@pytest.fixture(scope="module")
def smol(embedded_dir) -> TransformersBackend:
    return TransformersBackend(str(embedded_dir), dtype="float32", batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def smol_hf(embedded_dir) -> TransformersBackend:
    return TransformersBackend(str(embedded_dir), dtype="float32", batch_size=8, device="cpu", engine="generate")


def _same(a: list[Completion], b: list[Completion]) -> bool:
    return [(c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in a] == \
        [(c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in b]


def test_complete_short_prompts(smol):
    assert (smol.name, smol.max_batch_size, smol.max_parallel_calls, smol.engine) == ("transformers", 8, 1, "loop")
    out = smol.complete(PROMPTS, max_new_tokens=16)
    assert len(out) == 3 and all(isinstance(c, Completion) for c in out)
    for prompt, c in zip(PROMPTS, out):
        ids = smol.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert c.prompt_tokens == len(ids)
        assert 1 <= c.completion_tokens <= 16 and c.latency_s > 0
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "length":
            assert c.completion_tokens == 16
    assert "Paris" in out[0].text and out[0].finish_reason == "stop" and out[0].completion_tokens < 16
    assert out[2].finish_reason == "length"  # 50 numbers do not fit in 16 tokens
    assert len({c.latency_s for c in out}) == 1  # one batch, one wall time
    assert smol.count_tokens("The capital of France is Paris.") == \
        len(smol.tokenizer("The capital of France is Paris.", add_special_tokens=False)["input_ids"])


def test_stop_string_cuts_generation(embedded_dir, smol):
    plain = smol.complete(PROMPTS[:1], max_new_tokens=16)[0]
    for engine in ("loop", "generate"):
        backend = TransformersBackend(str(embedded_dir), dtype="float32", device="cpu", stop_strings=("Paris",),
                                      engine=engine)
        c = backend.complete(PROMPTS[:1], max_new_tokens=16)[0]
        assert c.text.endswith("Paris") and c.finish_reason == "stop", engine
        assert c.completion_tokens < plain.completion_tokens  # the "." and <|im_end|> never generated
        assert c.text == plain.text[:len(c.text)]


def test_length_limit(smol):
    c = smol.complete(PROMPTS[2:], max_new_tokens=5)[0]
    assert (c.finish_reason, c.completion_tokens) == ("length", 5)


def test_batched_equals_unbatched_and_engines_agree(smol, smol_hf):
    """Greedy float32: left padding and the per-row stops must not change any row."""
    batched = smol.complete(PROMPTS, max_new_tokens=24)
    single = [smol.complete([p], max_new_tokens=24)[0] for p in PROMPTS]
    assert _same(batched, single)
    assert {c.finish_reason for c in batched} == {"stop", "length"}  # rows left the batch at different steps
    assert _same(batched, smol_hf.complete(PROMPTS, max_new_tokens=24))


def test_min_new_tokens_suppresses_eos_in_both_engines(embedded_dir, smol):
    plain = smol.complete(PROMPTS, max_new_tokens=16)
    assert plain[0].completion_tokens < 16  # "The capital of France is Paris." then EOS
    forced = [TransformersBackend(str(embedded_dir), dtype="float32", device="cpu", engine=engine,
                                  min_new_tokens=16).complete(PROMPTS, max_new_tokens=16)
              for engine in ("loop", "generate")]
    assert _same(*forced)
    assert all((c.completion_tokens, c.finish_reason) == (16, "length") for c in forced[0])
    assert forced[0][0].text.startswith(plain[0].text)


def test_tiny_model_batching_and_row_drop(tiny_dir):
    loop = TransformersBackend(str(tiny_dir), dtype="float32", batch_size=2, device="cpu", stop_strings=())
    hf = TransformersBackend(str(tiny_dir), dtype="float32", batch_size=4, device="cpu", stop_strings=(),
                             engine="generate")
    long_prompt = [{"role": "user", "content": "word " * 300}]
    prompts = [long_prompt, PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    base = hf.complete(prompts, max_new_tokens=12)
    assert all(c.finish_reason == "length" and c.completion_tokens == 12 for c in base)
    assert _same(base, loop.complete(prompts, max_new_tokens=12))  # 2 sub-batches of 2
    # Make one token an end token so that the long row stops early and the others do not: exercises
    # dropping rows and cutting the long row's padding columns from the batch cache.
    rows = [ids for ids, _ in loop.decoder.generate(loop.prompt_ids(prompts), 12)]
    candidates = [t for t in rows[0][1:6] if all(t not in r for r in rows[1:])]
    assert candidates, rows
    for backend in (loop, hf):
        backend.decoder.eos_ids = sorted(set(backend.decoder.eos_ids) | {candidates[0]})
        backend.decoder.generation_config.eos_token_id = backend.decoder.eos_ids
    loop.max_batch_size = 4
    batched = loop.complete(prompts, max_new_tokens=12)
    assert batched[0].finish_reason == "stop" and batched[0].completion_tokens < 12
    assert all(c.finish_reason == "length" for c in batched[1:])
    assert _same(batched, [loop.complete([p], max_new_tokens=12)[0] for p in prompts])
    assert _same(batched, hf.complete(prompts, max_new_tokens=12))


def test_missing_model_folder_is_a_backend_error(tmp_path):
    with pytest.raises(BackendError, match="no such model folder"):
        TransformersBackend(str(tmp_path / "no-model-here"))


def test_uncached_hub_id_offline_is_a_backend_error():
    with pytest.raises(BackendError) as err:
        TransformersBackend("rearank-tests/not-a-cached-model")
    assert "rearank-tests/not-a-cached-model" in str(err.value)


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs /proc/cpuinfo")
def test_auto_dtype_follows_the_cpu_flags():
    import torch

    # Read independently of the code under test: hardware bf16 is AMX or AVX512-BF16 in the CPU's flags.
    expected = torch.bfloat16 if _cpu_flags() & {"amx_bf16", "avx512_bf16"} else torch.float32
    assert pick_dtype("auto", "cpu") == expected


def test_auto_dtype_on_each_kind_of_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(transformers_engine, "cpu_has_fast_bf16", lambda: True)
    assert pick_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(transformers_engine, "cpu_has_fast_bf16", lambda: False)
    assert pick_dtype("auto", "cpu") == torch.float32


def test_named_dtypes():
    import torch

    assert pick_dtype("float32", "cpu") == torch.float32 and pick_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(BackendError):
        pick_dtype("int3", "cpu")


def test_repeated_prompts_share_one_prefill_and_decode_alike(tiny_dir):
    """A GRPO group repeats its prompt: the loop engine prefills it once, and greedy rows stay identical to the
    prompt decoded alone."""
    backend = TransformersBackend(str(tiny_dir), dtype="float32", batch_size=8, device="cpu", stop_strings=())
    ids = backend.prompt_ids([PROMPTS[0], PROMPTS[1]])
    rows = [ids[0], ids[0], ids[1], ids[0]]
    calls = []
    decoder_module = backend.model.get_decoder()
    hook = decoder_module.register_forward_hook(lambda _m, args, kwargs_out: calls.append(1))
    try:
        out = backend.decoder.generate(rows, 6)
    finally:
        hook.remove()
    assert len(calls) == 2 + 5  # two distinct prompts prefilled, then 5 batched decode steps
    alone = [backend.decoder.generate([row], 6)[0] for row in rows]
    assert out == alone


def test_sampling_decoder_varies_within_a_group_and_top_k_1_is_greedy(tiny_dir):
    import torch

    greedy = TransformersBackend(str(tiny_dir), dtype="float32", batch_size=8, device="cpu", stop_strings=())
    ids = greedy.prompt_ids([PROMPTS[0]])[0]
    expected = greedy.decoder.generate([ids], 8)[0][0]
    for engine in ("loop", "generate"):
        top1 = transformers_engine.Decoder(greedy.model, greedy.tokenizer, "cpu", engine=engine,
                                           sampling=transformers_engine.Sampling(temperature=0.7, top_k=1))
        assert [row for row, _ in top1.generate([ids, ids], 8)] == [expected, expected]
    torch.manual_seed(0)
    hot = transformers_engine.Decoder(greedy.model, greedy.tokenizer, "cpu", engine="loop",
                                      sampling=transformers_engine.Sampling(temperature=1.5, top_p=0.95))
    rows = [row for row, _ in hot.generate([ids] * 4, 8)]
    assert len({tuple(r) for r in rows}) > 1  # a random 2-layer model spreads its probability widely
    with pytest.raises(BackendError, match="temperature"):
        transformers_engine.Decoder(greedy.model, greedy.tokenizer, "cpu", sampling=transformers_engine.Sampling(0))
