"""Visium HD: a Space Ranger outs/ folder in the real layout (binned_outputs/square_XXXum/...) read through
spatialdata-io into the project's conventions, drawn as square bins, and shown as an image layer above
napari's Points limit."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from spatialmix.errors import MissingVisiumFileError, ParameterError
from spatialmix.io import is_visium_hd, read_visium, read_visium_hd
from spatialmix.simulate.visium_hd import write_visium_hd


@pytest.fixture(scope="module")
def hd_outs(tmp_path_factory):
    return write_visium_hd(tmp_path_factory.mktemp("hd") / "outs", n_rows=32, n_cols=32, n_genes=40, seed=3)


def _h5_counts(path):
    """The filtered matrix read with h5py alone: {barcode: total counts}."""
    with h5py.File(path) as f:
        g = f["matrix"]
        bc = [b.decode() for b in g["barcodes"][:]]
        indptr, data = g["indptr"][:], g["data"][:]
    return dict(zip(bc, np.add.reduceat(data, indptr[:-1]) * (np.diff(indptr) > 0)))


def test_hd_bins_become_spots_in_micrometres(hd_outs):
    assert is_visium_hd(hd_outs) and is_visium_hd(hd_outs.parent)
    sd = read_visium(hd_outs.parent, sample="hd1", patient="p1")  # the run folder; default 16 um bins
    rna = sd.tables["rna"]
    positions = pd.read_parquet(hd_outs / "binned_outputs/square_016um/spatial/tissue_positions.parquet")
    in_tissue = positions[positions.in_tissue == 1].set_index("barcode")
    assert rna.n_obs == len(in_tissue) and rna.n_vars == 40
    # every bin's counts are the matrix's, and its centre is Space Ranger's pixel position x microns_per_pixel
    totals = _h5_counts(hd_outs / "binned_outputs/square_016um/filtered_feature_bc_matrix.h5")
    got = pd.Series(np.asarray(rna.layers["counts"].sum(axis=1)).ravel(), index=rna.obs["barcode"].to_numpy())
    assert all(got[b] == pytest.approx(totals[b]) for b in got.index)
    from spatialmix.plotting import spot_geometry, spot_xy

    xy = pd.DataFrame(spot_xy(sd, "hd1"), columns=["x", "y"], index=rna.obs["barcode"].to_numpy())
    mpp = json.loads((hd_outs / "binned_outputs/square_016um/spatial/scalefactors_json.json").read_text())[
        "microns_per_pixel"]
    np.testing.assert_allclose(xy["x"], in_tissue.loc[xy.index, "pxl_col_in_fullres"] * mpp)
    np.testing.assert_allclose(xy["y"], in_tissue.loc[xy.index, "pxl_row_in_fullres"] * mpp)
    assert np.allclose(np.diff(np.sort(np.unique(xy["x"]))), 16.0)  # bins 16 um apart
    assert spot_geometry(sd, "hd1") == (8.0, True)
    meta = sd.attrs["spatialmix"]["samples"]["hd1"]
    assert meta["patient"] == "p1" and meta["visium"]["bin_size_um"] == 16 and meta["visium"]["platform"] == "visium_hd"
    assert meta["visium"]["n_spots_listed"] == len(positions)
    assert {"hd1_visium_hires", "hd1_visium_lowres"} <= set(sd.images)
    assert list(rna.obs["sample"].unique()) == ["hd1"] and (rna.obs["region"] == "hd1_spots").all()


def test_smaller_bins_hold_the_same_counts(hd_outs):
    sd16 = read_visium_hd(hd_outs, sample="a")
    sd8 = read_visium_hd(hd_outs, sample="a", bin_size_um=8)
    assert sd8.tables["rna"].n_obs > 3 * sd16.tables["rna"].n_obs
    np.testing.assert_allclose(np.asarray(sd8.tables["rna"].X.sum(axis=0)).ravel(),
                               np.asarray(sd16.tables["rna"].X.sum(axis=0)).ravel())


def test_hd_errors_name_the_problem(hd_outs, tmp_path):
    from _fixtures import write_spaceranger

    with pytest.raises(MissingVisiumFileError, match=r"No 5 um bins.*it has 8 um, 16 um"):
        read_visium(hd_outs, sample="a", bin_size_um=5)
    write_spaceranger(tmp_path / "visium" / "outs")
    with pytest.raises(ParameterError, match="is for Visium HD outputs"):
        read_visium(tmp_path / "visium" / "outs", sample="a", bin_size_um=16)  # a Visium (55 um) folder
    import shutil

    broken = tmp_path / "outs"
    shutil.copytree(hd_outs, broken)
    (broken / "binned_outputs/square_016um/spatial/tissue_positions.parquet").unlink()
    with pytest.raises(MissingVisiumFileError, match=r"tissue_positions.parquet"):
        read_visium(broken, sample="a")
    (broken / "feature_slice.h5").unlink()
    with pytest.raises(MissingVisiumFileError, match="feature_slice.h5"):
        read_visium_hd(broken, sample="a", bin_size_um=8)


def test_hd_maps_draw_square_bins_without_gaps(hd_outs):
    from spatialmix.results import render_result

    sd = read_visium_hd(hd_outs, sample="a", bin_size_um=8)
    n = sd.tables["rna"].n_obs
    m = render_result(sd, "a", np.ones(n))
    assert m.resolution_um == 4.0  # half a bin
    covered = np.isfinite(m.image).sum() * m.resolution_um ** 2
    # squares tile the tissue: the covered area is n bins of 8 x 8 um (disks of the same width would cover 79 %)
    assert covered == pytest.approx(n * 64.0, rel=0.03)
    # each bin's own value at its centre
    vals = np.arange(n, dtype=float)
    m = render_result(sd, "a", vals)
    from spatialmix.plotting import spot_xy

    xy = spot_xy(sd, "a")
    inv = np.linalg.inv(m.affine)
    rc = (np.c_[xy[:, 1], xy[:, 0], np.ones(n)] @ inv.T)[:, :2]
    got = m.image[np.round(rc[:, 0]).astype(int), np.round(rc[:, 1]).astype(int)]
    assert (got == vals).mean() > 0.99


def test_many_spots_become_an_image_layer(hd_outs, monkeypatch):
    import spatialmix.napari._layers as L

    sd = read_visium_hd(hd_outs, sample="a", bin_size_um=8)
    n = sd.tables["rna"].n_obs
    assert L.spots_layer(sd, "a")[2] == "points"  # below the limit: Points with the spot table
    monkeypatch.setattr(L, "POINTS_LIMIT", n - 1)
    data, meta, kind = L.spots_layer(sd, "a", offset=(100.0, 0.0))
    assert kind == "image" and meta["metadata"]["spatialmix"]["drawn_as"] == "image"
    plain = L.spots_layer(sd, "a")[1]["affine"]
    assert meta["affine"][1, 2] - plain[1, 2] == pytest.approx(100.0)  # shifted by the sample's offset (x)
    finite = data[np.isfinite(data)]
    total = np.asarray(sd.tables["rna"].X.sum(axis=1)).ravel()
    assert finite.min() >= total.min() and finite.max() <= total.max()  # total counts, as the Points layer
    # categories: the same RGBA as the Points layer's face colours, nothing drawn off the bins
    sd.tables["rna"].obs["region_label"] = pd.Categorical(np.where(np.arange(n) % 2, "cortex", "white matter"))
    monkeypatch.setattr(L, "POINTS_LIMIT", 10 ** 9)
    points = L.category_spots_layer(sd, "a", "region_label")
    monkeypatch.setattr(L, "POINTS_LIMIT", n - 1)
    img, meta, kind = L.category_spots_layer(sd, "a", "region_label")
    assert kind == "image" and meta["rgb"] and img.shape[-1] == 4
    assert meta["metadata"]["spatialmix"]["legend"] == points[1]["metadata"]["spatialmix"]["legend"]
    assert img.dtype == np.uint8
    drawn = img[img[..., 3] > 0]
    palette = {tuple(c) for c in np.round(np.asarray(points[1]["face_color"], dtype=float) * 255).astype(int)}
    assert {tuple(c) for c in drawn.astype(int)} == palette
    # an RGB colouring: spots without a value are transparent
    rgb = np.random.default_rng(0).uniform(size=(n, 3))
    rgb[:5] = np.nan
    sd.tables["rna"].obsm["X_test_rgb"] = rgb
    img, meta, kind = L.rgb_spots_layer(sd, "a", "X_test_rgb")
    assert kind == "image" and img.shape[-1] == 4
    assert 0 < (img[..., 3] == 0).mean() < 1


def test_data_dock_draws_a_visium_hd_sample_in_a_worker(make_napari_viewer, hd_outs, monkeypatch):
    """Above POINTS_LIMIT the Data dock rasterises the sample off the GUI thread; the layers arrive as images
    with the bins' colours, and a sample below the limit is still added at once as Points."""
    pytest.importorskip("napari")
    import time

    from qtpy.QtWidgets import QApplication

    import spatialmix.napari._layers as L
    from spatialmix.napari._data_widget import DataWidget

    viewer = make_napari_viewer(show=True)
    dock = DataWidget(viewer)
    dock.state.sdata = read_visium_hd(hd_outs, sample="a", bin_size_um=8)
    assert dock._show_sample("a") is None  # small: built here, Points
    assert viewer.layers["a · spots"].__class__.__name__ == "Points"
    n = dock.state.sdata.tables["rna"].n_obs
    monkeypatch.setattr(L, "POINTS_LIMIT", n - 1)
    viewer.layers.remove("a · spots")
    worker = dock._show_sample("a")
    assert worker is not None
    t0 = time.perf_counter()
    while "a · spots" not in viewer.layers:
        QApplication.processEvents()
        time.sleep(0.01)
        assert time.perf_counter() - t0 < 60, "the worker never added the spots"
    layer = viewer.layers["a · spots"]
    assert layer.__class__.__name__ == "Image" and layer.metadata["spatialmix"]["drawn_as"] == "image"
    assert np.isfinite(layer.data).sum() > 0 and np.isnan(layer.data).any()  # bins drawn, nothing around them



