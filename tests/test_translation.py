"""Translation fidelity under 4-fold cross-validation, against the annotation-centroid baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spatialmix.errors import ParameterError
from spatialmix.evaluate.translation import directions, translation_cv

import _claims


def test_directions_cover_reconstruction_and_every_source_set():
    d = directions(["rna", "msi", "morphology"])
    assert len(d) == 12  # per target: itself + 3 source sets
    assert (("rna",), "rna") in d and (("msi", "morphology"), "rna") in d and (("rna", "msi"), "morphology") in d
    assert directions(["a", "b"]) == [(("a",), "a"), (("b",), "a"), (("b",), "b"), (("a",), "b")]


def toy_data(n=240, seed=0):
    """Two modalities driven by the same 3 regions plus a continuous factor the annotation does not carry."""
    from spatialmix.data import MultiModalData

    rng = np.random.default_rng(seed)
    region = rng.integers(0, 3, n)
    factor = rng.normal(size=n)
    A = rng.normal(0, 0.3, (n, 20)) + np.eye(3)[region] @ rng.normal(0, 2, (3, 20)) + factor[:, None] * rng.normal(0, 1, 20)
    B = rng.normal(0, 0.3, (n, 15)) + np.eye(3)[region] @ rng.normal(0, 2, (3, 15)) + factor[:, None] * rng.normal(0, 1, 15)
    obs = pd.DataFrame({"sample": np.repeat(["s1", "s2"], n // 2), "batch": np.repeat(["s1", "s2"], n // 2),
                        "label": np.array(["r0", "r1", "r2"])[region]}, index=[f"c{i}" for i in range(n)])
    mask_b = np.ones(n, bool)
    mask_b[:20] = False  # B not measured on 20 spots
    B[~mask_b] = 0
    return MultiModalData(["a", "b"], {"a": A.astype(np.float32), "b": B.astype(np.float32)},
                          {"a": np.ones(n, bool), "b": mask_b},
                          {"a": pd.Index([f"a{i}" for i in range(20)]), "b": pd.Index([f"b{i}" for i in range(15)])},
                          obs, annotation_key="label")


def test_cross_validated_translation_beats_the_annotation_centroid_when_trained():
    data = toy_data()
    res = translation_cv(data, model_params={"n_latent": 8, "n_hidden": 32, "seed": _claims.seed()},
                         train={"epochs": 150, "lr": 3e-3, "seed": _claims.seed()}, n_folds=4, seed=0)
    t = res.table.set_index(["direction", "method"])
    assert set(t.index.get_level_values(0)) == {"a->a", "b->a", "b->b", "a->b"}
    assert len(res.train_seconds) == 4
    # a spot is scored where target and source were measured and its class has another spot
    assert t.loc[("b->a", "model"), "n_spots"] == 220 and t.loc[("a->a", "model"), "n_spots"] == 240
    assert t.loc[("b->a", "model"), "n_features"] == 20
    for d in ("a->b", "b->a"):
        # the continuous factor is shared by both modalities but not by the annotation: a model that learnt
        # it beats the centroid of the spot's own annotation; the other annotations' centroid is worst
        C = f"test_translation::beats_centroid/{d}"
        _claims.check(f"{C}/r2_spot_median_gain",
                      t.loc[(d, "model"), "r2_spot_median"] - t.loc[(d, "own_centroid"), "r2_spot_median"], ">", 0.0)
        _claims.check(f"{C}/mse_ratio", t.loc[(d, "model"), "mse"] / t.loc[(d, "own_centroid"), "mse"], "<", 1.0)
        assert t.loc[(d, "own_centroid"), "mse"] < t.loc[(d, "other_centroids"), "mse"]
    assert res.r2_spot["a->b"]["model"].shape == (220,)
    d = res.to_dict()
    assert d["a->b"]["model"]["kind"] == "translation" and isinstance(d["a->b"]["model"]["n_spots"], int)


def test_translation_without_labels_scores_ridge_and_knn_only_and_needs_two_modalities():
    data = toy_data()
    data.annotation_key = None
    res = translation_cv(data, model_params={"n_latent": 8, "n_hidden": 32}, train={"epochs": 1}, n_folds=2)
    methods = res.table.groupby("direction")["method"].apply(set).to_dict()
    assert methods["a->b"] == methods["b->a"] == {"model", "ridge", "knn"}  # no labels: no centroid baselines
    assert methods["a->a"] == {"model"}
    assert (res.table["n_spots"] > 200).all()  # every measured spot is scored, labelled or not
    with pytest.raises(ParameterError, match="annotation column 'tissue' of the centroid baselines"):
        translation_cv(toy_data(), annotation_key="tissue", train={"epochs": 1})
    with pytest.raises(ParameterError, match="unknown model"):
        translation_cv(toy_data(), model="nope")
