"""How long napari's event loop stalls when a Visium HD-sized sample is shown: spots as a Points layer beside
the image layer SpatialMix draws above ``POINTS_LIMIT`` spots (issue 16, item 4).

A synthetic sample of N square bins (8 um, a filled disk of tissue, total counts and a 12-class label per bin)
is built in memory in the project's conventions. For each way of drawing, in one process and one viewer
(``Viewer(show=True)``, run under Xvfb): the time to build the layer tuple (headless, what a worker does), then,
with a 5 ms QTimer ticking, the layer is added, drawn, and the camera zoomed in and out and panned 10 times
with a repaint each time; the longest gap between ticks is the stall a user feels. Both a numeric colouring
(total counts: the sample's spots layer) and a categorical one (the annotation layer) are measured, after
a baseline of napari's own cost of adding any image layer (a 2 x 2 image).

Run: ``xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/napari_many_spots.py [--spots 500000]
[--points-spots 100000] [--out benchmarks/results/napari_many_spots.json]`` (``--points-spots 0`` skips the
Points layer; it is measured at a smaller N by default because at 500,000 points one draw takes minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def hd_sample(n_spots: int, *, bin_um: float = 8.0, sample: str = "hd1", seed: int = 0):
    """A SpatialData sample of about ``n_spots`` square bins in a disk (8 um bins, Visium HD-like)."""
    import anndata as ad
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_spots * 4 / np.pi))) + 2
    r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    inside = ((r - side / 2) ** 2 + (c - side / 2) ** 2).ravel() <= (side / 2 - 1) ** 2
    r, c = r.ravel()[inside][:n_spots], c.ravel()[inside][:n_spots]
    n = len(r)
    xy = np.c_[(c + 0.5) * bin_um, (r + 0.5) * bin_um]
    counts = sp.random(n, 20, density=0.3, format="csr", dtype=np.float32, random_state=seed) * 10
    label = pd.Categorical([f"class {k}" for k in ((r // 150) * 3 + (c // 300)) % 12])
    obs = pd.DataFrame({"sample": pd.Categorical([sample] * n), "region": pd.Categorical([f"{sample}_spots"] * n),
                        "spot_id": np.arange(n), "pathologist": label},
                       index=[f"{sample}_b{i}" for i in range(n)])
    table = TableModel.parse(ad.AnnData(counts, obs=obs), region=f"{sample}_spots", region_key="region",
                             instance_key="spot_id")
    shapes = ShapesModel.parse(xy, geometry=0, radius=np.full(n, bin_um / 2),
                               index=pd.Index(np.arange(n), name="spot_id"), transformations={sample: Identity()})
    half = bin_um / 2
    meta = {"visium": {"platform": "visium_hd", "bin_size_um": bin_um, "spot_shape": "square",
                       "capture_area_um": [float(xy[:, 0].min() - half), float(xy[:, 1].min() - half),
                                           float(xy[:, 0].max() + half), float(xy[:, 1].max() + half)]}}
    return SpatialData(shapes={f"{sample}_spots": shapes}, tables={"rna": table},
                       attrs={"spatialmix": {"samples": {sample: meta}}}), n, float(rng.uniform())


def heartbeat(interval_ms: int = 5):
    """A started QTimer appending the time of each tick to the returned list (gaps = event-loop stalls)."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    QApplication.processEvents()
    return ticks, timer


def measure(viewer, make_layer, label: str) -> dict:
    """Build the layer tuple, then add and draw it with a 5 ms heartbeat; the longest gap is the stall."""
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    data, meta, kind = make_layer()
    build_s = time.perf_counter() - t0
    ticks, timer = heartbeat()
    t1 = time.perf_counter()
    layer = Layer.create(data, meta, kind)
    viewer.layers.append(layer)
    viewer.reset_view()
    canvas = viewer.window._qt_viewer.canvas
    for i in range(10):  # zoom in, out and pan, a repaint each time
        viewer.camera.zoom *= 2.0 if i % 2 == 0 else 0.5
        viewer.camera.center = (viewer.camera.center[0] + 50.0 * (-1) ** i, viewer.camera.center[1])
        canvas.native.repaint() if hasattr(canvas, "native") else None
        QApplication.processEvents()
    t_end = time.perf_counter()
    for _ in range(5):
        QApplication.processEvents()
        time.sleep(0.01)
    timer.stop()
    viewer.layers.remove(layer)
    QApplication.processEvents()
    gaps = np.diff([t1] + ticks + [t_end]) if ticks else np.array([t_end - t1])
    out = {"layer": label, "kind": kind, "build_s": round(build_s, 3), "show_and_navigate_s": round(t_end - t1, 3),
           "longest_stall_ms": round(float(gaps.max()) * 1000, 1), "ticks": len(ticks)}
    print(f"{label:<48} {kind:<6} build {build_s:7.2f} s   shown + 10 moves {t_end - t1:7.2f} s   "
          f"longest stall {gaps.max() * 1000:9.0f} ms", flush=True)
    return out


