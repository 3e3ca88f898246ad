"""The five dock widgets driven end to end in a real napari window (Xvfb) on the bundled sample: load, register,
train, explore every output, save and reopen. Assertions are on the layers a user would see."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.colors import to_rgba

pytest.importorskip("napari")

from qtpy.QtCore import QTimer  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

from spatialmix.napari._common import WorkerPanel, state_of  # noqa: E402
from spatialmix.napari._data_widget import DataWidget  # noqa: E402
from spatialmix.napari._explore_widget import ExploreWidget  # noqa: E402
from spatialmix.napari._integrate_widget import IntegrateWidget, ParamPage, model_defaults  # noqa: E402
from spatialmix.napari._register_widget import RegisterWidget  # noqa: E402
from spatialmix.napari._save_widget import SaveWidget  # noqa: E402


def wait(panel, timeout: float = 600.0) -> None:
    t0 = time.perf_counter()
    while panel.running:
        QApplication.processEvents()
        time.sleep(0.01)
        assert time.perf_counter() - t0 < timeout, f"worker still running: {panel.status.text()}"
    QApplication.processEvents()


def notifications() -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def _project_copy(saved_project):
    from spatialmix.project import load_project

    return load_project(saved_project)


def test_data_widget_reads_samples_as_layers_and_reports_bad_input(make_napari_viewer, sample_data_dir):
    from spatialmix.pipeline import read_samples_csv

    viewer = make_napari_viewer(show=True)
    w = DataWidget(viewer)
    viewer.window.add_dock_widget(w)
    specs = read_samples_csv(sample_data_dir)[:2]
    seen = []
    viewer.layers.events.inserted.connect(lambda e: seen.append((time.perf_counter(), e.value.name)))
    w.read_specs(specs)
    wait(w.panel)
    names = [ly.name for ly in viewer.layers]
    for s in ("P1_S1", "P1_S2"):
        assert {f"{s} · H&E", f"{s} · MSI TIC", f"{s} · spots", f"{s} · Visium image"} <= set(names)
    assert type(viewer.layers["P1_S1 · spots"]).__name__ == "Points"
    assert viewer.layers["P1_S1 · H&E"].rgb
    # layers of the first sample appeared before the second sample was read
    first = max(t for t, n in seen if n.startswith("P1_S1"))
    second = min(t for t, n in seen if n.startswith("P1_S2"))
    assert first < second
    assert w.table.rowCount() == 2 and w.table.item(0, 3).text() == "yes"
    # side by side: the second sample lies to the right of the first
    x1 = viewer.layers["P1_S1 · spots"].data[:, 1].max()
    x2 = viewer.layers["P1_S2 · spots"].data[:, 1].min()
    assert x2 > x1
    # one at a time: both at the same place, only the chosen one visible
    w.layout_combo.setCurrentText("one at a time")
    w.sample_combo.setCurrentText("P1_S2")
    assert not viewer.layers["P1_S1 · spots"].visible and viewer.layers["P1_S2 · spots"].visible
    p2 = viewer.layers["P1_S2 · spots"]
    assert p2.affine.affine_matrix[1, 2] < 0  # moved left onto the first sample's place
    w.layout_combo.setCurrentText("side by side")
    np.testing.assert_allclose(p2.affine.affine_matrix[1, 2], 0.0, atol=1e-6)

    # bad input: a notification with our message, the widget still works
    w.sample.setText("X1")
    w.visium.setText(str(sample_data_dir / "nope"))
    w.add_sample_from_form()
    wait(w.panel)
    assert any("nope" in m and "Visium" in m for m in notifications()), notifications()[-3:]
    w.sample.setText("")
    w.add_sample_from_form()
    assert any("Sample field is empty" in m for m in notifications())
    assert w.table.rowCount() == 2 and not w.panel.running


def test_register_widget_auto_landmarks_undo_and_tables(make_napari_viewer, sample_data_dir):
    from spatialmix.pipeline import read_samples_csv
    from spatialmix.registration import apply_matrix, element_pixel_to_sample

    viewer = make_napari_viewer(show=True)
    data, reg = DataWidget(viewer), RegisterWidget(viewer)
    viewer.window.add_dock_widget(data)
    viewer.window.add_dock_widget(reg)
    data.read_specs(read_samples_csv(sample_data_dir)[:1])
    wait(data.panel)
    state = state_of(viewer)
    assert reg.sample_combo.currentText() == "P1_S1"

    reg.modality_combo.setCurrentText("H&E")
    before = np.array(viewer.layers["P1_S1 · H&E"].affine.affine_matrix)
    reg.auto_register()
    wait(reg.panel)
    rec = state.sdata.attrs["spatialmix"]["registration"]["P1_S1"]["he"]
    assert rec["method"] != "landmarks" and "RMS" in reg.record_label.text()
    after = np.array(viewer.layers["P1_S1 · H&E"].affine.affine_matrix)
    assert not np.allclose(before, after)  # the layer follows the new transformation
    assert len([ly for ly in viewer.layers if ly.name == "P1_S1 · H&E"]) == 1  # replaced, not duplicated

    # landmarks: pairs from a known transform (the automatic one, shifted 30 um in x)
    reg.landmark_button.setChecked(True)
    moving, fixed = reg._landmark_layers
    m = element_pixel_to_sample(state.sdata, "P1_S1", "he")
    px = np.array([[100.0, 120.0], [900.0, 200.0], [500.0, 800.0], [150.0, 700.0]])
    um = apply_matrix(m, px) + [30.0, 0.0]
    for p, q in zip(px, um):
        moving.add(p[::-1])
        fixed.add(q[::-1])
    assert "RMS: 0.00 um over 4 pairs" in reg.rms_label.text(), reg.rms_label.text()
    assert list(fixed.features["pair"]) == [1, 2, 3, 4]
    reg.opacity.setValue(30)
    assert viewer.layers["P1_S1 · H&E"].opacity == pytest.approx(0.3)
    reg.apply_landmarks()
    rec = state.sdata.attrs["spatialmix"]["registration"]["P1_S1"]["he"]
    assert rec["method"] == "landmarks" and rec["rms_um"] < 1e-6
    np.testing.assert_allclose(element_pixel_to_sample(state.sdata, "P1_S1", "he")[0, 2], m[0, 2] + 30.0)
    reg.undo()
    np.testing.assert_allclose(element_pixel_to_sample(state.sdata, "P1_S1", "he"), m)
    assert state.sdata.attrs["spatialmix"]["registration"]["P1_S1"]["he"]["method"] != "landmarks"
    reg.landmark_button.setChecked(False)
    assert not any("landmarks" in ly.name for ly in viewer.layers)

    reg.modality_combo.setCurrentText("MSI")
    reg.auto_register()
    wait(reg.panel)
    assert "msi" in state.sdata.attrs["spatialmix"]["registration"]["P1_S1"]
    reg.build_tables()
    wait(reg.panel)
    assert {"msi", "morphology"} <= set(state.sdata.tables)
    assert state.sdata.tables["msi"].n_obs == state.sdata.tables["rna"].n_obs


@pytest.fixture
def trained_viewer(make_napari_viewer, saved_project):
    """A viewer with the demo project open and MIMA trained from the Integrate widget (3 epochs), the event
    loop's longest stall measured meanwhile."""
    viewer = make_napari_viewer(show=True)
    data, integ = DataWidget(viewer), IntegrateWidget(viewer)
    viewer.window.add_dock_widget(data)
    viewer.window.add_dock_widget(integ)
    data.open_project(str(saved_project))
    wait(data.panel)
    integ.preset.setCurrentText("bundled demo (200 epochs, lr 1e-3)")
    integ.epochs.setValue(3)
    integ.device.setCurrentText("cpu")
    t0 = time.perf_counter()
    while not integ.warmed:  # the widget's warm-up (imports, UMAP compilation) while the user fills the form
        QApplication.processEvents()
        time.sleep(0.01)
        assert time.perf_counter() - t0 < 300
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append((time.perf_counter(), integ.panel.status.text())))
    timer.start()
    integ.train()
    wait(integ.panel)
    timer.stop()
    gaps = np.diff([t for t, _ in ticks])
    worst = int(np.argmax(gaps))
    return viewer, integ, (gaps, f"{gaps[worst] * 1000:.0f} ms between '{ticks[worst][1]}' and '{ticks[worst + 1][1]}'")