def test_data_dock_form_picks_the_hd_bin_size(make_napari_viewer, hd_outs, tmp_path):
    """The Add-a-sample form lists the bin sizes of a Visium HD folder (16 um preselected) and passes the one
    picked to the sample; for a Visium (55 um) folder the picker is off and no bin size is passed."""
    pytest.importorskip("napari")
    from _fixtures import write_spaceranger

    from spatialmix.napari._data_widget import DataWidget

    dock = DataWidget(make_napari_viewer(show=True))
    assert not dock.hd_bin.isEnabled()
    dock.sample.setText("hd1")
    dock.visium.setText(str(hd_outs))
    assert dock.hd_bin.isEnabled()
    assert [dock.hd_bin.itemData(i) for i in range(dock.hd_bin.count())] == [8, 16]
    assert dock.spec_from_form().visium_bin_um == 16
    dock.hd_bin.setCurrentIndex(0)
    assert dock.spec_from_form().visium_bin_um == 8
    write_spaceranger(tmp_path / "visium" / "outs")
    dock.visium.setText(str(tmp_path / "visium" / "outs"))
    assert not dock.hd_bin.isEnabled() and dock.spec_from_form().visium_bin_um is None

def test_explore_dock_colours_a_visium_hd_sample_in_a_worker(make_napari_viewer, hd_outs, monkeypatch):
    """The Explore dock's RGB colouring of a sample above POINTS_LIMIT is rasterised off the GUI thread and
    arrives as an RGBA image with the spots' colours."""
    import time

    from qtpy.QtWidgets import QApplication

    import spatialmix.napari._layers as L
    from spatialmix.napari._explore_widget import ExploreWidget

    viewer = make_napari_viewer(show=True)
    dock = ExploreWidget(viewer)
    sd = read_visium_hd(hd_outs, sample="a", bin_size_um=8)
    n = sd.tables["rna"].n_obs
    rgb = np.zeros((n, 3))
    rgb[:, 0] = 1.0  # every bin pure red
    sd.tables["rna"].obsm["X_test_rgb"] = rgb
    monkeypatch.setattr(L, "POINTS_LIMIT", n - 1)
    dock.state.sdata = sd
    dock.state.changed.emit("project")
    dock.rgb_combo.setCurrentText("TEST shared embedding")
    assert dock.show_rgb() == []  # built in a worker
    name = "a · RGB of TEST shared embedding"
    t0 = time.perf_counter()
    while name not in viewer.layers:
        QApplication.processEvents()
        time.sleep(0.01)
        assert time.perf_counter() - t0 < 60, "the worker never added the RGB layer"
    img = viewer.layers[name].data
    drawn = img[img[..., 3] > 0]
    assert img.dtype == np.uint8 and len(drawn) and (drawn[:, :3] == [255, 0, 0]).all()


