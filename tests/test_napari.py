"""napari: readers, sample data and layer placement, in a real viewer under Xvfb."""

from __future__ import annotations

import numpy as np
import pytest

from spatialmix.napari._layers import project_layers, sample_offsets
from spatialmix.napari._reader import get_histology_reader, get_imzml_reader, get_project_reader, get_visium_reader
from spatialmix.project import samples_of

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_project_layers_per_sample(prepared):
    layers = project_layers(prepared)
    names = [meta["name"] for _, meta, _ in layers]
    for s in samples_of(prepared):
        for suffix in ("Visium image", "H&E", "MSI TIC", "spots"):
            assert f"{s} · {suffix}" in names
    for data, meta, kind in layers:
        if meta["name"].endswith("spots"):
            s = meta["metadata"]["spatialmix"]["sample"]
            assert kind == "points" and meta["size"] == 55.0
            assert len(data) == len(prepared.shapes[f"{s}_spots"]) == len(meta["features"])
            assert {"total_counts", "pathologist", "msi_covered"} <= set(meta["features"].columns)
        if meta["name"].endswith("H&E"):
            assert kind == "image" and meta["rgb"] is True


def test_samples_are_side_by_side_without_overlap(prepared):
    samples = samples_of(prepared)
    offsets = sample_offsets(prepared, samples)
    layers = {meta["name"]: data for data, meta, _ in project_layers(prepared)}
    spans = []
    for s in samples:
        xs = layers[f"{s} · spots"][:, 1]
        spans.append((xs.min(), xs.max()))
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a1 < b0, "samples overlap in the viewer"
    assert offsets[samples[0]] != offsets[samples[1]]


def _tissue_fraction_under_spots(viewer, sample):
    """Fraction of in-tissue spots whose centre falls on H&E tissue / on MSI signal, through napari's transforms."""
    spots = viewer.layers[f"{sample} · spots"]
    he = viewer.layers[f"{sample} · H&E"]
    tic = viewer.layers[f"{sample} · MSI TIC"]
    he_img = np.asarray(he.data[0] if he.multiscale else he.data)
    tic_img = np.asarray(tic.data)
    bg = np.percentile(tic_img, 5)
    on_he, on_tic, n_tic = 0, 0, 0
    for world in spots.data:
        r, c = np.round(he.world_to_data(world)).astype(int)[-2:]
        if 0 <= r < he_img.shape[0] and 0 <= c < he_img.shape[1]:
            on_he += he_img[r, c, :3].astype(int).sum() < 3 * 225  # not white background
        r, c = np.round(tic.world_to_data(world)).astype(int)[-2:]
        if 0 <= r < tic_img.shape[0] and 0 <= c < tic_img.shape[1]:
            n_tic += 1
            on_tic += tic_img[r, c] > 3 * bg + 1e-9
    return on_he / len(spots.data), on_tic / max(n_tic, 1)


def test_layers_overlay_in_the_viewer(make_napari_viewer, prepared):
    viewer = make_napari_viewer(show=True)
    for data, meta, kind in project_layers(prepared):
        getattr(viewer, f"add_{kind}")(data, **meta)
    for s in samples_of(prepared):
        he_frac, tic_frac = _tissue_fraction_under_spots(viewer, s)
        assert he_frac > 0.9, f"{s}: only {he_frac:.0%} of spots fall on H&E tissue"
        assert tic_frac > 0.9, f"{s}: only {tic_frac:.0%} of MSI-covered spots fall on MSI tissue signal"
    shot = viewer.screenshot(canvas_only=True)
    assert shot.std() > 10  # something is drawn


def test_project_reader_opens_a_saved_project(make_napari_viewer, saved_project):
    assert get_project_reader(str(saved_project)) is not None
    assert get_project_reader("/nonexistent/thing.csv") is None
    viewer = make_napari_viewer(show=True)
    viewer.open(str(saved_project), plugin="napari-spatialmix")
    names = [layer.name for layer in viewer.layers]
    assert "P1_S1 · spots" in names and "P2_S2 · H&E" in names and len(names) == 16


def test_file_readers_open_single_files(make_napari_viewer, sample_data_dir):
    viewer = make_napari_viewer(show=True)
    s = sample_data_dir / "P1_S1"
    assert get_visium_reader(str(s / "outs")) is not None
    assert get_imzml_reader(str(s / "outs")) is None
    viewer.open(str(s / "outs"), plugin="napari-spatialmix")
    viewer.open(str(s / "msi" / "P1_S1.imzML"), plugin="napari-spatialmix")
    viewer.open(str(s / "he" / "P1_S1_HE.tif"), plugin="napari-spatialmix")
    kinds = {layer.name: type(layer).__name__ for layer in viewer.layers}
    assert kinds["P1_S1 · spots"] == "Points"
    assert any(k.startswith("P1_S1 · MSI TIC") and v == "Image" for k, v in kinds.items())
    assert kinds["P1_S1_HE · H&E"] == "Image" and viewer.layers["P1_S1_HE · H&E"].rgb
    assert get_histology_reader(str(s / "annotations.csv")) is None


def test_sample_data_opens_the_demo(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-spatialmix", "demo")
    names = [layer.name for layer in viewer.layers]
    assert len(names) == 16 and "P2_S1 · MSI TIC" in names
    pts = viewer.layers["P1_S1 · spots"]
    assert pts.size[0] == 55 and len(np.unique(pts.face_color, axis=0)) > 10  # coloured by total counts
