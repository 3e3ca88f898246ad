"""Batch-mixing and bio-conservation metrics through scib-metrics, and translation fidelity.

The scIB metrics themselves are scib-metrics' (``ilisi_knn``, ``silhouette_batch``, ``silhouette_label``,
``nmi_ari_cluster_labels_leiden``); this module only prepares their inputs: a PCA of feature matrices (as scIB
does for unintegrated features) and an exact scikit-learn k-nearest-neighbour graph (scib-metrics' own
``pynndescent`` helper spends ~35 s compiling on first use; an exact kNN on a few thousand spots takes < 1 s).
"""

from __future__ import annotations

import warnings

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


# ---- scIB benchmark ----------------------------------------------------------------------------------------
#: scIB's aggregate weights (Luecken et al. 2022), as scib-metrics' Benchmarker applies them.
TOTAL_WEIGHTS = {"Batch correction": 0.4, "Bio conservation": 0.6}


def scib_benchmark(embeddings: dict[str, np.ndarray], batches, labels, *, pre_integrated: str | None = None,
                   seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """scib-metrics' ``Benchmarker`` on a set of embeddings of the same spots.

    Returns one row per embedding with every metric (scaled as scib-metrics does, not min-max scaled across
    embeddings, so a row does not change when another embedding is added) and the aggregate
    ``Batch correction``, ``Bio conservation`` and ``Total`` (0.4 batch + 0.6 bio) scores.

    Two choices differ from the Benchmarker's defaults and are passed as its options: Leiden clustering
    (NMI / ARI at the resolution that best matches the labels, scIB's way) instead of k-means, which varied
    by +/- 0.1 ARI between runs of the same embedding here; and an exact scikit-learn kNN (``neighbors``)
    instead of pynndescent, which spends ~35 s compiling on first use. ``pre_integrated`` names the
    embedding used as the unintegrated reference of the PCR comparison (default: PCA of the first one).
    Spots without a label are left out (the metrics need one).
    """
    import anndata as ad
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    if not embeddings:
        raise ParameterError("scib_benchmark needs at least one embedding")
    lab = pd.Series(np.asarray(labels, dtype=object))
    keep = lab.notna().to_numpy() & ~lab.astype(str).isin(["nan", "", "None"]).to_numpy()
    n = len(lab)
    for name, Z in embeddings.items():
        if np.asarray(Z).shape[0] != n:
            raise ParameterError(f"embedding {name!r} has {np.asarray(Z).shape[0]} rows, the labels {n}")
        keep &= np.isfinite(np.asarray(Z, dtype=float)).all(axis=1)
    if keep.sum() < 20:
        raise ParameterError(f"only {int(keep.sum())} spots have a label and every embedding; need at least 20")
    batches = np.asarray(pd.Series(np.asarray(batches)).astype(str))[keep]
    if len(np.unique(batches)) < 2:
        raise ParameterError("batch metrics need at least two batches")
    obs = pd.DataFrame({"batch": batches, "label": lab[keep].astype(str).to_numpy()},
                       index=[str(i) for i in range(int(keep.sum()))])
    adata = ad.AnnData(np.zeros((int(keep.sum()), 1), np.float32), obs=obs)
    keys = []
    for name, Z in embeddings.items():
        key = f"X_{name}"
        adata.obsm[key] = np.ascontiguousarray(np.asarray(Z, dtype=np.float32)[keep])
        keys.append(key)
    pre = f"X_{pre_integrated}" if pre_integrated is not None else None
    if pre is None:
        adata.obsm["X_pca"] = representation(adata.obsm[keys[0]], seed=seed)
        pre = "X_pca"
    bench = Benchmarker(
        adata, batch_key="batch", label_key="label", embedding_obsm_keys=keys,
        bio_conservation_metrics=BioConservation(nmi_ari_cluster_labels_kmeans=False,
                                                 nmi_ari_cluster_labels_leiden={"seed": seed}),
        batch_correction_metrics=BatchCorrection(), pre_integrated_embedding_obsm_key=pre,
        progress_bar=progress)
    import logging
    import warnings

    bench.prepare(neighbor_computer=lambda X, k: neighbors(np.asarray(X), k))
    quiet = logging.getLogger("scib_metrics")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one INFO line per embedding for every label found in a single batch
    try:
        with warnings.catch_warnings():
            # "PCR comparison score is negative ... Setting to 0": the score then reads 0, as documented
            warnings.filterwarnings("ignore", message="PCR comparison score is negative")
            bench.benchmark()
    finally:
        quiet.setLevel(level)
    res = bench.get_results(min_max_scale=False)
    res = res.drop(index="Metric Type").astype(float)
    res.index = [i[2:] if i.startswith("X_") else i for i in res.index]
    res.index.name = "representation"
    return res


# ---- translation fidelity --------------------------------------------------------------------------------
def highly_variable(X: np.ndarray, *, n_variance: int = 2000, n_top: int = 1000) -> np.ndarray:
    """Column positions of the MIMA paper's evaluation features: the ``n_variance`` most variable features,
    then of those the ``n_top`` with the highest mean (all features when there are fewer)."""
    X = np.asarray(X, dtype=np.float64)
    var_order = np.argsort(X.var(axis=0), kind="stable")[::-1][:n_variance]
    mean_order = np.argsort(X[:, var_order].mean(axis=0), kind="stable")[::-1][:n_top]
    return np.sort(var_order[mean_order])


def annotation_centroids(X: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """The paper's two baselines for every spot: the centroid of its own annotation without the spot itself
    (leave-one-out), and the centroid of the spots of every other annotation. Rows are NaN where the spot
    has no label, or is the only spot of its class."""
    X = np.asarray(X, dtype=np.float64)
    lab = pd.Series(np.asarray(labels, dtype=object)).astype(str).to_numpy()
    valid = ~pd.isna(pd.Series(np.asarray(labels, dtype=object))).to_numpy() & ~np.isin(lab, ["nan", "", "None"])
    own = np.full_like(X, np.nan)
    other = np.full_like(X, np.nan)
    total = X[valid].sum(axis=0)
    n_total = int(valid.sum())
    for c in np.unique(lab[valid]):
        rows = valid & (lab == c)
        s, k = X[rows].sum(axis=0), int(rows.sum())
        if k > 1:
            own[rows] = (s[None, :] - X[rows]) / (k - 1)
        if n_total - k > 0:
            other[rows] = (total - s) / (n_total - k)
    return own, other


def pearson_r2_per_row(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Squared Pearson r between predicted and measured profiles of each spot (across features)."""
    return pearson_per_feature(np.asarray(pred).T, np.asarray(true).T) ** 2


def fidelity(pred: np.ndarray, true: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """MSE and Pearson R^2 of predictions against measurements: per spot (across features; the distribution
    the figures show) and per feature (across spots). Returns the summary and the per-spot R^2."""
    r2_spot = pearson_r2_per_row(pred, true)
    r_feat = pearson_per_feature(pred, true)
    with warnings.catch_warnings():  # a feature constant on the scored spots has no r (NaN), as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"mse": float(np.mean((pred - true) ** 2)),
                "r2_spot_median": float(np.nanmedian(r2_spot)), "r2_spot_mean": float(np.nanmean(r2_spot)),
                "r2_feature_median": float(np.nanmedian(r_feat ** 2)),
                "r_feature_median": float(np.nanmedian(r_feat))}, r2_spot


# ---- unpaired (scMODAL-style) ------------------------------------------------------------------------------
def foscttm(Za: np.ndarray, Zb: np.ndarray) -> float:
    """Fraction of samples closer than the true match (Liu et al. 2019), averaged over both directions.

    Row i of ``Za`` and of ``Zb`` are the same spot measured by two modalities. 0 is perfect alignment,
    0.5 is what random embeddings give. Distances are Euclidean, in blocks so memory stays O(n * block).
    """
    Za, Zb = np.asarray(Za, dtype=np.float64), np.asarray(Zb, dtype=np.float64)
    if Za.shape != Zb.shape:
        raise ParameterError(f"FOSCTTM needs paired rows of the same dimension, got {Za.shape} and {Zb.shape}")
    n = Za.shape[0]
    if n < 2:
        raise ParameterError("FOSCTTM needs at least 2 paired spots")
    true_d = np.linalg.norm(Za - Zb, axis=1)
    sq_a, sq_b = (Za ** 2).sum(axis=1), (Zb ** 2).sum(axis=1)  # a_i vs every b_j in blocks of rows
    closer_ab = np.zeros(n)
    closer_ba = np.zeros(n)
    for s in range(0, n, 1024):
        sl = slice(s, s + 1024)
        rows = np.arange(s, min(s + 1024, n))
        for other_sq, mine, theirs, closer in ((sq_b, Za, Zb, closer_ab), (sq_a, Zb, Za, closer_ba)):
            d = np.sqrt(np.maximum((mine[sl] ** 2).sum(axis=1)[:, None] + other_sq[None, :] - 2 * mine[sl] @ theirs.T, 0))
            d[rows - s, rows] = np.inf  # the true partner itself (rounding could put it below true_d)
            closer[sl] = (d < true_d[sl, None]).sum(axis=1)
    return float((closer_ab.mean() + closer_ba.mean()) / 2 / (n - 1))


def label_transfer_accuracy(Z_ref: np.ndarray, labels_ref, Z_query: np.ndarray, labels_query, *,
                            k: int = 15) -> float:
    """Accuracy of a k-nearest-neighbour vote (``k`` = 15) that labels ``Z_query`` from ``Z_ref``'s labels
    in the shared space; unlabelled spots are left out on both sides."""
    from sklearn.neighbors import KNeighborsClassifier

    lr = pd.Series(np.asarray(labels_ref, dtype=object))
    lq = pd.Series(np.asarray(labels_query, dtype=object))
    ok_r = lr.notna().to_numpy() & ~lr.astype(str).isin(["nan", ""]).to_numpy()
    ok_q = lq.notna().to_numpy() & ~lq.astype(str).isin(["nan", ""]).to_numpy()
    if ok_r.sum() < k or ok_q.sum() < 1:
        raise ParameterError(f"label transfer needs at least k={k} labelled reference spots and one query spot")
    knn = KNeighborsClassifier(n_neighbors=k).fit(np.asarray(Z_ref)[ok_r], lr[ok_r].astype(str))
    return float((knn.predict(np.asarray(Z_query)[ok_q]) == lq[ok_q].astype(str).to_numpy()).mean())
