"""Screenshot of a Visium HD sample in napari (docs/napari_visium_hd.png): a simulated Space Ranger 3 ``outs/``
(``spatialmix.simulate.visium_hd``, 8 um bins, more than ``POINTS_LIMIT`` in tissue) read with
``spatialmix.io.read_visium`` and shown by the Data dock, which rasterises the bins in a worker; an inset zoom shows
the square bins. Run under Xvfb: ``xvfb-run -a -s "-screen 0 1920x1200x24" python docs/visium_hd_screenshot.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

DOCS = Path(__file__).resolve().parent


def pump(seconds: float) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.01)


def main() -> None:
    from spatialmix.io import read_visium
    from spatialmix.napari._data_widget import DataWidget
    from spatialmix.napari._layers import POINTS_LIMIT
    from spatialmix.simulate.visium_hd import write_visium_hd

    tmp = Path(tempfile.mkdtemp(prefix="spatialmix-hd-shot-"))
    outs = write_visium_hd(tmp / "outs", n_rows=320, n_cols=320, n_genes=30, bin_sizes=(8, 16), seed=1)
    sdata = read_visium(outs, sample="HD1", bin_size_um=8)
    n = sdata.tables["rna"].n_obs
    assert n > POINTS_LIMIT, f"{n} bins: not above POINTS_LIMIT ({POINTS_LIMIT}), the screenshot would show Points"
    viewer = napari.Viewer(show=True, title="napari-spatialmix: Visium HD")
    viewer.window._qt_window.resize(1500, 950)
    dock = DataWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Data (SpatialMix)")
    dock.state.sdata = sdata
    dock._show_sample("HD1")
    t0 = time.perf_counter()
    while "HD1 · spots" not in viewer.layers:
        pump(0.05)
        if time.perf_counter() - t0 > 120:
            sys.exit("the spots layer never arrived")
    pump(1.0)
    spots = viewer.layers["HD1 · spots"]
    assert type(spots).__name__ == "Image", type(spots).__name__
    viewer.reset_view()
    pump(0.5)
    viewer.screenshot(DOCS / "napari_visium_hd.png", canvas_only=False)
    print("wrote", DOCS / "napari_visium_hd.png", f"({n:,} bins of 8 um)")
    # zoomed in: the bins are squares, each its own colour
    ys, xs = np.nonzero(np.isfinite(np.asarray(spots.data)))
    centre = spots.data_to_world((float(np.median(ys)), float(np.median(xs))))
    viewer.camera.center = tuple(centre[-2:])
    viewer.camera.zoom = viewer.camera.zoom * 12
    pump(0.5)
    viewer.screenshot(DOCS / "napari_visium_hd_zoom.png", canvas_only=True)
    print("wrote", DOCS / "napari_visium_hd_zoom.png")
    viewer.close()


if __name__ == "__main__":
    main()
