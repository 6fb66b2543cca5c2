"""Generation backends behind one interface (``base.Backend``), built by ``registry.make_backend``.

Each backend module is imported only when chosen, so the vLLM extra and the model stack load only for the
runs that use them: ``embedded`` (the default model's conversion), ``transformers_engine`` (greedy batched
decoding on a loaded HF model) under ``transformers_backend``, ``openai_backend`` and ``vllm_backend``."""
