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
    # whole samples (H&E and MSI included, which reach beyond the capture area) do not overlap either
    from spatialmix.napari._layers import sample_extent

    right = -np.inf
    for s in samples:
        xmin, _, xmax, _ = sample_extent(prepared, s)
        left = xmin + offsets[s][0]
        assert left > right
        right = xmax + offsets[s][0]


def _on_tissue(he_img, rc):
    """Fraction of positions whose ~28 um neighbourhood in the H&E is stained (not white glass)."""
    hits = []
    for r, c in np.round(rc).astype(int):
        if 3 <= r < he_img.shape[0] - 3 and 3 <= c < he_img.shape[1] - 3:
            hits.append(he_img[r - 3:r + 4, c - 3:c + 4, :3].astype(float).mean() < 225)
    return np.mean(hits)


def test_layers_overlay_in_the_viewer(make_napari_viewer, prepared):
    """napari places every layer exactly where the project's transforms say, so H&E, MSI and spots overlay."""
    from spatialmix._elements import element_affine
    from spatialmix.plotting import spot_xy

    viewer = make_napari_viewer(show=True)
    for data, meta, kind in project_layers(prepared):
        getattr(viewer, f"add_{kind}")(data, **meta)
    for s in samples_of(prepared):
        spots = viewer.layers[f"{s} · spots"]
        xy = spot_xy(prepared, s)
        for layer_name, element in ((f"{s} · H&E", f"{s}_he"), (f"{s} · MSI TIC", f"{s}_msi_tic")):
            layer = viewer.layers[layer_name]
            napari_rc = np.array([layer.world_to_data(p)[-2:] for p in spots.data])
            inv = np.linalg.inv(element_affine(prepared.images[element], s))
            expected_xy = (np.c_[xy, np.ones(len(xy))] @ inv.T)[:, :2]
            np.testing.assert_allclose(napari_rc[:, ::-1], expected_xy, atol=1e-6)
        # and the registered H&E really lies under the spots: more stained tissue under them than after a shift
        he = viewer.layers[f"{s} · H&E"]
        he_img = np.asarray(he.data[0] if he.multiscale else he.data)
        placed = _on_tissue(he_img, [he.world_to_data(p)[-2:] for p in spots.data])
        shifted = _on_tissue(he_img, [he.world_to_data(p + [0, 200.0])[-2:] for p in spots.data])
        assert placed > 0.8 and placed > shifted + 0.05, (s, placed, shifted)
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


def test_sample_data_opens_the_demo(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-spatialmix", "demo")
    cached = list((tmp_path / "spatialmix").glob("demo-*.zarr"))
    assert len(cached) == 1  # the prepared demo is cached for the next time
    names = [layer.name for layer in viewer.layers]
    assert len(names) == 16 and "P2_S1 · MSI TIC" in names
    pts = viewer.layers["P1_S1 · spots"]
    assert pts.size[0] == 55 and len(np.unique(pts.face_color, axis=0)) > 10  # coloured by total counts


def test_cached_demo_reopens_identically(tmp_path):
    from spatialmix.jobs import iter_demo_project
    from spatialmix.progress import run

    events = []
    first = run(iter_demo_project(cache_dir=tmp_path), progress=events.append)
    assert any(e.stage.startswith("read samples") for e in events)
    events.clear()
    second = run(iter_demo_project(cache_dir=tmp_path), progress=events.append)
    assert [e.stage for e in events] == ["open cached demo"]
    assert second.tables["msi"].obs_names.equals(first.tables["msi"].obs_names)
    np.testing.assert_allclose(second.tables["morphology"].X, first.tables["morphology"].X)