def test_prepare_registers_msi_and_he_onto_8um_bins(tmp_path):
    """``prepare`` on Visium HD slides with MSI and H&E: the bin size named in samples.csv is read, the H&E and
    the MSI (both drawn hundreds of micrometres off their nominal placement) land on the bins within a few
    micrometres of the true transforms, and every modality table has one row per bin."""
    from spatialmix.jobs import registration_error_vs_truth
    from spatialmix.pipeline import iter_prepare, read_samples_csv
    from spatialmix.progress import run
    from spatialmix.simulate.visium_hd import write_visium_hd_dataset

    root = write_visium_hd_dataset(tmp_path / "hd", side=48, samples=1, genes=80, n_mz=40, seed=2)
    specs = read_samples_csv(root)
    assert [s.visium_bin_um for s in specs] == [8.0]
    sdata = run(iter_prepare(specs))
    positions = pd.read_parquet(root / "HD1/outs/binned_outputs/square_008um/spatial/tissue_positions.parquet")
    per_sample = sdata.tables["rna"].obs["sample"].value_counts()
    assert per_sample["HD1"] == int(positions["in_tissue"].sum()) > 1000  # 8 um bins, not the default 16 um
    assert {t: sdata.tables[t].n_obs for t in ("rna", "msi", "morphology")} == {
        t: sdata.tables["rna"].n_obs for t in ("rna", "msi", "morphology")}
    assert sdata.tables["msi"].obs["msi_covered"].mean() > 0.95
    errors = registration_error_vs_truth(sdata, root)
    assert set(errors) == {"HD1"}
    for sample, err in errors.items():
        assert err["he"] < 4.0 and err["msi"] < 8.0, (sample, err)  # 8 um bins; MSI pixels of 20 um


