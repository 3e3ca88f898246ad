"""Integrate: choose a model, its modalities, columns and hyperparameters (the paper's defaults); train in a
worker with a live loss plot per term, epoch time and time left; stop keeping the last completed epoch;
save / load the trained model.

Training is one headless call, :func:`spatialmix.integrate.iter_fit` (tables if needed, train, write results).

Why one file of about 660 lines: it is one dock widget. :class:`IntegrateWidget` (~350 lines) and two parts that
exist only for it: :class:`ParamPage`, the form generated from the chosen model's declaration, and
:class:`LossPlot`, the curve its training events feed; the training itself is the headless ``iter_fit``.
"""

from __future__ import annotations

import threading

import pandas as pd
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)
from qtpy.QtCore import Qt

from spatialmix.napari._common import PathEdit, WorkerPanel, fill_combo, notify_error, section, state_of

#: What the Preset box fills in: the paper's defaults, or the settings the bundled demo was measured with.
PRESETS = {
    "fits the data (auto)": {"epochs": "auto", "lr": 1e-3},
    "paper defaults": {"epochs": 50, "lr": 1e-4},
    "bundled demo (200 epochs, lr 1e-3)": {"epochs": 200, "lr": 1e-3},
}
MODALITY_NAMES = {"rna": "RNA (Visium)", "msi": "MSI", "morphology": "H&E features"}
#: Display names of the models in the Model box (registry keys otherwise)
MODEL_LABELS = {"mima": "MIMA", "modamix": "MoDAmix", "calibration": "Multi-batch calibration", "scmodal": "scMODAL"}
#: MIMA's form rows (the others get one row per scalar default, generated from their DEFAULTS)
MIMA_ROWS = {"n_latent": "Latent size", "n_hidden": "Hidden units", "beta": "KL weight (beta)",
             "adversarial": "Adversarial weight", "dropout": "Dropout", "latent_dropout": "Latent dropout"}


#: parameters with their own form rows (sample pickers) or set from the training options
SPECIAL_PARAMS = {"seed", "link_reference", "source_samples", "target_samples", "source_batches"}


def model_defaults(name: str) -> dict:
    """The parameter defaults of model ``name`` (its ``defaults``)."""
    from spatialmix.models import MODELS

    return dict(MODELS[name].defaults)


def model_declaration(name: str):
    """The declaration of model ``name``'s parameters (``spatialmix.params``): ranges, choices, meanings."""
    from spatialmix.models import MODELS

    return MODELS[name].Params


class ParamPage(QWidget):
    """One form row per scalar parameter of a model, generated from its declaration (``Model.Params``): the
    spin boxes hold the declared range, each tooltip is the declared meaning and allowed values, and
    :meth:`values` checks the form against the declaration before anything trains."""

    def __init__(self, name: str, rows: dict[str, str] | None = None) -> None:
        from spatialmix.params import field_info

        super().__init__()
        self.name = name
        self.widgets: dict[str, QWidget] = {}
        decl = model_declaration(name)
        defaults = model_defaults(name)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        keys = list(rows) if rows else [k for k, v in defaults.items() if k not in SPECIAL_PARAMS and (
            isinstance(v, (bool, int, float, str)) or _int_list(v))]
        self.lists: set[str] = set()
        for key in keys:
            info = field_info(decl, key)
            value = defaults[key]
            if isinstance(value, bool):
                w = QCheckBox()
                w.setChecked(value)
            elif isinstance(value, int):  # Qt's int range caps large defaults (max_parameters): they keep their value
                lo = int(info.low) if info.low is not None else 0
                w = _spin(lo, min(int(info.high), 2**31 - 1) if info.high is not None else 2**31 - 1, value)
            elif isinstance(value, float):
                decimals = 4 if 0 < abs(value) < 0.1 else 3
                lo = float(info.low) if info.low is not None else 0.0
                hi = float(info.high) if info.high is not None else 1e4
                if info.high_open:  # [0, 1): the largest value the box can show below 1
                    hi -= 10 ** -decimals
                if info.low_open:  # (0, 1]: the smallest value the box can show above 0
                    lo += 10 ** -decimals
                w = _dspin(lo, hi, value, decimals)
            elif info.kind == "choice":  # a declared set of values (scMODAL's hidden_layer): pick one, no typing
                w = QComboBox()
                for choice in info.choices:
                    w.addItem(str(choice), choice)
                w.setCurrentIndex(list(info.choices).index(value))
            elif _int_list(value):  # e.g. MoDAmix's stage_epochs, hidden layer sizes: "30, 30, 30, 30"
                w = QLineEdit(", ".join(str(v) for v in value))
                self.lists.add(key)
            else:
                w = QLineEdit(str(value))
            w.setToolTip(f"{key}: {info.doc} ({decl.describe(key)}; default {value!r})")
            self.widgets[key] = w
            form.addRow((rows or {}).get(key) or key.replace("_", " "), w)

    def values(self) -> dict:
        """The form's values, checked against the model's declaration (a ``ParameterError`` naming the row)."""
        from spatialmix.errors import ParameterError

        out = {}
        for key, w in self.widgets.items():
            if isinstance(w, QCheckBox):
                out[key] = w.isChecked()
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                out[key] = w.value()
            elif isinstance(w, QComboBox):
                out[key] = w.currentData()
            elif key in self.lists:
                try:
                    out[key] = [int(v) for v in w.text().replace(";", ",").split(",") if v.strip()]
                except ValueError:
                    raise ParameterError(f"{key} must be whole numbers separated by commas, e.g. "
                                         f"{', '.join(map(str, model_defaults(self.name)[key]))}; got "
                                         f"{w.text()!r}") from None
            else:
                out[key] = w.text().strip()
        return model_declaration(self.name).check(out, owner=f"{MODEL_LABELS.get(self.name, self.name)} parameter")


