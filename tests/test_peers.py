"""The MIMA paper's peers (spatialmix.models.peers) and the translation baselines (spatialmix.evaluate.regression)
on tiny synthetic multi-omics: integer counts with a batch effect, a 10-protein panel, binary chromatin peaks.

Each peer must give one row per cell (finite where its inputs were measured, NaN elsewhere), refuse what it cannot
do with a message that says why, and say which parameters and versions it ran with. The scvi-tools peers train for
2 epochs here (``max_epochs=2``): these tests check the plumbing, not the methods' quality.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmix.data import MultiModalData
from spatialmix.errors import ParameterError
from spatialmix.models import peers
from spatialmix.models.peers import PEERS, peer_info

N, N_BATCHES, N_GENES, N_PROTEINS, N_PEAKS = 180, 3, 60, 10, 80
PROTEIN_MISSING = np.arange(7)  # rows without the protein panel
ATAC_MISSING = np.arange(N - 9, N)  # rows without chromatin


def make_data(*, protein: bool = True, atac: bool = False, rna_kind: str = "counts", raw: bool = True,
              seed: int = 0) -> MultiModalData:
    """Three cell types in three interleaved batches (row i in batch i % 3, so that grouping rows by batch
    reorders them); each modality a Poisson draw around a type signal with a per-batch shift."""
    rng = np.random.default_rng(seed)
    batch = np.arange(N) % N_BATCHES
    ctype = rng.integers(0, 3, N)
    Z = 1.5 * rng.normal(size=(3, 4))[ctype] + 0.3 * rng.normal(size=(N, 4))

    def counts(d, scale):
        W = 0.6 * rng.normal(size=(4, d))
        shift = 0.5 * rng.normal(size=(N_BATCHES, d))
        return rng.poisson(np.exp(Z @ W + shift[batch]) * scale).astype(np.float32)

    X, mask, var_names, kinds, raws = {}, {}, {}, {}, {}
    rna = counts(N_GENES, 3.0)
    lib = np.maximum(rna.sum(axis=1, keepdims=True), 1)
    X["rna"] = sp.csr_matrix(np.log1p(rna / lib * 1e4).astype(np.float32))
    mask["rna"], var_names["rna"], kinds["rna"] = np.ones(N, bool), pd.Index([f"g{i}" for i in range(N_GENES)]), rna_kind
    if raw:
        raws["rna"] = sp.csr_matrix(rna)
    mods = ["rna"]
    if protein:
        prot = counts(N_PROTEINS, 20.0) + rng.poisson(5.0, size=(N, N_PROTEINS))
        clr = np.log1p(prot) - np.log1p(prot).mean(axis=1, keepdims=True)
        m = np.ones(N, bool)
        m[PROTEIN_MISSING] = False
        clr[~m] = 0.0
        X["protein"], mask["protein"], kinds["protein"] = clr.astype(np.float32), m, "protein"
        var_names["protein"] = pd.Index([f"p{i}" for i in range(N_PROTEINS)])
        if raw:
            raws["protein"] = prot
        mods.append("protein")
    if atac:
        peaks = (counts(N_PEAKS, 0.3) > 0).astype(np.float32)
        m = np.ones(N, bool)
        m[ATAC_MISSING] = False
        peaks[~m] = 0.0
        X["atac"], mask["atac"], kinds["atac"] = sp.csr_matrix(np.log1p(peaks)), m, "counts"
        var_names["atac"] = pd.Index([f"chr1:{i * 500}-{i * 500 + 400}" for i in range(N_PEAKS)])
        if raw:
            raws["atac"] = sp.csr_matrix(peaks)
        mods.append("atac")
    obs = pd.DataFrame({"sample": [f"s{b}" for b in batch], "batch": [f"b{b}" for b in batch],
                        "cell_type": [f"t{c}" for c in ctype]}, index=[f"c{i}" for i in range(N)])
    return MultiModalData(mods, X, mask, var_names, obs, raws.get("rna"), "batch", "cell_type", {}, kinds, raws)


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def multiome():
    return make_data(protein=False, atac=True)


def label_knn_accuracy(Z: np.ndarray, labels) -> float:
    """Leave-one-out 5-NN accuracy of the cell type on the finite rows: ~1/3 if rows were scrambled."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    ok = np.isfinite(Z).all(axis=1)
    return float(cross_val_score(KNeighborsClassifier(5), Z[ok], np.asarray(labels)[ok], cv=5).mean())


