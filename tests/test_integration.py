"""The main job trains MIMA: outputs in the project, metrics.json, figures, and the claims that must hold.

Uses the session's one `spatialmix demo` run (bundled sample, seed 0, 200 epochs at lr 1e-3). The thresholds
were set from that run and from a `small` dataset simulated with seed 7 (docs/models.md), with margin.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import _claims

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def metrics(demo_out):
    return json.loads((demo_out / "metrics.json").read_text())


def test_demo_writes_model_outputs_metrics_and_figures(demo_out, prepared):
    report = json.loads((demo_out / "report.json").read_text())
    assert report["integration"]["epochs"] == 200
    assert (demo_out / "model" / "model.pt").exists() and (demo_out / "model" / "model.json").exists()
    for sample in report["samples"]:
        png = demo_out / f"results_{sample}.png"
        assert png.exists() and png.stat().st_size > 50_000
    rna, msi = prepared.tables["rna"], prepared.tables["msi"]
    assert rna.obsm["X_mima"].shape == (1290, 100)
    assert msi.obsm["X_mima_private"].shape == (1290, 100)
    assert msi.layers["mima_corrected"].shape == msi.shape and msi.layers["mima_denoised"].shape == msi.shape
    assert rna.layers["mima_from_msi_and_morphology"].shape == rna.shape
    assert msi.layers["mima_from_rna_and_morphology"].shape == msi.shape
    rgb = np.asarray(rna.obsm["X_mima_rgb"])
    assert rgb.shape == (1290, 3) and rgb.min() == 0.0 and rgb.max() == 1.0
    raw_rgb = np.asarray(msi.obsm["X_msi_rgb"])
    assert np.isnan(raw_rgb).any(axis=1).sum() == int((~msi.obs["msi_covered"]).sum())
    prov = prepared.attrs["spatialmix"]["models"]["mima"]
    assert prov["params"]["n_latent"] == 100 and prov["train_config"]["epochs"] == 200
    assert len(prov["training_curve"]) == 200 and prov["versions"]["torch"].startswith("2.13")
    assert "Integration" in (demo_out / "report.md").read_text()


def test_trained_model_reloads_from_the_demo_folder(demo_out, prepared):
    from spatialmix.data import MultiModalData
    from spatialmix.models import MIMA

    data = MultiModalData.from_spatialdata(prepared)
    model = MIMA.load(demo_out / "model", data)
    np.testing.assert_allclose(model.get_latent_representation(), prepared.tables["rna"].obsm["X_mima"], atol=1e-4)


def test_batch_correction_mixes_samples_and_keeps_regions(metrics):
    """Measured, bundled (seed 0) / simulated seed 7: batch ASW raw MSI 0.445 / 0.372 -> corrected 0.731 / 0.658
    -> PoE 0.868 / 0.816; iLISI 0.000 / 0.000 -> 0.215 / 0.067 -> 0.433 / 0.274; label ASW of the true regions
    0.394 / 0.510 -> corrected 0.504 / 0.548."""
    sc = metrics["integration"]
    assert metrics["labels"] == "truth regions"
    raw, corr, poe = sc["raw_msi"], sc["mima_corrected_msi"], sc["mima_poe"]
    C = "test_integration::batch_correction"
    _claims.check(f"{C}/corrected_batch_asw_gain", corr["batch_asw"] - raw["batch_asw"], ">", 0.15)
    _claims.check(f"{C}/poe_batch_asw_gain", poe["batch_asw"] - raw["batch_asw"], ">", 0.3)
    _claims.check(f"{C}/corrected_ilisi_gain", corr["ilisi"] - raw["ilisi"], ">", 0.03)
    _claims.check(f"{C}/poe_ilisi_gain", poe["ilisi"] - raw["ilisi"], ">", 0.15)
    _claims.check(f"{C}/corrected_label_asw_gain", corr["label_asw"] - raw["label_asw"], ">", 0.0)


def test_poe_embedding_separates_regions_about_as_well_as_the_best_modality(metrics):
    """The paper's headline claim, measured with label ASW against the true regions. Over 9 demo trainings
    (5 seeds, 2 threads, deterministic mode; benchmarks/results/claim_spread.json) the PoE's label ASW is
    -0.010 +/- 0.007 from the best single modality's (worst -0.020): on par, not above, so the test bounds the
    gap instead of asserting "better". By the composite bio score (label ASW, Leiden ARI and NMI) it beats the
    H&E features by 0.164 +/- 0.023 (worst 0.111)."""
    sc = metrics["integration"]
    best_single = max(sc[f"raw_{m}"]["label_asw"] for m in ("rna", "msi", "morphology"))
    C = "test_integration::poe_separates_regions"
    _claims.check(f"{C}/label_asw_minus_best_single", sc["mima_poe"]["label_asw"] - best_single, ">=", -0.045)
    _claims.check(f"{C}/bio_minus_morphology", sc["mima_poe"]["bio_score"] - sc["raw_morphology"]["bio_score"],
                  ">", 0.04)


def test_translation_beats_the_class_mean_on_held_out_spots(metrics):
    """Held-out spots, median per-feature Pearson r (bundled / seed 7): MSI from RNA + H&E 0.89 / 0.89 vs
    class mean 0.33 / 0.49; RNA from MSI + H&E 0.23 / 0.25 vs 0.16 / 0.19; morphology from RNA + MSI
    0.71 / 0.65 vs 0.50 / 0.55."""
    tr = metrics["translation_heldout"]
    C = "test_integration::translation"
    msi = tr["rna+morphology->msi"]
    _claims.check(f"{C}/msi_r_gain", msi["pearson_median"] - msi["baseline_pearson_median"], ">", 0.3)
    _claims.check(f"{C}/msi_mse_ratio", msi["mse"] / msi["baseline_mse"], "<", 1.0)
    rna = tr["msi+morphology->rna"]
    _claims.check(f"{C}/rna_r_gain", rna["pearson_median"] - rna["baseline_pearson_median"], ">", 0.03)
    morph = tr["rna+msi->morphology"]
    _claims.check(f"{C}/morphology_r_gain", morph["pearson_median"] - morph["baseline_pearson_median"], ">", 0.03)


def test_poe_embedding_predicts_the_pathologist_about_as_well_as_the_best_modality(prepared):
    """The MIMA paper's Fig. 3B claim on the demo's model: leave-one-sample-out macro F1 of the annotation
    classifier on the PoE embedding against each raw modality, on the spots that have all three (smaller forests
    than the benchmark: 5 bags of 20 trees). Over 9 demo trainings (5 seeds, 2 threads, deterministic mode) the
    PoE's F1 minus the best modality's (RNA) is +0.013 +/- 0.061 (range -0.128 to +0.061;
    benchmarks/results/claim_spread.json): the paper's "better than each modality" does not hold with a margin
    on the demo, so it is not asserted (docs/reproducibility.md). What holds: above the second-best modality
    (+0.200 +/- 0.061; mean - 3 sd = +0.017)."""
    from spatialmix.data import MultiModalData
    from spatialmix.evaluate.annotations import EnsembleOptions, cross_validate
    from spatialmix.models.baselines import common_spots

    data = MultiModalData.from_spatialdata(prepared, annotation_key="pathologist")
    keep = common_spots(data)
    reps = {"mima": np.asarray(prepared.tables["rna"].obsm["X_mima"]), **{m: data.dense(m) for m in data.modalities}}
    f1 = {name: cross_validate(X, data.obs["pathologist"], data.obs["sample"], mask=keep, scheme="loocv",
                               options=EnsembleOptions(n_bags=5, n_trees=20)).summary["f1"]
          for name, X in reps.items()}
    print(f1)
    C = "test_integration::loocv_f1"
    _claims.check(f"{C}/mima_minus_second_best_modality", f1["mima"] - sorted(f1[m] for m in data.modalities)[-2],
                  ">", 0.0)
