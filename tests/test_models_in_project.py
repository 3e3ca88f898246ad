"""MoDAmix, calibration and scMODAL on the bundled project: the same headless call as MIMA (tables, train, write
outputs), the outputs each model supports and no others, target-sample predictions compared with the
pathologist, and the run configuration. Few epochs: these check the wiring; tests/test_<model>.py check the
models and docs/benchmarks.md has the real runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from spatialmix.errors import ModelError, ParameterError
from spatialmix.integrate import iter_fit
from spatialmix.progress import run

SOURCES = ["P1_S1", "P2_S1"]



@pytest.fixture(scope="module")
def project(saved_project):
    from spatialmix.project import load_project

    return load_project(saved_project)


def _fit(sdata, model, **kw):
    return run(iter_fit(sdata, model=model, **kw))


def test_supervised_models_predict_the_target_samples_and_write_only_what_they_support(project):
    sdata = project
    modamix = _fit(sdata, "modamix", model_params={"source_samples": SOURCES, "stage_epochs": [1, 1, 1, 1]},
                   train={"epochs": 4})
    # the widget / config name sources by sample; the calibration takes batches: translated by iter_fit
    # (MSI + H&E only: the RNA block's 1,000 x 1,000 calibrator layers would triple this test's time)
    calib = _fit(sdata, "calibration", modalities=["msi", "morphology"], model_params={"source_samples": SOURCES},
                 train={"epochs": 2})
    assert calib.params["source_batches"] == SOURCES  # batch = sample in this project
    rna = sdata.tables["msi"]  # both models write into it (the calibration only into its modalities' tables)
    for key, mdl in (("modamix", modamix), ("calibration", calib)):
        assert rna.obsm[f"X_{key}"].shape == (rna.n_obs, mdl.get_latent_representation().shape[1])
        rgb = rna.obsm[f"X_{key}_rgb"]
        assert rgb.shape == (rna.n_obs, 3) and 0 <= np.nanmin(rgb) and np.nanmax(rgb) <= 1
        pred = rna.obs[f"pred_{key}"]
        # the annotation's categories, so napari colours predicted and expert labels alike
        assert list(pred.cat.categories)[: len(rna.obs["pathologist"].cat.categories)] == \
            list(rna.obs["pathologist"].cat.categories)
        is_source = rna.obs["sample"].astype(str).isin(SOURCES).to_numpy()
        # predictions and agreement on the target samples only (the sources were trained on)
        assert pred[is_source].isna().all() and pred[~is_source].notna().all()
        agree = rna.obs[f"agree_{key}"]
        assert set(agree[~is_source].dropna()) <= {"agree", "disagree", "unlabelled", "excluded"}
        assert (agree[~is_source] == "agree").sum() > 0
        conf = rna.obs[f"pred_{key}_confidence"][~is_source]
        assert ((conf > 0) & (conf <= 1)).all()
        record = sdata.attrs["spatialmix"]["models"][key]
        assert record["labels"]["source_samples"] == SOURCES and 0 <= record["labels"]["f1"] <= 1
        assert record["labels"]["n_spots"] == int(agree.isin(["agree", "disagree"]).sum())
    # MoDAmix's embedding is not batch-corrected features: nothing written as such, and asking says why
    assert not any(k.startswith("modamix") for t in sdata.tables.values() for k in t.layers)
    with pytest.raises(ModelError, match="does not produce batch-corrected features"):
        modamix.get_corrected("msi")
    # the calibration's corrected layer: every modality it calibrated, the table's shape, finite where the
    # modality was measured and NaN where it was not (no invented values, whichever model wrote it)
    assert "calibration_corrected" not in sdata.tables["rna"].layers
    for t in ("msi", "morphology"):
        layer = sdata.tables[t].layers["calibration_corrected"]
        measured = calib.data.mask[t]
        assert layer.shape == sdata.tables[t].shape and np.isfinite(layer[measured]).all()
        np.testing.assert_array_equal(np.isnan(layer).all(axis=1), ~measured)
    assert (~calib.data.mask["msi"]).sum() > 100  # the bundled sample has spots outside the MSI acquisition
    from spatialmix.results import write_results

    with pytest.raises(ModelError, match="does not produce"):
        write_results(sdata, modamix, key="modamix", outputs=["latent", "translations"])


def test_scmodal_aligns_unpaired_tables_with_links_from_a_reference_sample(project):
    sdata = project
    mdl = _fit(sdata, "scmodal", modalities=["rna", "msi"], model_params={"link_reference": "P1_S1", "link_top": 50},
               train={"max_steps": 40, "batch_size": 128})
    assert len(mdl.params["links"]["rna|msi"]) == 50 and mdl.params["link_reference"] == "P1_S1"
    assert mdl.training_curve()["epoch"].max() >= 1
    rna, msi = sdata.tables["rna"], sdata.tables["msi"]
    assert rna.obsm["X_scmodal"].shape == (rna.n_obs, 20)
    # one source per translation: every ordered pair, named after its source, in the target's table and units
    assert msi.layers["scmodal_from_rna"].shape == msi.shape
    assert rna.layers["scmodal_from_msi"].shape == rna.shape
    covered = msi.obs["msi_covered"].to_numpy(bool)
    assert np.isfinite(rna.layers["scmodal_from_msi"][covered]).all()
    assert "pred_scmodal" not in rna.obs
    with pytest.raises(ParameterError, match="single source"):
        mdl.translate(["rna", "msi"], "msi")
    with pytest.raises(ParameterError, match="not in the data"):
        _fit(sdata, "scmodal", modalities=["rna", "msi"], model_params={"link_reference": "P9_S9"},
             train={"max_steps": 2})


def test_run_configuration_accepts_the_other_models(tmp_path, sample_data_dir):
    from spatialmix.config import load_config

    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[data]\nsamples_csv = "{sample_data_dir / "samples.csv"}"\n\n'
                   '[model]\nname = "modamix"\nsource_samples = ["P1_S1", "P2_S1"]\nstage_epochs = [2, 2, 2, 2]\n\n'
                   '[train]\nepochs = 8\n')
    c = load_config(cfg)
    assert c.model == "modamix" and c.model_params["source_samples"] == ["P1_S1", "P2_S1"]
    cfg.write_text(f'[data]\nsamples_csv = "{sample_data_dir / "samples.csv"}"\n\n'
                   '[model]\nname = "scmodal"\nmodalities = ["rna", "msi"]\nlink_reference = "P1_S1"\n\n'
                   '[train]\nmax_steps = 200\n')
    c = load_config(cfg)
    assert c.model == "scmodal" and c.train["max_steps"] == 200 and c.model_params["link_reference"] == "P1_S1"
    from spatialmix.errors import ConfigError

    cfg.write_text(f'[data]\nsamples_csv = "{sample_data_dir / "samples.csv"}"\n\n[model]\nname = "scmodal"\n'
                   'lambda_gep = 10\n')
    with pytest.raises(ConfigError, match="lambda_gep"):
        load_config(cfg)


def test_model_labels_in_the_sample_order_of_the_pathologist(project):
    """score_predictions: the same per-class rule as the paper's classifier, per target sample."""
    from spatialmix.evaluate.annotations import score_predictions

    rna = project.tables["rna"]
    labels = rna.obs["pathologist"]
    samples = rna.obs["sample"].astype(str).to_numpy()
    truth = labels.astype(object).to_numpy()
    r = score_predictions(truth, np.ones(len(truth)), labels, samples, source_samples=SOURCES, representation="x",
                          index=rna.obs_names)
    assert r.summary["f1"] == pytest.approx(1.0) and set(r.folds["fold"]) == {"P1_S2", "P2_S2"}
    shuffled = pd.Series(truth).sample(frac=1, random_state=0).to_numpy()
    r2 = score_predictions(shuffled, np.ones(len(truth)), labels, samples, source_samples=SOURCES,
                           representation="x", index=rna.obs_names)
    assert r2.summary["f1"] < 0.5
    with pytest.raises(ParameterError, match="leave no target"):
        score_predictions(truth, np.ones(len(truth)), labels, samples, source_samples=sorted(set(samples)),
                          representation="x")
