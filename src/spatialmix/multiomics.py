"""The main job on non-spatial paired multi-omics (CITE-seq, multiome, any ``.h5mu`` / ``.h5ad`` set):
read, train, write every output into a MuData file, save the model.

>>> report = run(iter_run_multiomics("pbmc.h5mu", "out", batch_key="donor",
...                                  preprocessing={"rna": "counts", "prot": "protein"}))

What ``spatialmix run --data FILE.h5mu --batch-key KEY --out OUT`` writes into ``OUT``:

- ``results.h5mu``: one modality per model modality (``X`` = the model input, after the declared
  preprocessing; ``obs["measured"]`` says which cells had the modality), the shared embedding
  ``mdata.obsm["X_<key>"]``, the expert weights ``mdata.obsm["X_<key>_expert_weights"]`` (columns in
  ``uns["spatialmix"]``), the representation for annotation prediction ``mdata.obsm["X_<key>_corrected_pca"]``
  (PCA-50 of the corrected features; NaN for cells missing a modality), and per modality ``obsm["X_<key>_private"]``, ``layers["<key>_corrected"]``,
  ``layers["<key>_denoised"]`` (NaN for cells where the modality was not measured) and the translations
  ``layers["<key>_from_<sources>"]`` from every other modality (NaN where no source was measured), with the
  provenance record as JSON in ``mdata.uns["spatialmix"]``;
- ``model/``: the trained model (``MIMA.load("OUT/model", data)``);
- ``training_curve.csv``: every epoch's losses.

Outputs a model does not produce are left out (its ``supports``). Every model trains with its own defaults
(MIMA: ``epochs="auto"``, lr 1e-3, the options ``spatialmix benchmark`` uses for it, so the job's model is the one
the benchmark scored); ``train`` overrides them. Nothing in ``OUT`` is replaced
unless ``overwrite``; the MuData is written to a temporary file and renamed, so a failure leaves no half file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from spatialmix.errors import ParameterError, ProjectError
from spatialmix.progress import Progress

#: the file the job writes its outputs into
RESULTS_FILE = "results.h5mu"


def iter_run_multiomics(data, out: str | Path, *, model: str = "mima", model_params: dict | None = None,
                        train: dict | None = None, overwrite: bool = False, key: str | None = None,
                        batch_key: str | None = None, label_key: str | None = None, preprocessing=None,
                        zscore=False, sample_key: str | None = None, modalities=None):
    """Generator: read ``data`` (a :class:`~spatialmix.data.MultiModalData` or what
    :func:`spatialmix.data.read_multimodal` reads), train ``model``, write ``OUT/results.h5mu``, ``OUT/model``
    and ``OUT/training_curve.csv``. Returns a report dict. Every input is checked before training starts."""
    from spatialmix.data import MultiModalData, as_multimodal
    from spatialmix.models import MODELS
    from spatialmix.project import jsonable

    out = Path(out)
    if model not in MODELS:
        raise ParameterError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    target = out / RESULTS_FILE
    if target.exists() and not overwrite:
        raise ProjectError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it, or choose "
                           "another --out")
    t0 = time.perf_counter()
    yield Progress("read", 0, 1, str(data) if not isinstance(data, MultiModalData) else "data")
    mmd = as_multimodal(data, batch_key=batch_key, label_key=label_key, preprocessing=preprocessing,
                        zscore=zscore, sample_key=sample_key, modalities=modalities)
    yield Progress("read", 1, 1, repr(mmd).splitlines()[0])
    cls = MODELS[model]
    mdl = cls(mmd, **(model_params or {}))
    opts = dict(train or {})  # the model's own defaults otherwise (MIMA: epochs="auto", lr 1e-3)
    yield from mdl.iter_train(**opts)
    train_s = time.perf_counter() - t0
    key = key or mdl.name

    yield Progress("write", 0, 2, f"outputs into {target}")
    mdata, written = _results_mudata(mdl, mmd, key)
    curve = mdl.training_curve()
    record = jsonable({"key": key, "model": mdl.name, "params": mdl.params, "train": opts,
                       "modalities": list(mdl.modalities), "batch_key": mmd.batch_key,
                       "preprocessing": getattr(mmd, "preprocessing", None), "outputs": written,
                       "n_cells": int(mmd.n_obs), "epochs": int(len(curve)),
                       "stopped_early": bool(getattr(mdl, "stopped_early", False))})
    mdata.uns["spatialmix"] = {"provenance_json": json.dumps(record)}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{RESULTS_FILE}.{os.getpid()}.tmp"
    try:
        mdata.write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    mdl.save(out / "model", overwrite=True)
    curve.to_csv(out / "training_curve.csv", index=False)
    yield Progress("write", 2, 2, "done")
    return {"model": repr(mdl), "results": str(target), "model_dir": str(out / "model"),
            "train_seconds": round(train_s, 1), "epochs": int(len(curve)),
            "final_val_loss": float(curve["val_loss"].iloc[-1]) if len(curve) and "val_loss" in curve else None,
            "outputs": written}


def _results_mudata(mdl, data, key: str):
    """(MuData of every output the model supports, {where: [names]})."""
    import anndata as ad
    import mudata as md
    import pandas as pd

    from spatialmix.data import measured_only
    from spatialmix.results import supported_outputs, translation_layer

    supports = set(supported_outputs(mdl))
    mods = list(mdl.modalities)
    obs = data.obs.copy()
    adatas: dict[str, Any] = {}
    written: dict[str, list[str]] = {"mudata.obsm": []}
    for m in mods:
        a = ad.AnnData(X=data.X[m], obs=obs.assign(measured=np.asarray(data.mask[m], bool)),
                       var=pd.DataFrame(index=pd.Index([str(v) for v in data.var_names[m]])))
        names = []
        if "private" in supports:
            a.obsm[f"X_{key}_private"] = mdl.get_latent_representation("private", m)
            names.append(f"obsm/X_{key}_private")
        for what, fn in (("corrected", "get_corrected"), ("denoised", "get_denoised")):
            if what in supports:
                a.layers[f"{key}_{what}"] = measured_only(getattr(mdl, fn)(m), data, [m])
                names.append(f"layers/{key}_{what}")
        if "translations" in supports and len(mods) > 1:
            sources = [s for s in mods if s != m]
            if getattr(mdl, "single_source_translation", False):
                sources = sources[:1]
            layer = translation_layer(key, sources)
            a.layers[layer] = measured_only(mdl.translate(sources, m), data, sources)
            names.append(f"layers/{layer}")
        adatas[m] = a
        written[m] = names
    mdata = md.MuData(adatas)
    if "latent" in supports:
        mdata.obsm[f"X_{key}"] = mdl.get_latent_representation()
        written["mudata.obsm"].append(f"X_{key}")
    if "expert_weights" in supports:
        w = mdl.get_expert_weights()
        mdata.obsm[f"X_{key}_expert_weights"] = w.to_numpy(np.float32)
        mdata.uns["expert_weight_columns"] = [str(c) for c in w.columns]
        written["mudata.obsm"].append(f"X_{key}_expert_weights")
    if "corrected_pca" in supports:
        mdata.obsm[f"X_{key}_corrected_pca"] = mdl.get_corrected_pca()
        written["mudata.obsm"].append(f"X_{key}_corrected_pca")
    return mdata, written
