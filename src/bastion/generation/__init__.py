"""Answers from a local LLM: models, prompts, trust checks, extractive fallback, lineage."""