def test_integrate_widget_trains_in_a_worker_without_freezing_the_ui(trained_viewer):
    viewer, integ, (gaps, worst) = trained_viewer
    state = state_of(viewer)
    assert state.model is not None and state.model.is_trained
    assert len(state.model.training_curve()) == 3
    assert "X_mima" in state.sdata.tables["rna"].obsm
    # the loss plot shows every loss term of every epoch, and the time label the last epoch
    assert [r["epoch"] for r in integ.plot.records] == [1, 2, 3]
    series = integ.plot.series()
    assert {"loss", "val_loss"} <= set(series) and len(series) > 4 and len(series["loss"][0]) == 3
    img = integ.plot.grab().toImage()
    colours = {img.pixelColor(x, y).name() for x in range(0, img.width(), 3) for y in range(0, img.height(), 3)}
    assert len(colours) > 8  # lines in several colours, not a blank widget
    assert integ.time_label.text().startswith("epoch 3/3")
    assert len(gaps) > 100
    print(f"longest event-loop stall: {worst}")
    assert gaps.max() < 0.2, f"the event loop stalled for {worst}"


def test_a_burst_of_progress_events_is_drawn_once_and_ends_on_the_last(qtbot):
    """The results writer yields several steps within milliseconds; each drawn update re-lays out napari's docks
    (~30 ms under Xvfb), so a burst drawn event by event froze the viewer for ~200 ms. The panel draws the first
    at once and the burst's last one after UPDATE_S, never one that a later event replaced, and never drops it."""
    from spatialmix.progress import Progress

    panel = WorkerPanel()
    qtbot.addWidget(panel)
    drawn = []
    panel.status.setText = lambda text, _set=panel.status.setText: (drawn.append(text), _set(text))
    for i in range(7):
        panel.show_progress(Progress("write results", i, 20, f"step {i}"))
    assert drawn == ["write results 0/20: step 0"]
    qtbot.waitUntil(lambda: len(drawn) == 2, timeout=2000)
    assert drawn[-1] == "write results 6/20: step 6" and panel.bar.value() == round(1000 * 6 / 20)
    assert panel.status.toolTip() == drawn[-1]  # the full text, whatever the dock's width clips
    qtbot.wait(int(3 * 1000 * WorkerPanel.UPDATE_S))
    assert len(drawn) == 2


