"""Drive the five SpatialMix dock widgets on the bundled sample in a real napari window and save a screenshot of
each in use into docs/ (run under Xvfb; about 5 minutes on 2 cores, most of it training):

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/widget_screenshots.py

Every step is what a user does with the mouse: the same widget methods the buttons call.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")  # a toast over the canvas otherwise

import napari  # noqa: E402
import numpy as np
from qtpy.QtWidgets import QApplication

from spatialmix.napari._common import state_of
from spatialmix.napari._data_widget import DataWidget
from spatialmix.napari._explore_widget import ExploreWidget
from spatialmix.napari._integrate_widget import IntegrateWidget
from spatialmix.napari._register_widget import RegisterWidget
from spatialmix.napari._save_widget import SaveWidget
from spatialmix.pipeline import bundled_sample_data, read_samples_csv

DOCS = Path(__file__).resolve().parent


def pump(seconds: float = 0.3) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.01)


def wait(panel) -> None:
    while panel.running:
        pump(0.05)
    pump(0.5)


def show(viewer, docks, name: str) -> None:
    docks[name].show()
    docks[name].raise_()
    pump(0.5)


def zoom_on(viewer, layers, pad: float = 150.0) -> None:
    """Centre the camera on the extent of some layers."""
    ext = np.array([ly.extent.world for ly in layers])  # (n, 2, ndim)
    lo, hi = ext[:, 0, -2:].min(axis=0), ext[:, 1, -2:].max(axis=0)
    viewer.camera.center = tuple((lo + hi) / 2)
    h, w = viewer.window._qt_viewer.canvas.size
    viewer.camera.zoom = 0.95 * min(h / (hi[0] - lo[0] + pad), w / (hi[1] - lo[1] + pad))
    pump(0.5)


def shot(viewer, name: str) -> Path:
    path = DOCS / name
    viewer.screenshot(path, canvas_only=False)
    print("wrote", path)
    return path


def main(out_dir: str = "/tmp/spatialmix-widget-shots") -> None:
    viewer = napari.Viewer(show=True, title="napari-spatialmix")
    viewer.window._qt_window.resize(1900, 1150)
    widgets = {"Data": DataWidget(viewer), "Register": RegisterWidget(viewer),
               "Integrate": IntegrateWidget(viewer), "Explore": ExploreWidget(viewer), "Save": SaveWidget(viewer)}
    docks = {}
    for i, (name, w) in enumerate(widgets.items()):
        docks[name] = viewer.window.add_dock_widget(w, name=f"{name} (SpatialMix)", area="right", tabify=i > 0)
    state = state_of(viewer)

    # 1. Data: the four bundled samples, read one after the other
    data = widgets["Data"]
    show(viewer, docks, "Data")
    data.read_specs(read_samples_csv(bundled_sample_data()))
    wait(data.panel)
    viewer.reset_view()
    shot(viewer, "widget_data.png")

    # 2. Register: automatic H&E and MSI of every sample, then landmarks on P1_S1's MSI
    reg = widgets["Register"]
    show(viewer, docks, "Register")
    reg.auto_register_all()
    wait(reg.panel)
    reg.sample_combo.setCurrentText("P1_S1")
    reg.modality_combo.setCurrentText("MSI")
    reg.landmark_button.setChecked(True)
    moving, fixed = reg._landmark_layers
    from spatialmix.registration import apply_matrix, element_pixel_to_sample

    m = element_pixel_to_sample(state.sdata, "P1_S1", "msi")
    px = np.array([[8.0, 10.0], [30.0, 9.0], [28.0, 30.0], [9.0, 27.0]])  # MSI pixels near the section's corners
    rng = np.random.default_rng(0)
    um = apply_matrix(m, px) + rng.normal(0, 12.0, size=px.shape)  # clicks are never exact
    for p, q in zip(px, um):
        moving.add(p[::-1])
        fixed.add(q[::-1])
    for ly in viewer.layers:
        ly.visible = ly.name.startswith("P1_S1") and ly.name != "P1_S1 · spots"
    reg.opacity.setValue(55)
    zoom_on(viewer, [viewer.layers["P1_S1 · Visium image"]])
    shot(viewer, "widget_register.png")
    reg.landmark_button.setChecked(False)  # keep the automatic result
    reg.build_tables()
    wait(reg.panel)

    # 3. Integrate: MIMA with the default preset (automatic schedule), screenshot while it trains
    integ = widgets["Integrate"]
    show(viewer, docks, "Integrate")
    while not integ.warmed:
        pump(0.2)
    integ.preset.setCurrentText("fits the data (auto)")
    for ly in viewer.layers:
        ly.visible = not ly.name.endswith("Visium image")
    viewer.reset_view()
    integ.train()
    while integ.panel.running and len(integ.plot.records) < 120:
        pump(0.2)
    pump(1.0)
    shot(viewer, "widget_integrate.png")
    wait(integ.panel)

    # 4. Explore: RGB of the shared embedding, imputed vs measured m/z, predicted annotations
    ex = widgets["Explore"]
    show(viewer, docks, "Explore")
    for ly in viewer.layers:
        ly.visible = False
    ex.rgb_combo.setCurrentText("MIMA shared embedding")
    shown = ex.show_rgb()
    zoom_on(viewer, shown[:2])  # two samples of patient P1, large enough to see the spots
    shot(viewer, "widget_explore_rgb.png")

    for ly in viewer.layers:
        ly.visible = False
    ex.rgb_combo.setCurrentText("MIMA expert weights")
    shown = ex.show_rgb()
    zoom_on(viewer, shown[:2])
    shot(viewer, "widget_explore_expert_weights.png")

    for ly in viewer.layers:
        ly.visible = False
    ex.table_combo.setCurrentText("MSI")
    for m, box in ex.source_boxes.items():
        box.setChecked(m != "msi")
    ex.show_imputed()
    wait(ex.panel)
    shown = ex.last_shown
    viewer.reset_view()
    zoom_on(viewer, shown)
    shot(viewer, "widget_explore_imputed.png")

    for ly in viewer.layers:
        ly.visible = False
    # the dock's default representation: MIMA's corrected-feature PCA alone or beside measured features, chosen per
    # fold (docs/models.md, "Annotation representation")
    assert ex.rep_combo.currentText() == "mima_corrected_pca-with-measured", ex.rep_combo.currentText()
    ex.scheme_combo.setCurrentText("loocv")
    ex.predict()
    wait(ex.panel)
    shown = [ly for ly in viewer.layers if ly.visible]
    zoom_on(viewer, shown)
    shot(viewer, "widget_explore_annotations.png")

    # 5. Save / export
    save = widgets["Save"]
    show(viewer, docks, "Save")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save.project_path.setText(str(out / "project.zarr"))
    save.save(str(out / "project.zarr"))
    wait(save.panel)
    save.png_path.setText(str(out / "view.png"))
    save.export_view(str(out / "view.png"))
    save.csv_path.setText(str(out / "spots.csv"))
    save.export_csv(str(out / "spots.csv"))
    pump(0.5)
    shot(viewer, "widget_save.png")
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
