"""Predict the pathologist's annotation from any per-spot representation, the way the MIMA paper measures it.

The classifier is the paper's ensemble: for every annotation class one binary one-vs-rest imbalanced-learn
``BalancedBaggingClassifier`` whose base estimator is a scikit-learn ``RandomForestClassifier`` (each bag
under-samples the majority side, so rare classes are not drowned). A spot's predicted label is the class
whose binary ensemble gives the highest probability; that probability is its confidence.

Two schemes (:func:`iter_cross_validate`):

- ``"loocv"``: leave one sample out: train on every other sample, predict the held-out one.
- ``"4cv"``: within-sample 4-fold: in fold k, a quarter of every sample's spots is held out; every spot is
  predicted exactly once, by a model that did not see it.

Scores follow the paper: for each test fold and class, accuracy, precision, recall and F1 of the binary
"this class or not" decision are computed only when the fold holds at least ``min_instances`` (3) spots of
that class, then averaged. Classes can be excluded (the paper drops nerve, necrosis, ISUP 2, ISUP 4, other
and unlabelled spots, :data:`PAPER_EXCLUDED`); their spots are neither trained on nor scored, but they are
still predicted so that a map shows every spot.

Why one file of about 520 lines: it is one evaluation protocol. The ensemble, the two cross-validation schemes
and :func:`transfer` all end in one ``_result`` (an :class:`AnnotationResult`), and the writers and readers at
the end share the layout it is stored in (``pred_<name>``, ``agree_<name>``, ``uns["spatialmix"]["annotations"]``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.conventions import PAPER_EXCLUDED, excluded_classes  # noqa: F401 - re-exported
from spatialmix.errors import ParameterError
from spatialmix.progress import Progress

#: Classes the MIMA paper leaves out of training and scoring (rare or without meaning as a tissue class).
#: Matched case-insensitively, ignoring spaces, "_" and "-" ("ISUP 2" == "isup2").
SCHEMES = ("loocv", "4cv")  # plus "transfer": source samples -> target samples (score_predictions)
METRICS = ("accuracy", "precision", "recall", "f1")
AGREEMENT = ("agree", "disagree", "unlabelled", "excluded")


@dataclass
class EnsembleOptions:
    """The ensemble's size. The paper names the estimators but not their sizes; 10 bags of 50 trees scored
    within 0.01 F1 of 10 bags of 100 trees (scikit-learn's default) on the bundled sample, in half the time."""

    n_bags: int = 10
    n_trees: int = 50
    seed: int = 0
    n_jobs: int | None = None  # bags in parallel (joblib); None = 1

    def __post_init__(self):
        if self.n_bags < 1 or self.n_trees < 1:
            raise ParameterError(f"n_bags and n_trees must be >= 1, got {self.n_bags} and {self.n_trees}")


class OneVsRestEnsemble:
    """One balanced-bagging random forest per class; :meth:`predict` returns labels, confidences, probabilities."""

    def __init__(self, options: EnsembleOptions | None = None):
        self.options = options or EnsembleOptions()
        self.classes_: list[str] = []
        self.estimators_: list[Any] = []

    def fit(self, X: np.ndarray, y: np.ndarray, classes: Sequence[str] | None = None) -> "OneVsRestEnsemble":
        from imblearn.ensemble import BalancedBaggingClassifier
        from sklearn.ensemble import RandomForestClassifier

        y = np.asarray(y).astype(str)
        classes = list(classes) if classes is not None else sorted(set(y))
        o = self.options
        self.classes_, self.estimators_ = [], []
        for i, c in enumerate(classes):
            pos = y == c
            if pos.sum() < 2 or (~pos).sum() < 2:  # a binary forest needs both sides
                continue
            rf = RandomForestClassifier(n_estimators=o.n_trees, random_state=o.seed + i, n_jobs=1)
            # bootstrap=False: every bag under-samples the majority side of all training spots. With the
            # default bootstrap a bag could draw none of a rare class's spots and fail ("needs more than 1
            # class"); the forests inside still bootstrap.
            clf = BalancedBaggingClassifier(estimator=rf, n_estimators=o.n_bags, bootstrap=False,
                                            random_state=o.seed + i, n_jobs=o.n_jobs)
            clf.fit(X, pos)
            self.classes_.append(c)
            self.estimators_.append(clf)
        if not self.classes_:
            raise ParameterError("no annotation class has at least 2 labelled training spots and 2 spots of other "
                                 "classes; the classifier needs at least two classes with 2 or more spots each")
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, n_classes) probability of each one-vs-rest ensemble that the spot is its class."""
        cols = []
        for clf in self.estimators_:
            proba = clf.predict_proba(X)
            cols.append(proba[:, list(clf.classes_).index(True)])
        return np.column_stack(cols)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        proba = self.predict_proba(X)
        best = proba.argmax(axis=1)
        return np.asarray(self.classes_, dtype=object)[best], proba[np.arange(len(best)), best], proba


@dataclass
class AnnotationResult:
    """Cross-validated predictions of one representation, and their agreement with the pathologist."""

    representation: str
    scheme: str
    prediction: pd.Series  # predicted class per spot (NaN where the spot was not evaluated)
    confidence: pd.Series  # probability of the winning one-vs-rest ensemble
    agreement: pd.Series  # agree / disagree / unlabelled / excluded (NaN where not evaluated)
    truth: pd.Series  # the pathologist's class per spot (as text)
    folds: pd.DataFrame  # one row per scored (fold, class): n, accuracy, precision, recall, f1
    classes: list[str]  # classes trained and scored
    excluded: list[str]  # classes left out
    options: dict = field(default_factory=dict)

    @property
    def per_class(self) -> pd.DataFrame:
        """Per class: the number of folds it was scored in, spots, and the mean of each metric over folds."""
        if self.folds.empty:
            return pd.DataFrame(columns=["n_folds", "n_spots", *METRICS])
        g = self.folds.groupby("class", sort=False)
        out = g[list(METRICS)].mean()
        out.insert(0, "n_spots", g["n"].sum())
        out.insert(0, "n_folds", g.size())
        return out

    @property
    def summary(self) -> dict[str, float]:
        """Each metric averaged over every scored (fold, class) pair, as in the paper."""
        out = {m: float(self.folds[m].mean()) if len(self.folds) else float("nan") for m in METRICS}
        out["n_scored"] = int(len(self.folds))
        out["n_spots"] = int(self.agreement.isin(["agree", "disagree"]).sum())
        out["overall_accuracy"] = float((self.agreement == "agree").sum() / max(out["n_spots"], 1))
        return out

    @property
    def confusion(self) -> pd.DataFrame:
        """Pathologist (rows) x predicted (columns) counts over the scored spots, pooled over folds."""
        scored = self.agreement.isin(["agree", "disagree"])
        truth = self.truth[scored]
        pred = self.prediction[scored].astype(str)
        cats = list(self.classes)
        cm = pd.crosstab(pd.Categorical(truth, categories=cats), pd.Categorical(pred, categories=cats),
                         dropna=False)
        cm.index.name, cm.columns.name = "pathologist", "predicted"
        return cm

    def to_dict(self) -> dict[str, Any]:
        return {"representation": self.representation, "scheme": self.scheme, **self.summary,
                "classes": list(self.classes), "excluded": list(self.excluded),
                "per_class": json.loads(self.per_class.to_json(orient="index")), "options": self.options}


def _two_classes_needed(classes: list[str], excluded: list[str], what: str) -> str:
    left_out = f" ({', '.join(map(repr, excluded))} excluded)" if excluded else ""
    return (f"{what} needs at least two annotation classes to tell apart, but only {classes[0]!r} is labelled"
            f"{left_out}. Label spots of a second class in the annotation column"
            + (", or keep a class in with exclude=() / --exclude ''" if excluded else ""))


def _folds(scheme: str, samples: np.ndarray, n_folds: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(name, test-mask over the evaluated spots) of every fold."""
    if scheme == "loocv":
        uniq = list(pd.unique(samples))
        if len(uniq) < 2:
            raise ParameterError(f"leave-one-sample-out needs at least 2 samples, got {uniq}")
        return [(str(s), samples == s) for s in uniq]
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(samples), int)
    for s in pd.unique(samples):
        idx = np.flatnonzero(samples == s)
        rng.shuffle(idx)
        fold_of[idx] = np.arange(len(idx)) % n_folds  # 25 % of each sample's spots per fold
    return [(f"fold{k + 1}", fold_of == k) for k in range(n_folds)]


