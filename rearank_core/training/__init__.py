"""Training: REARANK and ReasonRank rewards as TRL reward functions (``rewards``), cold-start SFT (``sft``) and GRPO
(``grpo``) on TRL, one config object per trainer, shared set-up in ``setup``. Sits beside ``rerank`` and ``data``;
driven by ``stages.train``."""
