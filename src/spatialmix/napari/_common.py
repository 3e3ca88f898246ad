"""What every dock widget shares: the per-viewer project state, running headless generators in workers with a
progress bar, error notifications, and adding layers so that recomputing replaces rather than duplicates.

Nothing here computes anything: the work is always one generator of the headless API (``iter_*``), run by
napari's ``create_worker`` in a thread; its :class:`~spatialmix.progress.Progress` events drive the bar.
"""

from __future__ import annotations

import gc
import time
import traceback
import weakref
from collections.abc import Callable

import numpy as np
from psygnal import Signal
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from spatialmix.errors import SpatialMixError
from spatialmix.napari._layers import SEP, sample_offsets
from spatialmix.progress import Progress

LAYOUTS = ("side by side", "one at a time")


class ProjectState:
    """The project open in one viewer, shared by the SpatialMix widgets of that viewer.

    ``changed`` is emitted with what changed: ``"project"`` (a new SpatialData), ``"registration"``,
    ``"tables"``, ``"model"``, ``"results"``, ``"predictions"``, ``"layout"``.
    """

    changed = Signal(str)

    def __init__(self) -> None:
        self.sdata = None
        self.specs: list = []
        self.model = None
        self.model_key = "mima"
        self.layout = LAYOUTS[0]
        self.current_sample: str | None = None
        self.busy: set[str] = set()

    @property
    def samples(self) -> list[str]:
        if self.sdata is None or "rna" not in self.sdata.tables:
            return []
        from spatialmix.pipeline import _samples_in

        return _samples_in(self.sdata)

    def offsets(self) -> dict[str, tuple[float, float]]:
        """(dx, dy) um placing each sample in the viewer for the current layout."""
        samples = self.samples
        if not samples:
            return {}
        layout = "side_by_side" if self.layout == LAYOUTS[0] else "overlay"
        return sample_offsets(self.sdata, samples, layout=layout)

    def offset(self, sample: str) -> tuple[float, float]:
        return self.offsets().get(sample, (0.0, 0.0))

    def row_shift(self, sample: str, row: int) -> tuple[float, float]:
        """Offset of a comparison row under the sample (row 1: imputed or predicted, row 2: agreement)."""
        from spatialmix.napari._layers import sample_extent

        dx, dy = self.offset(sample)
        if row == 0:
            return dx, dy
        _, ymin, _, ymax = sample_extent(self.sdata, sample)
        return dx, dy + row * (ymax - ymin + 300.0)

    def visible(self, sample: str) -> bool:
        return self.layout == LAYOUTS[0] or sample == (self.current_sample or (self.samples or [None])[0])


_STATES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def state_of(viewer) -> ProjectState:
    """The project state of ``viewer`` (created on first use; every SpatialMix widget of the viewer shares it)."""
    if viewer not in _STATES:
        _STATES[viewer] = ProjectState()
    return _STATES[viewer]


def notify_error(err: BaseException, what: str = "") -> None:
    """Show an error as a napari notification: our own errors by their message (it says what to do), others
    with their type and the traceback in the console."""
    from napari.utils.notifications import show_error

    prefix = f"{what}: " if what else ""
    if isinstance(err, SpatialMixError):
        show_error(f"{prefix}{err}")
    else:
        traceback.print_exception(type(err), err, err.__traceback__)
        show_error(f"{prefix}{type(err).__name__}: {err}")


def add_or_replace(viewer, layer_data: tuple, *, row: int | None = None):
    """Add a layer tuple; a layer of the same name is replaced in place (same position in the list)."""
    from napari.layers import Layer

    data, meta, kind = layer_data
    meta = dict(meta)
    layer = Layer.create(data, meta, kind)
    name = meta.get("name")
    if name in viewer.layers:
        old = viewer.layers[name]
        index = viewer.layers.index(old)
        viewer.layers.remove(old)
        viewer.layers.insert(index, layer)
    else:
        viewer.layers.append(layer)
    if meta.get("metadata", {}).get("spatialmix", {}).get("colorbar"):
        layer.colorbar.visible = True
    return layer