def test_visium_bin_um_only_for_visium_hd(tmp_path):
    from _fixtures import write_spaceranger

    from spatialmix.errors import InputFileError
    from spatialmix.pipeline import read_samples_csv

    write_spaceranger(tmp_path / "S1" / "outs")
    (tmp_path / "samples.csv").write_text("sample,visium,visium_bin_um\nS1,S1/outs,8\n")
    with pytest.raises(InputFileError, match=r"line 2, column visium \(sample S1\): visium_bin_um 8: .*S1/outs is a "
                       r"Visium folder without binned_outputs/ \(not Visium HD\)"):
        read_samples_csv(tmp_path)
    (tmp_path / "samples.csv").write_text("sample,visium,visium_bin_um\nS1,S1/outs,eight\n")
    with pytest.raises(InputFileError, match=r"column visium_bin_um.*'eight' is not a number"):
        read_samples_csv(tmp_path)
    (tmp_path / "samples.csv").write_text("sample,visium,visium_bin_um\nS1,S1/outs,\n")
    assert read_samples_csv(tmp_path)[0].visium_bin_um is None


def test_wrong_bin_size_is_named_before_any_sample_is_read(tmp_path, hd_outs):
    """A bin size the HD folder does not have (or a fraction of one, never rounded to a size there is) is refused
    with the sizes there are: by samples.csv, by the run configuration ([[samples]] and samples_csv, with the
    line), and by ``prepare`` before it reads the first sample."""
    from spatialmix.config import load_config
    from spatialmix.errors import ConfigError, InputFileError
    from spatialmix.pipeline import iter_prepare, read_samples_csv
    from spatialmix.samples import SampleSpec

    (tmp_path / "samples.csv").write_text(f"sample,visium,visium_bin_um\nS1,{hd_outs},4\n")
    with pytest.raises(InputFileError, match=r"line 2.*visium_bin_um 4: .* has no 4 um bins \(it has 8, 16 um\)"
                       r".*Give one of the bin sizes there are: 8, 16"):
        read_samples_csv(tmp_path)
    (tmp_path / "samples.csv").write_text(f"sample,visium,visium_bin_um\nS1,{hd_outs},8.5\n")
    with pytest.raises(InputFileError, match=r"has no 8.5 um bins"):
        read_samples_csv(tmp_path)
    toml = tmp_path / "run.toml"
    toml.write_text(f'[[samples]]\nname = "A"\nvisium = "{hd_outs}"\nvisium_bin_um = 4\n')
    with pytest.raises(ConfigError, match=r"line 4.*visium_bin_um.*has no 4 um bins \(it has 8, 16 um\)"):
        load_config(toml)
    toml.write_text(f'[data]\nsamples_csv = "{tmp_path / "samples.csv"}"\n')
    with pytest.raises(ConfigError, match=r"samples.csv sample S1, column visium_bin_um: .*has no 8.5 um bins"):
        load_config(toml)
    # prepare with specs built in code: the second sample's wrong size stops it before the first is read
    events = []
    gen = iter_prepare([SampleSpec("S1", hd_outs, visium_bin_um=8), SampleSpec("S2", hd_outs, visium_bin_um=12)])
    with pytest.raises(ParameterError, match=r"sample S2: visium_bin_um=12: .* has no 12 um bins"):
        for event in gen:
            events.append(event)
    assert events == []