def _scores(truth: np.ndarray, pred: np.ndarray, classes: list[str], min_instances: int) -> list[dict]:
    rows = []
    for c in classes:
        t = truth == c
        n = int(t.sum())
        if n < min_instances:
            continue
        p = pred == c
        tp = int((t & p).sum())
        precision = tp / p.sum() if p.sum() else 0.0
        recall = tp / n
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": c, "n": n, "accuracy": float((t == p).mean()), "precision": float(precision),
                     "recall": float(recall), "f1": float(f1)})
    return rows


def iter_cross_validate(X, labels, samples, *, representation: str = "X", scheme: str = "loocv",
                        exclude: Sequence[str] | None = PAPER_EXCLUDED, min_instances: int = 3, n_folds: int = 4,
                        mask=None, index=None, options: EnsembleOptions | None = None):
    """Cross-validated annotation prediction from ``X``; yields progress per fold, returns :class:`AnnotationResult`.

    Parameters
    ----------
    X
        (n_spots, n_features) representation (raw inputs, concatenated inputs or an embedding), or a dict
        ``{name: matrix}`` of candidate representations: then every fold chooses one by an inner cross-validation
        on its training spots only (:func:`_choose`: the same scheme, the same ensemble and per-class scoring,
        the best mean F1 wins) and predicts its test spots with it; the result's ``options["chosen"]`` names the
        choice of every fold and ``options["inner_f1"]`` the inner scores. Spots are evaluated where every
        candidate is finite, so that every fold's choice is made and used on the same spots.
    labels
        The pathologist's class per spot (NaN / None for unlabelled).
    samples
        Sample of each spot (the left-out unit of ``"loocv"``; 4-fold splits within each sample).
    scheme
        ``"loocv"`` (leave one sample out) or ``"4cv"`` (within-sample 4-fold).
    exclude
        Classes neither trained on nor scored (default: the paper's, :data:`PAPER_EXCLUDED`; ``()`` keeps all).
    min_instances
        A class is scored in a fold only when the fold holds at least this many of its spots.
    mask
        Spots to evaluate (default: every spot whose row of ``X`` is finite). Others get NaN.
    index
        Spot names for the returned Series (default ``labels.index`` or 0..n-1).
    """
    import scipy.sparse as sp

    if scheme not in SCHEMES:
        raise ParameterError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if min_instances < 1 or n_folds < 2:
        raise ParameterError(f"min_instances must be >= 1 and n_folds >= 2, got {min_instances}, {n_folds}")
    options = options or EnsembleOptions()
    candidates = None
    if isinstance(X, dict):
        if not X:
            raise ParameterError("no candidate representation to choose from")
        candidates = {str(k): (v.toarray() if sp.issparse(v) else np.asarray(v, dtype=np.float32))
                      for k, v in X.items()}
        shapes = {k: v.shape[0] for k, v in candidates.items()}
        if len(set(shapes.values())) > 1:
            raise ParameterError(f"candidate representations have different numbers of rows: {shapes}")
        X = next(iter(candidates.values()))
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if index is None:
        index = labels.index if isinstance(labels, pd.Series) else pd.RangeIndex(n)
    lab = pd.Series(np.asarray(labels, dtype=object), index=index)
    samples = np.asarray(samples).astype(str)
    if len(lab) != n or len(samples) != n:
        raise ParameterError(f"X has {n} rows but {len(lab)} labels and {len(samples)} sample names")
    finite = np.logical_and.reduce([np.isfinite(C).all(axis=1) for C in (candidates or {"X": X}).values()])
    mask = finite if mask is None else (np.asarray(mask, bool) & finite)
    if mask.sum() < 10:
        raise ParameterError(f"only {int(mask.sum())} spots to evaluate for {representation!r}; need at least 10")
    labelled = lab.notna().to_numpy() & ~lab.astype(str).isin(["nan", "", "None"]).to_numpy()
    present = sorted(set(lab[labelled & mask].astype(str)))
    excluded = excluded_classes(present, exclude)
    classes = [c for c in present if c not in excluded]
    if not classes:
        raise ParameterError(f"no annotation class left to predict (labelled classes {present}, excluded "
                             f"{excluded}); check the annotation column or the exclude list")
    if len(classes) < 2:
        raise ParameterError(_two_classes_needed(classes, excluded, "cross-validation"))
    y = lab.astype(str).to_numpy()
    usable = labelled & np.isin(y, classes)  # trained on and scored

    ev = np.flatnonzero(mask)
    folds = _folds(scheme, samples[ev], n_folds, options.seed)
    pred = np.full(n, None, dtype=object)
    conf = np.full(n, np.nan)
    rows, chosen, inner_f1 = [], {}, {}
    for k, (name, test_ev) in enumerate(folds):
        yield Progress(f"{representation}: {scheme} fold {name}", k, len(folds))
        test, train = ev[test_ev], ev[~test_ev]
        train = train[usable[train]]
        if candidates is not None:
            chosen[name], inner_f1[name] = _choose(candidates, train, y, samples, classes, scheme, n_folds,
                                                   min_instances, options)
            X = candidates[chosen[name]]
        model = OneVsRestEnsemble(options).fit(X[train], y[train], classes)
        p, c, _ = model.predict(X[test])
        pred[test], conf[test] = p, c
        scored = test[usable[test]]
        for r in _scores(y[scored], pred[scored].astype(str), classes, min_instances):
            rows.append({"fold": name, **r})
    yield Progress(f"{representation}: {scheme}", len(folds), len(folds))
    extra = {} if candidates is None else {"candidates": list(candidates), "chosen": chosen, "inner_f1": inner_f1}
    return _result(representation, scheme, pred, conf, y, mask, labelled, usable, rows, classes, excluded, index,
                   {"n_bags": options.n_bags, "n_trees": options.n_trees, "seed": options.seed,
                    "min_instances": min_instances, "n_folds": len(folds), **extra})


