"""Integration and batch-correction models behind one interface (scvi-tools-like).

``MIMA`` (default): product-of-experts VAE with shared, private and batch latents (see ``docs/models.md``).
Pure networks live in private ``_*_module`` files, the user API in the model classes.
"""

from ._base import BaseModel
from .mima import MIMA

MODELS = {"mima": MIMA}

__all__ = ["MIMA", "MODELS", "BaseModel"]
