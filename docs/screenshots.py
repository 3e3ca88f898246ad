"""Render the napari window on a project and save screenshots into docs/ (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots.py demo_out/project.zarr
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari

from spatialmix.napari._layers import project_layers
from spatialmix.project import load_project

DOCS = Path(__file__).resolve().parent


def main(project: str) -> None:
    sdata = load_project(project)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    for data, meta, kind in project_layers(sdata):
        getattr(viewer, f"add_{kind}")(data, **meta)
    viewer.reset_view()
    viewer.screenshot(DOCS / "napari_project_all_samples.png", canvas_only=False)
    # zoom on the first sample: H&E, MSI TIC and spots overlaid
    for layer in viewer.layers:
        layer.visible = layer.name.startswith("P1_S1") and "Visium" not in layer.name
    spots = viewer.layers["P1_S1 · spots"]
    lo, hi = spots.data.min(axis=0), spots.data.max(axis=0)
    viewer.reset_view()
    viewer.camera.center = tuple((lo + hi) / 2)
    h, w = viewer.window._qt_viewer.canvas.size
    viewer.camera.zoom = 0.9 * min(h / (hi[0] - lo[0] + 200), w / (hi[1] - lo[1] + 200))
    viewer.layers.selection.active = spots
    viewer.screenshot(DOCS / "napari_P1_S1_overlay.png", canvas_only=False)
    viewer.layers["P1_S1 · MSI TIC"].visible = False
    from spatialmix.napari._layers import categorical_face_colors

    spots.face_color, _ = categorical_face_colors(spots.features["pathologist"],
                                                  list(sdata.tables["rna"].obs["pathologist"].cat.categories))
    viewer.screenshot(DOCS / "napari_P1_S1_annotation.png", canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo_out/project.zarr")
