"""The Integrate dock's parameter page of each model, rendered in a real napari window (run under Xvfb, ~30 s):

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/parameter_screenshots.py

Writes ``docs/widget_integrate_scmodal.png``: scMODAL's page with the drop-down of ``hidden_layer`` open (a
parameter with declared choices is a drop-down of exactly those), and prints every model's rows with their
widgets, so a row that lost its widget or its default shows up in the output. The whole screen is grabbed, so
the open drop-down (a separate popup window) is in the picture.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")

import napari  # noqa: E402
from qtpy.QtWidgets import QApplication, QComboBox  # noqa: E402

from spatialmix.napari._integrate_widget import IntegrateWidget  # noqa: E402

DOCS = Path(__file__).resolve().parent


def pump(seconds: float = 0.3) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.01)


def main() -> None:
    viewer = napari.Viewer(show=True, title="napari-spatialmix: scMODAL parameters")
    viewer.window._qt_window.resize(1600, 1200)
    viewer.window._qt_window.move(0, 0)
    integ = IntegrateWidget(viewer)
    viewer.window.add_dock_widget(integ, name="Integrate")
    while not integ.warmed:  # the dock's warm-up imports run in a worker; closing under it aborts Qt
        pump(0.2)
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
    viewer.close()


if __name__ == "__main__":
    main()