def add_layers_built_off_gui(viewer, build: Callable[[], list], *, in_worker: bool,
                             on_added: Callable[[list], None] | None = None):
    """Add the layer tuples ``build()`` returns. With ``in_worker`` (a Visium HD sample: rasterising 10^5-10^6
    bins takes seconds) ``build`` runs in a worker thread and the layers are added when it returns, so the
    event loop never waits for it; returns the worker (``None`` when built here)."""
    if not in_worker:
        layers = [add_or_replace(viewer, data) for data in build()]
        if on_added is not None:
            on_added(layers)
        return None
    from napari.qt.threading import create_worker

    worker = create_worker(build, _start_thread=False, _ignore_errors=True)

    def returned(tuples):
        layers = [add_or_replace(viewer, data) for data in tuples]
        if on_added is not None:
            on_added(layers)

    worker.returned.connect(returned)
    worker.errored.connect(lambda err: notify_error(err, "draw the spots"))
    _RUNNING.add(worker)  # keep a reference until it ends (superqt workers are not owned by a widget)
    worker.finished.connect(lambda: _RUNNING.discard(worker))
    worker.start()
    return worker


_RUNNING: set = set()


def spatialmix_layers(viewer, sample: str | None = None) -> list:
    return [ly for ly in viewer.layers if "spatialmix" in ly.metadata
            and (sample is None or ly.metadata["spatialmix"].get("sample") == sample)]


def shift_layer(layer, dx: float, dy: float) -> None:
    """Move a layer by (dx, dy) um in the viewer (composes with its affine)."""
    if dx == 0 and dy == 0:
        return
    m = np.array(layer.affine.affine_matrix, dtype=float)
    shift = np.eye(m.shape[0])
    shift[-3, -1], shift[-2, -1] = dy, dx
    layer.affine = shift @ m


def layer_name(sample: str, *parts: str) -> str:
    """``<sample> · part · part`` (the naming every SpatialMix layer follows)."""
    return SEP.join([sample, *[p for p in parts if p]])


_GC_FROZEN_JOBS = 0


def _freeze_gc() -> None:
    """Exclude the objects that exist when a job starts from Python's full garbage collections until every
    running job has ended (:func:`_unfreeze_gc`).

    A full (generation-2) collection scans every tracked object while holding the GIL, whichever thread starts
    it, so the viewer freezes for its length: with napari, the demo project and the models loaded (~820,000
    objects) one took 400 ms, and one came during a 3-epoch training run, at 505 ms. Frozen, the objects of
    napari, Qt, torch and the open project are not scanned; the collections during the job scan only what the
    job made. Nothing is leaked: garbage among the frozen objects is collected after the job (``gc.unfreeze``
    returns them to the oldest generation). ``gc.freeze`` and ``gc.unfreeze`` only move list heads (O(1)).
    """
    global _GC_FROZEN_JOBS
    if _GC_FROZEN_JOBS == 0:
        gc.freeze()
    _GC_FROZEN_JOBS += 1


def _unfreeze_gc() -> None:
    global _GC_FROZEN_JOBS
    _GC_FROZEN_JOBS = max(0, _GC_FROZEN_JOBS - 1)
    if _GC_FROZEN_JOBS == 0:
        gc.unfreeze()


class StatusLabel(QLabel):
    """A status line of a fixed height (``lines`` wrapped lines) and the width the dock gives it: the dock does not
    jump in size as messages change from one line to two, and a long path is clipped rather than widening the
    dock; the full text is the tooltip."""

    def __init__(self, text: str = "", lines: int = 3, parent=None) -> None:
        super().__init__("", parent)
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        m = self.contentsMargins()
        self.setFixedHeight(lines * self.fontMetrics().lineSpacing() + m.top() + m.bottom() + 2)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setText(text)
        self.setToolTip(text)