def measure_dock(viewer, dock, sample: str, label: str) -> dict:
    """Heartbeat while the Data dock adds the sample's layers, until they are in the viewer."""
    from qtpy.QtWidgets import QApplication

    ticks, timer = heartbeat()
    t1 = time.perf_counter()
    before = len(viewer.layers)
    worker = dock._show_sample(sample)
    while len(viewer.layers) == before and time.perf_counter() - t1 < 600:
        QApplication.processEvents()
        time.sleep(0.002)
    t_shown = time.perf_counter()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    timer.stop()
    gaps = np.diff([t1] + ticks) if ticks else np.array([t_shown - t1])
    out = {"layer": label, "kind": "image", "in_worker": worker is not None, "build_s": None,
           "show_and_navigate_s": round(t_shown - t1, 3), "longest_stall_ms": round(float(gaps.max()) * 1000, 1),
           "ticks": len(ticks)}
    print(f"{label:<48} {'image':<6} {'in a worker' if worker is not None else 'on the GUI thread':<17} "
          f"shown after {t_shown - t1:6.2f} s   longest stall {gaps.max() * 1000:9.0f} ms", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spots", type=int, default=500_000)
    ap.add_argument("--points-spots", type=int, default=100_000)
    ap.add_argument("--out", default=str(HERE / "results" / "napari_many_spots.json"))
    args = ap.parse_args(argv)

    import napari

    import spatialmix.napari._layers as L

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    rows = []
    # napari's own cost of adding any image layer (controls, events, first draw): a 2 x 2 image, twice (the
    # first layer of a process also pays one-time set-up, e.g. pint's unit registry, ~0.7 s)
    for i in range(2):
        row = measure(viewer, lambda: (np.zeros((2, 2), np.float32), {"name": f"tiny {i}"}, "image"),
                      f"baseline: a 2 x 2 image layer ({'first' if i == 0 else 'second'})")
        row.update(n_spots=0, drawn_as="baseline")
        rows.append(row)
    for n_wanted, force in ((args.spots, "image"), (args.points_spots, "points"), (args.points_spots, "image")):
        if n_wanted <= 0:
            continue
        sdata, n, _ = hd_sample(n_wanted)
        limit = 10**9 if force == "points" else 0
        L.POINTS_LIMIT = limit  # the module reads it at call time
        for what, make in (("spots, total counts", lambda: L.spots_layer(sdata, "hd1")),
                           ("spots, pathologist classes", lambda: L.category_spots_layer(sdata, "hd1",
                                                                                          "pathologist"))):
            row = measure(viewer, make, f"{n:,} bins, {what}")
            row.update(n_spots=n, drawn_as=force)
            rows.append(row)
    # what a user does: the Data dock shows the sample (its layers are built in a worker above POINTS_LIMIT)
    from spatialmix.napari._data_widget import DataWidget

    L.POINTS_LIMIT = 50_000
    sdata, n, _ = hd_sample(args.spots)
    dock = DataWidget(viewer)
    dock.state.sdata = sdata
    row = measure_dock(viewer, dock, "hd1", f"{n:,} bins, Data dock shows the sample")
    row.update(n_spots=n, drawn_as="image, built in a worker")
    rows.append(row)
    viewer.close()
    result = {"benchmark": "napari_many_spots", "points_limit": 50_000, "rows": rows,
              "python": sys.version.split()[0], "napari": napari.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
