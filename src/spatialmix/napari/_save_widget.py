"""Save / export: the project zarr with every output (atomic: an existing project is replaced only once the new
one is complete), the current view or one layer as PNG, and the spot tables or the annotation scores as CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from spatialmix.napari._common import PathEdit, WorkerPanel, notify_error, section, state_of


def iter_save(sdata, path):
    from spatialmix.progress import Progress
    from spatialmix.project import save_project

    yield Progress("save project", 0, 1, str(path))
    out = save_project(sdata, path, overwrite=True)
    yield Progress("save project", 1, 1, str(out))
    return out


class SaveWidget(QWidget):
    """Save the project, export PNGs and CSVs."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)
        self.project_path = PathEdit("project .zarr", mode="save", filter="SpatialData (*.zarr)")
        self.save_button = QPushButton("Save project")
        self.save_button.clicked.connect(lambda: self.save(self.project_path.text()))
        self.png_path = PathEdit("figure .png", mode="save", filter="PNG (*.png)")
        self.view_button = QPushButton("Export view")
        self.view_button.clicked.connect(lambda: self.export_view(self.png_path.text()))
        self.layer_button = QPushButton("Export selected layer")
        self.layer_button.clicked.connect(lambda: self.export_layer(self.png_path.text()))
        self.csv_path = PathEdit("table .csv", mode="save", filter="CSV (*.csv)")
        self.csv_what = QComboBox()
        self.csv_what.addItems(["spot table (RNA obs + RGB)", "annotation scores per class"])
        self.csv_button = QPushButton("Export CSV")
        self.csv_button.clicked.connect(lambda: self.export_csv(self.csv_path.text()))
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.panel = WorkerPanel()

        lay = QVBoxLayout(self)
        lay.addWidget(section("Project (.zarr, every output)"))
        row = QHBoxLayout()
        row.addWidget(self.project_path, 1)
        row.addWidget(self.save_button)
        lay.addLayout(row)
        lay.addWidget(self.panel)
        lay.addWidget(section("PNG"))
        lay.addWidget(self.png_path)
        row = QHBoxLayout()
        row.addWidget(self.view_button)
        row.addWidget(self.layer_button)
        lay.addLayout(row)
        lay.addWidget(section("CSV"))
        lay.addWidget(self.csv_path)
        row = QHBoxLayout()
        row.addWidget(self.csv_what, 1)
        row.addWidget(self.csv_button)
        lay.addLayout(row)
        lay.addWidget(self.result)
        lay.addStretch(1)

    def _need(self, path: str, what: str) -> bool:
        from spatialmix.errors import ParameterError, ProjectError

        if self.state.sdata is None:
            notify_error(ProjectError("nothing to save: add samples or open a project first"))
            return False
        if not path:
            notify_error(ParameterError(f"choose where to write the {what}"))
            return False
        return True

    def save(self, path: str):
        if not self._need(path, "project"):
            return None
        return self.panel.start(iter_save, self.state.sdata, path,
                                on_done=lambda out: self.result.setText(f"saved {out}"), what="save project")

    def export_view(self, path: str):
        if not self._need(path, "PNG"):
            return None
        try:
            out = _png(path)
            self.viewer.screenshot(str(out), canvas_only=True)  # what the user sees, at screen resolution
        except Exception as err:  # noqa: BLE001
            notify_error(err, "export view")
            return None
        self.result.setText(f"wrote {out}")
        return out

    def export_layer(self, path: str):
        """Export only the selected layer (the others hidden meanwhile), the view fitted to its extent.

        (napari's ``export_figure`` renders one pixel per data unit: 200 megapixels for micrometre layers.)"""
        from spatialmix.errors import ParameterError

        if not self._need(path, "PNG"):
            return None
        layer = self.viewer.layers.selection.active
        if layer is None:
            notify_error(ParameterError("select the layer to export in the layer list"))
            return None
        shown = {ly: ly.visible for ly in self.viewer.layers}
        camera = (self.viewer.camera.center, self.viewer.camera.zoom)
        try:
            for ly in self.viewer.layers:
                ly.visible = ly is layer
            lo, hi = (np.asarray(b, float)[-2:] for b in layer.extent.world)
            self.viewer.camera.center = tuple((lo + hi) / 2)
            h, w = self.viewer.window._qt_viewer.canvas.size
            self.viewer.camera.zoom = 0.95 * min(h / max(hi[0] - lo[0], 1e-9), w / max(hi[1] - lo[1], 1e-9))
            out = _png(path)
            self.viewer.screenshot(str(out), canvas_only=True)
        except Exception as err:  # noqa: BLE001
            notify_error(err, "export layer")
            return None
        finally:
            for ly, vis in shown.items():
                ly.visible = vis
            self.viewer.camera.center, self.viewer.camera.zoom = camera
        self.result.setText(f"wrote {out} ({layer.name})")
        return out

    def export_csv(self, path: str):
        from spatialmix.evaluate.annotations import prediction_scores
        from spatialmix.results import spot_table

        if not self._need(path, "CSV"):
            return None
        try:
            df = spot_table(self.state.sdata) if self.csv_what.currentIndex() == 0 else \
                prediction_scores(self.state.sdata)
            out = Path(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(out, index=self.csv_what.currentIndex() == 0)
        except Exception as err:  # noqa: BLE001
            notify_error(err, "export CSV")
            return None
        self.result.setText(f"wrote {out}")
        return out


def _png(path: str) -> Path:
    p = Path(path)
    if p.suffix.lower() != ".png":
        p = p.with_name(p.name + ".png")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
