"""The SALMUBench evaluation: metrics on embeddings and the evaluator registry."""
