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
