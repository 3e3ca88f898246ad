"""spatialmix.results: a trained MIMA's outputs written into the project, saved, reopened, and rendered."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

os.environ.setdefault("OMP_NUM_THREADS", "1")

from spatialmix.data import MultiModalData  # noqa: E402
from spatialmix.errors import ModelError, ParameterError, ProjectError  # noqa: E402
from spatialmix.models import MIMA  # noqa: E402
from spatialmix.plotting import spot_xy  # noqa: E402
from spatialmix.project import load_project, save_project  # noqa: E402
from spatialmix.results import (  # noqa: E402
    RenderedMap, render_result, rgb_embedding, spot_values, translation_layer, write_results,
)

import _claims  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MODS = ["rna", "msi", "morphology"]
TRANSLATIONS = {"rna": "mima_from_msi_and_morphology", "msi": "mima_from_rna_and_morphology",
                "morphology": "mima_from_rna_and_msi"}


@pytest.fixture(scope="module")
def project_path(request) -> Path:
    """The project of the session's demo run (tests never depend on a local demo_out)."""
    return request.getfixturevalue("saved_project")


@pytest.fixture(scope="module")
def trained(project_path):
    import torch

    _claims.set_torch_threads()
    sdata = load_project(project_path)
    data = MultiModalData.from_spatialdata(sdata)
    model = MIMA(data)
    model.train(epochs=2, lr=1e-3, seed=0)
    events = []
    out = write_results(sdata, model, progress=events.append)
    return SimpleNamespace(sdata=sdata, data=data, model=model, events=events, out=out, path=project_path)


def _dense(x):
    return np.asarray(x.toarray() if sp.issparse(x) else x)


def test_every_output_is_written_with_its_name_and_shape(trained):
    s, data = trained.sdata, trained.data
    assert trained.out is s
    n = data.n_obs
    n_vars = {"rna": 1500, "msi": 526, "morphology": 67}
    for m in MODS:
        ad = s.tables[m]
        extra_obsm = {"X_msi_rgb", "X_mima_corrected_msi_rgb"} if m == "msi" else set()
        assert set(ad.obsm) - {"spatial"} == {"X_mima", "X_mima_private", "X_mima_rgb", "X_mima_expert_weights",
                                              "X_mima_experts_rgb", "X_mima_corrected_pca"} | extra_obsm, m
        # the representation for annotation prediction: defined exactly where every modality was measured
        every = np.all([data.mask[k] for k in MODS], axis=0)
        zc = ad.obsm["X_mima_corrected_pca"]
        assert zc.shape == (n, 50)
        np.testing.assert_array_equal(np.isfinite(zc).all(axis=1), every)
        assert np.isnan(zc[~every]).all()
        assert set(ad.layers) - {"counts"} == {"mima_corrected", "mima_denoised", TRANSLATIONS[m]}, m
        assert ad.obsm["X_mima"].shape == (n, 100) and ad.obsm["X_mima_private"].shape == (n, 100)
        for name in ("X_mima_rgb", *extra_obsm):
            assert ad.obsm[name].shape == (n, 3)
        for name in ("mima_corrected", "mima_denoised", TRANSLATIONS[m]):
            layer = ad.layers[name]
            assert isinstance(layer, np.ndarray) and layer.dtype == np.float32
            assert layer.shape == (n, n_vars[m]) == ad.shape
            # no invented values: NaN exactly where the modality (corrected / denoised) or every source
            # (translation) was not measured; every spot of a measured modality has a value
            measured = data.mask[m] if not name.startswith("mima_from_") else np.any(
                [data.mask[s] for s in name[len("mima_from_"):].split("_and_")], axis=0)
            np.testing.assert_array_equal(np.isnan(layer).all(axis=1), ~measured)
            assert np.isfinite(layer[measured]).all()
    uncovered = ~data.mask["msi"]
    assert 0 < uncovered.sum() and np.isnan(s.tables["msi"].layers["mima_corrected"][uncovered]).all()
    # a spot without MSI still gets MSI values, imputed from RNA + H&E and named so
    assert np.isfinite(s.tables["msi"].layers[TRANSLATIONS["msi"]][uncovered]).all()
    assert translation_layer("mima", ["msi", "morphology"]) == "mima_from_msi_and_morphology"