def test_jobs_keep_the_loaded_objects_out_of_full_garbage_collections_and_leak_nothing(qtbot):
    """A full garbage collection holds the GIL for as long as it scans (~400 ms with napari and the demo project
    loaded), freezing the viewer whichever thread starts it. While any job runs, the objects that existed at its
    start are frozen; when the last job ends (finished or failed) they are collectable again."""
    import gc
    import weakref

    from spatialmix.progress import Progress

    class Cyclic:  # garbage only the cycle collector can free
        pass

    def job(fail=False, seen=None):
        seen.append(gc.get_freeze_count())
        yield Progress("job", 1, 2, "")
        if fail:
            raise ValueError("bad input")
        return 1

    before = Cyclic()
    before.me = before
    alive = weakref.ref(before)
    del before  # garbage when the jobs start: frozen with the rest, so not collected during them

    a, b = WorkerPanel(), WorkerPanel()
    qtbot.addWidget(a)
    qtbot.addWidget(b)
    seen_a, seen_b = [], []
    a.start(job, seen=seen_a)
    b.start(job, fail=True, seen=seen_b)
    gc.collect()
    assert alive() is not None
    for panel in (a, b):
        qtbot.waitUntil(lambda p=panel: p.worker is None, timeout=10000)
    assert seen_a[0] > 0 and seen_b[0] > 0  # frozen while each ran
    assert "failed" in b.status.text()
    assert gc.get_freeze_count() == 0  # both ended: nothing stays frozen
    gc.collect()
    assert alive() is None


def test_parameter_pages_start_at_every_models_defaults(qtbot):
    """A form row that cannot hold a model's default (a spin box capped below it) would silently change it."""
    from spatialmix.models import MODELS

    for name in MODELS:
        page = ParamPage(name, None)
        defaults = model_defaults(name)
        for key, value in page.values().items():
            if key in defaults and isinstance(defaults[key], (bool, int, float)):
                assert value == pytest.approx(defaults[key]), (name, key, value, defaults[key])
            elif key in defaults and isinstance(defaults[key], str):
                assert value == defaults[key], (name, key, value, defaults[key])
    # a parameter with declared choices is a drop-down of exactly those (no typing), and the pick is what trains
    from qtpy.QtWidgets import QComboBox

    page = ParamPage("scmodal", None)
    combo = page.widgets["hidden_layer"]
    assert isinstance(combo, QComboBox)
    assert [combo.itemText(i) for i in range(combo.count())] == ["relu", "batchnorm"]
    combo.setCurrentText("batchnorm")
    assert page.values()["hidden_layer"] == "batchnorm"
    assert isinstance(ParamPage("modamix", None).widgets["adversarial"], QComboBox)


