"""The baselines every benchmark compares against, as in the MIMA paper: PCA of each modality, PCA of the
concatenated modalities, and Harmony (harmonypy) on that PCA, all with 100 dimensions.

They are plain functions rather than trainable models: each returns an embedding with one row per spot (NaN
where a spot lacks an input it needs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spatialmix.errors import ParameterError

N_COMPONENTS = 100  # the paper's embedding size for every method


def pca(X, *, n_components: int = N_COMPONENTS, seed: int = 0) -> np.ndarray:
    """PCA scores of ``X`` (centred, not scaled; at most min(n_spots - 1, n_features) components)."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    n = min(n_components, X.shape[0] - 1, X.shape[1])
    if n < 1:
        raise ParameterError(f"PCA needs at least 2 spots and 1 feature, got {X.shape}")
    return PCA(n_components=n, random_state=seed, svd_solver="full").fit_transform(X).astype(np.float32)


def common_spots(data, modalities: Sequence[str] | None = None) -> np.ndarray:
    """Spots where every one of ``modalities`` (default: all of ``data``'s) was measured."""
    modalities = list(modalities or data.modalities)
    keep = np.ones(data.n_obs, bool)
    for m in modalities:
        keep &= data.mask[m]
    return keep


def concatenated(data, modalities: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The modalities side by side on the spots that have them all: each block centred and divided by the
    square root of its total variance, so that no modality dominates through its number of features.
    Returns (matrix of the common spots, boolean mask of those spots)."""
    modalities = list(modalities or data.modalities)
    keep = common_spots(data, modalities)
    if keep.sum() < 3:
        raise ParameterError(f"only {int(keep.sum())} spots have every modality {modalities}; "
                             "a concatenated baseline needs at least 3")
    blocks = []
    for m in modalities:
        X = data.dense(m)[keep]
        X = X - X.mean(axis=0)
        total = float(np.sqrt((X ** 2).sum() / max(len(X) - 1, 1)))
        blocks.append(X / (total if total > 0 else 1.0))
    return np.hstack(blocks).astype(np.float32), keep


#: Harmony run to convergence. With harmonypy's defaults (at most 10 rounds, stop when the objective changes by
#: < 1e-2) it stopped after 1 round on the bundled sample and barely corrected (batch silhouette of the
#: concatenated PCA 0.230 -> 0.183); with these it reaches 0.032 (label silhouette -0.032 -> -0.044). A
#: baseline is only worth beating when it does its job.
HARMONY_OPTIONS = {"max_iter_harmony": 20, "epsilon_harmony": 1e-4}


def harmony(Z: np.ndarray, batches, *, seed: int = 0, **options) -> np.ndarray:
    """Harmony-corrected ``Z`` (harmonypy >= 2.1's ``run_harmony`` called directly; scanpy's wrapper
    transposes its output wrongly with that version). ``options`` override :data:`HARMONY_OPTIONS`."""
    import harmonypy
    import pandas as pd

    meta = pd.DataFrame({"batch": np.asarray(batches).astype(str)})
    if meta["batch"].nunique() < 2:
        raise ParameterError("Harmony needs at least two batches")
    ho = harmonypy.run_harmony(np.asarray(Z, dtype=np.float64), meta, ["batch"], random_state=seed,
                               verbose=False, **{**HARMONY_OPTIONS, **options})
    out = np.asarray(ho.Z_corr)
    if out.shape != Z.shape and out.T.shape == Z.shape:  # harmonypy < 2 returned (dims, spots)
        out = out.T
    return out.astype(np.float32)


def _full(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = np.full((len(keep), values.shape[1]), np.nan, np.float32)
    out[keep] = values
    return out


def pca_embeddings(data, *, n_components: int = N_COMPONENTS, seed: int = 0) -> dict[str, np.ndarray]:
    """``pca_<modality>`` for each modality (on the spots that have it) and ``pca_concat``."""
    out = {}
    for m in data.modalities:
        keep = data.mask[m]
        out[f"pca_{m}"] = _full(pca(data.X[m][keep], n_components=n_components, seed=seed), keep)
    if len(data.modalities) > 1:
        X, keep = concatenated(data)
        out["pca_concat"] = _full(pca(X, n_components=n_components, seed=seed), keep)
    return out


def harmony_embedding(data, *, n_components: int = N_COMPONENTS, seed: int = 0) -> dict[str, np.ndarray]:
    """``harmony``: Harmony over samples (the batch column) on the PCA of the concatenated modalities."""
    X, keep = concatenated(data)
    Z = pca(X, n_components=n_components, seed=seed)
    batches = data.obs[data.batch_key].astype(str).to_numpy()[keep]
    return {"harmony": _full(harmony(Z, batches, seed=seed), keep)}


#: Baselines by the name ``spatialmix benchmark --models`` uses; each maps data -> {representation: embedding}.
BASELINES = {"pca": pca_embeddings, "harmony": harmony_embedding}
