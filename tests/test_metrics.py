"""Integration and translation metrics (scib-metrics underneath) and the simulated truth loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spatialmix.errors import MissingFileError, ParameterError
from spatialmix.evaluate import metrics as M


def blobs(batch_shift: float, seed=0, n=300):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    batches = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 10))
    X[:, 0] += 4 * labels
    X[:, 1] += batch_shift * batches
    return X, batches, labels


def test_batch_mixing_and_region_scores_order_embeddings_correctly():
    mixed = M.integration_scores(*blobs(0.0))
    split = M.integration_scores(*blobs(6.0))
    assert mixed["ilisi"] > 0.8 and split["ilisi"] < 0.1
    assert mixed["batch_asw"] > split["batch_asw"] + 0.2
    assert mixed["label_asw"] > 0.5 and mixed["ari"] > 0.8 and mixed["nmi"] > 0.8
    X, b, _ = blobs(0.0)
    noise = M.integration_scores(X, b, np.random.default_rng(1).integers(0, 3, len(X)))
    assert noise["ari"] < 0.05 and noise["bio_score"] < mixed["bio_score"] - 0.4


def test_feature_matrices_go_through_pca_and_unlabelled_spots_are_left_out():
    X = np.random.default_rng(0).normal(size=(100, 80))
    assert M.representation(X).shape == (100, 50)
    assert M.representation(X[:, :20]).shape == (100, 20)
    X, b, labels = blobs(0.0)
    lab = pd.Series(labels.astype(str)).where(np.arange(len(labels)) % 5 != 0)  # 20 % unlabelled (NaN)
    assert np.isfinite(list(M.integration_scores(X, b, lab).values())).all()
    with pytest.raises(ParameterError, match="two batches"):
        M.integration_scores(X, np.zeros(len(X)), labels)


def test_translation_scores_and_class_mean_baseline():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 50)
    true = rng.normal(size=(100, 5)) + (labels == "b")[:, None] * 2
    base = M.class_mean_baseline(true[::2], labels[::2], labels)
    np.testing.assert_allclose(base[labels == "a"][0], true[::2][labels[::2] == "a"].mean(axis=0), rtol=1e-6)
    good = M.translation_scores(true + rng.normal(0, 0.1, true.shape), true, base)
    assert good["pearson_median"] > 0.95 and good["mse"] < good["baseline_mse"]
    assert good["baseline_pearson_median"] < good["pearson_median"]
    r = M.pearson_per_feature(np.ones((10, 2)), rng.normal(size=(10, 2)))
    assert np.isnan(r).all()  # constant prediction: undefined, not 0


def test_load_truth_aligns_regions_to_project_spots(sample_data_dir):
    from spatialmix.simulate import load_truth

    truth = load_truth(sample_data_dir)
    assert set(truth["sample"]) == {"P1_S1", "P1_S2", "P2_S1", "P2_S2"}
    assert truth["region"].notna().all() and len(truth) == 1290
    obs = truth[["sample", "barcode"]].iloc[::-1].copy()
    obs.index = [f"s{i}" for i in range(len(obs))]
    aligned = load_truth(sample_data_dir, obs)
    assert list(aligned.index) == list(obs.index) and (aligned["barcode"].to_numpy() == obs["barcode"].to_numpy()).all()
    with pytest.raises(MissingFileError, match="not a simulated dataset"):
        load_truth(sample_data_dir / "P1_S1" / "outs")


def test_foscttm_is_zero_for_perfect_alignment_and_near_half_for_random():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(300, 10))
    assert M.foscttm(Z, Z + rng.normal(0, 1e-3, Z.shape)) == 0.0
    assert 0.4 < M.foscttm(Z, rng.normal(size=Z.shape)) < 0.6
    # reversing the pairing of a 1-D line puts every true match at the far end
    line = np.arange(50, dtype=float)[:, None]
    assert M.foscttm(line, line[::-1]) > 0.45
    with pytest.raises(ParameterError, match="paired rows"):
        M.foscttm(Z, Z[:, :5])


def test_label_transfer_accuracy_follows_the_shared_space():
    X, _, labels = blobs(0.0)
    assert M.label_transfer_accuracy(X, labels, X + 0.01, labels) > 0.95
    shuffled = np.random.default_rng(0).permutation(X)
    assert M.label_transfer_accuracy(X, labels, shuffled, labels) < 0.5
    lab = pd.Series(labels.astype(str)).where(np.arange(len(labels)) % 4 != 0)  # unlabelled spots left out
    assert M.label_transfer_accuracy(X, lab, X, lab) > 0.95


def test_highly_variable_features_are_the_top_variance_then_the_highest_mean():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)) * np.array([1, 5, 5, 5, 0.1, 5]) + np.array([0, 1, 9, 5, 100, 3])
    # top 4 by variance: 1, 2, 3, 5; then the 2 with the highest mean among them: 2 (9) and 3 (5)
    assert M.highly_variable(X, n_variance=4, n_top=2).tolist() == [2, 3]
    assert M.highly_variable(X, n_variance=2000, n_top=1000).tolist() == list(range(6))


def test_annotation_centroids_leave_the_spot_out():
    X = np.array([[0.0], [2.0], [4.0], [10.0], [20.0], [5.0]])
    labels = np.array(["a", "a", "a", "b", "b", None], dtype=object)
    own, other = M.annotation_centroids(X, labels)
    np.testing.assert_allclose(own[:5, 0], [3.0, 2.0, 1.0, 20.0, 10.0])  # mean of the class without the spot
    np.testing.assert_allclose(other[:5, 0], [15.0, 15.0, 15.0, 2.0, 2.0])  # mean of every other class's spots
    assert np.isnan(own[5]).all() and np.isnan(other[5]).all()  # unlabelled: no baseline


def test_fidelity_per_spot_r2_and_mse():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(50, 30))
    summary, r2 = M.fidelity(true * 2 + 1, true)  # perfectly correlated, wrong scale
    assert r2.shape == (50,) and np.allclose(r2, 1.0) and summary["r2_feature_median"] == pytest.approx(1.0)
    assert summary["mse"] > 1.0
    summary, _ = M.fidelity(rng.normal(size=true.shape), true)
    assert summary["r2_spot_median"] < 0.1


def test_scib_benchmark_ranks_a_batch_corrected_embedding_above_a_batch_split_one():
    X_mixed, b, labels = blobs(0.0)
    X_split, _, _ = blobs(6.0)
    table = M.scib_benchmark({"mixed": X_mixed, "split": X_split}, b, labels, pre_integrated="split")
    assert {"Bio conservation", "Batch correction", "Total", "iLISI", "KBET", "Leiden ARI"} <= set(table.columns)
    assert table.loc["mixed", "Batch correction"] > table.loc["split", "Batch correction"] + 0.2
    assert table.loc["mixed", "Total"] == pytest.approx(0.4 * table.loc["mixed", "Batch correction"]
                                                        + 0.6 * table.loc["mixed", "Bio conservation"])
    with pytest.raises(ParameterError, match="rows"):
        M.scib_benchmark({"a": X_mixed[:10]}, b, labels)
