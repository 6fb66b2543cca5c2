"""Training data (to come): REARANK augmentation of labelled windows, teacher distillation through a backend,
the self-consistency filter, SFT/GRPO record builders and the great-expectations gate. Sits beside ``rerank``:
it may use backends, prompts, io and evaluation, and is driven by stage functions in ``stages``."""