def _choose(candidates: dict, train: np.ndarray, y: np.ndarray, samples: np.ndarray, classes: list[str],
            scheme: str, n_folds: int, min_instances: int, options: EnsembleOptions) -> tuple[str, dict]:
    """The candidate with the best mean F1 in a cross-validation on the training spots ``train`` alone (the
    outer fold's test spots are never looked at), and every candidate's inner mean F1. The inner folds follow
    the outer scheme: leave one training sample out, or, with fewer than two training samples, or for ``"4cv"``,
    ``n_folds``-fold within the samples. A class missing from an inner training part is simply not predicted
    there, as in the outer folds. Ties go to the first candidate (the order given)."""
    inner_scheme = "loocv" if scheme == "loocv" and len(set(samples[train])) >= 2 else "4cv"
    folds = _folds(inner_scheme, samples[train], n_folds, options.seed)
    f1 = {}
    for cname, C in candidates.items():
        scores = []
        for _, test_in in folds:
            itest, itrain = train[test_in], train[~test_in]
            present = [c for c in classes if (y[itrain] == c).sum() >= 2]
            if len(present) < 2 or not len(itest):
                continue
            p, _, _ = OneVsRestEnsemble(options).fit(C[itrain], y[itrain], present).predict(C[itest])
            scores += [r["f1"] for r in _scores(y[itest], p.astype(str), classes, min_instances)]
        f1[cname] = round(float(np.mean(scores)), 4) if scores else float("nan")
    finite = {k: v for k, v in f1.items() if np.isfinite(v)}
    return (max(finite, key=finite.get) if finite else next(iter(candidates))), f1


