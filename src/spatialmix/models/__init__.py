"""Integration and batch-correction models behind one interface (scvi-tools-like).

``MIMA`` (default): product-of-experts VAE with shared, private and batch latents; ``MoDAmix``: supervised
domain adaptation from labelled source samples; ``Calibration``: multi-batch calibration (MMD + label
discriminator + reconstructors); ``SCMODAL``: unpaired modalities aligned through feature links. See
``docs/models.md``.
Pure networks live in private ``_*_module`` files, the user API in the model classes.
"""

from ._base import BaseModel
from .calibration import Calibration
from .mima import MIMA
from .modamix import MoDAmix
from .scmodal import SCMODAL

#: every trained model by the name the CLI, the run configuration and the napari widget use
MODELS = {"mima": MIMA, "modamix": MoDAmix, "calibration": Calibration, "scmodal": SCMODAL}

__all__ = ["MIMA", "MODELS", "BaseModel", "Calibration", "MoDAmix", "SCMODAL"]
