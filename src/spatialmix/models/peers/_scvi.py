"""The scvi-tools peers: scVI, totalVI and MultiVI on raw counts, batch as ``batch_key``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmix.errors import ParameterError

from ._common import (CHROMATIN_NAMES, _batch_labels, _check_raw, _kinds, _measured, _modalities, _nonzero_total,
                      _options, _quiet, _scatter, _with_raw)


# --------------------------------------------------------------------------------------------------------------
# scvi-tools: SCVI, TOTALVI, MULTIVI
# --------------------------------------------------------------------------------------------------------------

#: options shared by the scvi-tools peers. ``None`` keeps the library's default: n_latent SCVI 10, TOTALVI 20,
#: MULTIVI int(sqrt(n_hidden)) with n_hidden = min(128, int(sqrt(n_regions))); max_epochs SCVI / TOTALVI
#: ``get_max_epochs_heuristic`` = min(round(20000 / n_cells * 400), 400), MULTIVI 500; batch_size SCVI 128,
#: TOTALVI 256, MULTIVI 128. accelerator is "cpu" (not the library's "auto") so that a run is reproducible on any
#: machine; pass "auto" to use a GPU.
SCVI_TOOLS_OPTIONS = {"n_latent": None, "max_epochs": None, "batch_size": None, "accelerator": "cpu",
                      "model_kwargs": None, "train_kwargs": None}


def _scvi_common(peer: str, options: dict, extra: dict) -> dict:
    p = _options(peer, options, {**extra, **SCVI_TOOLS_OPTIONS})
    for key in ("n_latent", "max_epochs", "batch_size"):
        if p[key] is not None and (not isinstance(p[key], (int, np.integer)) or p[key] < 1):
            raise ParameterError(f"{peer}: {key} must be a whole number >= 1 or None (the library's default), "
                                 f"got {p[key]!r}")
    for key in ("model_kwargs", "train_kwargs"):
        if p[key] is not None and not isinstance(p[key], dict):
            raise ParameterError(f"{peer}: {key} must be a dict, got {type(p[key]).__name__}")
        p[key] = dict(p[key] or {})
    clash = sorted(({"n_latent"} & set(p["model_kwargs"])) |
                   ({"max_epochs", "batch_size", "accelerator"} & set(p["train_kwargs"])))
    if clash:
        raise ParameterError(f"{peer}: give {clash} as options of their own, not inside model_kwargs / train_kwargs")
    return p


def _epochs_rule(n_rows: int) -> int:
    """scvi-tools' default training length (``scvi.model._utils.get_max_epochs_heuristic``)."""
    from scvi.model._utils import get_max_epochs_heuristic

    return int(get_max_epochs_heuristic(n_rows))


def _rna_modality(peer: str, data, given: str | None, exclude: Sequence[str] = ()) -> str:
    if given is not None:
        _check_raw(peer, data, given, "counts")
        return given
    counts = [m for m in _with_raw(data, "counts") if m not in exclude]
    if "rna" in counts:
        choice = "rna"
    elif len(counts) == 1:
        choice = counts[0]
    elif not counts:
        besides = f" besides {list(exclude)}" if exclude else ""
        raise ParameterError(f"{peer} needs RNA raw counts: a modality declared 'counts' with raw counts{besides}, "
                             f"and there is none. This data has {_kinds(data)}")
    else:
        raise ParameterError(f"{peer}: several modalities could be the RNA ({counts}) and none is named 'rna'; "
                             "pass rna=<modality>")
    _check_raw(peer, data, choice, "counts")
    return choice


def _plan_scvi(data, seed: int, options: dict) -> dict[str, Any]:
    p = _scvi_common("scvi", options, {"modality": None})
    if p["modality"] is not None:
        mods = _modalities("scvi", data, p["modality"])
        for m in mods:
            _check_raw("scvi", data, m, "counts")
    else:
        counts = _with_raw(data, "counts")
        if not counts:
            raise ParameterError("scvi needs raw counts: no modality is declared 'counts' with its raw counts in "
                                 f"data.raw (this data has {_kinds(data)}). Build the data with the raw counts of "
                                 "the RNA, or benchmark a peer that uses the model inputs (scanorama, mofa)")
        mods = ["rna"] if "rna" in counts else counts
        for m in mods:
            _check_raw("scvi", data, m, "counts")
    rows = _scvi_rows(data, mods)
    if rows.sum() < 2:
        raise ParameterError(f"scvi: only {int(rows.sum())} rows have {mods} measured with a positive total count")
    p["modality"] = mods
    p.update(seed=int(seed), n_rows=int(rows.sum()), batch_key=data.batch_key,
             n_latent=p["n_latent"] or 10,
             max_epochs=p["max_epochs"] or _epochs_rule(int(rows.sum())),
             rule="max_epochs = min(round(20000 / n_cells * 400), 400) (scvi-tools default)"
             if options.get("max_epochs") is None else "given")
    return p