def test_written_values_are_the_models_outputs(trained):
    s, model = trained.sdata, trained.model
    z = model.get_latent_representation()
    for m in MODS:
        np.testing.assert_array_equal(s.tables[m].obsm["X_mima"], z)
        np.testing.assert_array_equal(s.tables[m].layers["mima_corrected"], model.get_corrected(m))
    np.testing.assert_array_equal(s.tables["msi"].obsm["X_mima_private"],
                                  model.get_latent_representation("private", "msi"))
    np.testing.assert_array_equal(s.tables["rna"].obsm["X_mima_corrected_pca"], model.get_corrected_pca())
    np.testing.assert_array_equal(s.tables["morphology"].layers["mima_denoised"], model.get_denoised("morphology"))
    np.testing.assert_array_equal(s.tables["rna"].layers["mima_from_msi_and_morphology"],
                                  model.translate(["msi", "morphology"], "rna"))
    # the shared embedding is the same in every table, the private ones differ per modality
    assert not np.allclose(s.tables["rna"].obsm["X_mima_private"], s.tables["msi"].obsm["X_mima_private"])


def test_rgb_colourings_are_in_unit_cube_with_nan_exactly_where_msi_is_missing(trained):
    s = trained.sdata
    rgb = s.tables["rna"].obsm["X_mima_rgb"]
    assert rgb.shape[1] == 3 and np.isfinite(rgb).all()
    np.testing.assert_allclose(rgb.min(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(rgb.max(axis=0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(s.tables["msi"].obsm["X_mima_rgb"], rgb)
    uncovered = ~s.tables["msi"].obs["msi_covered"].to_numpy(bool)
    assert 0 < uncovered.sum() < len(uncovered)
    for name in ("X_msi_rgb", "X_mima_corrected_msi_rgb"):
        col = s.tables["msi"].obsm[name]
        np.testing.assert_array_equal(np.isnan(col).any(axis=1), uncovered)
        np.testing.assert_array_equal(np.isnan(col).all(axis=1), uncovered)
        ok = col[~uncovered]
        assert ok.min() >= 0.0 and ok.max() <= 1.0
        np.testing.assert_allclose(ok.max(axis=0), 1.0, atol=1e-6)
    # the raw-MSI and the corrected-MSI colourings are different pictures
    assert not np.allclose(s.tables["msi"].obsm["X_msi_rgb"][~uncovered],
                           s.tables["msi"].obsm["X_mima_corrected_msi_rgb"][~uncovered], equal_nan=True)


def test_rgb_embedding_is_deterministic_and_keeps_nan_rows():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(0, 1, (60, 80)), rng.normal(4, 1, (60, 80))]).astype(np.float32)
    X[[3, 70]] = np.nan
    a = rgb_embedding(X, n_pcs=10, seed=3)
    b = rgb_embedding(X, n_pcs=10, seed=3)
    assert a.shape == (120, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(a).any(axis=1)), [3, 70])
    with pytest.raises(ParameterError, match="at least 5 spots"):
        rgb_embedding(np.full((10, 4), np.nan))


def test_progress_events_count_every_output(trained):
    ev = trained.events
    assert all(e.stage == "write results (mima)" for e in ev)
    assert ev[-1].step == ev[-1].total and [e.step for e in ev] == list(range(ev[-1].total + 1))
    messages = " | ".join(e.message for e in ev)
    for part in ("private msi", "corrected rna", "denoised morphology", "rna from msi+morphology",
                 "RGB of the shared embedding", "RGB of msi X", "RGB of msi mima_corrected", "expert weights"):
        assert part in messages


def test_expert_weights_say_which_modality_decides_each_spot(trained):
    """The PoE precision shares: one column per modality and the prior, rows summing to 1, MSI's share 0 where
    MSI was not measured; with three modalities also an RGB of the three shares."""
    s, data = trained.sdata, trained.data
    w = s.tables["rna"].obsm["X_mima_expert_weights"]
    assert w.shape == (data.n_obs, 4)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    cols = s.attrs["spatialmix"]["models"]["mima"]["expert_weights"]["columns"]
    assert cols == [*MODS, "prior"]
    msi = cols.index("msi")
    uncovered = ~data.mask["msi"]
    assert np.all(w[uncovered, msi] == 0) and np.all(w[~uncovered, msi] > 0)
    assert np.all(w[:, :3].sum(axis=1) > w[:, 3])  # the measured experts outweigh the prior
    rgb = s.tables["msi"].obsm["X_mima_experts_rgb"]
    np.testing.assert_allclose(rgb.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(rgb[:, 0], w[:, 0] / w[:, :3].sum(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(w, trained.model.get_expert_weights().to_numpy(np.float32))


def test_provenance_in_attrs_and_every_table(trained):
    s, model = trained.sdata, trained.model
    rec = s.attrs["spatialmix"]["models"]["mima"]
    assert rec["model"] == "mima" and rec["class"] == "MIMA"
    assert rec["modalities"] == MODS
    assert rec["n_features"] == {"rna": 1500, "msi": 526, "morphology": 67}
    assert rec["features"]["rna"][:3] == list(s.tables["rna"].var_names[:3])
    assert rec["batches"] == ["P1_S1", "P1_S2", "P2_S1", "P2_S2"]
    assert rec["train_config"]["epochs"] == 2 and rec["train_config"]["lr"] == 1e-3 and rec["seed"] == 0
    assert rec["params"]["n_latent"] == 100
    assert {"spatialmix", "torch", "python"} <= set(rec["versions"])
    assert rec["outputs"]["msi"]["layers"] == ["mima_corrected", "mima_denoised", "mima_from_rna_and_morphology"]
    assert "X_msi_rgb" in rec["outputs"]["msi"]["obsm"]
    assert [r["epoch"] for r in rec["training_curve"]] == [1, 2]
    np.testing.assert_allclose([r["loss"] for r in rec["training_curve"]], [h["loss"] for h in model.history])
    for m in MODS:
        entry = s.tables[m].uns["spatialmix"]["mima"]
        assert json.loads(entry["provenance_json"]) == rec
        hist = entry["history"]
        assert isinstance(hist, pd.DataFrame) and len(hist) == 2
        np.testing.assert_allclose(hist["loss"].to_numpy(), [h["loss"] for h in model.history])


def test_saved_project_reopens_with_every_result(trained, tmp_path):
    s = trained.sdata
    path = save_project(s, tmp_path / "with_results.zarr")
    back = load_project(path)
    assert back.attrs["spatialmix"]["models"]["mima"] == s.attrs["spatialmix"]["models"]["mima"]
    for m in MODS:
        a, b = s.tables[m], back.tables[m]
        assert set(b.obsm) == set(a.obsm) and set(b.layers) == set(a.layers)
        for name in a.obsm:
            np.testing.assert_array_equal(_dense(b.obsm[name]), _dense(a.obsm[name]))
        for name in ("mima_corrected", "mima_denoised", TRANSLATIONS[m]):
            np.testing.assert_array_equal(_dense(b.layers[name]), a.layers[name])
        entry = b.uns["spatialmix"]["mima"]
        assert json.loads(entry["provenance_json"]) == s.attrs["spatialmix"]["models"]["mima"]
        np.testing.assert_allclose(entry["history"]["loss"].to_numpy(), a.uns["spatialmix"]["mima"]["history"]["loss"])


def test_writing_again_replaces_and_never_duplicates(trained):
    s = load_project(trained.path)  # a fresh copy: the module's project stays as written
    model = trained.model
    write_results(s, model, outputs=("latent", "corrected", "translations"))
    first = {m: (sorted(s.tables[m].obsm), sorted(s.tables[m].layers)) for m in MODS}
    corrected = s.tables["msi"].layers["mima_corrected"].copy()
    write_results(s, model, outputs=("latent", "corrected", "translations"))
    assert {m: (sorted(s.tables[m].obsm), sorted(s.tables[m].layers)) for m in MODS} == first
    np.testing.assert_array_equal(s.tables["msi"].layers["mima_corrected"], corrected)
    assert list(s.tables["rna"].uns["spatialmix"]) == ["mima"]
    # a narrower rewrite removes what the earlier write of the same key put there
    write_results(s, model, outputs=("latent", "translations"), translations=[(["msi"], "rna")])
    assert set(s.tables["rna"].layers) == {"counts", "mima_from_msi"}
    assert set(s.tables["msi"].layers) == set() and set(s.tables["msi"].obsm) == {"X_mima"}
    assert s.attrs["spatialmix"]["models"]["mima"]["outputs"]["rna"]["layers"] == ["mima_from_msi"]
    # another key lives beside it
    write_results(s, model, key="mima_b", outputs=("corrected",))
    assert "mima_from_msi" in s.tables["rna"].layers and "mima_b_corrected" in s.tables["rna"].layers
    assert sorted(s.attrs["spatialmix"]["models"]) == ["mima", "mima_b"]


def test_untrained_model_or_foreign_table_is_refused(trained):
    s = load_project(trained.path)  # the demo project already holds the demo's own "mima" results
    before = sorted(s.attrs["spatialmix"].get("models", {}))
    with pytest.raises(ModelError, match="not trained"):
        write_results(s, MIMA(trained.data), key="fresh")
    assert "X_fresh" not in s.tables["rna"].obsm and sorted(s.attrs["spatialmix"].get("models", {})) == before
    with pytest.raises(ParameterError, match="unknown output"):
        write_results(s, trained.model, key="fresh", outputs=("umap",))
    ad = s.tables["msi"]
    ad.obs_names = [f"other_{i}" for i in range(ad.n_obs)]
    with pytest.raises(ProjectError, match="table 'msi'"):
        write_results(s, trained.model, key="fresh", outputs=("latent",))
    assert "X_fresh" not in s.tables["rna"].obsm  # nothing half-written
    assert sorted(s.attrs["spatialmix"].get("models", {})) == before


def test_spot_values_by_gene_mz_obsm_and_column(trained):
    s = trained.sdata
    rna, msi = s.tables["rna"], s.tables["msi"]
    gene = rna.var_names[0]
    v = spot_values(s, "rna", feature=gene)
    assert v.name == gene and v.index.equals(rna.obs_names)
    np.testing.assert_allclose(v.to_numpy(), _dense(rna.X[:, 0]).ravel())
    c = spot_values(s, "rna", layer="mima_corrected", feature=gene)
    np.testing.assert_array_equal(c.to_numpy(), rna.layers["mima_corrected"][:, 0])
    with pytest.raises(ParameterError, match=gene):
        spot_values(s, "rna", feature=gene + "X")  # close matches are listed
    # m/z: nearest feature within the ppm tolerance, as float or text
    j = 100
    name = msi.var_names[j]
    mz = float(name) * (1 + 5e-6)
    v = spot_values(s, "msi", layer="mima_corrected", feature=mz)
    assert v.name == name
    np.testing.assert_array_equal(v.to_numpy(), msi.layers["mima_corrected"][:, j])
    assert spot_values(s, "msi", feature=f"{mz:.4f}").name == name
    with pytest.raises(ParameterError, match=rf"within 1 ppm.*{name}"):
        spot_values(s, "msi", feature=mz, ppm=1)
    with pytest.raises(ParameterError, match="layers"):
        spot_values(s, "msi", layer="nope", feature=mz)
    rgb = spot_values(s, "msi", obsm="X_mima_rgb")
    assert list(rgb.columns) == ["R", "G", "B"] and rgb.shape == (msi.n_obs, 3)
    lab = spot_values(s, "rna", column="pathologist")
    assert lab.equals(rna.obs["pathologist"])
    with pytest.raises(ParameterError, match="exactly one"):
        spot_values(s, "rna", feature=gene, column="pathologist")


def test_render_result_puts_each_value_at_its_spot_centre(trained):
    s = trained.sdata
    rna = s.tables["rna"]
    sample = "P1_S2"
    values = pd.Series(np.arange(rna.n_obs, dtype=float), index=rna.obs_names)  # one unique value per row
    out = render_result(s, sample, values, resolution_um=5.0)
    assert isinstance(out, RenderedMap) and out.image.ndim == 2 and out.resolution_um == 5.0
    xy = spot_xy(s, sample)
    rows = np.flatnonzero(rna.obs["sample"].to_numpy() == sample)
    inv = np.linalg.inv(out.affine)
    for r in rows:
        x, y = xy[int(rna.obs["spot_id"].iloc[r])]
        i, j, _ = np.rint(inv @ [y, x, 1.0]).astype(int)
        assert out.image[i, j] == r
    # every drawn pixel's centre (through the affine) lies inside the disk of the spot whose value it holds
    ii, jj = np.nonzero(np.isfinite(out.image))
    centres = (out.affine @ np.vstack([ii, jj, np.ones_like(ii)]))[:2].T  # (y, x) um
    owner = out.image[ii, jj].astype(int)
    spot = xy[rna.obs["spot_id"].to_numpy()[owner]]
    dist = np.hypot(centres[:, 0] - spot[:, 1], centres[:, 1] - spot[:, 0])
    assert dist.max() <= 27.5 + 1e-6
    assert set(np.unique(owner)) == set(rows)  # other samples' values are not drawn
    # a colour map comes out (H, W, 3); a categorical column comes out as codes with names
    rgb = render_result(s, sample, spot_values(s, "rna", obsm="X_mima_rgb"), resolution_um=10.0)
    assert rgb.image.shape[2] == 3 and np.nanmax(rgb.image) <= 1.0
    lab = render_result(s, sample, spot_values(s, "rna", column="pathologist"), resolution_um=10.0)
    assert lab.categories == list(rna.obs["pathologist"].cat.categories)
    with pytest.raises(ProjectError, match="samples"):
        render_result(s, "P9_S9", values)
    with pytest.raises(ParameterError, match="one row per table row"):
        render_result(s, sample, np.zeros(5))


def test_a_stuck_umap_helper_is_replaced_and_then_reported(monkeypatch):
    """A helper that sits idle with a task pending (seen in the GUI tests) is replaced; if every helper does,
    the caller gets a clear error instead of waiting forever. ``time.sleep`` stands in for a stuck task."""
    import time as _time

    import spatialmix.results.rgb as res
    from spatialmix.errors import SpatialMixError

    monkeypatch.setattr(res, "HELPER_IDLE_S", 2.0)
    res.use_umap_process()
    try:
        t0 = _time.perf_counter()
        with pytest.warns(RuntimeWarning, match="used no CPU"):
            with pytest.raises(SpatialMixError, match="did not run the RGB colouring in 2 attempts"):
                res._in_helper(_time.sleep, 120, attempts=2)
        assert _time.perf_counter() - t0 < 60
        assert res._in_helper(sum, [1, 2, 3]) == 6  # a fresh helper works
    finally:
        res.use_umap_process(False)


def test_one_inference_pass_gives_every_output_of_the_single_output_methods(trained):
    """MIMA.get_outputs encodes each chunk once for all outputs; every value equals the method that computes it
    alone (NaN rows included), and the writer used it (its first progress event says so)."""
    model, data = trained.model, trained.data
    reqs = [("latent", None), ("private", "msi"), ("corrected", "msi"), ("denoised", "rna"),
            ("expert_weights", None), ("translation", (("msi", "morphology"), "rna")), ("translation", (("rna",), "msi"))]
    got = model.get_outputs(reqs)
    np.testing.assert_array_equal(got[("latent", None)], model.get_latent_representation())
    np.testing.assert_array_equal(got[("private", "msi")], model.get_latent_representation("private", "msi"))
    np.testing.assert_array_equal(got[("corrected", "msi")], model.get_corrected("msi"))
    assert np.isnan(got[("corrected", "msi")]).any()  # spots without MSI stay NaN
    np.testing.assert_array_equal(got[("denoised", "rna")], model.get_denoised("rna"))
    pd.testing.assert_frame_equal(got[("expert_weights", None)], model.get_expert_weights())
    np.testing.assert_array_equal(got[("translation", (("msi", "morphology"), "rna"))],
                                  model.translate(["msi", "morphology"], "rna"))
    np.testing.assert_array_equal(got[("translation", (("rna",), "msi"))], model.translate("rna", "msi"))
    assert "outputs in one inference pass" in trained.events[0].message


def test_the_umap_helper_gets_the_pca_not_the_matrix_and_gives_the_same_colours(monkeypatch):
    """With the helper process on, a wide matrix is reduced to its PCA here and only that is sent (nothing the
    size of the data crosses processes); the colours equal the in-process ones."""
    import spatialmix.results.rgb as res

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 200)).astype(np.float32)
    X[:7] = np.nan
    here = res.rgb_embedding(X, n_pcs=20, seed=1)
    sent = []
    real = res._in_helper

    def spy(fn, *args, **kwargs):
        sent.append(args[0].shape)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(res, "_in_helper", spy)
    res.use_umap_process()
    try:
        there = res.rgb_embedding(X, n_pcs=20, seed=1)
    finally:
        res.use_umap_process(False)
    assert sent == [(300, 20)]
    np.testing.assert_allclose(there, here, atol=1e-5, equal_nan=True)
    assert np.isnan(there[:7]).all() and np.isfinite(there[7:]).all()


def test_lazy_layers_equal_the_in_memory_ones_and_are_saved_and_reopened_block_by_block(trained, tmp_path,
                                                                                          monkeypatch):
    """Layers too large for memory (Visium HD: 36 GB of corrected RNA) are written as lazy dask arrays computed
    block by block by a frozen copy of the model (lazy_layers=True forces it on this small project): the values
    equal the in-memory layers, the corrected-feature PCA spans the same subspace, the MSI colouring of a lazy
    layer is still NaN where MSI is missing, training the model further afterwards does not change what was
    written, and a saved project reopens such layers lazily."""
    from spatialmix import lazy

    sdata = load_project(trained.path)
    model = MIMA(trained.data)
    model.train(epochs=2, lr=1e-3, seed=0)  # the fixture's model again (same seed: the same weights)
    write_results(sdata, model, key="lz", outputs=["latent", "corrected", "corrected_pca", "rgb"], lazy_layers=True)
    for m in MODS:
        layer = sdata.tables[m].layers["lz_corrected"]
        assert lazy.is_lazy(layer)
        np.testing.assert_allclose(np.asarray(layer), _dense(trained.sdata.tables[m].layers["mima_corrected"]),
                                   rtol=1e-5, atol=1e-5, equal_nan=True)
    pca_lazy = sdata.tables["rna"].obsm["X_lz_corrected_pca"]
    pca_mem = trained.sdata.tables["rna"].obsm["X_mima_corrected_pca"]
    ok = np.isfinite(pca_mem).all(axis=1)
    assert (np.isfinite(pca_lazy).all(axis=1) == ok).all() and pca_lazy.shape == pca_mem.shape
    coef, *_ = np.linalg.lstsq(pca_lazy[ok], pca_mem[ok], rcond=None)  # the same subspace: a rotation apart
    resid = pca_mem[ok] - pca_lazy[ok] @ coef
    assert (resid ** 2).sum() / (pca_mem[ok] ** 2).sum() < 1e-3
    rgb = sdata.tables["msi"].obsm["X_lz_corrected_msi_rgb"]
    measured = np.asarray(trained.data.mask["msi"], bool)
    assert np.isnan(rgb[~measured]).all() and np.isfinite(rgb[measured]).all()
    before = np.asarray(sdata.tables["rna"].layers["lz_corrected"][:50])
    model.train(epochs=1, lr=1e-2, seed=1)  # the model moves on; the lazy layer keeps the weights it was written with
    np.testing.assert_array_equal(np.asarray(sdata.tables["rna"].layers["lz_corrected"][:50]), before)

    saved = save_project(sdata, tmp_path / "lazy.zarr")
    assert lazy.is_lazy(sdata.tables["rna"].layers["lz_corrected"])  # now reading the saved zarr array
    np.testing.assert_array_equal(np.asarray(sdata.tables["rna"].layers["lz_corrected"][:50]), before)
    monkeypatch.setattr(lazy, "LAZY_LAYER_BYTES", 1024)  # every layer of this small project counts as large
    again = load_project(saved)
    for m in MODS:
        layer = again.tables[m].layers["lz_corrected"]
        assert lazy.is_lazy(layer)
        np.testing.assert_array_equal(np.asarray(layer), np.asarray(sdata.tables[m].layers["lz_corrected"]))
        assert again.tables[m].obs_names.equals(sdata.tables[m].obs_names)
        np.testing.assert_array_equal(again.tables[m].obsm["X_lz_corrected_pca"], pca_lazy)
    assert set(again.shapes) == set(sdata.shapes) and again.attrs.keys() == sdata.attrs.keys()
    monkeypatch.setattr(lazy, "LAZY_LAYER_BYTES", 2 * 1024**3)
    eager = load_project(saved)  # small layers: read whole, as SpatialData reads them
    assert not lazy.is_lazy(eager.tables["rna"].layers["lz_corrected"])


def test_chunked_pca_fits_on_a_subset_of_blocks_above_fit_rows_and_projects_every_row_once():
    """At Visium HD size the corrected-feature PCA of a lazy layer fits on a random subset of row blocks and
    decodes the layer about once (1 + 2 x fit_rows / n times, not 3 times): the components span the subspace of
    the full fit, rows that were not measured stay NaN, every finite row is projected, and the seed fixes it."""
    import dask.array as da

    from spatialmix import lazy

    rng = np.random.default_rng(0)
    n, rows = 6000, 250
    scores = rng.normal(size=(n, 4)) * np.array([10.0, 7.0, 5.0, 3.0])
    A = (scores @ rng.normal(size=(4, 40)) + rng.normal(size=(n, 40))).astype(np.float32)
    B = (scores[:, :2] @ rng.normal(size=(2, 15)) + rng.normal(size=(n, 15))).astype(np.float32)
    B[rng.random(n) < 0.1] = np.nan  # the second modality was not measured at 10 % of the spots
    decoded = []

    def counted(x):
        def block(b, block_info=None):
            decoded.append(block_info[0]["array-location"][0])
            return b
        return da.from_array(x, chunks=(rows, x.shape[1])).map_blocks(block, dtype=np.float32)

    full = lazy.chunked_pca([A, B], 4, rows=rows, fit_rows=None)
    sub = lazy.chunked_pca([counted(A), counted(B)], 4, rows=rows, fit_rows=1000, seed=3)
    n_blocks, n_fit = n // rows, 1000 // rows
    assert len(decoded) == 2 * (n_blocks + 2 * n_fit)  # two arrays, each: 2 passes over 4 fit blocks + 1 over all
    assert len({loc for loc in decoded}) == n_blocks  # every block projected
    ok = np.isfinite(B).all(axis=1)
    assert (np.isfinite(sub).all(axis=1) == ok).all() and (np.isfinite(full).all(axis=1) == ok).all()
    coef, *_ = np.linalg.lstsq(sub[ok], full[ok], rcond=None)  # the same subspace, up to a rotation
    resid = full[ok] - sub[ok] @ coef
    assert (resid ** 2).sum() / (full[ok] ** 2).sum() < 0.01
    np.testing.assert_array_equal(lazy.chunked_pca([A, B], 4, rows=rows, fit_rows=1000, seed=3), sub)
    assert not np.array_equal(lazy.chunked_pca([A, B], 4, rows=rows, fit_rows=1000, seed=4), sub)
    with pytest.raises(ParameterError, match="fit_rows"):
        lazy.chunked_pca([A], 4, fit_rows=0)
