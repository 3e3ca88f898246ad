"""Non-spatial multi-omics in: MultiModalData.from_anndata / from_mudata and read_multimodal (.h5mu, .h5ad).

Small hand-made CITE-seq-like data (RNA counts + protein counts, with cells missing from one modality); no
training. Each test checks what a user would notice: the numbers the models get, which rows are masked, the
raw counts kept, the repr, and the message of every bad input.
"""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmix.data import MultiModalData, read_multimodal
from spatialmix.errors import InputFileError, MissingFileError, ParameterError, ProjectError

KINDS = {"rna": "counts", "protein": "protein"}


def _citeseq(n_rna: int = 12, n_prot: int = 10, offset: int = 4, seed: int = 0):
    """RNA cells c0..c{n_rna-1}; protein cells c{offset}..: shared cells c{offset}..c{n_rna-1}, and protein-only
    cells after them. Both carry ``donor`` (2 batches) and ``ct`` (2 classes) in their .obs."""
    rng = np.random.default_rng(seed)
    rna_names = [f"c{i}" for i in range(n_rna)]
    prot_names = [f"c{i}" for i in range(offset, offset + n_prot)]
    donor = {f"c{i}": "d1" if i % 2 else "d2" for i in range(offset + n_prot + n_rna)}
    ct = {f"c{i}": "T" if i % 3 else "B" for i in range(offset + n_prot + n_rna)}
    counts = rng.poisson(2.0, (n_rna, 7)).astype(np.float32)
    counts[0, :] = 0  # one measured cell with no counts at all stays 0 (as scanpy does)
    rna = ad.AnnData(sp.csr_matrix(counts),
                     obs=pd.DataFrame({"donor": [donor[c] for c in rna_names], "ct": [ct[c] for c in rna_names]},
                                      index=rna_names),
                     var=pd.DataFrame(index=[f"gene{j}" for j in range(7)]))
    prot = ad.AnnData(rng.poisson(20.0, (n_prot, 4)).astype(np.float32),
                      obs=pd.DataFrame({"donor": [donor[c] for c in prot_names]}, index=prot_names),
                      var=pd.DataFrame(index=["CD3", "CD4", "CD8", "CD19"]))
    return rna, prot


def _dense(x):
    return np.asarray(x.toarray() if sp.issparse(x) else x)


def _assert_same(a: MultiModalData, b: MultiModalData):
    assert a.modalities == b.modalities
    assert a.obs.index.tolist() == b.obs.index.tolist()
    pd.testing.assert_frame_equal(a.obs.astype(str), b.obs.astype(str))
    for m in a.modalities:
        np.testing.assert_array_equal(a.mask[m], b.mask[m])
        np.testing.assert_allclose(_dense(a.X[m]), _dense(b.X[m]), rtol=1e-6)
        assert sp.issparse(a.X[m]) == sp.issparse(b.X[m])
        assert list(a.var_names[m]) == list(b.var_names[m])
    assert a.raw.keys() == b.raw.keys()
    for m in a.raw:
        np.testing.assert_array_equal(_dense(a.raw[m]), _dense(b.raw[m]))
    assert a.preprocessing == b.preprocessing and a.transforms == b.transforms


# --- building, masking, preprocessing ---------------------------------------------------------------------


def test_partially_overlapping_cells_are_masked_not_dropped():
    rna, prot = _citeseq()
    data = MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", label_key="ct",
                                       preprocessing=KINDS)
    # union of the cells: RNA's order, then the protein-only cells in their order
    assert data.obs.index.tolist() == [f"c{i}" for i in range(14)]
    assert data.n_obs == 14 and data.row_kind == "cells"
    np.testing.assert_array_equal(data.mask["rna"], np.arange(14) < 12)
    np.testing.assert_array_equal(data.mask["protein"], np.arange(14) >= 4)
    # masked rows are 0 in the model input and in the raw counts; measured rows keep their counts
    for m in ("rna", "protein"):
        assert not _dense(data.X[m])[~data.mask[m]].any()
        assert not _dense(data.raw[m])[~data.mask[m]].any()
    np.testing.assert_array_equal(_dense(data.raw["rna"])[:12], rna.X.toarray())
    np.testing.assert_array_equal(data.raw["protein"][4:], prot.X)
    # obs: sample and batch like a spatial project, the label column by its name; batches filled from both
    assert list(data.obs.columns) == ["sample", "batch", "ct"]
    assert data.batch_key == "batch" and data.annotation_key == "ct"
    assert data.obs["batch"].tolist() == ["d2" if i % 2 == 0 else "d1" for i in range(14)]
    assert data.obs["sample"].tolist() == data.obs["batch"].tolist()
    # labels exist only in RNA's .obs: the protein-only cells are unlabelled (NaN), not an error
    assert data.obs["ct"].isna().tolist() == [False] * 12 + [True] * 2
    assert data.labels.dropna().nunique() == 2
    # tensors for the models carry the masks
    t = data.to_tensors()
    assert t["protein"].shape == (14, 4) and t["protein_mask"].sum().item() == 10


