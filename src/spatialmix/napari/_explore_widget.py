"""Explore: the 3D-RGB colouring of an embedding, measured / batch-corrected / denoised feature maps by name,
imputed maps beside the measured ones, and predicted annotations beside the pathologist's with an agreement
layer, a legend, the per-class scores and the confusion matrix.

Each button is one headless call (:func:`spatialmix.results.spot_values` + :func:`~spatialmix.results.
render_result`, :func:`~spatialmix.results.write_translation`,
:func:`spatialmix.evaluate.annotations.iter_predict_annotations`); the layer conversion is in ``_layers``.
Comparison layers (imputed, predicted, agreement) are placed in rows under their sample: row 0 is the
measured map or the pathologist's labels.

Why one file of about 550 lines: it is one dock widget. Its four sections (RGB colouring, feature maps,
imputation, annotations) share the sample and table choices, one ``WorkerPanel`` running one job at a time and
the placement of comparison rows (``_placements``, ``_only_row_layers``); the layer conversion is already apart
in ``_layers``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from spatialmix.napari._common import (
    WorkerPanel,
    add_layers_built_off_gui,
    add_or_replace,
    fill_combo,
    layer_name,
    notify_error,
    section,
    state_of,
)

TABLE_LABELS = {"rna": "RNA", "msi": "MSI", "morphology": "H&E features"}
ALL_SAMPLES = "all samples"


def feature_label(sdata, table: str, feature: str) -> str:
    """``m/z 702.54`` for MSI, the feature name otherwise."""
    if table == "msi":
        try:
            return f"m/z {float(feature):.2f}"
        except ValueError:
            return str(feature)
    return str(feature)


def values_label(key: str, layer: str | None, table: str) -> str:
    """``measured MSI`` / ``MIMA corrected MSI`` / ``MIMA denoised RNA`` / ``MIMA imputed MSI from RNA+H&E``."""
    what = TABLE_LABELS.get(table, table)
    if layer is None:
        return f"measured {what}" + (" (log1p)" if table == "msi" else "")
    if layer.startswith(f"{key}_from_"):
        sources = layer[len(f"{key}_from_"):].split("_and_")
        return f"{key.upper()} imputed {what} from {'+'.join(TABLE_LABELS.get(s, s) for s in sources)}"
    kind = layer[len(key) + 1:] if layer.startswith(f"{key}_") else layer
    return f"{key.upper()} {kind} {what}"


def rgb_choices(sdata) -> dict[str, tuple[str, str]]:
    """{label: (table, obsm key)} of every RGB colouring in the project."""
    out = {}
    if sdata is None:
        return out
    for table in ("rna", "msi", "morphology"):
        if table not in sdata.tables:
            continue
        for k in sdata.tables[table].obsm:
            if not k.endswith("_rgb"):
                continue
            stem = k[2:-4]
            if stem.endswith(f"_{table}"):  # X_<source>_<table>_rgb: a table's own input or layer
                source = stem[: -len(table) - 1]
                label = f"{TABLE_LABELS[table]} {'raw' if source == table else source.replace('_', ' ')}"
            elif stem == table:
                label = f"{TABLE_LABELS[table]} raw"
            elif stem.endswith("_experts"):  # X_<key>_experts_rgb: the PoE precision shares, not a UMAP
                label = f"{stem[:-len('_experts')].upper()} expert weights"
            else:
                label = f"{stem.upper()} shared embedding"
            out.setdefault(label, (table, k))
    return out


class ExploreWidget(QWidget):
    """Show a project's results as layers: RGB latent colouring, feature maps, imputations, annotations."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)
        self.last_result = None
        #: the classifier's size (None: the paper's ensemble, :class:`~spatialmix.evaluate.annotations.EnsembleOptions`)
        self.ensemble_options = None

        self.sample_combo = QComboBox()
        # latent colouring
        self.rgb_combo = QComboBox()
        self.rgb_button = QPushButton("Show RGB colouring")
        self.rgb_button.clicked.connect(self.show_rgb)
        # feature maps
        self.table_combo = QComboBox()
        self.values_combo = QComboBox()
        self.feature_edit = QLineEdit()
        self.feature_edit.setPlaceholderText("gene symbol, m/z (e.g. 702.54) or feature name")
        self.ppm = QDoubleSpinBox()
        self.ppm.setRange(0.1, 10000)
        self.ppm.setValue(20.0)
        self.ppm.setSuffix(" ppm")
        self.map_button = QPushButton("Show feature map")
        self.map_button.clicked.connect(self.show_feature)
        # imputation
        self.source_boxes = {m: QCheckBox(TABLE_LABELS[m].replace("&", "&&")) for m in TABLE_LABELS}
        self.impute_button = QPushButton("Show imputed beside measured")
        self.impute_button.clicked.connect(self.show_imputed)
        # annotations
        self.rep_combo = QComboBox()
        self.scheme_combo = QComboBox()
        self.scheme_combo.addItems(["loocv", "4cv"])
        self.predict_button = QPushButton("Predict (cross-validated)")
        self.predict_button.clicked.connect(self.predict)
        self.stored_button = QPushButton("Show stored")
        self.stored_button.clicked.connect(self.show_stored)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.scores_label = QLabel("")
        self.scores_label.setWordWrap(True)
        self.f1_table = QTableWidget(0, 5)
        self.f1_table.setHorizontalHeaderLabels(["class", "spots", "precision", "recall", "F1"])
        self.f1_table.verticalHeader().setVisible(False)
        self.f1_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.f1_table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.f1_table.setMinimumHeight(150)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.2, 3.6), dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(300)
        self.panel = WorkerPanel()
        self.last_shown: list = []  # the layers of the last feature / imputed map (added when its job is done)

        lay = QVBoxLayout(self)
        form = QFormLayout()
        form.addRow("Sample", self.sample_combo)
        lay.addLayout(form)
        lay.addWidget(section("Latent space as colour (3D UMAP → RGB)"))
        row = QHBoxLayout()
        row.addWidget(self.rgb_combo, 1)
        row.addWidget(self.rgb_button)
        lay.addLayout(row)
        lay.addWidget(section("Feature map"))
        form = QFormLayout()
        form.addRow("Modality", self.table_combo)
        form.addRow("Values", self.values_combo)
        form.addRow("Feature", self.feature_edit)
        form.addRow("m/z tolerance", self.ppm)
        lay.addLayout(form)
        lay.addWidget(self.map_button)
        lay.addWidget(section("Imputed map of the feature above, from"))
        row = QHBoxLayout()
        for box in self.source_boxes.values():
            row.addWidget(box)
        lay.addLayout(row)
        lay.addWidget(self.impute_button)
        lay.addWidget(section("Predicted annotations vs the pathologist"))
        form = QFormLayout()
        form.addRow("Representation", self.rep_combo)
        form.addRow("Scheme", self.scheme_combo)
        lay.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.predict_button)
        row.addWidget(self.stored_button)
        lay.addLayout(row)
        lay.addWidget(self.panel)
        lay.addWidget(self.scores_label)
        lay.addWidget(self.legend)
        lay.addWidget(self.f1_table)
        lay.addWidget(self.canvas)
        lay.addStretch(1)

        self.table_combo.currentTextChanged.connect(self._table_changed)
        self.rep_combo.currentTextChanged.connect(self._rep_changed)
        # the representation the user picked (or predicted from): kept when the list changes; until then the dock
        # picks MIMA's annotation representation once a model writes it
        self._rep_chosen: str | None = None
        self.rep_combo.activated.connect(lambda i: setattr(self, "_rep_chosen", self.rep_combo.itemText(i)))
        self.state.changed.connect(self._state_changed)
        self._state_changed("project")

    # -- choices ----------------------------------------------------------------------------------------------
    @property
    def table(self) -> str:
        inv = {v: k for k, v in TABLE_LABELS.items()}
        return inv.get(self.table_combo.currentText(), self.table_combo.currentText())

    def samples(self) -> list[str]:
        chosen = self.sample_combo.currentText()
        return self.state.samples if chosen in ("", ALL_SAMPLES) else [chosen]

    def _state_changed(self, what: str) -> None:
        if what not in ("project", "samples", "tables", "model", "results", "predictions"):
            return
        sdata = self.state.sdata
        fill_combo(self.sample_combo, [ALL_SAMPLES, *self.state.samples])
        fill_combo(self.rgb_combo, list(rgb_choices(sdata)))
        tables = [TABLE_LABELS[t] for t in TABLE_LABELS if sdata is not None and t in sdata.tables]
        fill_combo(self.table_combo, tables)
        self._table_changed()
        from spatialmix.evaluate.annotations import default_representation, representations_of

        reps = representations_of(sdata) if sdata is not None else []
        # the user's pick, else MIMA's representation for annotation prediction once written (docs/models.md,
        # "Annotation representation"); an item the dock itself showed first (e.g. raw_rna before training) does
        # not count as a choice
        # (the headless default: the corrected PCA alone or beside measured features, chosen per fold)
        default = default_representation(sdata) if sdata is not None else None
        preferred = self._rep_chosen if self._rep_chosen in reps else (
            default if default is not None and "corrected_pca" in default else None)
        if preferred is not None:
            self.rep_combo.blockSignals(True)
            self.rep_combo.setCurrentIndex(-1)
            self.rep_combo.blockSignals(False)
        fill_combo(self.rep_combo, reps, preferred=preferred)
        self._rep_changed()
        for m, box in self.source_boxes.items():
            box.setEnabled(sdata is not None and m in sdata.tables)

    def _table_changed(self, *_):
        sdata, table = self.state.sdata, self.table
        if sdata is None or table not in sdata.tables:
            fill_combo(self.values_combo, [])
            return
        ad = sdata.tables[table]
        key = self.state.model_key
        layers = [ly for ly in ad.layers if ly.startswith(f"{key}_") and not ly.startswith(f"{key}_from_")]
        fill_combo(self.values_combo, ["measured", *[values_label(key, ly, table) for ly in layers]])
        self._layer_of_label = {values_label(key, ly, table): ly for ly in layers}
        names = [f"{float(v):.4f}" for v in ad.var["mz"]] if table == "msi" and "mz" in ad.var else \
            [str(v) for v in ad.var_names]
        self.feature_edit.setCompleter(QCompleter(names))
        self.ppm.setEnabled(table == "msi")
        if not self.feature_edit.text() or self.feature_edit.text() not in names:
            self.feature_edit.setText(_default_feature(ad, table))

    def _rep_changed(self, *_):
        from spatialmix.evaluate.annotations import stored_predictions

        rep = self.rep_combo.currentText()
        has = bool(rep) and self.state.sdata is not None and stored_predictions(self.state.sdata, rep) is not None
        self.stored_button.setEnabled(has)

    # -- latent colouring -------------------------------------------------------------------------------------
    def show_rgb(self):
        from spatialmix.errors import ProjectError
        from spatialmix.napari._layers import rgb_spots_layer, spots_as_image

        choices = rgb_choices(self.state.sdata)
        label = self.rgb_combo.currentText()
        try:
            if label not in choices:
                raise ProjectError("no RGB colouring in this project yet: train a model (Integrate) first")
            table, obsm = choices[label]
            sdata = self.state.sdata
            placed = {s: (self.state.offset(s), self.state.visible(s)) for s in self.samples()}

            def build():
                return [rgb_spots_layer(sdata, s, obsm, table=table, offset=off, layer_name=layer_name(
                    s, f"RGB of {label}"), visible=vis) for s, (off, vis) in placed.items()]

            # a Visium HD sample is rasterised in a worker (seconds at 10^5-10^6 bins); the layers come when done
            layers: list = []
            add_layers_built_off_gui(self.viewer, build, in_worker=any(spots_as_image(sdata, s) for s in placed),
                                     on_added=layers.extend)
            if label.endswith(" expert weights"):
                from spatialmix.results import provenance

                key = obsm[2:-len("_experts_rgb")]
                mods = provenance(self.state.sdata, key)["expert_weights"]["columns"][:3]
                channels = ", ".join(f"{c} {TABLE_LABELS.get(m, m)}" for c, m in zip(("red", "green", "blue"), mods))
                self._caption(f"{label}: each modality's share of the shared embedding at each spot\n"
                              f"{channels}; grey = equal say, a pure colour = one modality decides")
            else:
                self._caption(f"RGB of the {label}: a 3D UMAP scaled to red, green, blue\n"
                              "similar colour = similar spots, across samples")
        except Exception as err:  # noqa: BLE001
            notify_error(err, "RGB colouring")
            return []
        return layers

    # -- feature maps -----------------------------------------------------------------------------------------
    # What a map needs (the values: a dense feature column, an imputation by the model; the rasterised spots)
    # is computed in the dock's worker; only adding the finished layers runs on the GUI thread (issue 16). The
    # buttons return the worker; the layers shown are in ``last_shown`` when it is done.
    def _placements(self, row: int) -> dict[str, tuple[tuple[float, float], bool]]:
        """{sample: (offset of ``row``, visible)}, read on the GUI thread before a job starts."""
        return {s: (self.state.row_shift(s, row), self.state.visible(s)) for s in self.samples()}

    @staticmethod
    def _map_tuples(sdata, values, table: str, label: str, placements: dict, *, row: int,
                    colormap: str = "viridis") -> list[tuple]:
        """Image layer tuples of ``values`` for each placed sample (no Qt: runs in the worker)."""
        from spatialmix.napari._layers import map_image_layer, percentile_limits
        from spatialmix.results import render_result

        limits = percentile_limits(values.to_numpy(dtype=float))
        tuples = []
        feat = feature_label(sdata, table, values.name)
        for i, (s, (shift, visible)) in enumerate(placements.items()):
            rendered = render_result(sdata, s, values, table=table)
            data = map_image_layer(rendered, offset=shift, colormap=colormap, contrast_limits=limits,
                                   layer_name=layer_name(s, label, feat), visible=visible)
            # one colourbar per row (top right: measured row, bottom left: imputed row)
            data[1]["metadata"]["spatialmix"].update(
                row=row, colorbar=i == 0, colorbar_position=("top_right" if row == 0 else "bottom_left") if i == 0
                else None)
            tuples.append(data)
        return tuples

    def _add_maps(self, tuples: list[tuple]) -> list:
        layers = []
        for data in tuples:
            layer = add_or_replace(self.viewer, data)
            position = data[1]["metadata"]["spatialmix"].get("colorbar_position")
            if position:
                layer.colorbar.position = position
            layers.append(layer)
        return layers

    def _shown(self, layers: list) -> list:
        self.last_shown = layers
        return layers

    def show_feature(self):
        """The chosen feature's map (measured, corrected or denoised), one image per sample; returns the worker."""
        from spatialmix.progress import Progress
        from spatialmix.results import spot_values

        try:
            table, sdata, key = self.table, self.state.sdata, self.state.model_key
            label = self.values_combo.currentText()
            layer = None if label == "measured" else self._layer_of_label[label]
            feature, ppm = self.feature_edit.text().strip(), self.ppm.value()
            placements = self._placements(0)
        except Exception as err:  # noqa: BLE001
            notify_error(err, "feature map")
            return None

        def job():
            yield Progress("feature map", 0, None, f"{feature} of {TABLE_LABELS.get(table, table)}")
            values = spot_values(sdata, table, layer=layer, feature=feature, ppm=ppm)
            values = _measured(sdata, table, values) if layer is None else values
            return self._map_tuples(sdata, values, table, values_label(key, layer, table), placements, row=0)

        return self.panel.start(job, on_done=lambda tuples: self._shown(self._add_maps(tuples)), what="feature map")

    def show_imputed(self):
        """The imputed map of the chosen feature from the ticked sources, one row under the measured map (the
        imputation is computed with the trained model when the project does not hold it); returns the worker."""
        from spatialmix.errors import ModelError, ParameterError
        from spatialmix.progress import Progress
        from spatialmix.results import spot_values, translation_layer, write_translation

        try:
            table, key, sdata, model = self.table, self.state.model_key, self.state.sdata, self.state.model
            sources = [m for m, box in self.source_boxes.items() if box.isChecked() and box.isEnabled()
                       and m != table]
            if not sources:
                raise ParameterError(f"tick at least one source modality other than the target "
                                     f"{TABLE_LABELS.get(table, table)}")
            layer = translation_layer(key, sources)
            if layer not in sdata.tables[table].layers and model is None:
                raise ModelError(f"the project holds no imputation of {TABLE_LABELS[table]} from "
                                 f"{'+'.join(TABLE_LABELS[s] for s in sources)} and no trained model is loaded; "
                                 "train or load a model (Integrate)")
            feature, ppm = self.feature_edit.text().strip(), self.ppm.value()
            rows = self._placements(0), self._placements(1)
        except Exception as err:  # noqa: BLE001
            notify_error(err, "imputed map")
            return None

        def job():
            if layer not in sdata.tables[table].layers:
                yield Progress("imputed map", 0, None, f"impute {TABLE_LABELS.get(table, table)} from "
                               f"{'+'.join(TABLE_LABELS.get(s, s) for s in sources)}")
                write_translation(sdata, model, sources, table, key=key)
            yield Progress("imputed map", 0, None, "draw the maps")
            measured = _measured(sdata, table, spot_values(sdata, table, feature=feature, ppm=ppm))
            imputed = spot_values(sdata, table, layer=layer, feature=feature, ppm=ppm)
            tuples = self._map_tuples(sdata, measured, table, values_label(key, None, table), rows[0], row=0)
            tuples += self._map_tuples(sdata, imputed, table, values_label(key, layer, table), rows[1], row=1,
                                       colormap="magma")
            return tuples, feature_label(sdata, table, imputed.name)

        def done(result):
            tuples, feat = result
            shown = self._shown(self._add_maps(tuples))
            self._only_row_layers(shown)
            self._caption(f"{feat}\nTop row: {values_label(key, None, table)} (colour bar top right)\n"
                          f"Bottom row: {values_label(key, layer, table)} (colour bar bottom left)")

        return self.panel.start(job, on_done=done, what="imputed map")

    def _caption(self, text: str) -> None:
        """Say on the canvas what the rows are."""
        self.viewer.text_overlay.text = text
        self.viewer.text_overlay.font_size = 11
        self.viewer.text_overlay.position = "top_left"
        self.viewer.text_overlay.visible = True

    def _only_row_layers(self, keep: list) -> None:
        """Hide other comparison-row layers so rows do not overlap."""
        for ly in self.viewer.layers:
            meta = ly.metadata.get("spatialmix", {})
            if meta.get("row", 0) > 0 and ly not in keep:
                ly.visible = False

    # -- annotations ------------------------------------------------------------------------------------------
    def predict(self):
        from spatialmix.errors import ProjectError
        from spatialmix.evaluate.annotations import iter_predict_annotations

        rep = self.rep_combo.currentText()
        if self.state.sdata is None or not rep:
            notify_error(ProjectError("no representation to predict from: build the spot tables or train a model"))
            return None
        self._rep_chosen = rep
        return self.panel.start(iter_predict_annotations, self.state.sdata, rep, scheme=self.scheme_combo.currentText(),
                                options=self.ensemble_options, on_done=lambda result: self._predicted(rep), what=f"predict annotations from {rep}")

    def _predicted(self, rep: str) -> None:
        self.state.changed.emit("predictions")
        self.rep_combo.setCurrentText(rep)
        self.show_stored()

    def show_stored(self):
        from spatialmix.evaluate.annotations import stored_predictions
        from spatialmix.napari._layers import category_spots_layer, spots_as_image

        rep = self.rep_combo.currentText()
        try:
            stored = stored_predictions(self.state.sdata, rep)
            if stored is None:
                from spatialmix.errors import ProjectError

                raise ProjectError(f"no predictions from {rep!r} yet: press Predict")
            scheme = stored["scores"].get("scheme", "")
            sdata = self.state.sdata
            ann = _annotation_key(sdata)
            rows = ((0, ann, "pathologist"), (1, f"pred_{rep}", f"predicted from {rep} ({scheme.upper()})"),
                    (2, f"agree_{rep}", f"agreement of {rep} ({scheme.upper()})"))
            placed = {(s, row): (self.state.row_shift(s, row), self.state.visible(s)) for s in self.samples()
                      for row, _, _ in rows}

            def build():
                tuples = []
                for s in dict.fromkeys(s for s, _ in placed):
                    for row, column, label in rows:
                        off, vis = placed[(s, row)]
                        data = category_spots_layer(sdata, s, column, offset=off, layer_name=layer_name(s, label),
                                                    visible=vis)
                        data[1]["metadata"]["spatialmix"]["row"] = row
                        tuples.append(data)
                return tuples

            def added(shown):
                legend = {}
                for layer in shown:
                    meta = layer.metadata["spatialmix"]
                    for k, v in meta["legend"].items():
                        legend.setdefault(("agreement" if meta["row"] == 2 else "class", k), v)
                self._only_row_layers(shown)
                self._caption(f"Top row: the pathologist's labels\nMiddle: predicted from {rep} "
                              f"({scheme.upper()}, same colours)\nBottom: agreement (green agree, red disagree, "
                              "grey unlabelled)")
                self._show_scores(stored, legend)
                self.last_shown = shown

            # a Visium HD sample is rasterised in a worker; the layers, legend and scores come when it is done
            big = any(spots_as_image(sdata, s) for s, _ in placed)
            add_layers_built_off_gui(self.viewer, build, in_worker=big, on_added=added)
            return [] if big else self.last_shown
        except Exception as err:  # noqa: BLE001
            notify_error(err, "annotations")
            return []

    def _show_scores(self, stored: dict, legend: dict) -> None:
        from spatialmix.evaluate.plots import draw_confusion

        sc = stored["scores"]
        self.scores_label.setText(
            f"<b>{sc['representation']}</b>, {sc['scheme'].upper()}: {sc['n_spots']} scored spots, accuracy "
            f"{sc['overall_accuracy']:.2f}, mean per-class F1 {sc['f1']:.2f} (precision {sc['precision']:.2f}, "
            f"recall {sc['recall']:.2f}); excluded: {', '.join(sc.get('excluded', [])) or 'none'}"
            + _choices_text(sc.get("options", {}).get("chosen"), sc["representation"]))
        swatch = '<span style="background-color:{c}">&nbsp;&nbsp;&nbsp;&nbsp;</span>&nbsp;{k}'
        classes = [swatch.format(c=c, k=k) for (kind, k), c in legend.items() if kind == "class"]
        agree = [swatch.format(c=c, k=k) for (kind, k), c in legend.items() if kind == "agreement"]
        self.legend.setText("<b>Classes</b> (pathologist and predicted): " + " ".join(classes) +
                            "<br><b>Agreement</b>: " + " ".join(agree))
        per = stored["per_class"]
        self.f1_table.setRowCount(len(per))
        for i, (cls, r) in enumerate(per.iterrows()):
            for j, v in enumerate([cls, f"{int(r['n_spots'])}", f"{r['precision']:.2f}", f"{r['recall']:.2f}",
                                   f"{r['f1']:.2f}"]):
                self.f1_table.setItem(i, j, QTableWidgetItem(v))
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        draw_confusion(ax, stored["confusion"], fontsize=7,
                       title=f"{sc['representation']} ({sc['scheme'].upper()}), row-normalised")
        self.canvas.draw_idle()


