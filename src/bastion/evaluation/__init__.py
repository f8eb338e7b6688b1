"""Evaluation: question sets, configurations, runs and their metrics, promotion and pinned
regression sets (``Workspace.evaluation``; see docs/evaluation.md)."""