def _scvi_rows(data, mods) -> np.ndarray:
    rows = _measured(data, mods)
    raw = sp.hstack([sp.csr_matrix(data.raw[m]) for m in mods]).tocsr()
    positions = np.flatnonzero(rows)
    rows[positions[~_nonzero_total(raw, positions)]] = False
    return rows


def _anndata(raw_blocks: list, names: list[list[str]], obs_names, batches) -> Any:
    import anndata as ad

    X = sp.hstack([sp.csr_matrix(b, dtype=np.float32) for b in raw_blocks]).tocsr()
    var = pd.DataFrame(index=pd.Index([n for block in names for n in block]).astype(str))
    obs = pd.DataFrame({"_batch": pd.Categorical(np.asarray(batches).astype(str))},
                       index=pd.Index(obs_names).astype(str))
    return ad.AnnData(X=X, obs=obs, var=var)


def _obs_names(positions) -> list[str]:
    return [f"r{i}" for i in positions]


def _train_kwargs(p: dict) -> dict:
    kw = {"max_epochs": int(p["max_epochs"]), "accelerator": p["accelerator"], "enable_progress_bar": False}
    if p["batch_size"] is not None:
        kw["batch_size"] = int(p["batch_size"])
    return {**kw, **p["train_kwargs"]}


