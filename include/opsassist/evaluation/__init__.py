"""Retrieval evaluation: versioned question sets, document-level metrics, MLflow runs, the gate.

- :mod:`.evalset`: the set files in ``opsassist/evalsets`` and their relevance rules
- :mod:`.metrics`: recall@k, MRR, nDCG, percentiles (pure functions)
- :mod:`.runner`: one set against one index version, in BM25, vector and hybrid modes
- :mod:`.tracking`: MLflow experiments, runs, params, metrics and artifacts
- :mod:`.gate`: the promotion gate of the runbook pipeline
- :mod:`.signals`: the loghub signal documents the signals set is measured on
- :mod:`.service`: the entry point of ``opsassist eval`` and the evaluation DAG
"""
