"""`spatialmix benchmark`: every model, baseline and raw input scored the same way; metrics, report, figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spatialmix.cli import main

REPS = {"raw_rna", "raw_msi", "raw_morphology", "raw_concat", "pca_rna", "pca_msi", "pca_morphology",
        "pca_concat", "harmony", "mima", "mima_corrected_pca", "mima_harmony"}
CHOSEN = "mima_corrected_pca-with-measured"


@pytest.fixture(scope="module")
def bench(saved_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # few epochs and small forests: this checks the command, not the model (docs/benchmarks.md has the real run)
    assert main(["--quiet", "benchmark", "--data", str(saved_project), "--models", "mima,pca,harmony",
                 "--out", str(out), "--epochs", "2", "--n-bags", "3", "--n-trees", "8"]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_benchmark_scores_every_representation_on_the_same_spots(bench):
    out, m = bench
    reps = m["representations"]
    assert set(reps) == REPS | {CHOSEN}
    assert m["n_evaluated_spots"] == 918 and m["n_spots"] == 1290  # spots with RNA, MSI and H&E
    assert m["classifier"]["excluded_classes"] == ["Nerve"]  # the paper's exclusions present in the sample
    # MIMA's annotation representation: each fold chose the corrected PCA alone or beside one modality's measured
    # features, inside its training samples; scored on the same spots, and no scIB row (it is not an embedding)
    chosen = reps[CHOSEN]
    assert chosen["candidates"] == ["mima_corrected_pca"] + [f"mima_corrected_pca-with-raw_{t}" for t in (
        "rna", "msi", "morphology")] + ["mima_corrected_pca-with-raw_rna-with-raw_msi-with-raw_morphology"]
    assert "scib" not in chosen and chosen["source"] == "mima"
    for scheme in ("loocv", "4cv"):
        assert set(chosen[scheme]["chosen"].values()) <= set(chosen["candidates"])
        assert len(chosen[scheme]["chosen"]) == 4 and chosen[scheme]["n_spots"] == reps["mima"][scheme]["n_spots"]
        for fold, f1 in chosen[scheme]["inner_f1"].items():  # the choice is the best inner score
            assert f1[chosen[scheme]["chosen"][fold]] == max(f1.values())
    for name, e in ((n, e) for n, e in reps.items() if n != CHOSEN):
        s = e["scib"]
        assert 0 <= s["Bio conservation"] <= 1 and 0 <= s["Batch correction"] <= 1
        assert s["Total"] == pytest.approx(0.4 * s["Batch correction"] + 0.6 * s["Bio conservation"])
        for scheme in ("loocv", "4cv"):
            assert 0 <= e[scheme]["f1"] <= 1 and e[scheme]["n_scored"] > 0
            cm = np.asarray(e[scheme]["confusion"]["data"])
            assert cm.sum() == e[scheme]["n_spots"]
    assert reps["mima"]["dims"] == 100 and reps["harmony"]["dims"] == 100 and reps["pca_morphology"]["dims"] == 67
    assert reps["mima_corrected_pca"]["dims"] == 50 and reps["mima_corrected_pca"]["source"] == "mima"
    assert reps["mima"]["seconds"] > 0 and reps["mima"]["peak_rss_mb"] > 100
    # Harmony mixes the samples more than the PCA it corrects, and more than the MIMA embedding it corrects
    assert reps["harmony"]["scib"]["Batch correction"] > reps["pca_concat"]["scib"]["Batch correction"]
    assert reps["mima_harmony"]["dims"] == 100 and reps["mima_harmony"]["source"] == "mima"
    assert reps["mima_harmony"]["scib"]["Batch correction"] > reps["mima"]["scib"]["Batch correction"]
    # the MSI batch effect: predicting an unseen sample is much harder than an unseen spot of a seen sample
    assert reps["raw_msi"]["4cv"]["f1"] > reps["raw_msi"]["loocv"]["f1"] + 0.2


def test_benchmark_measures_translation_and_unpaired_alignment_of_the_model(bench):
    _, m = bench
    mima = m["representations"]["mima"]
    assert len(mima["translation"]) == 12  # 3 reconstructions + 9 translations
    for direction, methods in mima["translation"].items():
        src, tgt = direction.split("->")
        simple = {"ridge", "knn"} if src != tgt else set()  # the simple predictors translate, not reconstruct
        assert set(methods) == {"model", "own_centroid", "other_centroids"} | simple
        assert methods["model"]["n_spots"] > 500 and methods["model"]["n_features"] in (1000, 526, 67)
        assert methods["own_centroid"]["mse"] < methods["other_centroids"]["mse"]
    assert len(mima["translation_fold_train_seconds"]) == 4
    assert set(mima["unpaired"]) == {"rna-msi", "rna-morphology", "msi-morphology"}
    assert all(0 <= v["foscttm"] <= 1 for v in mima["unpaired"].values())
    claims = m["claims"]
    assert set(claims) == {"loocv_f1_above_each_raw_modality", "best_total_scib_among_model_and_baselines",
                           "translation_beats_own_annotation_centroid", "translation_r_at_least_ridge_and_knn",
                           "annotation_representation_loocv_f1_above_each_raw_modality"}
    annot = claims["annotation_representation_loocv_f1_above_each_raw_modality"]
    assert annot[CHOSEN] == m["representations"][CHOSEN]["loocv"]["f1"]
    assert claims["translation_beats_own_annotation_centroid"]["directions"] == 9


def test_benchmark_writes_table_report_figures_and_predictions(bench):
    from spatialmix.project import load_project

    out, m = bench
    csv = pd.read_csv(out / "metrics.csv", index_col=0)
    assert set(csv.index) == REPS | {CHOSEN}
    assert csv.loc["mima", "loocv_f1"] == pytest.approx(m["representations"]["mima"]["loocv"]["f1"])
    assert "scib_total" in csv and "translation_rna+morphology->msi_model_mse" in csv
    per_class = pd.read_csv(out / "annotation_per_class.csv")
    assert set(per_class["representation"]) == REPS | {CHOSEN} and set(per_class["scheme"]) == {"loocv", "4cv"}
    assert "Nerve" not in set(per_class["class"]) and (per_class["n_folds"] >= 1).all()
    report = (out / "report.md").read_text()
    assert "| harmony | baseline | 100 |" in report and "The paper's claims" in report
    assert "loocv f1 above each raw modality** (paper)" in report
    assert "annotation representation loocv f1 above each raw modality** (ours)" in report
    for name in ["scib_bio_vs_batch.png", "annotation_f1.png", "confusion_mima.png", "translation_r2_mima.png"] + [
            f"annotations_mima_{s}.png" for s in m["samples"]]:
        assert (out / name).stat().st_size > 20_000, name
    sdata = load_project(out / "project.zarr")
    obs = sdata.tables["rna"].obs
    for rep in ("mima", "harmony", "raw_rna"):
        assert {f"pred_{rep}", f"pred_{rep}_confidence", f"agree_{rep}", f"pred_{rep}_4cv"} <= set(obs.columns)
    assert list(obs["pred_mima"].cat.categories) == list(obs["pathologist"].cat.categories)
    assert obs["pred_mima"].notna().sum() == 918
    assert (obs.loc[obs["pathologist"] == "Nerve", "agree_mima"].dropna() == "excluded").all()
    assert sdata.tables["msi"].obsm["X_harmony"].shape == (1290, 100)


def test_benchmark_rejects_bad_input_before_any_work(saved_project, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["--quiet", "benchmark", "--data", str(saved_project), "--models", "mima,foo", "--out", str(out)]) == 2
    assert "unknown model(s) ['foo']" in capsys.readouterr().err and not out.exists()
    assert main(["--quiet", "benchmark", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    assert main(["--quiet", "benchmark", "--data", str(saved_project), "--annotation-key", "expert",
                 "--out", str(out)]) == 2
    assert "'expert' not in the project" in capsys.readouterr().err and not out.exists()


@pytest.fixture(scope="module")
def bench_other(saved_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_other")
    # a few steps: this checks the sections, not the models (docs/benchmarks.md has the real run)
    assert main(["--quiet", "benchmark", "--data", str(saved_project), "--models", "modamix,calibration,scmodal",
                 "--out", str(out), "--epochs", "2", "--max-steps", "20", "--n-bags", "2", "--n-trees", "5",
                 "--no-translation", "--source-samples", "P1_S1,P2_S1"]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_benchmark_scores_domain_adaptation_and_unpaired_alignment(bench_other):
    out, m = bench_other
    reps = m["representations"]
    assert m["source_samples"] == ["P1_S1", "P2_S1"]
    for name in ("modamix", "calibration"):
        e = reps[name]
        assert "loocv" not in e and "trained on the source samples' labels" in e["note"]
        da = e["domain_adaptation"]
        assert da["target_samples"] == ["P1_S2", "P2_S2"]
        # the model's own predictions and the source-trained ensembles, scored on the same target spots
        assert {"model", "raw_concat", "raw_rna", "raw_msi", "raw_morphology"} <= set(da)
        assert 0 <= da["model"]["f1"] <= 1 and da["model"]["n_scored"] == da["raw_concat"]["n_scored"] > 0
        assert da["beats_raw_concat_ensemble"] == (da["model"]["f1"] > da["raw_concat"]["f1"])
        assert e["seconds"] > 0
    ua = m["unpaired_alignment"]
    assert ua["setup"]["rna_samples"] == ["P1_S1", "P2_S1"] and ua["setup"]["msi_samples"] == ["P1_S2", "P2_S2"]
    assert ua["setup"]["link_reference_sample"] == "P1_S1" and ua["setup"]["n_links"] == 100
    for method in ("scmodal", "harmony_linked_pca"):
        assert 0 <= ua[method]["foscttm"] <= 1 and 0 <= ua[method]["label_transfer_rna_to_msi"] <= 1
    claims = m["claims"]
    assert {"modamix_target_f1_above_raw_concat_ensemble", "calibration_target_f1_above_raw_concat_ensemble",
            "scmodal_better_than_harmony_on_linked_features"} == set(claims)  # MIMA's claims need MIMA
    report = (out / "report.md").read_text()
    assert "labelled sources P1_S1, P2_S1 -> targets P1_S2, P2_S2" in report and "never paired" in report
    assert (out / "annotation_f1.png").exists()
    per_class = pd.read_csv(out / "annotation_per_class.csv")
    assert "transfer" in set(per_class["scheme"])