def assert_embedding(Z: np.ndarray, undefined: np.ndarray, dims: int | None = None) -> None:
    """(N, dims) float32, NaN exactly on the ``undefined`` rows, finite elsewhere."""
    assert Z.shape[0] == N and Z.dtype == np.float32
    if dims is not None:
        assert Z.shape[1] == dims
    nan_rows = np.isnan(Z).all(axis=1)
    assert np.array_equal(nan_rows, undefined)
    assert np.isfinite(Z[~undefined]).all()


def rows(positions) -> np.ndarray:
    out = np.zeros(N, bool)
    out[list(positions)] = True
    return out


# ----------------------------------------------------------------------------------------------------------------
# row bookkeeping and the registry
# ----------------------------------------------------------------------------------------------------------------


def test_rows_grouped_by_batch_come_back_in_the_data_order(data):
    keep = np.ones(N, bool)
    keep[[4, 5]] = False
    names, groups = peers._batch_groups(data, keep)
    assert names == ["b0", "b1", "b2"]
    assert [list(g[:3]) for g in groups] == [[0, 3, 6], [1, 7, 10], [2, 8, 11]]  # rows 4, 5 left out
    values = np.concatenate(groups)[:, None].astype(np.float32)  # each row's own position, in batch order
    out = peers._scatter(N, np.concatenate(groups), values)
    assert np.isnan(out[[4, 5], 0]).all()
    assert np.array_equal(out[keep, 0], np.flatnonzero(keep))


def test_registry_records_versions_and_resolved_defaults(data):
    assert set(PEERS) == {"scanorama", "scvi", "totalvi", "multivi", "mofa", "mima_unimodal"}
    info = peer_info("scvi", data, seed=3)
    assert info["versions"]["scvi-tools"] == "1.4.2" and "spatialmix" in info["versions"]
    p = info["parameters"]
    assert p["n_latent"] == 10 and p["modality"] == ["rna"] and p["seed"] == 3
    assert p["max_epochs"] == min(round(20000 / N * 400), 400) == 400  # scvi-tools' rule for 180 cells
    assert peer_info("scvi", data, max_epochs=2)["parameters"]["max_epochs"] == 2
    assert PEERS["totalvi"].check(data)["n_latent"] == 20
    assert PEERS["mofa"].check(data)["factors"] == 10
    assert PEERS["mofa"].check(data)["ard_factors"] and not PEERS["mofa"].check(data, groups=None)["ard_factors"]
    assert PEERS["scanorama"].check(data)["dimred"] == 50  # ours (the library's is 100): docs/benchmarks.md
    assert PEERS["mima_unimodal"].check(data, seed=5)["train"] == {"epochs": 200, "lr": 1e-3, "seed": 5}
    assert PEERS["mofa"].versions()["mofapy2"] == "0.7.5"
    with pytest.raises(ParameterError, match="unknown peer 'scvii'"):
        peer_info("scvii", data)
    with pytest.raises(ParameterError, match=r"scvi: give \['max_epochs'\] as options of their own"):
        PEERS["scvi"](data, train_kwargs={"max_epochs": 5})


@pytest.mark.parametrize("name", sorted(PEERS))
def test_unknown_options_are_refused_with_the_allowed_ones(data, name):
    with pytest.raises(ParameterError, match=rf"{name} does not take option\(s\) \['max_epoch_typo'\]; allowed: "):
        PEERS[name](data, max_epoch_typo=3)


# ----------------------------------------------------------------------------------------------------------------
# model-input peers: scanorama, MOFA+, MIMA unimodal
# ----------------------------------------------------------------------------------------------------------------


