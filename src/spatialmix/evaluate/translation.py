"""Translation fidelity as the MIMA paper measures it: 4-fold cross-validation, so that every evaluated
prediction comes from a model that never saw that spot, scored on the top 1,000 highly variable features of
the target modality against two annotation-centroid baselines.

For each fold a fresh model is trained on the other three quarters of the spots (all of them: no internal
validation split). For every target modality it then predicts the held-out spots' features

- from the target itself (*reconstruction*: the denoised output), and
- from every non-empty set of the other modalities (*translation*, e.g. ``msi+morphology->rna``).

Predictions are compared with the measurements (model input scale: log-normalised RNA, log1p MSI, z-scored
morphology) by MSE, Pearson R^2 per spot across the features (the distribution figures show it), and Pearson r
and R^2 per feature across spots (``r_feature_median``: the median over features of the per-feature r, the
figure most papers report as "translation r"), on the spots where the target and every source were measured.

Beside the model, every direction scores the best simple predictors, fitted on the same training folds
(:mod:`spatialmix.evaluate.regression`): ridge regression with a cross-validated penalty and kNN regression
from the concatenated source modalities. When the data carry labels, the MIMA paper's two annotation
baselines are scored too, on the labelled spots: the centroid of the spot's own annotation without the spot
itself, and the centroid of all the other annotations.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.errors import ParameterError
from spatialmix.progress import Progress, forward

METHODS = ("model", "ridge", "knn", "own_centroid", "other_centroids")


def directions(modalities) -> list[tuple[tuple[str, ...], str]]:
    """(sources, target) pairs: reconstruction of each modality, then every translation into it."""
    out = []
    for target in modalities:
        out.append(((target,), target))
        others = [m for m in modalities if m != target]
        for k in range(1, len(others) + 1):
            for src in itertools.combinations(others, k):
                out.append((src, target))
    return out


def direction_name(sources, target) -> str:
    return f"{'+'.join(sources)}->{target}"


@dataclass
class TranslationResult:
    """Per direction and method: MSE, R^2 (per spot and per feature), spots and features used."""

    table: pd.DataFrame
    r2_spot: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # direction -> method -> values
    train_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (direction, method), row in self.table.set_index(["direction", "method"]).iterrows():
            out.setdefault(direction, {})[method] = {
                k: v if isinstance(v, str) else (int(v) if k.startswith("n_") else float(v)) for k, v in row.items()}
        return out


def _fold_of(n: int, n_folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold = np.empty(n, int)
    fold[rng.permutation(n)] = np.arange(n) % n_folds
    return fold


def iter_translation_cv(data, *, model: str = "mima", model_params: dict | None = None, train: dict | None = None,
                        annotation_key: str | None = None, n_folds: int = 4, seed: int = 0,
                        n_variance: int = 2000, n_top: int = 1000, baselines: bool = True):
    """Cross-validated translation fidelity of ``model`` on ``data``; yields progress, returns
    :class:`TranslationResult`.

    ``train`` holds the training options of each fold's model (``train_fraction`` is forced to 1: the
    held-out quarter is the validation). ``annotation_key`` names the label column of the centroid baselines
    (default: ``data.annotation_key``; without labels only the model, ridge and kNN are scored).
    ``baselines=False`` skips ridge and kNN.
    """
    from spatialmix.evaluate.metrics import annotation_centroids, fidelity, highly_variable
    from spatialmix.models import MODELS

    if model not in MODELS:
        raise ParameterError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    if len(data.modalities) < 2:
        raise ParameterError("translation needs at least two modalities")
    annotation_key = annotation_key or data.annotation_key
    if annotation_key is not None and annotation_key not in data.obs:
        raise ParameterError(f"annotation column {annotation_key!r} of the centroid baselines is not in the data "
                             f"(columns: {list(data.obs.columns)}); pass annotation_key=None to score without them")
    if n_folds < 2:
        raise ParameterError(f"n_folds must be >= 2, got {n_folds}")
    dirs = directions(data.modalities)
    preds = {d: np.full((data.n_obs, data.n_vars(d[1])), np.nan, np.float32) for d in dirs}
    simple = ("ridge", "knn") if baselines else ()
    base_preds = {(d, b): np.full((data.n_obs, data.n_vars(d[1])), np.nan, np.float32)
                  for d in dirs if d[0] != (d[1],) for b in simple}
    fold = _fold_of(data.n_obs, n_folds, seed)
    seconds = []
    for k in range(n_folds):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        mdl = MODELS[model](data.subset(tr), **(model_params or {}))
        train_opts = dict(train or {})
        # epochs="auto" stops early on a validation split drawn from the training fold (the model's
        # train_fraction of it), never from the held-out fold that is scored; a fixed schedule trains on all of
        # it. The instance's defaults decide (preset="paper" has a fixed schedule).
        if train_opts.get("epochs", mdl.train_defaults.get("epochs")) != "auto":
            train_opts.update(train_fraction=1.0, early_stopping=False)
        t0 = time.perf_counter()
        yield from forward(mdl.iter_train(**train_opts), f"translation CV fold {k + 1}/{n_folds}: ")
        seconds.append(time.perf_counter() - t0)
        test = data.subset(te)
        for sources, target in dirs:
            if sources == (target,):
                preds[(sources, target)][te] = mdl.get_denoised(target, data=test)
            else:
                preds[(sources, target)][te] = mdl.translate(list(sources), target, data=test)
                if simple:
                    from spatialmix.evaluate.regression import translation_baselines

                    fitted = translation_baselines(data, list(sources), target, tr, te)
                    for b in simple:
                        base_preds[((sources, target), b)][te] = fitted[b]
    yield Progress("translation fidelity", 0, 1)
    labels = data.obs[annotation_key] if annotation_key is not None else None
    rows, dists = [], {}
    for target in data.modalities:
        X = data.dense(target)
        measured = data.mask[target]
        cols = highly_variable(X[measured], n_variance=n_variance, n_top=n_top)
        centroids = {}
        scored = measured.copy()
        if labels is not None:
            own, other = annotation_centroids(X[measured][:, cols], labels.to_numpy()[measured])
            for method, values in (("own_centroid", own), ("other_centroids", other)):
                full = np.full((data.n_obs, len(cols)), np.nan)
                full[measured] = values
                centroids[method] = full
                scored &= np.isfinite(full).all(axis=1)  # labelled spots whose class has another spot
        for sources, target_ in dirs:
            if target_ != target:
                continue
            ok = scored.copy()
            for s in sources:
                ok &= data.mask[s]
            if ok.sum() < 10:
                continue
            name = direction_name(sources, target)
            truth = X[ok][:, cols]
            dists[name] = {}
            methods = [("model", preds[(sources, target)][ok][:, cols])]
            methods += [(b, base_preds[((sources, target), b)][ok][:, cols]) for b in simple
                        if ((sources, target), b) in base_preds]
            methods += [(name_, values[ok]) for name_, values in centroids.items()]  # already on `cols`
            for method, pred in methods:
                summary, r2 = fidelity(pred, truth)
                rows.append({"direction": name, "kind": "reconstruction" if sources == (target,) else "translation",
                             "method": method, **summary, "n_spots": int(ok.sum()), "n_features": int(len(cols))})
                dists[name][method] = r2
    yield Progress("translation fidelity", 1, 1)
    return TranslationResult(pd.DataFrame(rows), dists, [round(s, 2) for s in seconds])


def translation_cv(data, *, progress: bool = False, **kwargs) -> TranslationResult:
    from spatialmix.progress import run

    return run(iter_translation_cv(data, **kwargs), progress=progress)
