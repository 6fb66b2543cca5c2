"""Training (to come): REARANK and ReasonRank rewards as TRL reward functions, cold-start SFT and GRPO on TRL,
one config object per trainer. Sits beside ``rerank`` and ``data``; driven by stage functions in ``stages``."""
