"""Evaluation, the way the papers measure it.

- :mod:`~spatialmix.evaluate.annotations`: the pathologist's annotation predicted from any representation
  (one-vs-rest balanced-bagging random forests; leave-one-sample-out and within-sample 4-fold).
- :mod:`~spatialmix.evaluate.metrics`: scIB metrics (scib-metrics), translation fidelity helpers, FOSCTTM and
  label transfer.
- :mod:`~spatialmix.evaluate.translation`: cross-validated translation fidelity against annotation centroids.
- :mod:`~spatialmix.evaluate.regression`: the best simple translation predictors (cross-validated ridge, kNN).
- :mod:`~spatialmix.evaluate.plots`: the benchmark figures.
"""

from . import annotations, metrics

__all__ = ["annotations", "metrics"]