def test_counts_are_normalize_total_log1p_with_raw_kept_sparse():
    rna, prot = _citeseq()
    data = MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", preprocessing=KINDS)
    counts = rna.X.toarray().astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    expected = np.log1p(np.divide(counts * 1e4, total, out=np.zeros_like(counts), where=total > 0))
    x = data.X["rna"]
    assert sp.isspmatrix_csr(x) and x.dtype == np.float32  # sparse stays sparse
    assert sp.isspmatrix_csr(data.raw["rna"]) and data.raw["rna"].dtype == np.float32
    np.testing.assert_allclose(x.toarray()[:12], expected, rtol=1e-5)
    assert not x.toarray()[0].any()  # a measured cell without counts stays 0
    # each measured cell with counts sums to 1e4 before log1p
    np.testing.assert_allclose(np.expm1(x.toarray()[1:12].astype(np.float64)).sum(axis=1), 1e4, rtol=1e-4)
    assert data.counts is data.raw["rna"]
    assert data.preprocessing == {"rna": "counts", "protein": "protein"}
    assert "normalize_total(1e4) + log1p" in data.transforms["rna"] and "raw counts kept" in data.transforms["rna"]


def test_protein_is_clr_per_cell():
    rna, prot = _citeseq()
    data = MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", preprocessing=KINDS)
    logged = np.log1p(prot.X.astype(np.float64))
    expected = logged - logged.mean(axis=1, keepdims=True)  # log((x + 1) / geometric mean of (x + 1))
    x = data.X["protein"]
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    np.testing.assert_allclose(x[4:], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x[4:].sum(axis=1), 0, atol=1e-5)  # centred per cell
    assert "CLR per cell" in data.transforms["protein"]


def test_normalized_is_used_as_given_and_zscore_is_over_measured_cells():
    rna, prot = _citeseq()
    lipids = ad.AnnData(np.random.default_rng(1).normal(3, 2, (10, 5)).astype(np.float32),
                        obs=prot.obs.copy(), var=pd.DataFrame(index=[f"mz{j}" for j in range(5)]))
    kinds = {"rna": "counts", "lipids": "normalized"}
    plain = MultiModalData.from_anndata({"rna": rna, "lipids": lipids}, batch_key="donor", preprocessing=kinds)
    assert plain.X["lipids"].dtype == np.float32 and not sp.issparse(plain.X["lipids"])
    np.testing.assert_array_equal(plain.X["lipids"][4:], lipids.X)
    assert "lipids" not in plain.raw

    z = MultiModalData.from_anndata({"rna": rna, "lipids": lipids}, batch_key="donor", preprocessing=kinds,
                                    zscore={"lipids": True})
    measured = z.X["lipids"][z.mask["lipids"]]
    np.testing.assert_allclose(measured.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(measured.std(axis=0), 1, atol=1e-5)
    expected = (lipids.X - lipids.X.mean(axis=0)) / lipids.X.std(axis=0)
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-5)
    assert not z.X["lipids"][~z.mask["lipids"]].any()
    assert sp.issparse(z.X["rna"])  # only the modality asked for is z-scored
    assert "z-score per feature" in z.transforms["lipids"]
    assert "lipids: 5 features (10 cells, normalized -> zscore)" in repr(z)


