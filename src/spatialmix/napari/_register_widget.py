"""Register: automatic alignment of a sample's MSI or H&E onto its spots, or landmark pairs clicked on two
linked Points layers with the live RMS error; overlay preview, apply, undo; then the spot tables.

Every action is one headless call: :func:`spatialmix.registration.iter_auto_register`,
:func:`~spatialmix.registration.fit_landmarks` / :func:`~spatialmix.registration.register_landmarks`,
:func:`~spatialmix.registration.restore_registration`, :func:`~spatialmix.registration.iter_auto_register_all`,
:func:`spatialmix.pipeline.iter_build_tables`.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from spatialmix.napari._common import (
    WorkerPanel,
    add_or_replace,
    fill_combo,
    layer_name,
    notify_error,
    section,
    state_of,
)

MODALITY_LABELS = {"MSI": "msi", "H&E": "he"}
MOVING_LAYER = {"msi": "MSI TIC", "he": "H&E"}
PAIR_COLORS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf", "#00ced1"]


def _swap(m: np.ndarray) -> np.ndarray:
    """An (x, y) 3x3 affine as a (y, x) one (napari's axis order)."""
    p = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return p @ m @ p


class RegisterWidget(QWidget):
    """Align MSI / H&E sections onto the Visium spots: automatically, or from landmark pairs."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)
        self.undo_stack: list[dict] = []
        self.fit = None
        self._landmark_layers: tuple | None = None

        self.sample_combo = QComboBox()
        self.modality_combo = QComboBox()
        self.modality_combo.addItems(list(MODALITY_LABELS))
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(["similarity", "affine"])
        form = QFormLayout()
        form.addRow("Sample", self.sample_combo)
        form.addRow("Moving", self.modality_combo)
        form.addRow("Transform", self.kind_combo)

        self.auto_button = QPushButton("Auto-register")
        self.auto_button.clicked.connect(self.auto_register)
        self.all_button = QPushButton("Auto-register all samples")
        self.all_button.clicked.connect(self.auto_register_all)

        self.landmark_button = QPushButton("Landmark mode")
        self.landmark_button.setCheckable(True)
        self.landmark_button.toggled.connect(self.set_landmark_mode)
        self.hint = QLabel("Click a point on the moving image (its landmark layer selected), then the same point "
                           "on the spots / Visium image (the fixed layer). Pairs are numbered; 3 or more pairs "
                           "give a fit.")
        self.hint.setWordWrap(True)
        self.rms_label = QLabel("RMS: — (need 3 pairs)")
        self.apply_button = QPushButton("Apply landmarks")
        self.apply_button.clicked.connect(self.apply_landmarks)
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.undo)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.valueChanged.connect(self._set_opacity)
        self.record_label = QLabel("")
        self.record_label.setWordWrap(True)
        self.tables_button = QPushButton("Build spot tables (MSI + H&&E onto spots)")
        self.tables_button.clicked.connect(self.build_tables)
        self.panel = WorkerPanel()

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.auto_button)
        row.addWidget(self.all_button)
        lay.addLayout(row)
        lay.addWidget(section("Landmarks"))
        lay.addWidget(self.landmark_button)
        lay.addWidget(self.hint)
        lay.addWidget(self.rms_label)
        row = QHBoxLayout()
        row.addWidget(self.apply_button)
        row.addWidget(self.undo_button)
        lay.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("Overlay opacity"))
        row.addWidget(self.opacity, 1)
        lay.addLayout(row)
        lay.addWidget(section("Current registration"))
        lay.addWidget(self.record_label)
        lay.addWidget(self.tables_button)
        lay.addWidget(self.panel)
        lay.addStretch(1)

        self.sample_combo.currentTextChanged.connect(self._selection_changed)
        self.modality_combo.currentTextChanged.connect(self._selection_changed)
        self.state.changed.connect(self._state_changed)
        self._state_changed("project")

    # -- helpers ----------------------------------------------------------------------------------------------
    @property
    def sample(self) -> str:
        return self.sample_combo.currentText()

    @property
    def modality(self) -> str:
        return MODALITY_LABELS[self.modality_combo.currentText()]

    def _moving_layer(self):
        name = layer_name(self.sample, MOVING_LAYER[self.modality])
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _refresh_moving(self, sample: str, modality: str) -> None:
        """Re-create a moving image layer from its (new) transformation."""
        from spatialmix.napari._layers import image_layer

        element = f"{sample}_msi_tic" if modality == "msi" else f"{sample}_he"
        if element not in self.state.sdata.images:
            return
        extra = {"opacity": 0.7, "blending": "translucent"} if modality == "msi" else {}
        add_or_replace(self.viewer, image_layer(self.state.sdata, element, sample, offset=self.state.offset(sample),
                                                layer_name=layer_name(sample, MOVING_LAYER[modality]),
                                                visible=self.state.visible(sample), **extra))
        if self._landmark_layers and sample == self.sample and modality == self.modality:
            self._landmark_layers[0].affine = self._moving_world_affine()

    def _moving_world_affine(self, matrix_xy: np.ndarray | None = None) -> np.ndarray:
        """Moving element pixel (row, col) -> viewer (y, x): the sample offset after the registration."""
        from spatialmix.registration import element_pixel_to_sample

        m = element_pixel_to_sample(self.state.sdata, self.sample, self.modality) if matrix_xy is None else matrix_xy
        dx, dy = self.state.offset(self.sample)
        shift = np.array([[1.0, 0.0, dy], [0.0, 1.0, dx], [0.0, 0.0, 1.0]])
        return shift @ _swap(np.asarray(m, float))

    def _state_changed(self, what: str) -> None:
        if what not in ("project", "samples"):
            return
        fill_combo(self.sample_combo, self.state.samples)
        self._selection_changed()

    def _selection_changed(self, *_):
        if self.landmark_button.isChecked():
            self.landmark_button.setChecked(False)
        self._show_record()

    def _show_record(self) -> None:
        sdata = self.state.sdata
        if sdata is None or not self.sample:
            self.record_label.setText("no project yet: add samples in the Data widget")
            return
        rec = sdata.attrs.get("spatialmix", {}).get("registration", {}).get(self.sample, {}).get(self.modality)
        if not rec:
            self.record_label.setText(f"{self.sample} {self.modality_combo.currentText()}: nominal pixel size only "
                                      "(not registered)")
            return
        parts = [f"{self.sample} {self.modality_combo.currentText()}: {rec.get('method', '?')} "
                 f"{rec.get('kind', '')}", f"RMS {rec.get('rms_um', float('nan')):.2f} um"]
        if rec.get("score") is not None:
            parts.append(f"score {rec['score']:.3f}")
        self.record_label.setText(", ".join(parts))

    def _set_opacity(self, value: int) -> None:
        layer = self._moving_layer()
        if layer is not None:
            layer.opacity = value / 100.0

    def _require_project(self) -> bool:
        from spatialmix.errors import ProjectError

        if self.state.sdata is None or not self.sample:
            notify_error(ProjectError("no samples yet: add samples or open a project in the Data widget first"))
            return False
        return True

    # -- automatic --------------------------------------------------------------------------------------------
    def auto_register(self):
        from spatialmix.registration import iter_auto_register, registration_state

        if not self._require_project():
            return None
        sample, modality = self.sample, self.modality
        try:
            before = registration_state(self.state.sdata, sample, modality)
        except Exception as err:  # noqa: BLE001 - e.g. the sample has no such image
            notify_error(err, "auto-register")
            return None

        def done(result):
            self.undo_stack.append(before)
            self._refresh_moving(sample, modality)
            self._registered()

        return self.panel.start(iter_auto_register, self.state.sdata, sample, modality,
                                kind=self.kind_combo.currentText(), on_done=done,
                                what=f"auto-register {sample} {self.modality_combo.currentText()}")

    def auto_register_all(self):
        from spatialmix.registration import registration_state

        if not self._require_project():
            return None
        befores = [registration_state(self.state.sdata, s, m) for s in self.state.samples for m in ("he", "msi")
                   if (f"{s}_he" if m == "he" else f"{s}_msi_tic") in self.state.sdata.images]

        def done(results):
            self.undo_stack.extend(befores)
            for s, m in results:
                self._refresh_moving(s, m)
            self._registered()

        from spatialmix.registration import iter_auto_register_all

        return self.panel.start(iter_auto_register_all, self.state.sdata, self.state.samples,
                                kind=self.kind_combo.currentText(), on_done=done, what="auto-register all samples")

    def _registered(self) -> None:
        self._show_record()
        self.state.changed.emit("registration")

    # -- landmarks --------------------------------------------------------------------------------------------
    def set_landmark_mode(self, on: bool) -> None:
        if not on:
            for layer in self._landmark_layers or ():
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
            self._landmark_layers = None
            self.fit = None
            self.rms_label.setText("RMS: — (need 3 pairs)")
            return
        if not self._require_project():
            self.landmark_button.setChecked(False)
            return
        try:
            moving_affine = self._moving_world_affine()
        except Exception as err:  # noqa: BLE001
            notify_error(err, "landmark mode")
            self.landmark_button.setChecked(False)
            return
        dx, dy = self.state.offset(self.sample)
        what = MOVING_LAYER[self.modality]
        m_px = float(np.sqrt(abs(np.linalg.det(moving_affine[:2, :2]))))  # um per moving pixel
        common = {"ndim": 2, "text": {"string": "{pair}", "size": 11, "color": "white",
                                                   "anchor": "upper_left"},
                  "features": {"pair": np.zeros(0, int)}, "border_color": "white", "border_width": 0.15}
        fixed = self.viewer.add_points(name=layer_name(self.sample, "landmarks on spots (fixed)"),
                                       affine=np.array([[1.0, 0, dy], [0, 1.0, dx], [0, 0, 1.0]]),
                                       metadata={"spatialmix": {"sample": self.sample, "role": "fixed"}},
                                       size=60.0, **common)
        moving = self.viewer.add_points(name=layer_name(self.sample, f"landmarks on {what} (moving)"),
                                        affine=moving_affine, symbol="cross", size=60.0 / max(m_px, 1e-9),
                                        metadata={"spatialmix": {"sample": self.sample, "role": "moving"}},
                                        **common)
        for layer in (moving, fixed):  # markers 60 um wide whatever the layer's pixel size
            layer.events.data.connect(self._landmarks_changed)
            layer.mode = "add"
        self._landmark_layers = (moving, fixed)
        visium = layer_name(self.sample, "Visium image")
        if visium in self.viewer.layers:
            self.viewer.layers[visium].visible = True
        self.viewer.layers.selection.active = moving

    def landmark_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(moving pixel (x, y), fixed sample um (x, y)) of the complete pairs."""
        moving, fixed = self._landmark_layers
        n = min(len(moving.data), len(fixed.data))
        return np.asarray(moving.data[:n])[:, ::-1], np.asarray(fixed.data[:n])[:, ::-1]

    def _landmarks_changed(self, event=None) -> None:
        from spatialmix.registration import fit_landmarks

        if not self._landmark_layers:
            return
        for layer in self._landmark_layers:
            n = len(layer.data)
            pairs = np.arange(1, n + 1)
            if len(layer.features) != n or (n and not np.array_equal(layer.features["pair"].to_numpy(), pairs)):
                layer.features = {"pair": pairs}
                layer.face_color = [PAIR_COLORS[(i - 1) % len(PAIR_COLORS)] for i in pairs] if n else "white"
                layer.refresh_text()
        mov, fix = self.landmark_pairs()
        if len(mov) < 3:
            self.fit = None
            self.rms_label.setText(f"RMS: — ({len(mov)} pair(s); need 3)")
            return
        try:
            self.fit = fit_landmarks(mov, fix, kind=self.kind_combo.currentText())
        except Exception as err:  # noqa: BLE001 - e.g. collinear points: say so, keep clicking
            self.fit = None
            self.rms_label.setText(f"RMS: — ({err})")
            return
        worst = float(np.max(self.fit.residuals)) if len(self.fit.residuals) else float("nan")
        self.rms_label.setText(f"RMS: {self.fit.rms:.2f} um over {self.fit.n} pairs (worst {worst:.2f} um)")
        layer = self._moving_layer()
        if layer is not None:  # overlay preview of the fit, not yet written
            preview = self._moving_world_affine(self.fit.matrix)
            layer.affine = preview
            self._landmark_layers[0].affine = preview

    def apply_landmarks(self):
        from spatialmix.errors import RegistrationError
        from spatialmix.registration import register_landmarks, registration_state

        if not self._landmark_layers:
            notify_error(RegistrationError("turn on Landmark mode and click at least 3 pairs first"))
            return None
        mov, fix = self.landmark_pairs()
        try:
            before = registration_state(self.state.sdata, self.sample, self.modality)
            result = register_landmarks(self.state.sdata, self.sample, self.modality, mov, fix,
                                        kind=self.kind_combo.currentText())
        except Exception as err:  # noqa: BLE001
            notify_error(err, "apply landmarks")
            return None
        self.undo_stack.append(before)
        self._refresh_moving(self.sample, self.modality)
        self._registered()
        return result

    def undo(self) -> None:
        from spatialmix.registration import restore_registration

        if not self.undo_stack:
            from napari.utils.notifications import show_info

            show_info("nothing to undo")
            return
        state = self.undo_stack.pop()
        try:
            restore_registration(self.state.sdata, state)
        except Exception as err:  # noqa: BLE001
            notify_error(err, "undo")
            return
        self._refresh_moving(state["sample"], state["modality"])
        self._registered()

    # -- tables -----------------------------------------------------------------------------------------------
    def build_tables(self):
        if not self._require_project():
            return None
        from spatialmix.pipeline import iter_build_tables

        return self.panel.start(iter_build_tables, self.state.sdata, on_done=lambda _: self.state.changed.emit("tables"),
                                what="build spot tables")
