"""Prefect flows: thin drivers over ``rearank_core.stages``, one per job of params.yaml (installed with the
``rearank`` package, so ``python -m flows.bm25_baseline`` works from any folder that holds a params.yaml)."""