def test_repr_shows_cells_and_each_kind():
    rna, prot = _citeseq()
    data = MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", preprocessing=KINDS)
    assert repr(data) == ("MultiModalData(14 cells, 2 batches; "
                          "rna: 7 features (12 cells, counts -> normalize_total+log1p), "
                          "protein: 4 features (10 cells, protein -> CLR))")
    z = MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", preprocessing=KINDS,
                                    zscore=True)
    assert "counts -> normalize_total+log1p+zscore" in repr(z) and "protein -> CLR+zscore" in repr(z)
    # data built by hand (as the model tests do) keeps the spatial wording
    hand = MultiModalData(["a"], {"a": np.ones((3, 2), np.float32)}, {"a": np.ones(3, bool)},
                          {"a": pd.Index(["f0", "f1"])}, pd.DataFrame({"batch": ["x", "x", "y"]}))
    assert repr(hand) == "MultiModalData(3 spots, 2 batches; a: 2 features (3 spots))"


def test_sample_key_and_prefixed_keys():
    rna, prot = _citeseq()
    rna.obs["patient"] = ["p1"] * 6 + ["p2"] * 6
    prot.obs["patient"] = ["p1"] * 2 + ["p2"] * 8
    prot.obs["ct"] = "whatever"  # disagrees with RNA's ct: taken from RNA only with the prefixed form
    data = MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", sample_key="patient",
                                       label_key="rna:ct", preprocessing=KINDS)
    assert data.obs["sample"].tolist() == ["p1"] * 6 + ["p2"] * 8
    assert data.annotation_key == "rna:ct" and data.obs["rna:ct"].notna().sum() == 12
    with pytest.raises(ProjectError, match=r"label_key='ct': the values disagree between modalities.*'c4'.*"
                                           r"rna has 'T', protein has 'whatever'.*'<modality>:ct'"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", label_key="ct",
                                    preprocessing=KINDS)


# --- files: .h5ad pair and .h5mu round trips ---------------------------------------------------------------


def test_read_multimodal_h5ad_pair_round_trip(tmp_path):
    rna, prot = _citeseq()
    rna.write_h5ad(tmp_path / "rna.h5ad")
    prot.write_h5ad(tmp_path / "adt_run1.h5ad")
    direct = MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", label_key="ct",
                                         preprocessing=KINDS)
    # a list of name=path items, and the comma-separated string form
    for paths in ([str(tmp_path / "rna.h5ad"), f"protein={tmp_path / 'adt_run1.h5ad'}"],
                  f"{tmp_path / 'rna.h5ad'}, protein={tmp_path / 'adt_run1.h5ad'}"):
        back = read_multimodal(paths, batch_key="donor", label_key="ct", preprocessing=KINDS)
        _assert_same(back, direct)
    # modality = file stem; modalities= picks and orders, preprocessing may declare the others
    only = read_multimodal([tmp_path / "adt_run1.h5ad", tmp_path / "rna.h5ad"], batch_key="donor",
                           modalities=["rna"], preprocessing={"rna": "counts", "adt_run1": "protein"})
    assert only.modalities == ["rna"] and only.n_obs == 12