def scvi_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``scvi``: scVI (Lopez et al., Nat Methods 2018), scvi-tools ``SCVI`` with its documented defaults.

    Input: the raw counts (``data.raw``) of the modality declared ``"counts"`` named ``rna``, otherwise of every
    ``"counts"`` modality with raw counts side by side (``modality=`` chooses), with the batch column as scVI's
    ``batch_key``, on the rows where they are measured and have a positive total count (NaN elsewhere: scVI's
    library size is log(total)). Returns the posterior means ``get_latent_representation()``.

    Defaults (scvi-tools 1.4.2 ``SCVI`` / ``SCVI.train`` signatures): ``n_latent=10`` (also ``n_hidden=128``,
    ``n_layers=1``, ``gene_likelihood="zinb"``), ``max_epochs=None`` resolved as scvi-tools does
    (``get_max_epochs_heuristic``: min(round(20000 / n_cells * 400), 400)), ``batch_size=128``, train_size 0.9,
    no early stopping. Ours: ``accelerator="cpu"``, no progress bar, ``scvi.settings.seed = seed``. Options:
    ``modality``, ``n_latent``, ``max_epochs``, ``batch_size``, ``accelerator``, ``model_kwargs``,
    ``train_kwargs``. Refuses data without raw counts.
    """
    p = _plan_scvi(data, seed, options)
    import scvi

    mods = p["modality"]
    rows = _scvi_rows(data, mods)
    pos = np.flatnonzero(rows)
    adata = _anndata([data.raw[m][pos] for m in mods], [[f"{m}:{v}" for v in data.var_names[m]] for m in mods],
                     _obs_names(pos), _batch_labels(data, pos))
    with _quiet():
        scvi.settings.seed = int(seed)
        scvi.model.SCVI.setup_anndata(adata, batch_key="_batch")
        model = scvi.model.SCVI(adata, **{"n_latent": int(p["n_latent"]), **p["model_kwargs"]})
        model.train(**_train_kwargs(p))
        z = model.get_latent_representation()
    return {"scvi": _scatter(data.n_obs, pos, z)}


def _mudata(blocks: dict, names: dict, positions, batches):
    import anndata as ad
    import mudata as md

    obs_names = pd.Index(_obs_names(positions))
    mods = {m: ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=pd.DataFrame(index=obs_names),
                          var=pd.DataFrame(index=pd.Index([f"{m}:{v}" for v in names[m]]).astype(str)))
            for m, X in blocks.items()}
    with md.set_options(pull_on_update=False):  # mudata 0.4's behaviour (the modalities carry no obs columns)
        mdata = md.MuData(mods)
    mdata.obs["_batch"] = pd.Categorical(np.asarray(batches).astype(str))
    return mdata


def _plan_totalvi(data, seed: int, options: dict) -> dict[str, Any]:
    p = _scvi_common("totalvi", options, {"rna": None, "protein": None})
    if p["protein"] is None:
        proteins = [m for m in data.modalities if data.preprocessing.get(m) == "protein"]
        if not proteins:
            raise ParameterError(f"totalvi needs a modality declared 'protein' (with raw counts); this data has "
                                 f"{_kinds(data)}. Use scvi for RNA alone")
        if len(proteins) > 1:
            raise ParameterError(f"totalvi: several modalities are declared 'protein' ({proteins}); pass protein=")
        p["protein"] = proteins[0]
    _check_raw("totalvi", data, p["protein"], "protein")
    p["rna"] = _rna_modality("totalvi", data, p["rna"])
    rows = _totalvi_rows(data, p["rna"], p["protein"])
    if rows.sum() < 2:
        raise ParameterError(f"totalvi: only {int(rows.sum())} rows have both {p['rna']!r} and {p['protein']!r}")
    p.update(seed=int(seed), n_rows=int(rows.sum()), batch_key=data.batch_key, n_latent=p["n_latent"] or 20,
             max_epochs=p["max_epochs"] or _epochs_rule(int(rows.sum())),
             rule="max_epochs = min(round(20000 / n_cells * 400), 400) (scvi-tools default), early stopping on"
             if options.get("max_epochs") is None else "given")
    return p


def _totalvi_rows(data, rna: str, protein: str) -> np.ndarray:
    rows = _measured(data, [rna, protein])
    positions = np.flatnonzero(rows)
    rows[positions[~_nonzero_total(sp.csr_matrix(data.raw[rna]), positions)]] = False
    return rows


def totalvi_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``totalvi``: totalVI (Gayoso, Steier et al., Nat Methods 2021), scvi-tools ``TOTALVI`` with its defaults.

    Input: raw counts of the RNA modality (see the module notes; ``rna=``) and of the modality declared
    ``"protein"`` (``protein=``), as a MuData registered with ``TOTALVI.setup_mudata`` (the API scvi-tools 1.4
    recommends; ``setup_anndata`` with ``protein_expression_obsm_key`` is deprecated there), the batch column as
    ``batch_key``, on the rows where both are measured and the RNA total is positive (NaN elsewhere: totalVI
    treats proteins as missing per batch, not per cell).

    Defaults (scvi-tools 1.4.2 ``TOTALVI`` / ``TOTALVI.train``): ``n_latent=20``, ``gene_likelihood="nb"``,
    empirical protein background prior when > 10 proteins, ``max_epochs`` by ``get_max_epochs_heuristic``,
    ``lr=4e-3``, ``batch_size=256``, early stopping and learning-rate reduction on plateau. Ours:
    ``accelerator="cpu"``, no progress bar, ``scvi.settings.seed = seed``. Options: ``rna``, ``protein``,
    ``n_latent``, ``max_epochs``, ``batch_size``, ``accelerator``, ``model_kwargs``, ``train_kwargs``. Refuses data
    without a ``"protein"`` modality or without RNA raw counts.
    """
    p = _plan_totalvi(data, seed, options)
    import scvi

    rows = _totalvi_rows(data, p["rna"], p["protein"])
    pos = np.flatnonzero(rows)
    mdata = _mudata({"rna": data.raw[p["rna"]][pos], "protein": data.raw[p["protein"]][pos]},
                    {"rna": data.var_names[p["rna"]], "protein": data.var_names[p["protein"]]}, pos,
                    _batch_labels(data, pos))
    with _quiet():
        scvi.settings.seed = int(seed)
        scvi.model.TOTALVI.setup_mudata(mdata, batch_key="_batch",
                                        modalities={"rna_layer": "rna", "protein_layer": "protein"})
        model = scvi.model.TOTALVI(mdata, **{"n_latent": int(p["n_latent"]), **p["model_kwargs"]})
        model.train(**_train_kwargs(p))
        z = model.get_latent_representation()
    return {"totalvi": _scatter(data.n_obs, pos, z)}


