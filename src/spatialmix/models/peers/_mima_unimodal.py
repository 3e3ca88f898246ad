"""The MIMA paper's unimodal baseline: MIMA's architecture on one modality at a time."""

from __future__ import annotations

from typing import Any

import numpy as np

from spatialmix.errors import ParameterError

from ._common import _modalities, _options


# --------------------------------------------------------------------------------------------------------------
# MIMA on one modality at a time
# --------------------------------------------------------------------------------------------------------------

MIMA_UNIMODAL_DEFAULTS = {"train": None, "modalities": None, "params": None}


def _plan_mima_unimodal(data, seed: int, options: dict) -> dict[str, Any]:
    from spatialmix.conventions import DEMO_TRAIN

    from ..mima import DEFAULTS

    p = _options("mima_unimodal", options, MIMA_UNIMODAL_DEFAULTS)
    p["modalities"] = _modalities("mima_unimodal", data, p["modalities"])
    for key in ("train", "params"):
        if p[key] is not None and not isinstance(p[key], dict):
            raise ParameterError(f"mima_unimodal: {key} must be a dict, got {type(p[key]).__name__}")
    params = dict(p["params"] or {})
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ParameterError(f"mima_unimodal: unknown MIMA parameter(s) {unknown} in params=; allowed: "
                             f"{sorted(DEFAULTS)}")
    empty = [m for m in p["modalities"] if not np.asarray(data.mask[m], bool).any()]
    if empty:
        raise ParameterError(f"mima_unimodal: modalities {empty} are measured in no row")
    p["params"] = params
    p["train"] = {**DEMO_TRAIN, "seed": int(seed), **(p["train"] or {})}
    p["seed"] = int(seed)
    return p


def mima_unimodal_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``mima_unimodal_<m>``: MIMA's architecture trained on modality ``m`` alone, for each modality (the MIMA
    paper's unimodal baseline): ``MIMA(data, modalities=[m], **params)`` trained with
    ``{**spatialmix.integrate.DEMO_TRAIN, "seed": seed, **train}`` (the benchmark's MIMA training: 200 epochs,
    lr 1e-3), its PoE embedding (= that modality's shared latent), NaN where ``m`` was not measured.

    Options: ``train`` (training options merged over the demo's), ``params`` (MIMA constructor parameters; default
    the paper's, :data:`spatialmix.models.mima.DEFAULTS`), ``modalities`` (default all). Every model is built
    before the first is trained, so a bad parameter is refused at once.
    """
    p = _plan_mima_unimodal(data, seed, options)
    from ..mima import MIMA

    models = {m: MIMA(data, modalities=[m], **p["params"]) for m in p["modalities"]}
    out = {}
    for m, model in models.items():
        model.train(**p["train"])
        z = model.get_latent_representation()
        z[~np.asarray(data.mask[m], bool)] = np.nan
        out[f"mima_unimodal_{m}"] = z.astype(np.float32)
    return out
