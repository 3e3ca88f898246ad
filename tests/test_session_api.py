"""The headless calls the napari widgets make, tested without a viewer: adding samples one at a time, building
the spot tables after registration, undoing a registration, predicting annotations from a project, imputing
from any sources, and the CSV tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spatialmix.progress import run


def test_samples_added_one_by_one_build_the_same_tables_as_prepare(sample_data_dir):
    from spatialmix.pipeline import add_sample, iter_build_tables, iter_read_sample, needs_tables, read_samples_csv

    specs = read_samples_csv(sample_data_dir)[:2]
    sdata = None
    for spec in specs:
        sdata = add_sample(sdata, run(iter_read_sample(spec)))
    assert needs_tables(sdata)
    run(iter_build_tables(sdata))
    assert not needs_tables(sdata)
    rna, msi = sdata.tables["rna"], sdata.tables["msi"]
    assert rna.obs_names.equals(msi.obs_names) and rna.obs_names.equals(sdata.tables["morphology"].obs_names)
    assert list(dict.fromkeys(rna.obs["sample"])) == ["P1_S1", "P1_S2"]
    assert "counts" in rna.layers and float(rna.X.max()) < 20  # normalised + log1p, counts kept

    # adding a sample again replaces it (no duplicate spots), and the MSI / H&E tables must be rebuilt
    n = rna.n_obs
    again = add_sample(sdata, run(iter_read_sample(specs[0])))
    assert again.tables["rna"].n_obs == n and "msi" not in again.tables and needs_tables(again)
    assert sorted(again.tables["rna"].obs["sample"].unique()) == ["P1_S1", "P1_S2"]
    np.testing.assert_array_equal(  # raw counts survive the round trip through the normalised table
        np.asarray(again.tables["rna"][again.tables["rna"].obs["sample"] == "P1_S2"].X.sum()),
        np.asarray(rna.layers["counts"][(rna.obs["sample"] == "P1_S2").to_numpy()].sum()))


def test_registration_state_restores_transform_and_record(prepared):
    import copy

    from spatialmix.registration import element_pixel_to_sample, register_landmarks, registration_state, \
        restore_registration

    sdata = copy.deepcopy(prepared)
    before = element_pixel_to_sample(sdata, "P1_S1", "msi")
    record = dict(sdata.attrs["spatialmix"]["registration"]["P1_S1"]["msi"])
    state = registration_state(sdata, "P1_S1", "msi")
    px = np.array([[1.0, 1.0], [20.0, 2.0], [5.0, 25.0]])
    fixed = (np.c_[px, np.ones(3)] @ before.T)[:, :2] + [100.0, 0.0]
    register_landmarks(sdata, "P1_S1", "msi", px, fixed)
    assert element_pixel_to_sample(sdata, "P1_S1", "msi")[0, 2] == pytest.approx(before[0, 2] + 100.0)
    restore_registration(sdata, state)
    np.testing.assert_allclose(element_pixel_to_sample(sdata, "P1_S1", "msi"), before)
    assert sdata.attrs["spatialmix"]["registration"]["P1_S1"]["msi"]["method"] == record["method"]


def test_predictions_from_a_project_are_written_and_read_back(prepared, tmp_path):
    import copy

    from spatialmix.evaluate.annotations import (
        EnsembleOptions,
        iter_predict_annotations,
        prediction_scores,
        representations_of,
        stored_predictions,
    )
    from spatialmix.project import load_project, save_project
    from spatialmix.results import spot_table

    sdata = copy.deepcopy(prepared)
    reps = representations_of(sdata)
    assert "mima" in reps and "raw_msi" in reps and not any(r.endswith(("_rgb", "_private")) for r in reps)
    result = run(iter_predict_annotations(sdata, "raw_msi", options=EnsembleOptions(n_bags=2, n_trees=8)))
    obs = sdata.tables["rna"].obs
    assert {"pred_raw_msi", "pred_raw_msi_confidence", "agree_raw_msi"} <= set(obs.columns)
    # spots without MSI are not evaluated: no prediction, no agreement
    uncovered = ~sdata.tables["msi"].obs["msi_covered"].to_numpy(bool)
    assert uncovered.any() and pd.isna(obs["agree_raw_msi"].to_numpy()[uncovered]).all()
    save_project(sdata, tmp_path / "p.zarr")
    stored = stored_predictions(load_project(tmp_path / "p.zarr"), "raw_msi")
    assert stored["scores"]["f1"] == pytest.approx(result.summary["f1"])
    assert stored["confusion"].to_numpy().sum() == result.summary["n_spots"]
    assert list(stored["per_class"].index) == list(result.per_class.index)
    scores = prediction_scores(sdata)
    assert set(scores.columns) >= {"class", "f1", "representation", "scheme"} and (scores["scheme"] == "loocv").all()
    table = spot_table(sdata)
    assert len(table) == sdata.tables["rna"].n_obs and {"pred_raw_msi", "mima_rgb_R"} <= set(table.columns)
    assert stored_predictions(sdata, "nothing") is None


def test_write_translation_adds_one_imputation(prepared):
    import copy

    from spatialmix.data import MultiModalData
    from spatialmix.errors import ParameterError
    from spatialmix.models import MIMA
    from spatialmix.results import write_translation

    sdata = copy.deepcopy(prepared)
    data = MultiModalData.from_spatialdata(sdata)
    model = MIMA(data, n_hidden=32, n_latent=8)
    model.train(epochs=1, device="cpu")
    before = set(sdata.tables["msi"].layers)
    name = write_translation(sdata, model, "rna", "msi")
    assert name == "mima_from_rna" and set(sdata.tables["msi"].layers) == before | {name}
    np.testing.assert_allclose(sdata.tables["msi"].layers[name], model.translate(["rna"], "msi"), rtol=1e-5)
    with pytest.raises(ParameterError, match="does not integrate"):
        write_translation(sdata, model, "protein", "msi")


def test_a_saved_model_loaded_onto_a_project_writes_its_outputs(prepared, tmp_path):
    """``integrate.iter_load_model`` (the widget's Load model): the model class and columns come from the saved
    configuration; the outputs written equal the saved model's; a folder without a model is a clear error."""
    import copy

    from spatialmix.data import MultiModalData
    from spatialmix.errors import ModelError
    from spatialmix.integrate import iter_load_model
    from spatialmix.models import MIMA

    sdata = copy.deepcopy(prepared)
    model = MIMA(MultiModalData.from_spatialdata(sdata), n_hidden=32, n_latent=8)
    model.train(epochs=1, device="cpu")
    expected = model.get_latent_representation()
    model.save(tmp_path / "m")
    sdata.tables["rna"].obsm.pop("X_mima", None)
    loaded = run(iter_load_model(sdata, tmp_path / "m"))
    assert type(loaded) is MIMA and loaded.params["n_latent"] == 8
    np.testing.assert_allclose(sdata.tables["rna"].obsm["X_mima"], expected, atol=1e-5)
    with pytest.raises(ModelError, match="holds no saved model"):
        run(iter_load_model(sdata, tmp_path / "empty"))