def test_integrate_widget_offers_the_automatic_schedule_and_reports_the_kept_epoch(trained_viewer):
    viewer, integ, _ = trained_viewer
    assert integ.options()["train"]["epochs"] == 3
    integ.preset.setCurrentText("fits the data (auto)")
    assert integ.epochs.text() == "auto" and integ.options()["train"]["epochs"] == "auto"
    assert integ.options()["train"]["lr"] == 1e-3
    integ.preset.setCurrentText("paper defaults")
    assert integ.options()["train"]["epochs"] == 50 and integ.options()["train"]["lr"] == 1e-4
    model = state_of(viewer).model
    model.train_config["schedule"] = {"auto": True, "epochs": 1445, "best_epoch": 2, "early_stopped": True}
    integ._describe(model)
    assert "best validation epoch 2 kept (early stop, 1445 planned)" in integ.model_label.text()
    # while training with early stopping the time left is an upper bound, and the label says how near the stop is
    epoch_info = {"event": "epoch", "epoch": 120, "epochs": 1445, "seconds_per_epoch": 0.5, "eta_s": 662.5,
                  "terms": {"recon": 1.0}, "loss": 1.0, "val_loss": 1.1, "val_terms": {"recon": 1.1}}
    integ._on_event(SimpleNamespace(info={**epoch_info, "early_stopping": True, "patience_left": 7}))
    assert integ.time_label.text() == ("epoch 120/1445 · 0.50 s/epoch · at most 11.0 min left; stops after 7 more "
                                       "epochs without a better validation loss")
    integ._on_event(SimpleNamespace(info={**epoch_info, "early_stopping": False, "patience_left": 7}))
    assert integ.time_label.text().endswith("0.50 s/epoch · 11.0 min left")


def test_stop_keeps_the_completed_epochs_and_writes_them(make_napari_viewer, saved_project, tmp_path):
    viewer = make_napari_viewer(show=True)
    data, integ = DataWidget(viewer), IntegrateWidget(viewer)
    viewer.window.add_dock_widget(integ)
    data.open_project(str(saved_project))
    wait(data.panel)
    state_of(viewer).sdata.tables["rna"].obsm.pop("X_mima")
    integ.epochs.setValue(500)
    integ.device.setCurrentText("cpu")
    # Train waits for the widget's warm-up: disabled, and a clear message if called anyway
    if not integ.warmed:
        assert not integ.train_button.isEnabled() and "preparing" in integ.train_button.text()
        assert integ.train() is None and any("still preparing" in m for m in notifications())
        assert not integ.load_button.isEnabled()  # loading writes the same outputs: it waits too
        assert integ.load_model(str(tmp_path / "nowhere")) is None
        assert any("Load model is enabled when it is done" in m for m in notifications())
    t0 = time.perf_counter()
    while not integ.warmed:
        QApplication.processEvents()
        time.sleep(0.01)
        assert time.perf_counter() - t0 < 300
    assert integ.train_button.isEnabled() and integ.train_button.text() == "Train"
    integ.train()
    t0 = time.perf_counter()
    while len(integ.plot.records) < 2:
        QApplication.processEvents()
        time.sleep(0.01)
        assert time.perf_counter() - t0 < 300
    integ.panel.stop()
    wait(integ.panel)
    model = state_of(viewer).model
    assert model is not None and model.stopped_early
    assert 2 <= len(model.training_curve()) < 500
    assert "X_mima" in state_of(viewer).sdata.tables["rna"].obsm  # the kept epochs' outputs were written
    assert "stopped by the user" in integ.model_label.text()

    # Save model, then Load model onto the project: the loaded model replaces it and writes the same latent
    kept = state_of(viewer).sdata.tables["rna"].obsm["X_mima"].copy()
    assert integ.load_button.isEnabled()
    assert integ.save_model(str(tmp_path / "model")) is not None
    state_of(viewer).sdata.tables["rna"].obsm.pop("X_mima")
    integ.load_model(str(tmp_path / "model"))
    wait(integ.panel)
    loaded = state_of(viewer).model
    assert loaded is not model and loaded.is_trained and len(loaded.training_curve()) == len(model.training_curve())
    np.testing.assert_allclose(state_of(viewer).sdata.tables["rna"].obsm["X_mima"], kept, atol=1e-5)
    assert integ.model_label.text().startswith("MIMA on ")
    # a folder without a model: a notification naming it, the widget stays usable
    integ.load_model(str(tmp_path / "nowhere"))
    wait(integ.panel)
    assert any("nowhere" in m for m in notifications()) and integ.load_button.isEnabled()


