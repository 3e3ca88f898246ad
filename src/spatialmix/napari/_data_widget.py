"""Data: add samples (Visium outs, imzML, H&E, annotations) or open a project; the table of samples; layout.

Reading runs :func:`spatialmix.pipeline.iter_read_sample` in a worker, one sample after the other; each
sample's layers appear as soon as it is read.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from spatialmix.napari._common import (
    LAYOUTS,
    PathEdit,
    WorkerPanel,
    add_layers_built_off_gui,
    fill_combo,
    notify_error,
    section,
    shift_layer,
    spatialmix_layers,
    state_of,
)

TABLE_COLUMNS = ("sample", "patient", "spots", "MSI", "H&E", "annotated", "registered (RMS um)")


def iter_read_samples(specs, current=None, *, annotation_key: str = "pathologist"):
    """Read samples one by one and add each to the project; yields ``("sample", name, sdata)`` after each."""
    from spatialmix.pipeline import add_sample, iter_read_sample
    from spatialmix.progress import Progress

    sdata = current
    for i, spec in enumerate(specs):
        yield Progress("read samples", i, len(specs), spec.sample)
        part = yield from iter_read_sample(spec, annotation_key=annotation_key)
        sdata = add_sample(sdata, part, annotation_key=annotation_key)
        yield ("sample", spec.sample, sdata)
    yield Progress("read samples", len(specs), len(specs))
    return sdata


def iter_open_project(path):
    from spatialmix.progress import Progress
    from spatialmix.project import load_project

    yield Progress("open project", 0, 1, str(path))
    sdata = load_project(path)
    yield Progress("open project", 1, 1, str(path))
    return sdata


def iter_demo():
    from spatialmix.jobs import iter_demo_project

    return (yield from iter_demo_project())


class DataWidget(QWidget):
    """Add samples or open a project; see the samples and their modalities; lay them out."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)

        self.sample = QLineEdit()
        self.sample.setPlaceholderText("e.g. P1_S1")
        self.patient = QLineEdit()
        self.patient.setPlaceholderText("default: the sample name")
        self.visium = PathEdit("Space Ranger outs/ folder", mode="dir")
        self.imzml = PathEdit("optional .imzML (its .ibd beside it)", filter="imzML (*.imzML *.imzml)")
        self.msi_px = QDoubleSpinBox()
        self.msi_px.setRange(0.0, 10000.0)
        self.msi_px.setDecimals(2)
        self.msi_px.setValue(50.0)
        self.msi_px.setSuffix(" um")
        self.he = PathEdit("optional H&E image", filter="Images (*.tif *.tiff *.png *.jpg *.jpeg)")
        self.he_mpp = QDoubleSpinBox()
        self.he_mpp.setRange(0.0, 1000.0)
        self.he_mpp.setDecimals(3)
        self.he_mpp.setValue(1.0)
        self.he_mpp.setSuffix(" um/px")
        self.annotations = PathEdit("optional annotation CSV (Loupe export)", filter="CSV (*.csv)")
        self.hd_bin = QComboBox()  # Visium HD only: which binned_outputs/square_XXXum becomes the spots
        self.hd_bin.setToolTip("Visium HD: the bin size read as the spots (the folder's binned_outputs/); "
                               "a Visium (55 um spot) folder has none")
        self.visium.edit.textChanged.connect(self._visium_changed)
        self._visium_changed("")

        form = QFormLayout()
        form.addRow("Sample", self.sample)
        form.addRow("Patient", self.patient)
        form.addRow("Visium", self.visium)
        form.addRow("HD bin size", self.hd_bin)
        form.addRow("imzML", self.imzml)
        form.addRow("MSI pixel size", self.msi_px)
        form.addRow("H&&E", self.he)
        form.addRow("H&&E resolution", self.he_mpp)
        form.addRow("Annotations", self.annotations)

        self.add_button = QPushButton("Add sample")
        self.add_button.clicked.connect(self.add_sample_from_form)
        self.csv = PathEdit("dataset folder or samples.csv", mode="dir")
        self.csv_button = QPushButton("Add samples.csv")
        self.csv_button.clicked.connect(lambda: self.add_samples_csv(self.csv.text()))
        self.project = PathEdit("project .zarr", mode="dir")
        self.open_button = QPushButton("Open project")
        self.open_button.clicked.connect(lambda: self.open_project(self.project.text()))
        self.demo_button = QPushButton("Load the bundled demo (4 samples)")
        self.demo_button.clicked.connect(self.load_demo)

        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setMinimumHeight(120)

        self.layout_combo = QComboBox()
        self.layout_combo.addItems(LAYOUTS)
        self.sample_combo = QComboBox()
        self.layout_combo.currentTextChanged.connect(self._layout_changed)
        self.sample_combo.currentTextChanged.connect(self._layout_changed)

        self.panel = WorkerPanel()

        lay = QVBoxLayout(self)
        lay.addWidget(section("Add a sample"))
        lay.addLayout(form)
        lay.addWidget(self.add_button)
        row = QHBoxLayout()
        row.addWidget(self.csv, 1)
        row.addWidget(self.csv_button)
        lay.addLayout(row)
        lay.addWidget(section("Or open a saved project"))
        row = QHBoxLayout()
        row.addWidget(self.project, 1)
        row.addWidget(self.open_button)
        lay.addLayout(row)
        lay.addWidget(self.demo_button)
        lay.addWidget(self.panel)
        lay.addWidget(section("Samples"))
        lay.addWidget(self.table)
        row = QHBoxLayout()
        row.addWidget(self.layout_combo)
        row.addWidget(self.sample_combo, 1)
        lay.addLayout(row)
        lay.addStretch(1)

        self.state.changed.connect(self._state_changed)
        self._refresh_table()

    def _visium_changed(self, path: str) -> None:
        """List the bin sizes of a Visium HD folder (16 um preselected, the reader's default); else disabled."""
        from spatialmix.io.visium_hd import DEFAULT_BIN_UM, hd_bin_sizes

        sizes = hd_bin_sizes(path.strip()) if path.strip() else []
        self.hd_bin.clear()
        for b in sizes:
            self.hd_bin.addItem(f"{b} um", b)
        if not sizes:
            self.hd_bin.addItem("(Visium HD only)", None)
        elif DEFAULT_BIN_UM in sizes:
            self.hd_bin.setCurrentIndex(sizes.index(DEFAULT_BIN_UM))
        self.hd_bin.setEnabled(bool(sizes))

    # -- actions (each one headless call in a worker) ------------------------------------------------------
    def spec_from_form(self):
        from spatialmix.errors import ParameterError
        from spatialmix.pipeline import SampleSpec

        if not self.sample.text().strip():
            raise ParameterError("give the sample a name (the Sample field is empty)")
        if not self.visium.text():
            raise ParameterError(f"sample {self.sample.text().strip()}: choose its Visium Space Ranger outs/ folder")
        return SampleSpec(
            sample=self.sample.text().strip(), patient=self.patient.text().strip() or None,
            visium=self.visium.text(), imzml=self.imzml.text() or None,
            msi_pixel_size_um=(self.msi_px.value() or None) if self.imzml.text() else None,
            he=self.he.text() or None, he_microns_per_pixel=(self.he_mpp.value() or None) if self.he.text() else None,
            annotations=self.annotations.text() or None, visium_bin_um=self.hd_bin.currentData(),
        )

    def add_sample_from_form(self):
        try:
            spec = self.spec_from_form()
        except Exception as err:  # noqa: BLE001 - shown, the form stays as typed
            notify_error(err, "add sample")
            return None
        return self.read_specs([spec])

    def add_samples_csv(self, path: str):
        from spatialmix.pipeline import read_samples_csv

        try:
            specs = read_samples_csv(path)
        except Exception as err:  # noqa: BLE001
            notify_error(err, "add samples.csv")
            return None
        return self.read_specs(specs)

    def read_specs(self, specs):
        return self.panel.start(iter_read_samples, specs, self.state.sdata, on_event=self._on_read_event,
                                on_done=lambda sdata: self._set_project(sdata, specs=specs, relayer=False),
                                what=f"read {len(specs)} sample(s)")

    def open_project(self, path: str):
        return self.panel.start(iter_open_project, path, on_done=self._set_project, what="open project")

    def load_demo(self):
        return self.panel.start(iter_demo, on_done=self._set_project, what="load the bundled demo")

    # -- results ----------------------------------------------------------------------------------------------
    def _on_read_event(self, event):
        if isinstance(event, tuple) and event and event[0] == "sample":
            _, sample, sdata = event
            self.state.sdata = sdata
            self._show_sample(sample)
            self.state.changed.emit("samples")

    def _show_sample(self, sample: str):
        """Add the sample's layers; a sample above POINTS_LIMIT spots (Visium HD) is rasterised in a worker
        (returned), so the event loop does not wait seconds for it."""
        from spatialmix.napari._layers import sample_layers, spots_as_image

        sdata, offset, visible = self.state.sdata, self.state.offset(sample), self.state.visible(sample)
        return add_layers_built_off_gui(
            self.viewer, lambda: sample_layers(sdata, sample, offset=offset, visible=visible),
            in_worker=f"{sample}_spots" in sdata.shapes and spots_as_image(sdata, sample),
            on_added=lambda _layers: self.viewer.reset_view())

    def _set_project(self, sdata, *, specs=None, relayer: bool = True) -> None:
        if relayer:
            for layer in spatialmix_layers(self.viewer):
                self.viewer.layers.remove(layer)
        self.state.sdata = sdata
        self.state.model = None
        if specs:
            self.state.specs = list(self.state.specs) + list(specs)
        if relayer:
            for s in self.state.samples:
                self._show_sample(s)
        self.state.changed.emit("project")
        self.viewer.reset_view()

    def _state_changed(self, what: str) -> None:
        self._refresh_table()

    def _refresh_table(self) -> None:
        sdata = self.state.sdata
        samples = self.state.samples
        self.table.setRowCount(len(samples))
        reg = (sdata.attrs.get("spatialmix", {}).get("registration", {}) if sdata is not None else {})
        rna = sdata.tables["rna"] if sdata is not None else None
        for i, s in enumerate(samples):
            obs = rna.obs[rna.obs["region"].astype(str) == f"{s}_spots"]
            ann = next((c for c in ("pathologist",) if c in obs), None)
            n_ann = int(obs[ann].notna().sum()) if ann else 0
            rms = "; ".join(f"{m.upper() if m == 'msi' else 'H&E'} {r.get('rms_um', float('nan')):.1f}"
                            for m, r in reg.get(s, {}).items())
            values = (s, str(obs["patient"].iloc[0]) if len(obs) else "", str(len(obs)),
                      "yes" if f"{s}_msi_tic" in sdata.images else "—", "yes" if f"{s}_he" in sdata.images else "—",
                      f"{n_ann} spots" if n_ann else "—", rms or "not yet")
            for j, v in enumerate(values):
                self.table.setItem(i, j, QTableWidgetItem(v))
        fill_combo(self.sample_combo, samples)
        self.sample_combo.setEnabled(self.layout_combo.currentText() == LAYOUTS[1])

    def _layout_changed(self, *_):
        """Side by side, or one sample at a time (all at the same place, only the chosen one visible)."""
        try:
            old = self.state.offsets()
            self.state.layout = self.layout_combo.currentText()
            self.state.current_sample = self.sample_combo.currentText() or None
            new = self.state.offsets()
            self.sample_combo.setEnabled(self.state.layout == LAYOUTS[1])
            for layer in spatialmix_layers(self.viewer):
                s = layer.metadata["spatialmix"].get("sample")
                if s not in new:
                    continue
                (ox, oy), (nx, ny) = old.get(s, (0.0, 0.0)), new[s]
                shift_layer(layer, nx - ox, ny - oy)
                if self.state.layout == LAYOUTS[1]:
                    layer.visible = s == self.state.current_sample and not layer.name.endswith("Visium image")
                elif not layer.name.endswith("Visium image"):
                    layer.visible = True
            self.state.changed.emit("layout")
            self.viewer.reset_view()
        except Exception as err:  # noqa: BLE001
            notify_error(err, "layout")
