"""The MOFA+ peer (mofapy2 ``entry_point``): one view per modality, one group per batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from spatialmix.errors import ParameterError

from ._common import _batch_groups, _measured, _modalities, _options, _quiet, _scatter


# --------------------------------------------------------------------------------------------------------------
# MOFA+
# --------------------------------------------------------------------------------------------------------------

#: mofapy2 0.7.5 ``entry_point`` defaults: ``set_model_options(factors=10, spikeslab_weights=True,
#: ard_weights=True)``, ``set_train_options(iter=1000, convergence_mode="fast", dropR2=None)``,
#: ``set_data_options(scale_views=False, center_groups=True)``, likelihoods guessed from the data (Gaussian for
#: these inputs). ``ard_factors=None``: True exactly when there are several groups (MOFA2's
#: ``get_default_model_options``; mofapy2 warns that it "should be set to True if using multiple groups").
#: ``groups="batch"``: one MOFA+ group per batch (``None``: a single group).
MOFA_DEFAULTS = {"factors": 10, "iter": 1000, "convergence_mode": "fast", "groups": "batch", "modalities": None,
                 "likelihoods": None, "scale_views": False, "ard_factors": None}


def _plan_mofa(data, seed: int, options: dict) -> dict[str, Any]:
    p = _options("mofa", options, MOFA_DEFAULTS)
    p["modalities"] = _modalities("mofa", data, p["modalities"])
    if p["groups"] not in ("batch", None):
        raise ParameterError(f"mofa: groups must be 'batch' (one group per batch) or None (one group), "
                             f"got {p['groups']!r}")
    for key in ("factors", "iter"):
        if not isinstance(p[key], (int, np.integer)) or p[key] < 1:
            raise ParameterError(f"mofa: {key} must be a whole number >= 1, got {p[key]!r}")
    if p["convergence_mode"] not in ("fast", "medium", "slow"):
        raise ParameterError(f"mofa: convergence_mode must be 'fast', 'medium' or 'slow', "
                             f"got {p['convergence_mode']!r}")
    rows = _measured(data, p["modalities"], how="any")
    names, groups = _batch_groups(data, rows)
    small = [n for n, g in zip(names, groups) if len(g) < 2]
    if rows.sum() < 3 or (p["groups"] == "batch" and small):
        raise ParameterError(f"mofa needs at least 3 measured rows and, with groups='batch', 2 per batch "
                             f"(batches {small} have fewer); pass groups=None for one group")
    n_features = sum(data.n_vars(m) for m in p["modalities"])
    if p["factors"] >= min(int(rows.sum()), n_features):
        raise ParameterError(f"mofa: factors={p['factors']} must be below the number of measured rows "
                             f"({int(rows.sum())}) and of features ({n_features})")
    group_names = names if p["groups"] == "batch" else ["all"]
    if p["ard_factors"] is None:  # MOFA2's default: ARD prior on the factors exactly when there are several groups
        p["ard_factors"] = len(group_names) > 1
    p.update(seed=int(seed), n_rows=int(rows.sum()), group_names=group_names,
             input="model inputs (data.X) per modality; rows where a modality was not measured are missing "
                   "values (NaN) of that view")
    return p


def mofa_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``mofa``: MOFA+ (Argelaguet et al., Genome Biol 2020) through mofapy2's ``entry_point``.

    Each modality is one view (its model input ``data.X``, dense), each batch one group (``groups="batch"``; the
    multi-group model centres every group, removing batch-level offsets; ``groups=None`` for one group); a row
    where a modality was not measured is given as missing values (NaN) in that view, which MOFA+ handles in its
    likelihood. Rows with no modality at all are NaN. Returns the factors (posterior means of Z), put back in the
    data's row order.

    Defaults (mofapy2 0.7.5 ``entry_point`` signatures; the same as muon's ``mu.tl.mofa``): ``factors=10`` (the R
    package MOFA2 defaults to 15; mofapy2's Python entry point to 10), ``iter=1000``, ``convergence_mode="fast"``,
    ``scale_views=False``, ``center_groups=True``, spike-and-slab + ARD priors on the weights, an ARD prior on the
    factors when there are several groups (MOFA2's default; mofapy2 warns without it), no factor dropping,
    likelihoods guessed (``likelihoods=None``; Gaussian for log / z-scored inputs). ``seed`` goes to
    ``set_train_options``. Options: ``factors``, ``iter``, ``convergence_mode``, ``groups``, ``modalities``,
    ``likelihoods``, ``scale_views``, ``ard_factors``. MOFA+ runs on a single modality too (a factor analysis).
    """
    p = _plan_mofa(data, seed, options)
    from mofapy2.run.entry_point import entry_point

    rows = _measured(data, p["modalities"], how="any")
    if p["groups"] == "batch":
        names, groups = _batch_groups(data, rows)
    else:
        names, groups = ["all"], [np.flatnonzero(rows)]
    views = []
    for m in p["modalities"]:
        X = data.dense(m).astype(np.float64)
        X[~np.asarray(data.mask[m], bool)] = np.nan
        views.append([X[g] for g in groups])
    with _quiet():
        ent = entry_point()
        ent.set_data_options(scale_views=bool(p["scale_views"]))
        ent.set_data_matrix(views, likelihoods=p["likelihoods"], views_names=list(p["modalities"]),
                            groups_names=list(names), samples_names=[[f"r{i}" for i in g] for g in groups],
                            features_names=[[f"{m}:{v}" for v in data.var_names[m]] for m in p["modalities"]])
        ent.set_model_options(factors=int(p["factors"]), ard_factors=bool(p["ard_factors"]))
        ent.set_train_options(iter=int(p["iter"]), convergence_mode=p["convergence_mode"], seed=int(seed),
                              quiet=True)
        ent.build()
        ent.run()
        Z = ent.model.nodes["Z"].getExpectation()
    return {"mofa": _scatter(data.n_obs, np.concatenate(groups), Z)}
