"""Simulated multi-sample Visium + MSI + H&E datasets (see :func:`iter_simulate`)."""
from .scene import SampleScene, sample_scene

__all__ = ["SampleScene", "sample_scene"]
