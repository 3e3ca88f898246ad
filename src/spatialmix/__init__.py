"""napari-spatialmix: integrate and batch-correct spatial multi-omics (Visium, MSI, H&E) as SpatialData.

The headless API is grouped by purpose (submodules are imported lazily, so ``import spatialmix`` is fast):

- :mod:`spatialmix.io` – readers for Space Ranger ``outs/``, imzML, H&E images, annotation CSVs; project zarr.
- :mod:`spatialmix.simulate` – realistic multi-sample sample data in the real file formats.
- :mod:`spatialmix.registration` – landmark and automatic alignment of MSI / H&E onto the Visium spots.
- :mod:`spatialmix.features` – MSI pixels -> spots, H&E -> per-spot morphology features.
- :mod:`spatialmix.data` – paired per-spot matrices of every modality, ready for the models.
- :mod:`spatialmix.models` – MIMA and the baselines; :mod:`spatialmix.train` – the one training engine.
- :mod:`spatialmix.results` – model outputs written into the SpatialData.
- :mod:`spatialmix.evaluate` – annotation prediction, scIB metrics, translation fidelity.
- :mod:`spatialmix.conventions` – names every layer shares; :mod:`spatialmix.samples` – ``samples.csv`` and
  :class:`~spatialmix.samples.SampleSpec`.
- :mod:`spatialmix.pipeline` – read, register and merge samples into per-spot tables (``prepare``).
- :mod:`spatialmix.jobs` – the main jobs (``demo``, ``spatialmix run``) used by the CLI and the widgets;
  :mod:`spatialmix.benchmark` – every model and baseline measured on one dataset.

The modules form layers (every import goes downward; ``tests/test_architecture.py``): docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "io",
    "simulate",
    "registration",
    "features",
    "data",
    "conventions",
    "samples",
    "pipeline",
    "jobs",
    "plotting",
    "project",
    "progress",
    "errors",
    "models",
    "train",
    "results",
    "evaluate",
    "integrate",
    "benchmark",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"spatialmix.{name}")
    raise AttributeError(f"module 'spatialmix' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__"]