def _choices_text(chosen: dict | None, representation: str) -> str:
    """"<br>mima_corrected_pca chosen per fold (...): P1_S1: + raw_rna; P1_S2: alone; ..." for a representation
    chosen in every fold (``..._corrected_pca-with-measured``), else ""."""
    if not chosen:
        return ""
    from spatialmix.evaluate.annotations import JOIN, MEASURED

    base = representation[:-len(MEASURED)] if representation.endswith(MEASURED) else ""

    def short(name: str) -> str:
        extra = name[len(base):].split(JOIN)[1:] if base and name.startswith(base) else [name]
        return "alone" if not extra else "+ " + " + ".join(extra)

    return f"<br>{base or 'representation'} chosen per fold (inside its training samples): " + "; ".join(
        f"{fold}: {short(name)}" for fold, name in chosen.items())


def _annotation_key(sdata) -> str:
    return sdata.attrs.get("spatialmix", {}).get("prepare", {}).get("annotation_key", "pathologist")


def _measured(sdata, table: str, values: pd.Series) -> pd.Series:
    """Measured values on the model's scale (MSI: log1p of the TIC-normalised intensity, as the model sees it,
    so that measured, corrected and imputed maps compare), NaN (not drawn) where the modality was not measured."""
    from spatialmix.data import COVERED_KEYS

    if table == "msi":
        values = np.log1p(values)

    cov = COVERED_KEYS.get(table)
    if cov and cov in sdata.tables[table].obs:
        values = values.where(sdata.tables[table].obs[cov].reindex(values.index).fillna(False).astype(bool))
    return values


def _default_feature(ad, table: str) -> str:
    """The most variable feature among those detected in at least half the spots."""
    X = ad.X
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)
    detected = (X > 0).mean(axis=0) >= 0.5
    var = np.where(detected, X.var(axis=0), -1.0)
    j = int(np.argmax(var))
    if table == "msi" and "mz" in ad.var:
        return f"{float(ad.var['mz'].iloc[j]):.4f}"
    return str(ad.var_names[j])