def _plan_multivi(data, seed: int, options: dict) -> dict[str, Any]:
    p = _scvi_common("multivi", options, {"rna": None, "atac": None})
    if p["atac"] is None:
        chromatin = [m for m in _with_raw(data, "counts") if m.lower() in CHROMATIN_NAMES]
        if not chromatin:
            raise ParameterError("multivi needs a chromatin accessibility modality: one declared 'counts' with raw "
                                 f"counts and named one of {list(CHROMATIN_NAMES)} (or pass atac=<modality>); this "
                                 f"data has {_kinds(data)}")
        if len(chromatin) > 1:
            raise ParameterError(f"multivi: several chromatin modalities {chromatin}; pass atac=")
        p["atac"] = chromatin[0]
    _check_raw("multivi", data, p["atac"], "counts")
    p["rna"] = _rna_modality("multivi", data, p["rna"], exclude=[p["atac"]])
    if p["rna"] == p["atac"]:
        raise ParameterError(f"multivi: rna and atac are the same modality {p['rna']!r}")
    rows = _multivi_rows(data, p["rna"], p["atac"])
    if rows.sum() < 2:
        raise ParameterError(f"multivi: only {int(rows.sum())} rows have {p['rna']!r} or {p['atac']!r} measured")
    p.update(seed=int(seed), n_rows=int(rows.sum()), n_paired=int(_measured(data, [p["rna"], p["atac"]]).sum()),
             batch_key=data.batch_key, max_epochs=p["max_epochs"] or 500,
             rule="max_epochs = 500 with early stopping (scvi-tools MULTIVI.train default)"
             if options.get("max_epochs") is None else "given")
    # MULTIVAE's own rule, recorded here (the model is built with n_latent only when it was given)
    n_hidden = p["model_kwargs"].get("n_hidden") or int(min(128, int(np.sqrt(data.n_vars(p["atac"])))))
    p["n_hidden"] = n_hidden
    p["n_latent_given"] = p["n_latent"] is not None
    p["n_latent"] = int(p["n_latent"]) if p["n_latent"] is not None else int(np.sqrt(n_hidden))
    return p


def _multivi_rows(data, rna: str, atac: str) -> np.ndarray:
    """Rows with RNA or chromatin (MULTIVI takes unpaired cells: a modality with zero counts is 'not measured')."""
    rows = np.zeros(data.n_obs, bool)
    for m in (rna, atac):
        measured = np.asarray(data.mask[m], bool).copy()
        positions = np.flatnonzero(measured)
        measured[positions[~_nonzero_total(sp.csr_matrix(data.raw[m]), positions)]] = False
        rows |= measured
    return rows


def multivi_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``multivi``: MultiVI (Ashuach, Gabitto et al., Nat Methods 2023), scvi-tools ``MULTIVI`` with its defaults.

    Which modality is chromatin: the one declared ``"counts"`` (with raw counts) whose name is one of
    :data:`CHROMATIN_NAMES` (``atac``, ``chromatin``, ``peaks``, ``accessibility``, any case), or the one given as
    ``atac=``; the RNA modality as in the module notes (``rna=``). Both go in as raw counts in a MuData registered
    with ``MULTIVI.setup_mudata`` (scvi-tools 1.4 supports MULTIVI only through MuData), the batch column as
    ``batch_key``. Rows with either modality are used; where one is not measured its counts are zero, which is how
    MultiVI marks an unpaired cell (it treats a modality with zero total as missing). Rows with neither are NaN.

    Defaults (scvi-tools 1.4.2 ``MULTIVI`` / ``MULTIVI.train``): ``n_latent`` = int(sqrt(n_hidden)),
    ``n_hidden`` = min(128, int(sqrt(number of regions))), ``modality_weights="equal"``,
    ``modality_penalty="Jeffreys"``, ``max_epochs=500``, ``lr=1e-4``, ``batch_size=128``, ``weight_decay=1e-3``,
    early stopping, KL warm-up 50 epochs, adversarial mixing. Ours: ``accelerator="cpu"``, no progress bar,
    ``scvi.settings.seed = seed``. Options: ``rna``, ``atac``, ``n_latent``, ``max_epochs``, ``batch_size``,
    ``accelerator``, ``model_kwargs``, ``train_kwargs``. Refuses data without a chromatin modality.
    """
    p = _plan_multivi(data, seed, options)
    import scvi

    rna, atac = p["rna"], p["atac"]
    rows = _multivi_rows(data, rna, atac)
    pos = np.flatnonzero(rows)
    blocks = {}
    for key, m in (("rna", rna), ("atac", atac)):
        X = sp.csr_matrix(data.raw[m][pos], dtype=np.float32)
        absent = ~np.asarray(data.mask[m], bool)[pos]
        if absent.any():  # unmeasured rows: zero counts, which MultiVI reads as "not measured"
            X.data[absent[np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))]] = 0.0
            X.eliminate_zeros()
        blocks[key] = X
    mdata = _mudata(blocks, {"rna": data.var_names[rna], "atac": data.var_names[atac]}, pos, _batch_labels(data, pos))
    model_kwargs = {**({"n_latent": p["n_latent"]} if p["n_latent_given"] else {}), **p["model_kwargs"]}
    with _quiet():
        scvi.settings.seed = int(seed)
        scvi.model.MULTIVI.setup_mudata(mdata, batch_key="_batch",
                                        modalities={"rna_layer": "rna", "atac_layer": "atac"})
        model = scvi.model.MULTIVI(mdata, **model_kwargs)
        model.train(**_train_kwargs(p))
        z = model.get_latent_representation()
    return {"multivi": _scatter(data.n_obs, pos, z)}