def _result(representation, scheme, pred, conf, y, evaluated, labelled, usable, rows, classes, excluded, index,
            options) -> AnnotationResult:
    """The :class:`AnnotationResult` of predictions ``pred`` / ``conf`` on the ``evaluated`` spots, with the
    agreement column (agree / disagree where scored, unlabelled, excluded; NaN where not evaluated)."""
    agreement = np.full(len(y), None, dtype=object)
    agreement[evaluated & ~labelled] = "unlabelled"
    agreement[evaluated & labelled & ~usable] = "excluded"
    ok = evaluated & usable
    agreement[ok] = np.where(pred[ok].astype(str) == y[ok], "agree", "disagree")
    return AnnotationResult(
        representation=representation, scheme=scheme,
        prediction=pd.Series(pred, index=index, name=f"pred_{representation}"),
        confidence=pd.Series(conf, index=index, name=f"pred_{representation}_confidence"),
        agreement=pd.Series(pd.Categorical(agreement, categories=list(AGREEMENT)), index=index,
                            name=f"agree_{representation}"),
        folds=pd.DataFrame(rows, columns=["fold", "class", "n", *METRICS]),
        truth=pd.Series(y, index=index, name="pathologist"), classes=classes, excluded=excluded, options=options,
    )


def _source_split(samples: np.ndarray, source_samples: Sequence[str]) -> np.ndarray:
    """Boolean "is a source spot" over ``samples``; clear errors for unknown names or no target left."""
    known = list(pd.unique(samples))
    source_samples = [str(s) for s in source_samples]
    unknown = [s for s in source_samples if s not in known]
    if unknown:
        raise ParameterError(f"source sample(s) {unknown} are not in the data (samples: {known})")
    is_source = np.isin(samples, source_samples)
    if is_source.all() or not is_source.any():
        raise ParameterError(f"source samples {source_samples} leave no {'target' if is_source.all() else 'source'} "
                             f"sample (samples: {known}); choose a proper subset as labelled sources")
    return is_source


