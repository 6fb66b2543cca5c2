"""Training: REARANK and ReasonRank rewards as TRL reward functions (``rewards``) and cold-start SFT on TRL
(``sft``), one config object per trainer. Sits beside ``rerank`` and ``data``; driven by ``stages.train``."""