def test_read_multimodal_h5mu_round_trip(tmp_path):
    mudata = pytest.importorskip("mudata")
    rna, prot = _citeseq()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mudata 0.3's pull_on_update FutureWarning
        mdata = mudata.MuData({"rna": rna, "prot": prot})
        mdata.obs["site"] = ["s1" if i < 7 else "s2" for i in range(mdata.n_obs)]  # a MuData-level column
        mdata.write(tmp_path / "cite.h5mu")
    kinds = {"rna": "counts", "prot": "protein"}
    direct = MultiModalData.from_mudata(mdata, batch_key="donor", label_key="rna:ct", sample_key="site",
                                        preprocessing=kinds)
    by_hand = MultiModalData.from_anndata({"rna": rna, "prot": prot}, batch_key="donor", label_key="rna:ct",
                                          preprocessing=kinds)
    for m in ("rna", "prot"):
        np.testing.assert_array_equal(direct.mask[m], by_hand.mask[m])
        np.testing.assert_allclose(_dense(direct.X[m]), _dense(by_hand.X[m]))
    assert direct.obs["sample"].tolist() == ["s1"] * 7 + ["s2"] * 7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = read_multimodal(str(tmp_path / "cite.h5mu"), batch_key="donor", label_key="rna:ct",
                               sample_key="site", preprocessing=kinds)
    _assert_same(back, direct)
    assert repr(back).startswith("MultiModalData(14 cells, 2 batches; rna: 7 features (12 cells, counts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = read_multimodal(tmp_path / "cite.h5mu", batch_key="donor", modalities=["prot"], preprocessing=kinds)
    assert one.modalities == ["prot"] and one.n_obs == 10 and one.mask["prot"].all()


# --- bad input: clear errors before any training ------------------------------------------------------------


def test_preprocessing_must_be_declared():
    rna, prot = _citeseq()
    mods = {"rna": rna, "protein": prot}
    with pytest.raises(ParameterError, match=r"declare how each modality is preprocessed.*\['rna', 'protein'\].*"
                                             r"'counts', 'protein', 'normalized'.*Example: preprocessing=\{"):
        MultiModalData.from_anndata(mods, batch_key="donor")
    with pytest.raises(ParameterError, match=r"does not declare modality\(ies\) \['protein'\]"):
        MultiModalData.from_anndata(mods, batch_key="donor", preprocessing={"rna": "counts"})
    with pytest.raises(ParameterError, match=r"unknown preprocessing kind 'clr' for modality 'protein'; "
                                             r"allowed: 'counts', 'protein', 'normalized'"):
        MultiModalData.from_anndata(mods, batch_key="donor", preprocessing={"rna": "counts", "protein": "clr"})
    with pytest.raises(ParameterError, match=r"declares modality\(ies\) \['atac'\] that the data does not have"):
        MultiModalData.from_anndata(mods, batch_key="donor", preprocessing={**KINDS, "atac": "counts"})
    with pytest.raises(ParameterError, match=r"zscore names modality\(ies\) \['adt'\]"):
        MultiModalData.from_anndata(mods, batch_key="donor", preprocessing=KINDS, zscore={"adt": True})


def test_inputs_that_are_not_anndata():
    rna, prot = _citeseq()
    with pytest.raises(ParameterError, match=r"modality 'protein' is a ndarray, not an AnnData"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot.X}, batch_key="donor", preprocessing=KINDS)
    with pytest.raises(ParameterError, match=r"got one AnnData; name its modality"):
        MultiModalData.from_anndata(rna, batch_key="donor", preprocessing=KINDS)
    with pytest.raises(ParameterError, match=r"from_anndata takes a dict \{modality: AnnData\}, got a list"):
        MultiModalData.from_anndata([rna, prot], batch_key="donor", preprocessing=KINDS)
    with pytest.raises(ParameterError, match=r"from_mudata takes a MuData, got an AnnData.*from_anndata"):
        MultiModalData.from_mudata(rna, batch_key="donor", preprocessing=KINDS)
    mudata = pytest.importorskip("mudata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = mudata.MuData({"rna": rna, "protein": prot})
    with pytest.raises(ParameterError, match=r"got a MuData; use MultiModalData.from_mudata"):
        MultiModalData.from_anndata(mdata, batch_key="donor", preprocessing=KINDS)
    with pytest.raises(ProjectError, match=r"\['atac'\] not in this MuData \(it has \['rna', 'protein'\]\)"):
        MultiModalData.from_mudata(mdata, batch_key="donor", modalities=["rna", "atac"], preprocessing=KINDS)


def test_duplicated_obs_names():
    rna, prot = _citeseq()
    prot.obs_names = ["c4", "c5", "c5", "c6", "c6", "c6"] + [f"c{i}" for i in range(10, 14)]
    with pytest.raises(ProjectError, match=r"modality 'protein' has 2 duplicated obs_names \(first: "
                                           r"\['c5', 'c6'\]\).*obs_names_make_unique\(\)"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", preprocessing=KINDS)


def test_modalities_sharing_no_obs_names():
    rna, prot = _citeseq()
    prot.obs_names = [f"ADT_{n}" for n in prot.obs_names]
    with pytest.raises(ProjectError, match=r"the modalities share no obs_names: rows are matched by obs_names.*"
                                           r"rna: 'c0', 'c1', 'c2', \.\.\.; protein: 'ADT_c4', 'ADT_c5'"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", preprocessing=KINDS)


def test_three_modalities_with_a_pair_sharing_no_cells():
    rna, prot = _citeseq()  # rna c0..c11, protein c4..c13
    atac = ad.AnnData(sp.csr_matrix(np.random.default_rng(2).poisson(1, (4, 6)).astype(np.float32)),
                      obs=pd.DataFrame({"donor": ["d2", "d1", "d2", "d1"]}, index=["c0", "c1", "c2", "c3"]))
    kinds = {**KINDS, "atac": "counts"}
    # protein and atac share no cell, but both share cells with rna: built, with a warning that says so
    with pytest.warns(UserWarning, match=r"no cell is measured in all 3 modalities: protein and atac share no "
                                         r"obs_names"):
        data = MultiModalData.from_anndata({"rna": rna, "protein": prot, "atac": atac}, batch_key="donor",
                                           preprocessing=kinds)
    assert data.n_obs == 14 and int(data.mask["atac"].sum()) == 4
    # a modality sharing no cell with any other cannot be matched
    atac.obs_names = [f"x{i}" for i in range(4)]
    with pytest.raises(ProjectError, match=r"modality 'atac' shares no obs_names with any other modality"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot, "atac": atac}, batch_key="donor",
                                    preprocessing=kinds)


def test_batch_key_problems():
    rna, prot = _citeseq()
    mods = {"rna": rna, "protein": prot}
    with pytest.raises(ParameterError, match=r"batch_key='batch' is not an \.obs column of any modality "
                                             r"\(available columns: rna: \['donor', 'ct'\]; protein: \['donor'\]\)"):
        MultiModalData.from_anndata(mods, batch_key="batch", preprocessing=KINDS)
    with pytest.raises(ParameterError, match=r"label_key='celltype' is not an \.obs column.*label_key=None"):
        MultiModalData.from_anndata(mods, batch_key="donor", label_key="celltype", preprocessing=KINDS)
    # a column present in RNA only leaves the protein-only cells without a batch
    with pytest.raises(ProjectError, match=r"2 cell\(s\) have no value in batch_key='ct' \(first: 'c12', 'c13'\); "
                                           r"e\.g\. 'c12' is measured in \['protein'\] and the column comes from rna"):
        MultiModalData.from_anndata(mods, batch_key="ct", preprocessing=KINDS)
    prot.obs.loc["c7", "donor"] = None
    prot.obs.loc["c13", "donor"] = None
    with pytest.raises(ProjectError, match=r"1 cell\(s\) have no value in batch_key='donor' \(first: 'c13'\)"):
        MultiModalData.from_anndata(mods, batch_key="donor", preprocessing=KINDS)
    prot.obs["donor"] = "d1"
    with pytest.raises(ProjectError, match=r"batch_key='donor': the values disagree between modalities for 4 "
                                           r"shared cell\(s\) \('c4': rna has 'd2', protein has 'd1'"):
        MultiModalData.from_anndata(mods, batch_key="donor", preprocessing=KINDS)


def test_labels_need_two_classes_and_may_be_missing():
    rna, prot = _citeseq()
    rna.obs["ct"] = "T"
    with pytest.raises(ProjectError, match=r"label column 'ct' has 1 class\(es\) \['T'\] among 12 labelled cells; "
                                           r"a label column needs at least two classes.*label_key=None"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", label_key="ct",
                                    preprocessing=KINDS)
    rna.obs["ct"] = ["T", "B"] + [np.nan] * 10
    data = MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", label_key="ct",
                                       preprocessing=KINDS)
    assert int(data.labels.notna().sum()) == 2
    rna.obs["batch"] = "x"
    with pytest.raises(ParameterError, match=r"label_key='batch' would clash with obs\['batch'\]"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot}, batch_key="donor", label_key="batch",
                                    preprocessing=KINDS)


