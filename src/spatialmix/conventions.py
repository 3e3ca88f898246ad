"""Names shared by every layer (the lowest module of the package: it imports nothing of spatialmix).

The table names of the modalities, the default annotation column, the per-sample element suffixes
(docs/conventions.md), the name of a translation's output layer, the annotation classes the MIMA paper
leaves out of scoring, and the demo's training options.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

ANNOTATION_KEY = "pathologist"
MODALITY_TABLES = ("rna", "msi", "morphology")
#: Per-sample element names are f"{sample}_{suffix}" (docs/conventions.md).
SAMPLE_ELEMENTS = ("spots", "msi", "msi_tic", "he", "visium_hires", "visium_lowres")


def translation_layer(key: str, sources: str | Sequence[str]) -> str:
    """Layer name of a translation written under ``key``: ``"mima_from_msi_and_morphology"``."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    return f"{key}_from_{'_and_'.join(map(str, sources))}"


#: Classes the MIMA paper leaves out of training and scoring (too few spots, or no tissue class).
PAPER_EXCLUDED: tuple[str, ...] = ("Nerve", "Necrosis", "ISUP2", "ISUP4", "Other", "Unlabelled")


def _norm(name) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def excluded_classes(classes: Sequence[str], exclude: Sequence[str] | None) -> list[str]:
    """The members of ``classes`` that ``exclude`` names (case / space / '_' / '-' insensitive)."""
    wanted = {_norm(c) for c in (exclude or ())}
    return [c for c in classes if _norm(c) in wanted]


#: Training used by the demo (``spatialmix demo``, the benchmark's MIMA; ``--epochs`` / ``--lr`` override). The
#: paper's defaults (lr 1e-4, 50 epochs) make only 400 optimiser steps on the bundled sample's 1,290 spots and
#: the loss is still falling steeply at the end (docs/models.md, "Training on small data"); 200 epochs at lr 1e-3
#: separate the regions better than 100 (label ASW 0.529 vs 0.498) and mix the samples better.
DEMO_TRAIN: dict[str, Any] = {"epochs": 200, "lr": 1e-3, "seed": 0}
