"""Observations (completion, sensing) and synthetic ground truths."""

from factorflow.problems.completion import Completion, sample_indices

__all__ = ["Completion", "sample_indices"]