def _int_list(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


LINE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
               "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"]


class LossPlot(QWidget):
    """The live training curve in the dock: every loss term against epochs on a log scale (training loss thick,
    validation loss dashed), with a legend.

    Painted with QPainter: it repaints on the event loop at every epoch, and a matplotlib draw of the same plot
    took 100-170 ms on 2 cores (an event-loop stall each epoch); this takes about a millisecond. Rendering
    matplotlib in a worker instead deadlocked under pytest-qt (matplotlib's text layout is not thread-safe).
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(240)
        self.records: list[dict] = []
        self.labels: list[str] = []

    def clear(self) -> None:
        self.records, self.labels = [], []
        self.update()

    def add_epoch(self, info: dict) -> None:
        rec = {"epoch": info["epoch"], "loss": info["loss"], **info.get("terms", {})}
        if info.get("val_loss") is not None:
            rec["val_loss"] = info["val_loss"]
        self.records.append(rec)
        self.labels = [k for k in dict.fromkeys(k for r in self.records for k in r) if k != "epoch"]
        self.update()

    def series(self) -> dict[str, tuple]:
        """{label: (epochs, values)} of the positive values of every term (log scale)."""
        import numpy as np

        out = {}
        for k in self.labels:
            pts = [(r["epoch"], r[k]) for r in self.records if k in r and r[k] is not None and r[k] > 0]
            if pts:
                e, v = np.array(pts, dtype=float).T
                out[k] = (e, v)
        return out

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt naming
        import math

        from qtpy.QtCore import QPointF, QRectF
        from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF

        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        w, h = self.width(), self.height()
        painter.fillRect(0, 0, w, h, QColor("white"))
        font = QFont()
        font.setPointSize(7)
        painter.setFont(font)
        left, right, top, bottom = 46, 8, 8, 30
        legend_h = 12 * math.ceil(len(self.labels) / 3) if self.labels else 0
        plot = QRectF(left, top, max(10, w - left - right), max(10, h - top - bottom - legend_h))
        painter.setPen(QPen(QColor("#444444"), 1))
        painter.drawRect(plot)
        series = self.series()
        if not series:
            painter.drawText(plot, 0x0084, "the loss per term appears here while training")  # AlignCenter
            painter.end()
            return
        e_max = max(float(e.max()) for e, _ in series.values())
        lo = min(float(v.min()) for _, v in series.values())
        hi = max(float(v.max()) for _, v in series.values())
        y0, y1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        y1 = y1 if y1 > y0 else y0 + 1
        x0, x1 = 1.0, max(e_max, 2.0)

        def to_px(e, v):
            x = plot.left() + (e - x0) / (x1 - x0) * plot.width()
            y = plot.bottom() - (math.log10(v) - y0) / (y1 - y0) * plot.height()
            return QPointF(x, y)

        painter.setPen(QPen(QColor("#888888"), 1))
        for d in range(y0, y1 + 1):  # decades
            y = plot.bottom() - (d - y0) / (y1 - y0) * plot.height()
            painter.drawLine(QPointF(plot.left() - 3, y), QPointF(plot.left(), y))
            painter.drawText(QRectF(0, y - 7, left - 5, 14), 0x0082, f"1e{d}")  # AlignRight | AlignVCenter
        for frac in (0.0, 0.5, 1.0):
            e = x0 + frac * (x1 - x0)
            x = plot.left() + frac * plot.width()
            painter.drawText(QRectF(x - 20, plot.bottom() + 2, 40, 12), 0x0084, f"{e:.0f}")
        painter.drawText(QRectF(plot.left(), plot.bottom() + 12, plot.width(), 12), 0x0084, "epoch")
        for i, (label, (e, v)) in enumerate(series.items()):
            color = QColor("black") if label in ("loss", "val_loss") else QColor(LINE_COLORS[i % len(LINE_COLORS)])
            pen = QPen(color, 2.2 if label == "loss" else 1.8 if label == "val_loss" else 1.0)
            if label == "val_loss":
                pen.setStyle(2)  # Qt.DashLine
            painter.setPen(pen)
            pts = [to_px(a, b) for a, b in zip(e, v)]
            if len(pts) == 1:
                painter.drawEllipse(pts[0], 2, 2)
            else:
                painter.drawPolyline(QPolygonF(pts))
        # legend: three columns under the axis labels
        col_w = (w - left) / 3
        for i, label in enumerate(series):
            r, c = divmod(i, 3)
            x, y = left + c * col_w, plot.bottom() + 26 + 12 * r
            color = QColor("black") if label in ("loss", "val_loss") else QColor(LINE_COLORS[i % len(LINE_COLORS)])
            pen = QPen(color, 2)
            if label == "val_loss":
                pen.setStyle(2)
            painter.setPen(pen)
            painter.drawLine(QPointF(x, y + 6), QPointF(x + 14, y + 6))
            painter.setPen(QPen(QColor("#222222"), 1))
            painter.drawText(QRectF(x + 17, y, col_w - 18, 12), 0x0081, label)  # AlignLeft | AlignVCenter
        painter.end()


class IntegrateWidget(QWidget):
    """Train a multi-omics integration model on the open project and write its outputs into it."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)
        self.stop_event: threading.Event | None = None
        self._last_epoch_event: dict | None = None

        from spatialmix.models import MODELS

        self.model_combo = QComboBox()
        for m in MODELS:
            self.model_combo.addItem(MODEL_LABELS.get(m, m), m)
        self.modality_boxes = {m: QCheckBox(label.replace("&", "&&")) for m, label in MODALITY_NAMES.items()}
        mod_row = QHBoxLayout()
        for box in self.modality_boxes.values():
            box.setChecked(True)
            mod_row.addWidget(box)
        self.batch_combo = QComboBox()
        self.annotation_combo = QComboBox()
        self.key_edit = QLineEdit("mima")
        self.key_edit.setToolTip("prefix of every output name (X_<key>, <key>_corrected, ...)")

        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset.currentTextChanged.connect(self._apply_preset)
        self.pages = {m: ParamPage(m, MIMA_ROWS if m == "mima" else None) for m in MODELS}
        self.param_stack = QStackedWidget()
        for page in self.pages.values():
            self.param_stack.addWidget(page)
        mima = self.pages["mima"].widgets
        self.n_latent, self.n_hidden, self.beta = mima["n_latent"], mima["n_hidden"], mima["beta"]
        self.sources = QListWidget()
        self.sources.setToolTip("labelled source samples (their annotation trains the model); the unchecked "
                                "samples are the unlabelled targets whose labels it predicts")
        self.sources.setMaximumHeight(90)
        self.sources_label = QLabel("Labelled sources")
        self.link_reference = QComboBox()
        self.link_reference.setToolTip("scMODAL links features of consecutive modalities by their correlation on "
                                       "the paired spots of this sample")
        self.link_label = QLabel("Links from sample")
        self.epochs = _spin(0, 100000, 0)
        self.epochs.setSpecialValueText("auto")
        self.epochs.setToolTip("passes over the data; auto (0) = about 13,000 optimiser steps whatever the data "
                               "size, stopped early when the validation loss stops improving (best epoch kept)")
        self.max_steps = _spin(0, 10**7, 0)
        self.max_steps.setToolTip("optimiser steps (0 = count epochs instead)")
        self.lr = _dspin(1e-6, 1.0, 1e-4, 6)
        self.batch_size = _spin(1, 100000, 128)
        self.train_fraction = _dspin(0.05, 1.0, 0.8, 2)
        self.seed = _spin(0, 2**31 - 1, 0)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])

        form = QFormLayout()
        form.addRow("Model", self.model_combo)
        form.addRow("Modalities", mod_row)
        form.addRow("Batch column", self.batch_combo)
        form.addRow("Annotation column", self.annotation_combo)
        form.addRow("Output name", self.key_edit)
        form.addRow("Preset", self.preset)
        form.addRow(self.param_stack)
        form.addRow(self.sources_label, self.sources)
        form.addRow(self.link_label, self.link_reference)
        form.addRow("Epochs", self.epochs)
        form.addRow("Steps", self.max_steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Train fraction", self.train_fraction)
        form.addRow("Seed", self.seed)
        form.addRow("Device", self.device)

        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.time_label = QLabel("")
        self.time_label.setWordWrap(True)
        self.plot = LossPlot()
        self.panel = WorkerPanel()
        self.model_path = PathEdit("model folder", mode="dir")
        self.save_button = QPushButton("Save model")
        self.save_button.clicked.connect(lambda: self.save_model(self.model_path.text()))
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(lambda: self.load_model(self.model_path.text()))
        self.model_label = QLabel("no trained model")
        self.model_label.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.train_button)
        lay.addWidget(self.panel)
        lay.addWidget(self.time_label)
        lay.addWidget(self.plot)
        lay.addWidget(section("Trained model"))
        lay.addWidget(self.model_label)
        row = QHBoxLayout()
        row.addWidget(self.model_path, 1)
        row.addWidget(self.save_button)
        row.addWidget(self.load_button)
        lay.addLayout(row)
        lay.addStretch(1)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.state.changed.connect(self._state_changed)
        self._state_changed("project")
        self._model_changed()
        self.warmed = False
        self._warm_up()

    def _warm_up(self) -> None:
        """Imports and UMAP's compilation, in a worker while the user fills in the form (see
        :func:`spatialmix.integrate.warm_up`): done there, they do not stall the UI during training."""
        from napari.qt.threading import create_worker

        from spatialmix.integrate import warm_up
        from spatialmix.results import use_umap_process

        use_umap_process()
        self.warm_event = threading.Event()
        self.warm_worker = create_worker(warm_up, _ignore_errors=True, _start_thread=False)
        self.warm_worker.finished.connect(self._warmed)
        self.warm_worker.finished.connect(self.warm_event.set)
        # Train waits for the warm-up: starting training while it ran deadlocked the UI in 3 of 3 GUI runs here
        # (the warm-up thread waiting on the UMAP helper, the helper idle; cause not found, see the issue note)
        # (loading a model writes the same outputs, so it waits too)
        self.train_button.setEnabled(False)
        self.load_button.setEnabled(False)
        self.train_button.setText("Train (preparing: imports, UMAP compilation...)")
        self.warm_worker.start()

    # -- options ----------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model_combo.currentData() or "mima"

    def _model_changed(self, *_):
        """Show the chosen model's parameters and its papers' training defaults."""
        from spatialmix.models import MODELS

        name = self.model_name
        cls = MODELS[name]
        self.param_stack.setCurrentWidget(self.pages[name])
        self.param_stack.setFixedHeight(self.pages[name].sizeHint().height())
        for w in (self.sources, self.sources_label):
            w.setVisible(bool(cls.needs_labels))
        for w in (self.link_reference, self.link_label):
            w.setVisible(name == "scmodal")
        self.preset.setEnabled(name == "mima")
        d = cls.train_defaults
        epochs = d.get("epochs", 50)
        self.epochs.setValue(0 if epochs == "auto" else int(epochs))
        self.lr.setValue(float(d.get("lr", 1e-3)))
        self.batch_size.setValue(int(d.get("batch_size", 128)))
        self.train_fraction.setValue(float(d.get("train_fraction", 0.8)))
        self.max_steps.setValue(int(d.get("max_steps") or 0))
        if self.key_edit.text().strip() in ("", *MODELS):
            self.key_edit.setText(name)

    def _apply_preset(self, name: str) -> None:
        p = PRESETS[name]
        self.epochs.setValue(0 if p["epochs"] == "auto" else p["epochs"])
        self.lr.setValue(p["lr"])

    def _state_changed(self, what: str) -> None:
        if what not in ("project", "samples", "tables"):
            return
        sdata = self.state.sdata
        obs = sdata.tables["rna"].obs if sdata is not None and "rna" in sdata.tables else pd.DataFrame()
        cats = [c for c in obs.columns if not pd.api.types.is_numeric_dtype(obs[c]) or
                isinstance(obs[c].dtype, pd.CategoricalDtype)]
        fill_combo(self.batch_combo, [c for c in ("batch", "sample", "patient") if c in obs] +
              [c for c in cats if c not in ("batch", "sample", "patient", "barcode", "region")], "batch")
        ann = [c for c in cats if c not in ("batch", "sample", "patient", "barcode", "region")
               and not c.startswith(("pred_", "agree_"))]
        fill_combo(self.annotation_combo, ann + ["(none)"], "pathologist")
        has = {"rna": True, "msi": False, "morphology": False}
        if sdata is not None:
            samples = self.state.samples
            has["msi"] = any(f"{s}_msi_tic" in sdata.images for s in samples)
            has["morphology"] = any(f"{s}_he" in sdata.images for s in samples)
        for m, box in self.modality_boxes.items():
            box.setEnabled(has[m])
            box.setChecked(has[m] and (box.isChecked() or what == "project"))
        samples = list(self.state.samples) if sdata is not None else []
        checked = {self.sources.item(i).text() for i in range(self.sources.count())
                   if self.sources.item(i).checkState() == Qt.Checked}
        if not checked:  # default: every other sample (spatialmix.benchmark.default_sources)
            from spatialmix.benchmark import default_sources

            checked = set(default_sources(samples)) if samples else set()
        self.sources.clear()
        for sample in samples:
            item = QListWidgetItem(sample)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if sample in checked else Qt.Unchecked)
            self.sources.addItem(item)
        fill_combo(self.link_reference, samples, samples[0] if samples else None)

    def options(self) -> dict:
        """The headless call's keyword arguments, as the form says."""
        from spatialmix.errors import ParameterError

        mods = [m for m, box in self.modality_boxes.items() if box.isChecked() and box.isEnabled()]
        if not mods:
            raise ParameterError("choose at least one modality to integrate")
        from spatialmix.models import MODELS

        ann = self.annotation_combo.currentText()
        name = self.model_name
        params = self.pages[name].values()
        if MODELS[name].needs_labels:
            sources = [self.sources.item(i).text() for i in range(self.sources.count())
                       if self.sources.item(i).checkState() == Qt.Checked]
            if not sources:
                raise ParameterError(f"{MODEL_LABELS.get(name, name)} needs labelled source samples: tick at least "
                                     "one in 'Labelled sources' (and leave at least one unticked as a target)")
            params["source_samples"] = sources
        if name == "scmodal":
            params["link_reference"] = self.link_reference.currentText()
        train = {"epochs": self.epochs.value() or "auto", "lr": self.lr.value(), "batch_size": self.batch_size.value(),
                 "train_fraction": self.train_fraction.value(), "seed": self.seed.value(),
                 "device": self.device.currentText()}
        if self.max_steps.value() > 0:
            train["max_steps"] = self.max_steps.value()
        return {
            "model": name,
            "modalities": mods,
            "batch_key": self.batch_combo.currentText() or "batch",
            "annotation_key": None if ann in ("", "(none)") else ann,
            "key": self.key_edit.text().strip() or name,
            "model_params": params,
            "train": train,
        }

    # -- training ---------------------------------------------------------------------------------------------
    def _warmed(self) -> None:
        self.warmed = True
        self.train_button.setText("Train")
        self.train_button.setEnabled(True)
        self.load_button.setEnabled(True)

    def _still_preparing(self, what: str) -> bool:
        """Notify and say so when the warm-up has not finished (``what`` is the refused action)."""
        from spatialmix.errors import TrainingError

        if self.warmed:
            return False
        notify_error(TrainingError(f"the Integrate widget is still preparing (imports, UMAP compilation, a few "
                                   f"seconds); {what} is enabled when it is done"))
        return True

    def train(self):
        from spatialmix.errors import ProjectError
        from spatialmix.integrate import iter_fit

        if self._still_preparing("Train"):
            return None
        if self.state.sdata is None:
            notify_error(ProjectError("no project: add samples or open a project in the Data widget first"))
            return None
        try:
            opts = self.options()
        except Exception as err:  # noqa: BLE001
            notify_error(err, "train")
            return None
        self.stop_event = threading.Event()
        self.plot.clear()
        self.time_label.setText("")
        self.train_button.setEnabled(False)
        return self.panel.start(_after, self.warm_event, iter_fit, self.state.sdata, stop=self.stop_event, **opts,
                                on_event=self._on_event, on_done=self._trained,
                                on_error=lambda _: self.train_button.setEnabled(True),
                                on_stop=self.stop_event.set,
                                what=f"train {MODEL_LABELS.get(opts['model'], opts['model'])}")

    def stop(self) -> None:
        self.panel.stop()

    def _on_event(self, event) -> None:
        info = getattr(event, "info", {}) or {}
        if info.get("event") == "epoch":
            self._last_epoch_event = info
            self.plot.add_epoch(info)
            left = f"{_duration(info['eta_s'])} left"
            if info.get("early_stopping"):  # the schedule is an upper bound: say so, and how close the stop is
                left = (f"at most {left}; stops after {info['patience_left']} more epochs without a better "
                        "validation loss")
            self.time_label.setText(f"epoch {info['epoch']}/{info['epochs']} · {info['seconds_per_epoch']:.2f} s/epoch"
                                    f" · {left}")
        elif info.get("event") == "stopped":
            self.time_label.setText(f"stopped: kept epoch {info['epoch']} of {info['epochs']}; writing its outputs")

    def _trained(self, model) -> None:
        self.train_button.setEnabled(True)
        self.state.model = model
        self.state.model_key = self.key_edit.text().strip() or model.name
        self._describe(model)
        self.state.changed.emit("model")
        self.state.changed.emit("results")

    def _describe(self, model) -> None:
        curve = model.training_curve()
        last = curve.iloc[-1] if len(curve) else None
        text = f"{type(model).__name__} on {', '.join(model.modalities)}: {len(curve)} epoch(s)"
        if last is not None:
            text += f", final loss {last['loss']:.4g}"
            if pd.notna(last.get("val_loss", float("nan"))):
                text += f", validation {last['val_loss']:.4g}"
        schedule = (model.train_config or {}).get("schedule") or {}
        if schedule.get("best_epoch"):
            how = "early stop" if schedule.get("early_stopped") else "end of schedule"
            text += f"; best validation epoch {schedule['best_epoch']} kept ({how}, {schedule['epochs']} planned)"
        if model.stopped_early:
            text += " (stopped by the user)"
        self.model_label.setText(text)

    # -- save / load ------------------------------------------------------------------------------------------
    def save_model(self, path: str):
        from spatialmix.errors import ModelError, ParameterError

        try:
            if self.state.model is None:
                raise ModelError("no trained model to save: train one first")
            if not path:
                raise ParameterError("choose a folder to save the model into")
            out = self.state.model.save(path, overwrite=True)
        except Exception as err:  # noqa: BLE001
            notify_error(err, "save model")
            return None
        from napari.utils.notifications import show_info

        show_info(f"model saved to {out}")
        return out

    def load_model(self, path: str):
        """Load a saved model onto the open project (checked against its tables) and write its outputs."""
        from spatialmix.errors import ProjectError
        from spatialmix.integrate import iter_load_model

        if self._still_preparing("Load model"):
            return None
        if self.state.sdata is None:
            notify_error(ProjectError("open the project the model was trained on first (Data widget)"))
            return None

        def done(model):
            self.state.model = model
            self.state.model_key = model.name
            self._describe(model)
            self.state.changed.emit("model")
            self.state.changed.emit("results")

        return self.panel.start(iter_load_model, self.state.sdata, path, on_done=done, what="load model")


def _after(event: threading.Event, gen_func, *args, **kwargs):
    """Run a generator once ``event`` is set: training waits for the widget's warm-up (imports, and UMAP's
    compilation in its helper process), so that neither stalls the event loop during training."""
    from spatialmix.progress import Progress

    while not event.wait(0.1):
        yield Progress("waiting for the warm-up (imports, UMAP compilation)", 0, None)
    _leave_a_core_for_the_ui()
    return (yield from gen_func(*args, **kwargs))


def _leave_a_core_for_the_ui() -> None:
    """torch's intra-op threads default to every core; training then competes with the event loop (and with 2
    threads on 2 busy cores torch slows 10-50x). The widget trains on all cores but one."""
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _spin(lo, hi, value) -> QSpinBox:
    w = QSpinBox()
    w.setRange(lo, hi)
    w.setValue(value)
    return w


def _dspin(lo, hi, value, decimals) -> QDoubleSpinBox:
    w = QDoubleSpinBox()
    w.setDecimals(decimals)
    w.setRange(lo, hi)
    w.setSingleStep(10 ** -decimals * 10)
    w.setValue(value)
    return w