def test_empty_zero_and_non_finite_modalities():
    rna, prot = _citeseq()
    with pytest.raises(ProjectError, match=r"modality 'protein' has 0 features"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot[:, []].copy()}, batch_key="donor",
                                    preprocessing=KINDS)
    with pytest.raises(ProjectError, match=r"modality 'protein' has 0 cells"):
        MultiModalData.from_anndata({"rna": rna, "protein": prot[[]].copy()}, batch_key="donor",
                                    preprocessing=KINDS)
    zero = prot.copy()
    zero.X = np.zeros_like(zero.X)
    with pytest.raises(ProjectError, match=r"modality 'protein' holds only zeros \(10 x 4\)"):
        MultiModalData.from_anndata({"rna": rna, "protein": zero}, batch_key="donor", preprocessing=KINDS)
    bad = prot.copy()
    bad.X[3, 2] = np.nan
    bad.X[5, 3] = np.inf
    with pytest.raises(ProjectError, match=r"modality 'protein' has 2 NaN / Inf value\(s\), first in column 'CD8' "
                                           r"\(2 column\(s\) affected\)"):
        MultiModalData.from_anndata({"rna": rna, "protein": bad}, batch_key="donor", preprocessing=KINDS)
    sparse_bad = rna.copy()
    sparse_bad.X.data[sparse_bad.X.indices == 5] = np.nan
    with pytest.raises(ProjectError, match=r"modality 'rna' has \d+ NaN / Inf value\(s\), first in column 'gene5'"):
        MultiModalData.from_anndata({"rna": sparse_bad, "protein": prot}, batch_key="donor", preprocessing=KINDS)