def score_predictions(prediction, confidence, labels, samples, *, source_samples: Sequence[str],
                      representation: str, exclude: Sequence[str] | None = PAPER_EXCLUDED, min_instances: int = 3,
                      mask=None, index=None, options: dict | None = None) -> AnnotationResult:
    """Score labels predicted for the target samples (spots not in ``source_samples``) against the pathologist,
    one fold per target sample, with the same per-class rule as :func:`iter_cross_validate`.

    Used for the labels of domain-adaptation models (MoDAmix, calibration) and for :func:`transfer`; source spots
    get no prediction in the result (they were trained on), so maps and scores show target spots only.
    """
    samples = np.asarray(samples).astype(str)
    n = len(samples)
    if index is None:
        index = labels.index if isinstance(labels, pd.Series) else pd.RangeIndex(n)
    lab = pd.Series(np.asarray(labels, dtype=object), index=index)
    is_source = _source_split(samples, source_samples)
    mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
    labelled = lab.notna().to_numpy() & ~lab.astype(str).isin(["nan", "", "None"]).to_numpy()
    y = lab.astype(str).to_numpy()
    present = sorted(set(y[labelled & mask & ~is_source]) | set(y[labelled & is_source]))
    excluded = excluded_classes(present, exclude)
    classes = [c for c in sorted(set(y[labelled & is_source])) if c not in excluded]
    usable = labelled & np.isin(y, classes)
    target = mask & ~is_source
    pred = np.full(n, None, dtype=object)
    conf = np.full(n, np.nan)
    pred[target] = np.asarray(prediction, dtype=object)[target]
    conf[target] = np.asarray(confidence, dtype=float)[target]
    rows = []
    for s in pd.unique(samples[target]):
        scored = np.flatnonzero(target & (samples == s) & usable)
        for r in _scores(y[scored], pred[scored].astype(str), classes, min_instances):
            rows.append({"fold": str(s), **r})
    return _result(representation, "transfer", pred, conf, y, target, labelled, usable, rows, classes, excluded,
                   index, {"source_samples": [str(x) for x in source_samples], "min_instances": min_instances,
                           **(options or {})})