class WorkerPanel(QWidget):
    """A progress bar, a status line and a Stop button that run one headless generator at a time.

    Progress events are shown at most every :attr:`UPDATE_S` seconds (the latest one; a burst's last event
    always shows): each update makes napari's main window lay out its docks again (~30 ms measured under Xvfb),
    and the results writer yields six steps within a few milliseconds, which queued up into a 180-230 ms
    stall of the event loop when each was drawn.
    """

    UPDATE_S = 0.1

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.status = StatusLabel("")
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.stop_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.status)
        self.worker = None
        self._on_stop: Callable[[], None] | None = None
        self._started = 0.0
        self._pending: Progress | None = None
        self._last_shown = 0.0
        self._update_timer = QTimer(self)
        self._update_timer.setSingleShot(True)
        self._update_timer.timeout.connect(self._show_pending)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, gen_func: Callable, *args, on_done: Callable | None = None, on_event: Callable | None = None,
              on_error: Callable | None = None, what: str = "", on_stop: Callable[[], None] | None = None,
              **kwargs):
        """Run ``gen_func(*args, **kwargs)`` (a generator of Progress events returning a result) in a worker.

        ``on_event`` receives every yielded event, ``on_done`` the return value, ``on_error`` the exception
        (after the notification). ``on_stop`` replaces quitting the worker when Stop is pressed (training
        stops itself at the end of the epoch and still returns its model).
        """
        from napari.qt.threading import create_worker

        if self.worker is not None:
            from napari.utils.notifications import show_warning

            show_warning(f"{what or 'a job'} waits: {self.status.text() or 'another job'} is still running")
            return None
        # errors are ours to show (notification + on_error); without _ignore_errors superqt re-raises them in the
        # event loop as well
        worker = create_worker(gen_func, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        self.worker = worker
        _freeze_gc()  # until _finish: a job's whole life, while self.worker is set
        self._on_stop = on_stop
        self._started = time.perf_counter()
        self.bar.setRange(0, 0)  # busy until the first event
        self.status.setText(f"{what}…" if what else "working…")
        self.stop_button.setEnabled(True)

        def yielded(event):
            if isinstance(event, Progress):
                self.show_progress(event)
            if on_event is not None:
                on_event(event)

        def returned(value):
            self._finish(f"{what} done in {time.perf_counter() - self._started:.1f} s" if what else "done")
            if on_done is not None:
                try:
                    on_done(value)
                except Exception as err:  # noqa: BLE001 - any failure shows, the widget stays usable
                    notify_error(err, what)

        def errored(err):
            self._finish(f"{what} failed: {err}" if what else f"failed: {err}")
            notify_error(err, what)
            if on_error is not None:
                on_error(err)

        def aborted():
            self._finish(f"{what} stopped" if what else "stopped")

        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.aborted.connect(aborted)
        worker.start()
        return worker

    def show_progress(self, event: Progress) -> None:
        """Show ``event`` now, or (within :attr:`UPDATE_S` of the last update) as soon as that time is over,
        unless a later event replaces it first."""
        self._pending = event
        if self._update_timer.isActive():
            return
        wait_s = self.UPDATE_S - (time.perf_counter() - self._last_shown)
        if wait_s > 0:
            self._update_timer.start(max(1, int(wait_s * 1000)))
        else:
            self._show_pending()

    def _show_pending(self) -> None:
        event, self._pending = self._pending, None
        if event is None:
            return
        self._last_shown = time.perf_counter()
        frac = event.fraction
        if frac is None:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(round(1000 * frac)))
        total = f" {event.step}/{event.total}" if event.total else ""
        msg = f": {event.message}" if event.message else ""
        self.status.setText(f"{event.stage}{total}{msg}")

    def stop(self) -> None:
        if self.worker is None:
            return
        self.stop_button.setEnabled(False)
        self._update_timer.stop()
        self._show_pending()  # the latest event first, then "(stopping…)" after it
        self.status.setText(self.status.text() + " (stopping…)")
        if self._on_stop is not None:
            self._on_stop()
        else:
            self.worker.quit()

    def _finish(self, text: str) -> None:
        if self.worker is not None:
            _unfreeze_gc()
        self._update_timer.stop()
        self._pending = None
        self.worker = None
        self._on_stop = None
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        self.stop_button.setEnabled(False)
        self.status.setText(text)


class PathEdit(QWidget):
    """A line edit with a Browse button (file, folder or save path)."""

    def __init__(self, placeholder: str = "", *, mode: str = "file", filter: str = "", parent=None) -> None:
        super().__init__(parent)
        self.mode, self.filter = mode, filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        button = QPushButton("…")
        button.setFixedWidth(28)
        button.setToolTip("Browse")
        button.clicked.connect(self._browse)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(button)

    def _browse(self) -> None:
        if self.mode == "dir":
            path = QFileDialog.getExistingDirectory(self, "Choose a folder")
        elif self.mode == "save":
            path, _ = QFileDialog.getSaveFileName(self, "Save as", filter=self.filter)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a file", filter=self.filter)
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming
        self.edit.setText(str(text))


def fill_combo(combo, items: list[str], preferred: str | None = None) -> None:
    """Refill a combo box without emitting change signals: keep the user's choice when it is still offered
    (an empty or "(none)" choice does not count), else pick ``preferred`` when offered."""
    current = combo.currentText()
    items = list(dict.fromkeys(items))
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(items)
    keep = current if current in items and current not in ("", "(none)") else None
    for choice in (keep, preferred):
        if choice in items:
            combo.setCurrentText(choice)
            break
    combo.blockSignals(False)


def section(title: str) -> QLabel:
    label = QLabel(f"<b>{title}</b>")
    label.setContentsMargins(0, 8, 0, 0)
    return label
