"""Batch-mixing and bio-conservation metrics through scib-metrics, and translation fidelity.

The scIB metrics themselves are scib-metrics' (``ilisi_knn``, ``silhouette_batch``, ``silhouette_label``,
``nmi_ari_cluster_labels_leiden``); this module only prepares their inputs: a PCA of feature matrices (as scIB
does for unintegrated features) and an exact scikit-learn k-nearest-neighbour graph (scib-metrics' own
``pynndescent`` helper spends ~35 s compiling on first use; an exact kNN on a few thousand spots takes < 1 s).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spatialmix.errors import ParameterError

N_NEIGHBORS = 90  # scib-metrics' default for LISI
N_NEIGHBORS_CLUSTERS = 15  # scib-metrics' Benchmarker graph for Leiden clustering
N_PCS = 50


def representation(X, *, n_pcs: int = N_PCS, seed: int = 0) -> np.ndarray:
    """A matrix as metrics see it: features with more than ``n_pcs`` columns go through PCA (as scIB does)."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = np.asarray(X, dtype=np.float32)
    if X.shape[1] <= n_pcs:
        return X
    n = min(n_pcs, X.shape[0] - 1, X.shape[1])
    return PCA(n_components=n, random_state=seed).fit_transform(X).astype(np.float32)


def neighbors(X: np.ndarray, n_neighbors: int = N_NEIGHBORS):
    """Exact kNN graph as scib-metrics' ``NeighborsResults`` (self excluded)."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, X.shape[0] - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    return NeighborsResults(indices=idx[:, 1:], distances=dist[:, 1:])


def integration_scores(X, batches, labels, *, n_pcs: int = N_PCS, seed: int = 0) -> dict[str, float]:
    """Batch mixing (iLISI, batch ASW) and bio conservation (label ASW, ARI / NMI of Leiden clusters).

    All in [0, 1], higher is better (scib-metrics' scaling). ``labels`` are the true (or expert) classes;
    spots with missing labels are left out.
    """
    import scib_metrics

    Z = representation(X, n_pcs=n_pcs, seed=seed)
    batches = np.asarray(pd.Series(batches).astype(str))
    lab = pd.Series(labels).astype("object")
    keep = lab.notna().to_numpy() & (lab.astype(str) != "nan").to_numpy()
    if keep.sum() < 10:
        raise ParameterError(f"only {int(keep.sum())} spots have labels; metrics need at least 10")
    Z, batches, lab = Z[keep], batches[keep], lab[keep].astype(str).to_numpy()
    if len(np.unique(batches)) < 2:
        raise ParameterError("batch metrics need at least two batches")
    nn = neighbors(Z)
    out = {
        "ilisi": float(scib_metrics.ilisi_knn(nn, batches)),
        "batch_asw": float(scib_metrics.silhouette_batch(Z, lab, batches)),
        "label_asw": float(scib_metrics.silhouette_label(Z, lab)),
    }
    # Leiden clusters at the resolution that best matches the labels, on a 15-neighbour graph (scIB's way;
    # scib-metrics' k-means variant varied by +/- 0.1 ARI between runs of the same embedding here)
    clus = scib_metrics.nmi_ari_cluster_labels_leiden(neighbors(Z, N_NEIGHBORS_CLUSTERS), lab,
                                                      optimize_resolution=True, seed=seed)
    out.update(ari=float(clus["ari"]), nmi=float(clus["nmi"]))
    out["batch_score"] = (out["ilisi"] + out["batch_asw"]) / 2
    out["bio_score"] = (out["label_asw"] + out["ari"] + out["nmi"]) / 3
    return out


def pearson_per_feature(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson r of each feature (column) across spots; NaN where either side is constant."""
    p = pred - pred.mean(axis=0)
    t = true - true.mean(axis=0)
    den = np.sqrt((p * p).sum(axis=0) * (t * t).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * t).sum(axis=0) / den, np.nan)


def class_mean_baseline(X_train: np.ndarray, labels_train, labels_test) -> np.ndarray:
    """Predict each test spot as the mean profile of its annotation class over the training spots
    (the paper's comparison); classes absent from training fall back to the overall training mean."""
    labels_train = pd.Series(np.asarray(labels_train)).astype(str).to_numpy()
    labels_test = pd.Series(np.asarray(labels_test)).astype(str).to_numpy()
    overall = X_train.mean(axis=0)
    means = {c: X_train[labels_train == c].mean(axis=0) for c in np.unique(labels_train)}
    return np.stack([means.get(c, overall) for c in labels_test]) if len(labels_test) else np.zeros((0, X_train.shape[1]))


def translation_scores(pred: np.ndarray, true: np.ndarray, baseline: np.ndarray | None = None, *,
                       top: int | None = None) -> dict[str, float]:
    """MSE and per-feature Pearson r (median over features) of ``pred`` against ``true`` on the same spots,
    and the same for ``baseline``; ``top`` keeps the most variable measured features."""
    if top is not None and true.shape[1] > top:
        cols = np.argsort(true.var(axis=0))[::-1][:top]
        pred, true = pred[:, cols], true[:, cols]
        baseline = baseline[:, cols] if baseline is not None else None
    out = {"mse": float(np.mean((pred - true) ** 2)), "pearson_median": float(np.nanmedian(pearson_per_feature(pred, true)))}
    if baseline is not None:
        out["baseline_mse"] = float(np.mean((baseline - true) ** 2))
        out["baseline_pearson_median"] = float(np.nanmedian(pearson_per_feature(baseline, true)))
    return out