def transfer(X, labels, samples, *, source_samples: Sequence[str], representation: str = "X",
             exclude: Sequence[str] | None = PAPER_EXCLUDED, min_instances: int = 3, mask=None, index=None,
             options: EnsembleOptions | None = None) -> AnnotationResult:
    """The paper's ensemble trained on the labelled ``source_samples`` and predicting every other sample: the
    reference that domain-adaptation models (MoDAmix, calibration) must beat on the same target spots."""
    import scipy.sparse as sp

    options = options or EnsembleOptions()
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    samples = np.asarray(samples).astype(str)
    lab = pd.Series(np.asarray(labels, dtype=object))
    is_source = _source_split(samples, source_samples)
    finite = np.isfinite(X).all(axis=1)
    mask = finite if mask is None else (np.asarray(mask, bool) & finite)
    labelled = lab.notna().to_numpy() & ~lab.astype(str).isin(["nan", "", "None"]).to_numpy()
    y = lab.astype(str).to_numpy()
    present = sorted(set(y[labelled & is_source & mask]))
    classes = [c for c in present if c not in excluded_classes(present, exclude)]
    if not classes:
        raise ParameterError(f"no labelled source spots to train on (source samples {list(source_samples)})")
    if len(classes) < 2:
        raise ParameterError(_two_classes_needed(classes, excluded_classes(present, exclude),
                                                 f"training on the source samples {list(source_samples)}"))
    train = mask & is_source & labelled & np.isin(y, classes)
    pred = np.full(len(y), None, dtype=object)
    conf = np.full(len(y), np.nan)
    test = mask & ~is_source
    model = OneVsRestEnsemble(options).fit(X[train], y[train], classes)
    p, c, _ = model.predict(X[test])
    pred[test], conf[test] = p, c
    return score_predictions(pred, conf, labels, samples, source_samples=source_samples,
                             representation=representation, exclude=exclude, min_instances=min_instances,
                             mask=mask, index=index, options={"n_bags": options.n_bags, "n_trees": options.n_trees,
                                                              "seed": options.seed})


def cross_validate(X, labels, samples, *, progress: bool = False, **kwargs) -> AnnotationResult:
    """:func:`iter_cross_validate` run to the end."""
    from spatialmix.progress import run

    return run(iter_cross_validate(X, labels, samples, **kwargs), progress=progress)


def write_predictions(sdata, result: AnnotationResult, *, name: str | None = None,
                      annotation_key: str | None = None, tables: Sequence[str] | None = None) -> list[str]:
    """Write ``pred_<name>`` (categorical, the annotation's categories so colours match), its confidence and
    the agreement column into the ``obs`` of every modality table, and the scores into ``uns``.

    Recomputing replaces the columns. Returns the column names written.
    """
    name = name or result.representation
    tables = list(tables) if tables is not None else [t for t in ("rna", "msi", "morphology") if t in sdata.tables]
    cols = []
    for t in tables:
        cols = write_predictions_into(sdata.tables[t], result, name=name, annotation_key=annotation_key)
    return cols


def write_predictions_into(table, result: AnnotationResult, *, name: str | None = None,
                           annotation_key: str | None = None) -> list[str]:
    """:func:`write_predictions` into one AnnData (a project table, or the cells of non-spatial data)."""
    name = name or result.representation
    cols = [f"pred_{name}", f"pred_{name}_confidence", f"agree_{name}"]
    scores = json.dumps(result.to_dict())
    confusion = result.confusion.to_json(orient="split")
    if not table.obs_names.equals(result.prediction.index):
        pred = result.prediction.reindex(table.obs_names)
        conf = result.confidence.reindex(table.obs_names)
        agree = result.agreement.reindex(table.obs_names)
    else:
        pred, conf, agree = result.prediction, result.confidence, result.agreement
    cats = list(result.classes)
    if annotation_key and annotation_key in table.obs and hasattr(table.obs[annotation_key], "cat"):
        cats = list(table.obs[annotation_key].cat.categories)
    cats += [c for c in pd.unique(pred.dropna().astype(str)) if c not in cats]
    table.obs[cols[0]] = pd.Categorical(pred.to_numpy(), categories=cats)
    table.obs[cols[1]] = conf.to_numpy(dtype=float)
    table.obs[cols[2]] = pd.Categorical(agree.to_numpy(), categories=list(AGREEMENT))
    store = table.uns.setdefault("spatialmix", {}).setdefault("annotations", {})
    store[name] = {"scores_json": scores, "confusion_json": confusion}
    return cols


#: joins representations shown side by side (``mima_corrected_pca-with-raw_rna``); "-" because SpatialData accepts
#: only letters, digits, "_", "." and "-" in the names of the columns predictions are written to
JOIN = "-with-"
#: suffix of the representation that lets every fold choose, inside its training samples, between a corrected
#: PCA alone and beside one modality's measured features (:func:`representation_candidates`)
MEASURED = f"{JOIN}measured"