def test_explore_widget_shows_every_output(trained_viewer, tmp_path):
    from spatialmix.evaluate.annotations import EnsembleOptions
    from spatialmix.plotting import category_colors

    viewer, integ, _ = trained_viewer
    state = state_of(viewer)
    ex = ExploreWidget(viewer)
    viewer.window.add_dock_widget(ex)
    n_spots = {s: int((state.sdata.tables["rna"].obs["sample"] == s).sum()) for s in state.samples}

    # the representation to predict from: MIMA's corrected-feature PCA once written, even when the dock showed
    # another item before (raw_rna, before any model); a representation the user picked is kept instead
    rep = ex.rep_combo
    assert rep.currentText() == "mima_corrected_pca-with-measured"
    rep.setCurrentText("raw_rna")  # what the dock shows before training
    state.changed.emit("results")
    assert rep.currentText() == "mima_corrected_pca-with-measured"
    rep.setCurrentText("raw_rna")
    rep.activated.emit(rep.findText("raw_rna"))  # the user picks it
    state.changed.emit("results")
    assert rep.currentText() == "raw_rna"
    rep.setCurrentText("mima_corrected_pca")
    rep.activated.emit(rep.findText("mima_corrected_pca"))

    # RGB colouring of the shared embedding: one Points layer per sample, RGBA face colours
    ex.rgb_combo.setCurrentText("MIMA shared embedding")
    layers = ex.show_rgb()
    assert [ly.name for ly in layers] == [f"{s} · RGB of MIMA shared embedding" for s in state.samples]
    for ly in layers:
        s = ly.metadata["spatialmix"]["sample"]
        assert type(ly).__name__ == "Points" and len(ly.data) == n_spots[s]
        assert ly.face_color.shape == (n_spots[s], 4) and len(np.unique(ly.face_color.round(2), axis=0)) > 20
    ex.show_rgb()  # recomputing replaces
    assert sum(ly.name.endswith("RGB of MIMA shared embedding") for ly in viewer.layers) == len(state.samples)
    # the expert weights: which modality decides each spot's embedding, with the channels named
    ex.rgb_combo.setCurrentText("MIMA expert weights")
    layers = ex.show_rgb()
    assert len(layers) == len(state.samples) and all(type(ly).__name__ == "Points" for ly in layers)
    assert "red RNA, green MSI, blue H&E features" in viewer.text_overlay.text

    # batch-corrected MSI by m/z, with the ppm search
    ex.table_combo.setCurrentText("MSI")
    mz = float(ex.feature_edit.text())
    ex.feature_edit.setText(f"{mz * (1 + 5e-6):.5f}")  # 5 ppm off: still found within 20 ppm
    ex.values_combo.setCurrentText("MIMA corrected MSI")
    assert ex.show_feature() is not None  # the values and the maps are made in the dock's worker
    wait(ex.panel)
    maps = ex.last_shown
    assert maps[0].name == f"P1_S1 · MIMA corrected MSI · m/z {mz:.2f}"
    img = maps[0].data
    assert type(maps[0]).__name__ == "Image" and img.ndim == 2 and np.isfinite(img).mean() > 0.05
    assert maps[0].colorbar.visible
    ex.ppm.setValue(1.0)
    ex.show_feature()  # now 5 ppm is too far: a notification names the nearest feature
    wait(ex.panel)
    assert any("ppm" in m for m in notifications()[-2:])

    # imputed MSI from RNA + H&E, one row under the measured map of the same m/z
    ex.feature_edit.setText(f"{mz:.4f}")
    for m, box in ex.source_boxes.items():
        box.setChecked(m != "msi")
    ex.show_imputed()
    wait(ex.panel)
    shown = ex.last_shown
    measured = viewer.layers[f"P1_S1 · measured MSI (log1p) · m/z {mz:.2f}"]
    imputed = viewer.layers[f"P1_S1 · MIMA imputed MSI from RNA+H&E features · m/z {mz:.2f}"]
    assert len(shown) == 2 * len(state.samples)
    assert imputed.affine.affine_matrix[0, 2] > measured.affine.affine_matrix[0, 2] + measured.data.shape[0] * 5 * 0.9
    np.testing.assert_allclose(imputed.affine.affine_matrix[1, 2], measured.affine.affine_matrix[1, 2])
    # an imputation the project does not hold yet (MSI from RNA alone) is computed with the trained model
    ex.source_boxes["morphology"].setChecked(False)
    ex.show_imputed()  # the imputation (model inference) runs in the worker
    wait(ex.panel)
    assert "mima_from_rna" in state.sdata.tables["msi"].layers
    assert "P2_S2 · MIMA imputed MSI from RNA · m/z " + f"{mz:.2f}" in viewer.layers

    # predicted annotations beside the pathologist's, same colours, agreement, legend, F1 table, confusion
    ex.ensemble_options = EnsembleOptions(n_bags=2, n_trees=10)
    # MIMA's representations for annotation prediction stay offered beside the PoE
    assert ex.rep_combo.currentText() == "mima_corrected_pca"  # the user's pick above is kept
    assert {"mima", "mima_corrected_pca-with-measured"} <= {ex.rep_combo.itemText(i)
                                                            for i in range(ex.rep_combo.count())}
    ex.rep_combo.setCurrentText("mima")
    ex.predict()
    wait(ex.panel)
    path = viewer.layers["P1_S1 · pathologist"]
    pred = viewer.layers["P1_S1 · predicted from mima (LOOCV)"]
    agree = viewer.layers["P1_S1 · agreement of mima (LOOCV)"]
    assert pred.data[:, 0].min() > path.data[:, 0].max()  # the prediction row lies under the pathologist's
    np.testing.assert_allclose(pred.data[:, 1], path.data[:, 1])
    cats = list(state.sdata.tables["rna"].obs["pathologist"].cat.categories)
    palette = category_colors(cats)
    feats = pred.features
    for cls in feats["pred_mima"].dropna().unique()[:3]:
        i = int(np.flatnonzero((feats["pred_mima"] == cls).to_numpy())[0])
        np.testing.assert_allclose(pred.face_color[i], to_rgba(palette[str(cls)]), atol=1e-6)
    ok = (agree.features["agree_mima"] == "agree").to_numpy()
    np.testing.assert_allclose(agree.face_color[ok][0], to_rgba("#1a9850"), atol=1e-6)
    assert "Classes" in ex.legend.text() and "agree" in ex.legend.text()
    assert ex.f1_table.rowCount() >= 3
    assert ex.figure.axes and ex.figure.axes[0].get_xlabel() == "predicted"
    assert "LOOCV" in ex.scores_label.text() and "F1" in ex.scores_label.text()
    assert "chosen per fold" not in ex.scores_label.text()
    # a representation chosen in every fold (the default, ..._corrected_pca-with-measured) says what each fold chose
    from spatialmix.evaluate.annotations import stored_predictions

    stored = stored_predictions(state.sdata, "mima")
    stored["scores"].update(representation="mima_corrected_pca-with-measured", options={"chosen": {
        "P1_S1": "mima_corrected_pca", "P1_S2": "mima_corrected_pca-with-raw_rna"}})
    ex._show_scores(stored, {})
    assert "mima_corrected_pca chosen per fold" in ex.scores_label.text()
    assert "P1_S1: alone; P1_S2: + raw_rna" in ex.scores_label.text()

    # save, export, and reopen: the outputs come back
    save = SaveWidget(viewer)
    viewer.window.add_dock_widget(save)
    save.save(str(tmp_path / "p.zarr"))
    wait(save.panel)
    save.csv_what.setCurrentIndex(0)
    csv = save.export_csv(str(tmp_path / "spots.csv"))
    header = csv.read_text().splitlines()[0]
    assert "pred_mima" in header and "mima_rgb_R" in header
    save.csv_what.setCurrentIndex(1)
    assert "f1" in save.export_csv(str(tmp_path / "scores.csv")).read_text().splitlines()[0]
    viewer.layers.selection.active = pred
    png = save.export_layer(str(tmp_path / "pred.png"))
    from imageio.v3 import imread

    shot = imread(png)
    assert shot.shape[0] > 50 and shot[..., :3].std() > 5

    viewer2_data = DataWidget(viewer)
    viewer2_data.open_project(str(tmp_path / "p.zarr"))
    wait(viewer2_data.panel)
    sd = state_of(viewer).sdata
    assert "pred_mima" in sd.tables["rna"].obs and "mima_from_rna" in sd.tables["msi"].layers
    assert ex.stored_button.isEnabled()
    ex.show_stored()
    assert "P2_S2 · predicted from mima (LOOCV)" in viewer.layers


