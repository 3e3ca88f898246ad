"""The Integrate dock's parameter pages, rendered in a real napari window on the bundled project (run under
Xvfb after ``make demo``, which writes ``demo_out/project.zarr``; ~1 min):

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/parameter_screenshots.py [PROJECT]

Writes ``docs/widget_integrate_scmodal.png`` (the window: scMODAL's page with the drop-down of ``hidden_layer``
open; the whole screen is grabbed, so the drop-down, a separate popup window, is in the picture) and
``docs/widget_integrate_modamix.png`` (the dock: MoDAmix's page with the labelled source samples ticked). It
prints every model's rows with their widgets, so a row that lost its widget shows up in the output.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")

import napari  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtWidgets import QApplication, QComboBox  # noqa: E402

from spatialmix.napari._common import state_of  # noqa: E402
from spatialmix.napari._integrate_widget import IntegrateWidget  # noqa: E402
from spatialmix.project import load_project  # noqa: E402

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))
from widget_screenshots import pump  # noqa: E402  (the same event-loop pump)


def main(project: str = "demo_out/project.zarr") -> None:
    viewer = napari.Viewer(show=True, title="napari-spatialmix: scMODAL parameters")
    viewer.window._qt_window.resize(1600, 1200)
    viewer.window._qt_window.move(0, 0)
    integ = IntegrateWidget(viewer)
    viewer.window.add_dock_widget(integ, name="Integrate")
    while not integ.warmed:  # the dock's warm-up imports run in a worker; closing under it aborts Qt
        pump(0.2)
    state = state_of(viewer)
    state.sdata = load_project(project)
    state.changed.emit("project")
    pump(0.5)
    for name, page in integ.pages.items():
        print(name + ":", ", ".join(f"{k}={type(w).__name__}" for k, w in page.widgets.items()))
    integ.model_combo.setCurrentIndex(integ.model_combo.findData("scmodal"))
    pump(0.5)
    combo = integ.pages["scmodal"].widgets["hidden_layer"]
    assert isinstance(combo, QComboBox), type(combo)
    combo.showPopup()
    pump(0.8)
    path = DOCS / "widget_integrate_scmodal.png"
    QApplication.primaryScreen().grabWindow(0, 0, 0, 1600, 1200).save(str(path))
    print("wrote", path, "| hidden_layer choices:", [combo.itemText(i) for i in range(combo.count())])
    combo.hidePopup()

    integ.model_combo.setCurrentIndex(integ.model_combo.findData("modamix"))
    pump(0.5)
    ticked = [integ.sources.item(i).text() for i in range(integ.sources.count())
              if integ.sources.item(i).checkState() == Qt.Checked]
    path = DOCS / "widget_integrate_modamix.png"
    integ.grab().save(str(path))
    print("wrote", path, "| labelled sources ticked:", ticked)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