def representations_of(sdata) -> list[str]:
    """Representations of a project that annotations can be predicted from: for every corrected-feature PCA
    (``<key>_corrected_pca``) first ``<key>_corrected_pca-with-measured`` (:data:`MEASURED`: it alone or beside one
    modality's measured features, chosen in each fold by an inner cross-validation), then every model embedding
    (``obsm["X_<name>"]`` of the ``rna`` table, e.g. ``mima``, ``harmony``) and the raw inputs ``raw_<table>``.
    Any of them joined by ``-with-`` (:data:`JOIN`, e.g. ``mima_corrected_pca-with-raw_rna``) is accepted too: the
    blocks side by side."""
    out = []
    if "rna" in sdata.tables:
        out += [k[2:] for k in sdata.tables["rna"].obsm
                if k.startswith("X_") and not k.endswith(("_rgb", "_private", "_expert_weights"))
                and k != "X_spatial"]
    out = [f"{r}{MEASURED}" for r in out if r.endswith("_corrected_pca")] + out
    out += [f"raw_{t}" for t in ("rna", "msi", "morphology") if t in sdata.tables]
    return out


def representation_candidates(sdata, representation: str) -> dict[str, np.ndarray] | None:
    """For ``<base>-with-measured``: ``{<base>: ..., <base>-with-raw_<table>: ...}`` over the modality tables of the
    project, and ``<base>`` beside every table's measured features (``<base>-with-raw_rna-with-raw_msi...``): the
    candidates :func:`iter_cross_validate` chooses from in every fold. None for any other name.

    Why: a corrected PCA keeps the classes several modalities mark, but a class only a few measured features of one
    modality mark (simulator seed 11: ISUP1 / ISUP3 in a handful of genes) is lost in any embedding of a few dozen
    dimensions, and the forest needs those features themselves. Which modality carries such a class is not known
    without labels, so it is chosen inside the training samples (docs/models.md, "Annotation representation")."""
    if not representation.endswith(MEASURED):
        return None
    base = representation[:-len(MEASURED)]
    raw = [f"raw_{t}" for t in ("rna", "msi", "morphology") if t in sdata.tables]
    names = [base] + [f"{base}{JOIN}{r}" for r in raw] + ([JOIN.join([base, *raw])] if len(raw) > 1 else [])
    return {name: representation_matrix(sdata, name)[0] for name in names}


def representation_matrix(sdata, representation: str) -> tuple[np.ndarray, pd.Index]:
    """(X, spot names) of a representation named as in :func:`representations_of`; rows of spots without the
    modality (``msi_covered`` / ``he_covered`` False) are NaN, so they are predicted but not evaluated.
    ``a-with-b``: the blocks side by side, rows matched by spot name to the ``rna`` table (NaN where a table has no
    such spot)."""
    from spatialmix.data import COVERED_KEYS
    from spatialmix.errors import ProjectError

    if "rna" not in sdata.tables:
        raise ProjectError("the project has no 'rna' spot table; build the spot tables first")
    if representation.endswith(MEASURED):
        raise ProjectError(f"{representation!r} is a choice among several representations, not one matrix: use "
                           "representation_candidates, or iter_predict_annotations, which chooses per fold")
    if JOIN in representation:
        names = sdata.tables["rna"].obs_names
        parts = []
        for part in representation.split(JOIN):
            X, idx = representation_matrix(sdata, part)
            if not idx.equals(names):
                where = idx.get_indexer(names)
                X = np.where((where >= 0)[:, None], X[np.maximum(where, 0)], np.nan).astype(np.float32)
            parts.append(X)
        return np.hstack(parts), names
    if representation.startswith("raw_"):
        table = representation[4:]
        if table not in sdata.tables:
            raise ProjectError(f"no table {table!r} for representation {representation!r} "
                               f"(available: {representations_of(sdata)})")
        ad = sdata.tables[table]
        X = np.asarray(ad.X.toarray() if hasattr(ad.X, "toarray") else ad.X, dtype=np.float32).copy()
        cov = COVERED_KEYS.get(table)
        if cov and cov in ad.obs:
            X[~ad.obs[cov].to_numpy(bool)] = np.nan
        return X, ad.obs_names
    key = f"X_{representation}"
    ad = sdata.tables["rna"]
    if key not in ad.obsm:
        raise ProjectError(f"no embedding {key!r} in the project (available: {representations_of(sdata)}); "
                           "train a model and write its results first")
    return np.asarray(ad.obsm[key], dtype=np.float32), ad.obs_names