def test_counts_must_be_non_negative_whole_numbers():
    rna, prot = _citeseq()
    logged = rna.copy()
    logged.X = logged.X.log1p()
    with pytest.raises(ProjectError, match=r"modality 'rna' is declared 'counts' but holds non-integer values "
                                           r"\(e\.g\. .* in column 'gene\d'\).*declare preprocessing=\{'rna': "
                                           r"'normalized'\}"):
        MultiModalData.from_anndata({"rna": logged, "protein": prot}, batch_key="donor", preprocessing=KINDS)
    scaled = prot.copy()
    scaled.X = scaled.X - scaled.X.mean(axis=0)
    with pytest.raises(ProjectError, match=r"modality 'protein' is declared 'protein' but holds negative values"):
        MultiModalData.from_anndata({"rna": rna, "protein": scaled}, batch_key="donor", preprocessing=KINDS)
    # the same values declared as normalized are used as given
    data = MultiModalData.from_anndata({"rna": logged, "protein": scaled}, batch_key="donor",
                                       preprocessing={"rna": "normalized", "protein": "normalized"})
    np.testing.assert_allclose(data.X["protein"][4:], scaled.X, rtol=1e-6)
    assert data.raw == {} and data.counts is None


def test_read_multimodal_bad_paths(tmp_path):
    rna, prot = _citeseq()
    rna.write_h5ad(tmp_path / "rna.h5ad")
    with pytest.raises(MissingFileError, match=r"multi-omics input file not found \(.*protein\.h5ad\)"):
        read_multimodal([tmp_path / "rna.h5ad", tmp_path / "protein.h5ad"], batch_key="donor",
                        preprocessing=KINDS)
    (tmp_path / "cells.csv").write_text("a,b\n")
    with pytest.raises(InputFileError, match=r"cannot read a \.csv path: it takes one \.h5mu file \(MuData\), or "
                                             r"\.h5ad files.*samples\.csv.*project \.zarr"):
        read_multimodal(tmp_path / "cells.csv", batch_key="donor", preprocessing=KINDS)
    with pytest.raises(InputFileError, match=r"cannot read a folder"):
        read_multimodal(str(tmp_path), batch_key="donor", preprocessing=KINDS)
    with pytest.raises(ParameterError, match=r"give one \.h5mu file, or \.h5ad files only"):
        read_multimodal(f"{tmp_path / 'a.h5mu'},{tmp_path / 'rna.h5ad'}", batch_key="donor", preprocessing=KINDS)
    with pytest.raises(ParameterError, match=r"two files give modality 'rna'; name them with name=path"):
        read_multimodal([tmp_path / "rna.h5ad", f"{tmp_path / 'rna.h5ad'}"], batch_key="donor",
                        preprocessing=KINDS)
    (tmp_path / "broken.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(InputFileError, match=r"cannot read this file as AnnData.*broken\.h5ad"):
        read_multimodal([tmp_path / "rna.h5ad", tmp_path / "broken.h5ad"], batch_key="donor",
                        preprocessing={"rna": "counts", "broken": "protein"})


def test_spatial_projects_keep_spots_in_repr():
    """from_spatialdata is unchanged; its repr says spots and shows the recorded kinds."""
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    obs = pd.DataFrame({"sample": ["s1"] * 3 + ["s2"] * 3, "batch": ["s1"] * 3 + ["s2"] * 3,
                        "msi_covered": [True, True, False, True, True, True]}, index=[f"spot{i}" for i in range(6)])
    counts = sp.csr_matrix(rng.poisson(2, (6, 4)).astype(np.float32))
    rna = ad.AnnData(counts.copy(), obs=obs.copy(), layers={"counts": counts})
    msi = ad.AnnData(rng.random((6, 3)).astype(np.float32), obs=obs.copy())
    data = MultiModalData.from_spatialdata(SimpleNamespace(tables={"rna": rna, "msi": msi}), annotation_key=None)
    assert repr(data) == ("MultiModalData(6 spots, 2 batches; rna: 4 features (6 spots, counts -> "
                          "normalize_total+log1p), msi: 3 features (5 spots, log1p))")
    assert data.row_kind == "spots" and data.counts is data.raw["rna"]


# --- spatialmix run --data: the main job on paired multi-omics ------------------------------------------------

def test_run_command_on_an_h5mu_writes_every_output_into_a_mudata(tmp_path, capsys):
    """`spatialmix run --data cite.h5mu`: trains MIMA (a few epochs here), writes results.h5mu with the
    embedding, expert weights, corrected / denoised layers (NaN for cells without the modality) and the
    translations, saves the model; a second run without --overwrite refuses and leaves the file as it was."""
    mudata = pytest.importorskip("mudata")
    from spatialmix.cli import main
    from spatialmix.models import MIMA

    rna, prot = _citeseq(n_rna=60, n_prot=50, offset=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mudata.MuData({"rna": rna, "prot": prot}).write(tmp_path / "cite.h5mu")
    out = tmp_path / "out"
    args = ["--quiet", "run", "--data", str(tmp_path / "cite.h5mu"), "--batch-key", "donor",
            "--preprocessing", "rna=counts,prot=protein", "--epochs", "3", "--out", str(out)]
    assert main(args) == 0
    assert "outputs in" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mudata.read_h5mu(out / "results.h5mu")
    n = 70  # 60 RNA cells, 50 protein cells, 40 shared
    assert res.n_obs == n and res.obsm["X_mima"].shape[0] == n and np.isfinite(res.obsm["X_mima"]).all()
    w = np.asarray(res.obsm["X_mima_expert_weights"])
    assert list(res.uns["expert_weight_columns"]) == ["rna", "prot", "prior"]
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    prot_res = res["prot"]
    measured = prot_res.obs["measured"].to_numpy(bool)
    assert measured.sum() == 50
    corrected = np.asarray(prot_res.layers["mima_corrected"])
    np.testing.assert_array_equal(np.isnan(corrected).all(axis=1), ~measured)  # nothing invented
    imputed = np.asarray(prot_res.layers["mima_from_rna"])
    rna_measured = res["rna"].obs["measured"].to_numpy(bool)
    np.testing.assert_array_equal(np.isfinite(imputed).all(axis=1), rna_measured)
    assert np.all(w[~measured, 1] == 0)  # no protein, no say
    zc = np.asarray(res.obsm["X_mima_corrected_pca"])  # annotation representation: only cells with both
    np.testing.assert_array_equal(np.isfinite(zc).all(axis=1), measured & rna_measured)
    prov = json.loads(res.uns["spatialmix"]["provenance_json"])
    assert prov["model"] == "mima" and prov["train"]["epochs"] == 3 and prov["preprocessing"]["prot"] == "protein"
    assert (out / "training_curve.csv").read_text().count("\n") == 4  # header + 3 epochs
    assert MIMA.load(out / "model").is_trained
    before = (out / "results.h5mu").stat().st_mtime_ns
    assert main(args) == 2  # exists: refused, nothing replaced
    assert "already exists" in capsys.readouterr().err
    assert (out / "results.h5mu").stat().st_mtime_ns == before
    assert main(["--quiet", "run", "--out", str(out)]) == 2  # neither a configuration nor --data
    assert "either a run configuration" in capsys.readouterr().err