def test_scanorama_embeds_complete_rows_in_the_data_order(data):
    Z = PEERS["scanorama"](data, seed=0)["scanorama"]
    assert_embedding(Z, rows(PROTEIN_MISSING), dims=min(50, N - len(PROTEIN_MISSING), N_GENES + N_PROTEINS))
    assert label_knn_accuracy(Z, data.labels) > 0.8  # rows scrambled by the per-batch split would give ~0.33


def test_scanorama_refuses_a_single_batch(data):
    one = make_data()
    one.obs["batch"] = "b0"
    with pytest.raises(ParameterError, match=r"scanorama integrates batches, but .* are all in one batch"):
        PEERS["scanorama"](one)


def test_mofa_gives_factors_with_unmeasured_rows_as_missing_values(data):
    d = make_data()
    d.mask["rna"] = d.mask["rna"].copy()
    d.mask["rna"][0] = False  # row 0: neither RNA nor protein -> no factors
    Z = PEERS["mofa"](d, seed=0)["mofa"]
    assert_embedding(Z, rows([0]), dims=10)  # rows 1..6 lack protein but have RNA: factors from RNA alone
    assert label_knn_accuracy(Z, d.labels) > 0.8
    one_group = PEERS["mofa"](d, seed=0, groups=None, factors=5)["mofa"]
    assert_embedding(one_group, rows([0]), dims=5)


def test_mofa_runs_on_one_modality_and_refuses_what_it_cannot_fit(data):
    Z = PEERS["mofa"](data, modalities=["protein"], factors=3)["mofa"]
    assert_embedding(Z, rows(PROTEIN_MISSING), dims=3)
    with pytest.raises(ParameterError, match=r"mofa: factors=12 must be below the number of measured rows \(173\) "
                                             r"and of features \(10\)"):
        PEERS["mofa"](data, modalities=["protein"], factors=12)
    with pytest.raises(ParameterError, match="groups must be 'batch'"):
        PEERS["mofa"](data, groups="sample")


def test_mima_unimodal_gives_one_embedding_per_modality(data):
    out = PEERS["mima_unimodal"](data, seed=0, train={"epochs": 2})
    assert sorted(out) == ["mima_unimodal_protein", "mima_unimodal_rna"]
    assert_embedding(out["mima_unimodal_rna"], rows([]), dims=100)
    assert_embedding(out["mima_unimodal_protein"], rows(PROTEIN_MISSING), dims=100)
    with pytest.raises(ParameterError, match=r"unknown MIMA parameter\(s\) \['n_latnt'\]"):
        PEERS["mima_unimodal"](data, params={"n_latnt": 8})


# ----------------------------------------------------------------------------------------------------------------
# scvi-tools peers
# ----------------------------------------------------------------------------------------------------------------


def test_scvi_on_raw_rna_counts(data):
    import torch

    threads = torch.get_num_threads()
    d = make_data()
    d.raw["rna"] = d.raw["rna"].tolil()
    d.raw["rna"][3] = 0  # a cell without counts: scVI's library size is undefined
    d.raw["rna"] = d.raw["rna"].tocsr()
    Z = PEERS["scvi"](d, seed=0, max_epochs=2)["scvi"]
    assert_embedding(Z, rows([3]), dims=10)
    assert torch.get_num_threads() == threads  # the caller's threads are left alone


def test_scvi_refuses_data_without_raw_counts():
    with pytest.raises(ParameterError, match=r"scvi needs raw counts: no modality is declared 'counts' with its raw "
                                             r"counts in data.raw \(this data has rna: 'log1p' with raw counts, protein: "
                                             r"'protein' with raw counts\)"):
        PEERS["scvi"](make_data(rna_kind="log1p"))
    with pytest.raises(ParameterError, match="rna: 'counts' without raw counts"):
        PEERS["scvi"](make_data(raw=False))
    fractional = make_data()
    fractional.raw["rna"] = fractional.raw["rna"] * 0.5
    with pytest.raises(ParameterError, match=r"scvi models raw counts \(non-negative whole numbers\)"):
        PEERS["scvi"](fractional)


def test_totalvi_on_rna_and_protein_counts(data):
    Z = PEERS["totalvi"](data, seed=0, max_epochs=2)["totalvi"]
    assert_embedding(Z, rows(PROTEIN_MISSING), dims=20)


