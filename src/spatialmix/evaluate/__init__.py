"""Evaluation: integration metrics (scib-metrics), translation fidelity."""

from . import metrics

__all__ = ["metrics"]