def test_integrate_widget_trains_a_supervised_model_and_explore_compares_its_predictions(make_napari_viewer,
                                                                                        saved_project):
    """Another model from the same widget: MoDAmix with the ticked samples as labelled sources; its own target
    predictions appear in Explore beside the pathologist's labels, with the per-class scores."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    data, integ = DataWidget(viewer), IntegrateWidget(viewer)
    viewer.window.add_dock_widget(integ)
    data.open_project(str(saved_project))
    wait(data.panel)
    integ.model_combo.setCurrentIndex(integ.model_combo.findData("modamix"))
    assert integ.model_name == "modamix" and integ.key_edit.text() == "modamix"
    assert integ.epochs.value() == 120 and integ.sources.isVisibleTo(integ)  # its paper-stage defaults, sources
    ticked = [integ.sources.item(i).text() for i in range(integ.sources.count())
              if integ.sources.item(i).checkState() == Qt.Checked]
    assert ticked == ["P1_S1", "P2_S1"]  # every other sample by default
    page = integ.pages["modamix"].widgets
    assert page["stage_epochs"].text() == "30, 30, 30, 30"
    page["adversarial"].setCurrentText("omics")
    page["stage_epochs"].setText("1, 1, 1, 1")
    integ.epochs.setValue(4)
    integ.device.setCurrentText("cpu")
    opts = integ.options()
    assert opts["model_params"]["source_samples"] == ticked and opts["model_params"]["adversarial"] == "omics"
    assert opts["model_params"]["stage_epochs"] == [1, 1, 1, 1]
    t0 = time.perf_counter()
    while not integ.warmed:  # as a user waits for the widget's warm-up before Train (run alone, nothing warmed it)
        QApplication.processEvents()
        time.sleep(0.01)
        assert time.perf_counter() - t0 < 300
    # untick every source: a clear error, the widget stays usable
    for i in range(integ.sources.count()):
        integ.sources.item(i).setCheckState(Qt.Unchecked)
    integ.train()
    assert any("needs labelled source samples" in m for m in notifications()), notifications()[-3:]
    assert integ.train_button.isEnabled()
    for i in (0, 2):
        integ.sources.item(i).setCheckState(Qt.Checked)
    t0 = time.perf_counter()
    while not integ.warmed:  # as a user filling the form: the warm-up (imports, UMAP compilation) finishes first
        QApplication.processEvents()
        time.sleep(0.01)
        assert time.perf_counter() - t0 < 300
    integ.train()
    wait(integ.panel)
    state = state_of(viewer)
    assert type(state.model).__name__ == "MoDAmix" and state.model.params["adversarial"] == "omics"
    assert state.model.params["source_samples"] == ["P1_S1", "P2_S1"]
    assert [state.model.stage_of_epoch(e) for e in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert "pred_modamix" in state.sdata.tables["rna"].obs

    ex = ExploreWidget(viewer)
    viewer.window.add_dock_widget(ex)
    ex.rep_combo.setCurrentText("modamix")
    assert ex.stored_button.isEnabled()
    shown = ex.show_stored()
    names = {ly.name for ly in shown}
    assert "P1_S2 · predicted from modamix (TRANSFER)" in names and "P1_S2 · pathologist" in names
    pred = next(ly for ly in shown if ly.name == "P1_S2 · predicted from modamix (TRANSFER)")
    assert type(pred).__name__ == "Points" and len(pred.data) == int((state.sdata.tables["rna"].obs["sample"] == "P1_S2").sum())
    assert ex.f1_table.rowCount() > 0