def test_totalvi_refuses_data_without_protein(multiome):
    with pytest.raises(ParameterError, match=r"totalvi needs a modality declared 'protein' \(with raw counts\); "
                                             r"this data has rna: 'counts' with raw counts, atac: 'counts'"):
        PEERS["totalvi"](multiome, max_epochs=2)
    with pytest.raises(ParameterError, match="totalvi needs the raw counts of 'protein'"):
        PEERS["totalvi"](make_data(raw=False), max_epochs=2)


def test_multivi_on_rna_and_chromatin_with_unpaired_cells(multiome):
    d = make_data(protein=False, atac=True)
    d.mask["rna"] = d.mask["rna"].copy()
    d.mask["rna"][ATAC_MISSING[:4]] = False  # neither modality: no embedding
    d.mask["rna"][:5] = False  # chromatin only: embedded (MultiVI takes unpaired cells)
    peaks = d.raw["atac"].toarray()
    peaks[ATAC_MISSING] = np.nan  # whatever unmeasured rows hold is never read
    d.raw["atac"] = sp.csr_matrix(peaks)
    info = PEERS["multivi"].check(d, max_epochs=2)
    assert (info["rna"], info["atac"], info["n_paired"], info["n_rows"]) == ("rna", "atac", N - 9 - 5, N - 4)
    Z = PEERS["multivi"](d, seed=0, max_epochs=2)["multivi"]
    assert_embedding(Z, rows(ATAC_MISSING[:4]), dims=info["n_latent"])
    assert info["n_latent"] == int(np.sqrt(min(128, int(np.sqrt(N_PEAKS)))))  # MULTIVAE's default sizes


def test_multivi_refuses_data_without_chromatin(data):
    with pytest.raises(ParameterError, match=r"multivi needs a chromatin accessibility modality: one declared "
                                             r"'counts' with raw counts and named one of \['atac', 'chromatin', "
                                             r"'peaks', 'accessibility'\] \(or pass atac=<modality>\)"):
        PEERS["multivi"](data, max_epochs=2)
    with pytest.raises(ParameterError, match="multivi needs the raw counts of a modality declared 'counts'; "
                                             "'protein' is declared 'protein'"):
        PEERS["multivi"](data, atac="protein", max_epochs=2)


# ----------------------------------------------------------------------------------------------------------------
# translation baselines
# ----------------------------------------------------------------------------------------------------------------


def test_ridge_beats_knn_and_both_beat_the_mean_on_a_linear_target():
    from spatialmix.evaluate.regression import knn_translation, ridge_translation

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)) * rng.uniform(0.5, 5.0, size=20)  # features on different scales
    Y = X @ rng.normal(size=(20, 8)) + 0.5 * rng.normal(size=(300, 8))
    train, test = np.arange(200), np.arange(200, 300)

    def mse(pred):
        return float(((pred - Y[test]) ** 2).mean())

    ridge = mse(ridge_translation(X[train], Y[train], X[test]))
    knn = mse(knn_translation(X[train], Y[train], X[test]))
    mean = mse(np.broadcast_to(Y[train].mean(axis=0), Y[test].shape))
    assert ridge < knn < mean
    assert ridge < 0.1 * mean  # the linear map is recovered up to the noise


def test_translation_baselines_use_rows_measured_in_sources_and_target(data):
    from spatialmix.evaluate.regression import translation_baselines

    train = np.arange(0, 120)
    test = np.arange(120, N)
    out = translation_baselines(data, ["protein"], "rna", train, test)
    assert sorted(out) == ["knn", "ridge"]
    for pred in out.values():
        assert pred.shape == (len(test), N_GENES) and np.isfinite(pred).all()
    missing = translation_baselines(data, "rna", "protein", np.arange(10, N), np.arange(0, 10))
    for pred in missing.values():  # rows 0..6 have no protein to compare with
        assert np.isnan(pred[:7]).all() and np.isfinite(pred[7:]).all()
    with pytest.raises(ParameterError, match="target 'rna' is also a source"):
        translation_baselines(data, ["rna"], "rna", train, test)
