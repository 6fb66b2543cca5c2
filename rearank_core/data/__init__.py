"""Training data (record kinds: ``io.training_data``): REARANK augmentation (``augment``), the leakage guard (``leakage``),
teacher distillation (``teacher``), the self-consistency filter (``filter``), SFT/GRPO records (``build``), dataset
cards (``card``) and the great-expectations gate (``validation``). Sits beside ``rerank``; driven by the stage
functions in ``stages.data``."""
