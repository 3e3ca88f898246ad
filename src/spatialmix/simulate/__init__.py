"""Simulated multi-sample Visium + MSI + H&E datasets with known ground truth.

``simulate(out)`` writes the bundled demo layout (``docs/conventions.md``, "Files"); ``sample_scene(...)``
returns the geometry and images of one sample quickly (for registration tests) without counts or spectra.
"""

from .core import iter_simulate, simulate
from .scene import SampleScene, sample_scene

__all__ = ["SampleScene", "iter_simulate", "sample_scene", "simulate"]

from .truth import load_truth  # noqa: E402

__all__ += ["load_truth"]
