"""Translation baselines: the best simple predictors of one modality from others.

A model's translation (e.g. genes imputed from MSI + H&E) is only worth something if it beats what a plain
regression learns from the same training rows. The benchmark therefore scores, beside each model and on the
same held-out rows, two such "best simple predictors":

- :func:`ridge_translation`: a linear map, ridge regression with the penalty chosen by cross-validation
  (scikit-learn ``RidgeCV``, efficient leave-one-out over ``alphas``), on source features standardised with the
  training rows' means and standard deviations;
- :func:`knn_translation`: the mean target of the ``k`` nearest training rows (scikit-learn
  ``KNeighborsRegressor``, uniform weights), distances on the standardised source features, or on their first 50
  principal components (fitted on the training rows) when there are more than 50 features.

:func:`translation_baselines` runs both for one direction (``sources -> target``) of a
:class:`~spatialmix.data.MultiModalData`, on its model inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from spatialmix.errors import ParameterError

#: ridge penalties tried by cross-validation (1e-2 ... 1e4, two per decade)
ALPHAS = np.logspace(-2, 4, 13)
#: above this many source features the kNN distance is computed on this many principal components
KNN_PCA_DIMS = 50


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def _check(X_train, Y_train, X_test) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X_train, Y_train, X_test = _dense(X_train), _dense(Y_train), _dense(X_test)
    if Y_train.ndim == 1:
        Y_train = Y_train[:, None]
    if X_train.ndim != 2 or X_test.ndim != 2 or X_train.shape[1] != X_test.shape[1]:
        raise ParameterError(f"X_train {X_train.shape} and X_test {X_test.shape} must be 2-D with the same features")
    if len(X_train) != len(Y_train):
        raise ParameterError(f"X_train has {len(X_train)} rows but Y_train has {len(Y_train)}")
    if len(X_train) < 2:
        raise ParameterError(f"a translation baseline needs at least 2 training rows, got {len(X_train)}")
    for name, A in (("X_train", X_train), ("Y_train", Y_train), ("X_test", X_test)):
        if not np.all(np.isfinite(A)):
            raise ParameterError(f"{name} has NaN or infinite values; pass only rows where the modality was measured")
    return X_train, Y_train, X_test


def _standardise(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both scaled with the training rows' means and standard deviations (constant features left at 0)."""
    mu = X_train.mean(axis=0)
    sd = X_train.std(axis=0)
    sd[sd == 0] = 1.0
    return (X_train - mu) / sd, (X_test - mu) / sd


def ridge_translation(X_train, Y_train, X_test, *, alphas: Sequence[float] = ALPHAS) -> np.ndarray:
    """Predict the target of ``X_test`` with ridge regression fitted on the training rows.

    ``RidgeCV(alphas=alphas)`` (one penalty for all targets, chosen by efficient leave-one-out cross-validation)
    on source features standardised on the training rows, with an intercept. Returns ``(n_test, n_targets)``.
    """
    from sklearn.linear_model import RidgeCV

    X_train, Y_train, X_test = _check(X_train, Y_train, X_test)
    Xtr, Xte = _standardise(X_train, X_test)
    model = RidgeCV(alphas=np.asarray(alphas, dtype=float)).fit(Xtr, Y_train)
    return np.asarray(model.predict(Xte), dtype=np.float32).reshape(len(X_test), -1)


def knn_translation(X_train, Y_train, X_test, *, k: int = 15) -> np.ndarray:
    """Predict the target of ``X_test`` as the mean target of its ``k`` nearest training rows.

    Distances are Euclidean on the source features standardised on the training rows, or on their first
    :data:`KNN_PCA_DIMS` principal components (PCA fitted on the training rows) when there are more features.
    ``k`` is capped at the number of training rows. Returns ``(n_test, n_targets)``.
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsRegressor

    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be a whole number >= 1, got {k!r}")
    X_train, Y_train, X_test = _check(X_train, Y_train, X_test)
    Xtr, Xte = _standardise(X_train, X_test)
    if Xtr.shape[1] > KNN_PCA_DIMS and len(Xtr) > KNN_PCA_DIMS:
        pca = PCA(n_components=KNN_PCA_DIMS, svd_solver="full", random_state=0).fit(Xtr)
        Xtr, Xte = pca.transform(Xtr), pca.transform(Xte)
    model = KNeighborsRegressor(n_neighbors=min(int(k), len(Xtr))).fit(Xtr, Y_train)
    return np.asarray(model.predict(Xte), dtype=np.float32).reshape(len(X_test), -1)


def _positions(index, n: int, name: str) -> np.ndarray:
    idx = np.asarray(index)
    if idx.dtype == bool:
        if len(idx) != n:
            raise ParameterError(f"{name} is a boolean mask of length {len(idx)}, but the data has {n} rows")
        return np.flatnonzero(idx)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ParameterError(f"{name} has positions outside the data's {n} rows")
    return idx.astype(int) % n if idx.size else idx.astype(int)


def translation_baselines(data, sources: str | Sequence[str], target: str, train_idx, test_idx, *,
                          alphas: Sequence[float] = ALPHAS, k: int = 15) -> dict[str, np.ndarray]:
    """``{"ridge": prediction, "knn": prediction}`` of ``target`` from ``sources`` for the rows ``test_idx``.

    The inputs are the model inputs ``data.X`` (the scale the benchmark scores translations on): the source
    modalities side by side as features, the target's as responses. Training uses the rows of ``train_idx``
    where every source and the target were measured. Predictions have one row per entry of ``test_idx`` (integer
    positions or a boolean mask), in that order; rows where a source or the target was not measured are NaN.
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    unknown = [m for m in [*sources, target] if m not in data.modalities]
    if unknown or not sources:
        raise ParameterError(f"modalities {unknown or sources} are not usable: sources and target must be among "
                             f"{data.modalities}")
    if target in sources:
        raise ParameterError(f"target {target!r} is also a source")
    measured = np.ones(data.n_obs, bool)
    for m in [*sources, target]:
        measured &= np.asarray(data.mask[m], bool)
    train = _positions(train_idx, data.n_obs, "train_idx")
    test = _positions(test_idx, data.n_obs, "test_idx")
    train = train[measured[train]]
    test_ok = measured[test]
    if len(train) < 2:
        raise ParameterError(f"only {len(train)} training rows have {sources} and {target!r} measured")

    def features(rows):
        return np.hstack([_dense(data.X[m][rows]) for m in sources])

    X_train, Y_train, X_test = features(train), _dense(data.X[target][train]), features(test[test_ok])
    out = {}
    for name, fn, kw in (("ridge", ridge_translation, {"alphas": alphas}), ("knn", knn_translation, {"k": k})):
        pred = np.full((len(test), data.n_vars(target)), np.nan, np.float32)
        if test_ok.any():
            pred[test_ok] = fn(X_train, Y_train, X_test, **kw)
        out[name] = pred
    return out


__all__ = ["ALPHAS", "KNN_PCA_DIMS", "knn_translation", "ridge_translation", "translation_baselines"]
