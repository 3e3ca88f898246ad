"""Annotation prediction against the pathologist's labels: the paper's one-vs-rest balanced-bagging forests,
leave-one-sample-out and within-sample 4-fold, per-class scores, agreement and predictions in the project."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spatialmix.errors import ParameterError
from spatialmix.evaluate import annotations as A

FAST = A.EnsembleOptions(n_bags=3, n_trees=10)


def tissue(seed=0, separation=3.0, n_per_sample=80):
    """4 samples; classes Tumour / Stroma / Normal (separable in X, with a per-sample offset), 'Nerve' (4 spots,
    one sample only), 'Rare' (2 spots per sample: trained on, never scored), 4 unlabelled spots per sample."""
    rng = np.random.default_rng(seed)
    X, labels, samples = [], [], []
    for s in range(4):
        lab = np.array(["Tumour", "Stroma", "Normal"] * (n_per_sample // 3 + 1), dtype=object)[:n_per_sample]
        lab[:2] = "Rare"
        lab[2:6] = None
        if s == 0:
            lab[6:10] = "Nerve"
        centre = {"Tumour": 0, "Stroma": 1, "Normal": 2, "Rare": 3, "Nerve": 4}
        x = rng.normal(size=(n_per_sample, 8))
        for i, c in enumerate(lab):
            if c is not None:
                x[i, centre[c] % 8] += separation
        x += rng.normal(0, 0.3, size=8)  # sample offset
        X.append(x)
        labels.append(lab)
        samples += [f"S{s}"] * n_per_sample
    index = pd.Index([f"spot{i}" for i in range(4 * n_per_sample)])
    return np.vstack(X), pd.Series(np.concatenate(labels), index=index), np.array(samples)


def test_leave_one_sample_out_predicts_every_spot_and_scores_like_the_paper():
    X, labels, samples = tissue()
    res = A.cross_validate(X, labels, samples, scheme="loocv", options=FAST)
    assert res.prediction.notna().all() and res.confidence.between(0, 1).all()
    assert set(res.folds["fold"]) == {"S0", "S1", "S2", "S3"}
    # the paper's exclusions: Nerve is neither trained on nor scored, but its spots are still predicted
    assert res.excluded == ["Nerve"] and "Nerve" not in res.classes
    assert "Nerve" not in set(res.prediction)
    nerve = labels == "Nerve"
    assert (res.agreement[nerve] == "excluded").all() and (res.agreement[labels.isna()] == "unlabelled").all()
    # 'Rare' has 2 spots per test sample (< 3): trained on but never scored
    assert "Rare" in res.classes and "Rare" not in set(res.folds["class"])
    assert (res.folds["n"] >= 3).all()
    s = res.summary
    assert s["f1"] > 0.9 and s["accuracy"] > 0.9 and s["n_scored"] == 12  # 3 classes x 4 folds
    assert s["f1"] == pytest.approx(res.folds["f1"].mean())
    cm = res.confusion
    assert int(np.trace(cm.to_numpy())) == int((res.agreement == "agree").sum())
    assert int(cm.to_numpy().sum()) == s["n_spots"]
    assert list(res.per_class.index) == ["Normal", "Stroma", "Tumour"]
    assert (res.per_class["n_folds"] == 4).all()


def test_labels_unrelated_to_the_data_score_near_chance():
    X, labels, samples = tissue()
    shuffled = pd.Series(np.random.default_rng(1).permutation(labels.to_numpy()), index=labels.index)
    res = A.cross_validate(X, shuffled, samples, scheme="loocv", options=FAST, exclude=())
    assert res.summary["f1"] < 0.45


def test_within_sample_4fold_predicts_each_spot_once_from_a_quarter_of_every_sample():
    X, labels, samples = tissue()
    mask = np.ones(len(X), bool)
    mask[::17] = False  # spots without this representation
    res = A.cross_validate(X, labels, samples, scheme="4cv", options=FAST, mask=mask)
    assert set(res.folds["fold"]) == {"fold1", "fold2", "fold3", "fold4"}
    assert res.prediction[mask].notna().all() and res.prediction[~mask].isna().all()
    assert res.agreement[~mask].isna().all()
    folds = A._folds("4cv", samples, 4, 0)
    held = np.zeros(len(X), int)
    for _, test in folds:
        held += test
        for s in np.unique(samples):  # 25 % of each sample's spots in every fold
            assert test[samples == s].sum() == (samples == s).sum() // 4
    assert (held == 1).all()
    assert res.summary["f1"] > 0.85


def test_nan_rows_are_left_out_and_bad_arguments_are_clear_errors():
    X, labels, samples = tissue()
    X[:10] = np.nan
    res = A.cross_validate(X, labels, samples, scheme="loocv", options=FAST)
    assert res.prediction.iloc[:10].isna().all() and res.prediction.iloc[10:].notna().all()
    with pytest.raises(ParameterError, match="scheme"):
        A.cross_validate(X, labels, samples, scheme="5cv")
    with pytest.raises(ParameterError, match="at least 2 samples"):
        A.cross_validate(X, labels, np.full(len(X), "S0"), scheme="loocv", options=FAST)
    with pytest.raises(ParameterError, match="no annotation class left"):
        A.cross_validate(X, labels, samples, exclude=["Tumour", "Stroma", "Normal", "Rare", "Nerve"])
    with pytest.raises(ParameterError, match="rows"):
        A.cross_validate(X[:-1], labels, samples)
    with pytest.raises(ParameterError, match="n_bags"):
        A.EnsembleOptions(n_bags=0)
    assert A.excluded_classes(["ISUP 2", "isup_4", "Nerve", "Tumour"], A.PAPER_EXCLUDED) == ["ISUP 2", "isup_4",
                                                                                               "Nerve"]


def test_predictions_land_in_every_table_with_the_annotation_colours(prepared):
    from types import SimpleNamespace

    sdata = SimpleNamespace(tables={t: prepared.tables[t].copy() for t in ("rna", "msi")})  # the fixture stays as is
    obs = sdata.tables["rna"].obs
    X = np.asarray(sdata.tables["rna"].obsm["X_mima"])
    res = A.cross_validate(X, obs["pathologist"], obs["sample"], representation="mima", options=FAST)
    cols = A.write_predictions(sdata, res, annotation_key="pathologist")
    assert cols == ["pred_mima", "pred_mima_confidence", "agree_mima"]
    for t in ("rna", "msi"):
        o = sdata.tables[t].obs
        assert list(o["pred_mima"].cat.categories) == list(o["pathologist"].cat.categories)
        assert set(o["agree_mima"].dropna()) <= set(A.AGREEMENT)
        assert (o["agree_mima"] == "agree").sum() == (res.agreement == "agree").sum()
        stored = sdata.tables[t].uns["spatialmix"]["annotations"]["mima"]
        assert '"f1"' in stored["scores_json"]
    nerve = obs["pathologist"] == "Nerve"
    assert (sdata.tables["rna"].obs.loc[nerve, "agree_mima"] == "excluded").all()
    # writing again replaces the columns rather than adding new ones
    n_cols = sdata.tables["rna"].obs.shape[1]
    A.write_predictions(sdata, res, annotation_key="pathologist")
    assert sdata.tables["rna"].obs.shape[1] == n_cols


def test_a_class_with_two_training_spots_is_still_trained():
    """A bag drawn with replacement can miss both spots of a 2-spot class; each bag under-samples all spots."""
    X, labels, samples = tissue()
    ens = A.OneVsRestEnsemble(A.EnsembleOptions(n_bags=20, n_trees=5)).fit(X, labels.fillna("none").to_numpy(),
                                                                          ["Tumour", "Rare"])
    rare = ens.classes_.index("Rare")
    assert ens.classes_ == ["Tumour", "Rare"] and ens.predict_proba(X).shape == (len(X), 2)
    assert ens.predict_proba(X[(labels == "Rare").to_numpy()])[:, rare].mean() > 0.5


def test_each_fold_chooses_among_candidates_on_its_training_samples_only():
    """A dict of candidate representations: every leave-one-sample-out fold picks one by an inner cross-validation
    over its own training samples, here always the informative one over noise, and then predicts exactly as that
    representation alone would; the choices and inner scores are reported."""
    X, labels, samples = tissue()
    noise = np.random.default_rng(1).normal(size=X.shape)
    res = A.cross_validate({"noise": noise, "signal": X}, labels, samples, scheme="loocv", options=FAST,
                           representation="choice")
    alone = A.cross_validate(X, labels, samples, scheme="loocv", options=FAST)
    assert res.options["candidates"] == ["noise", "signal"]
    assert res.options["chosen"] == {s: "signal" for s in ("S0", "S1", "S2", "S3")}
    for s, f1 in res.options["inner_f1"].items():
        assert f1["signal"] > 0.8 and f1["noise"] < 0.4, (s, f1)
    pd.testing.assert_series_equal(res.prediction, alone.prediction, check_names=False)
    assert res.summary["f1"] == pytest.approx(alone.summary["f1"])
    # 4-fold within samples: the inner folds split the training spots the same way
    res4 = A.cross_validate({"noise": noise, "signal": X}, labels, samples, scheme="4cv", options=FAST)
    assert set(res4.options["chosen"].values()) == {"signal"}
    # spots are evaluated only where every candidate is finite
    holes = X.copy()
    holes[:5] = np.nan
    res_nan = A.cross_validate({"signal": X, "holes": holes}, labels, samples, options=FAST)
    assert res_nan.prediction.iloc[:5].isna().all() and res_nan.prediction.iloc[5:].notna().all()
    with pytest.raises(ParameterError, match="different numbers of rows"):
        A.cross_validate({"a": X, "b": X[:-1]}, labels, samples, options=FAST)


def test_the_corrected_pca_beside_measured_features_is_offered_and_chosen_per_fold(prepared, tmp_path):
    """``mima_corrected_pca-with-measured`` (the representation that keeps a class only a few measured features mark)
    is listed first, its candidates are the corrected PCA alone and beside each modality's measured features
    (NaN where that modality was not measured), and predicting from it writes the per-fold choice."""
    import copy

    from spatialmix.errors import ProjectError
    from spatialmix.project import load_project, save_project

    sdata = copy.deepcopy(prepared)
    reps = A.representations_of(sdata)
    assert reps[0] == "mima_corrected_pca-with-measured" and "mima_corrected_pca" in reps
    cands = A.representation_candidates(sdata, reps[0])
    tables = [t for t in ("rna", "msi", "morphology") if t in sdata.tables]
    assert list(cands) == ["mima_corrected_pca"] + [f"mima_corrected_pca-with-raw_{t}" for t in tables] + [
        "-with-".join(["mima_corrected_pca"] + [f"raw_{t}" for t in tables])]
    base = np.asarray(sdata.tables["rna"].obsm["X_mima_corrected_pca"])
    assert cands[list(cands)[-1]].shape[1] == base.shape[1] + sum(sdata.tables[t].n_vars for t in tables)
    msi = cands["mima_corrected_pca-with-raw_msi"]
    assert msi.shape == (len(base), base.shape[1] + sdata.tables["msi"].n_vars)
    np.testing.assert_array_equal(msi[:, :base.shape[1]], base)
    covered = sdata.tables["msi"].obs["msi_covered"].reindex(sdata.tables["rna"].obs_names).to_numpy(bool)
    assert np.isnan(msi[~covered, base.shape[1]:]).all() and np.isfinite(msi[covered, base.shape[1]:]).all()
    with pytest.raises(ProjectError, match="choice among several"):
        A.representation_matrix(sdata, reps[0])
    from spatialmix.progress import run

    assert A.default_representation(sdata) == reps[0]
    res = run(A.iter_predict_annotations(sdata, options=FAST))  # no representation named: the default
    assert res.representation == reps[0]
    assert set(res.options["chosen"]) == set(sdata.tables["rna"].obs["sample"].astype(str))
    assert set(res.options["chosen"].values()) <= set(cands)
    assert f"pred_{reps[0]}" in sdata.tables["rna"].obs
    again = load_project(save_project(sdata, tmp_path / "p.zarr"))  # names SpatialData accepts, choices kept
    stored = A.stored_predictions(again, reps[0])
    assert stored["scores"]["options"]["chosen"] == res.options["chosen"]
    assert stored["scores"]["f1"] == pytest.approx(res.summary["f1"])