def default_representation(sdata) -> str | None:
    """What annotations are predicted from when nobody names a representation (the Explore dock, the headless
    API): ``<key>_corrected_pca-with-measured`` when a corrected PCA is written, else that PCA, else the first
    embedding, else the first raw table (docs/models.md, "Annotation representation")."""
    reps = representations_of(sdata)
    return next((r for r in reps if r.endswith((MEASURED, "_corrected_pca"))), reps[0] if reps else None)


def iter_predict_annotations(sdata, representation: str | None = None, *, annotation_key: str = "pathologist",
                             scheme: str = "loocv", exclude: Sequence[str] | None = PAPER_EXCLUDED,
                             options: EnsembleOptions | None = None, write: bool = True):
    """Cross-validated prediction of the pathologist's annotation from one representation of a project, written
    back as ``pred_<representation>``, its confidence and ``agree_<representation>`` (:func:`write_predictions`).
    ``<key>_corrected_pca-with-measured`` (the default, :func:`default_representation`) chooses in every fold
    among the candidates of :func:`representation_candidates`; the choices are in the stored scores'
    ``options["chosen"]``.

    Yields progress per fold and returns the :class:`AnnotationResult`. Nothing is written unless it succeeds.
    """
    from spatialmix.errors import ProjectError

    if representation is None:
        representation = default_representation(sdata)
        if representation is None:
            raise ProjectError("no representation to predict from: build the spot tables or train a model")
    candidates = representation_candidates(sdata, representation)
    if candidates is not None:
        X, names = candidates, sdata.tables["rna"].obs_names
    else:
        X, names = representation_matrix(sdata, representation)
    obs = sdata.tables["rna"].obs
    if annotation_key not in obs:
        raise ProjectError(f"the project has no annotation column {annotation_key!r} "
                           f"(obs columns: {list(obs.columns)}); add the pathologist's labels first")
    labels = obs[annotation_key].reindex(names)
    samples = obs["sample"].astype(str).reindex(names).to_numpy()
    result = yield from iter_cross_validate(X, labels, samples, representation=representation, scheme=scheme,
                                            exclude=exclude, index=names, options=options)
    if write:
        write_predictions(sdata, result, name=representation, annotation_key=annotation_key)
    return result


def stored_predictions(sdata, name: str, table: str = "rna") -> dict[str, Any] | None:
    """Scores (as :meth:`AnnotationResult.to_dict`), per-class table and confusion matrix written by
    :func:`write_predictions` for ``name``, or None when there are none."""
    import io

    store = sdata.tables[table].uns.get("spatialmix", {}).get("annotations", {}) if table in sdata.tables else {}
    if name not in store:
        return None
    scores = json.loads(store[name]["scores_json"])
    per_class = pd.DataFrame.from_dict(scores.get("per_class", {}), orient="index")
    per_class.index.name = "class"
    confusion = pd.read_json(io.StringIO(store[name]["confusion_json"]), orient="split")
    confusion.index.name, confusion.columns.name = "pathologist", "predicted"
    return {"scores": scores, "per_class": per_class, "confusion": confusion}


def prediction_scores(sdata, table: str = "rna") -> pd.DataFrame:
    """Per-class scores of every stored prediction (one row per representation and class)."""
    from spatialmix.errors import ProjectError

    store = sdata.tables[table].uns.get("spatialmix", {}).get("annotations", {}) if table in sdata.tables else {}
    if not store:
        raise ProjectError("no annotation predictions in this project yet: predict them first "
                           "(Explore widget, or iter_predict_annotations)")
    frames = []
    for name in store:
        stored = stored_predictions(sdata, name, table)
        frames.append(stored["per_class"].reset_index().assign(representation=name,
                                                               scheme=stored["scores"].get("scheme", "")))
    return pd.concat(frames, ignore_index=True)
