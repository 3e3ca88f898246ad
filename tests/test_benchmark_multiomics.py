"""`spatialmix benchmark` on paired non-spatial multi-omics (.h5mu / .h5ad): the MIMA paper's peers beside the
models, scored by the same code; the unlabelled and one-batch cases; what each peer refuses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spatialmix.cli import main

pytestmark = pytest.mark.slow


def cite_like(n_per_batch: int = 120, seed: int = 0):
    """A small CITE-seq-like MuData: 3 cell types, 2 donors with a multiplicative batch effect, RNA counts (60
    genes) and protein counts (8 antibodies); 10 cells have no protein measurement."""
    import anndata as ad
    import mudata as md

    rng = np.random.default_rng(seed)
    n = 2 * n_per_batch
    ct = rng.integers(0, 3, n)
    donor = np.repeat([0, 1], n_per_batch)
    rna_mu = rng.gamma(2.0, 1.0, (3, 60))
    shift = np.exp(rng.normal(0, 0.4, (2, 60)))
    rna = rng.poisson(rna_mu[ct] * shift[donor] * rng.uniform(0.5, 1.5, (n, 1)) * 3)
    prot_mu = rng.gamma(3.0, 10.0, (3, 8))
    prot = rng.poisson(prot_mu[ct] * np.exp(rng.normal(0, 0.3, (2, 8)))[donor])
    names = [f"cell{i}" for i in range(n)]
    obs = pd.DataFrame({"donor": [f"d{d}" for d in donor], "cell_type": [f"type{c}" for c in ct]}, index=names)
    a_rna = ad.AnnData(rna.astype(np.float32), obs=obs.copy(), var=pd.DataFrame(index=[f"G{i}" for i in range(60)]))
    keep = np.ones(n, bool)
    keep[rng.choice(n, 10, replace=False)] = False
    a_prot = ad.AnnData(prot[keep].astype(np.float32), obs=obs[keep].copy(),
                        var=pd.DataFrame(index=[f"CD{i}" for i in range(8)]))
    return md.MuData({"rna": a_rna, "protein": a_prot})


@pytest.fixture(scope="module")
def h5mu(tmp_path_factory):
    path = tmp_path_factory.mktemp("cite") / "cite.h5mu"
    cite_like().write(path)
    return path


COMMON = ["--batch-key", "donor", "--preprocessing", "rna=counts,protein=protein", "--epochs", "2",
          "--n-bags", "2", "--n-trees", "5", "--cv-folds", "3"]


@pytest.fixture(scope="module")
def bench(h5mu, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_cite")
    assert main(["--quiet", "benchmark", "--data", str(h5mu), "--label-key", "cell_type", *COMMON,
                 "--models", "mima,pca,harmony,scanorama,scvi,totalvi,mofa,mima_unimodal", "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_every_peer_is_scored_beside_mima_on_the_same_cells(bench):
    out, m = bench
    reps = m["representations"]
    assert {"mima", "pca_concat", "harmony", "scanorama", "scvi", "totalvi", "mofa", "mima_unimodal_rna",
            "mima_unimodal_protein", "raw_rna", "raw_protein", "raw_concat"} <= set(reps)
    assert reps["scvi"]["kind"] == reps["totalvi"]["kind"] == "peer" and reps["mima"]["kind"] == "model"
    assert m["n_spots"] == 240 and m["n_evaluated_spots"] == 230  # cells with RNA and protein
    assert m["rows"] == "cells" and m["batch_key"] == "donor" and m["annotation_key"] == "cell_type"
    assert m["preprocessing"] == {"rna": "counts", "protein": "protein"}
    for name in ("mima", "scvi", "totalvi", "harmony"):
        s = reps[name]["scib"]
        assert s["Total"] == pytest.approx(0.4 * s["Batch correction"] + 0.6 * s["Bio conservation"])
        assert 0 < reps[name]["loocv"]["f1"] <= 1 and 0 < reps[name]["4cv"]["f1"] <= 1
        assert reps[name]["seconds"] > 0 and reps[name]["peak_rss_mb"] > 0
    assert reps["scvi"]["dims"] == 10 and reps["totalvi"]["dims"] == 20  # the libraries' default latents
    # versions and the parameters each peer ran with are recorded
    assert m["peers"]["scvi"]["versions"]["scvi-tools"] == m["versions"]["scvi-tools"]
    assert m["peers"]["scvi"]["parameters"]["max_epochs"] == 2  # --epochs reaches the scvi-tools peers
    assert m["peers"]["mofa"]["parameters"]["factors"] == 10
    ranked = [r["representation"] for r in m["ranking"]]
    totals = [reps[r]["scib"]["Total"] for r in ranked]
    assert totals == sorted(totals, reverse=True) and m["ranking"][0]["by"] == "scIB total"


def test_translation_is_scored_with_ridge_knn_and_centroids(bench):
    _, m = bench
    tr = m["representations"]["mima"]["translation"]
    assert set(tr) == {"rna->rna", "protein->rna", "protein->protein", "rna->protein"}
    for direction in ("protein->rna", "rna->protein"):
        assert set(tr[direction]) == {"model", "ridge", "knn", "own_centroid", "other_centroids"}
        for method, v in tr[direction].items():
            assert -1 <= v["r_feature_median"] <= 1 and v["mse"] > 0, (direction, method)
    # ridge from RNA predicts this protein (driven by the cell type) far better than chance
    assert tr["rna->protein"]["ridge"]["r_feature_median"] > 0.5
    claim = m["claims"]["translation_r_at_least_ridge_and_knn"]
    assert claim["directions"] == 2 and set(claim["detail"]) == {"protein->rna", "rna->protein"}
    assert m["representations"]["mima"]["unpaired"]["rna-protein"]["foscttm"] <= 1


def test_outputs_are_an_anndata_of_embeddings_and_predictions_and_a_ranked_report(bench):
    import anndata as ad

    out, m = bench
    cells = ad.read_h5ad(out / "embeddings.h5ad")
    assert cells.n_obs == 240 and {"X_mima", "X_scvi", "X_totalvi", "X_harmony", "X_mofa"} <= set(cells.obsm)
    assert np.isnan(cells.obsm["X_totalvi"]).all(axis=1).sum() == 10  # no protein: no totalVI embedding
    assert {"pred_mima", "pred_mima_confidence", "agree_mima", "pred_scvi_4cv"} <= set(cells.obs)
    report = (out / "report.md").read_text()
    assert "Ranked by scIB total" in report and "| scvi | peer | 10 |" in report and "ridge r" in report
    assert "## Peers: versions and parameters" in report
    assert (out / "scib_bio_vs_batch.png").stat().st_size > 10_000 and (out / "annotation_f1.png").exists()
    assert not (out / "project.zarr").exists()  # no tissue, no spatial project


def test_unlabelled_one_batch_data_scores_translation_only(h5mu, tmp_path):
    """No labels: no classifier, no scIB, no centroids; one batch: Harmony refuses before any work."""
    import mudata as md

    mdata = md.read_h5mu(h5mu)
    d0 = mdata["rna"].obs_names[mdata["rna"].obs["donor"] == "d0"]
    one = mdata[d0].copy()
    path = tmp_path / "one.h5mu"
    one.write(path)
    out = tmp_path / "b"
    assert main(["--quiet", "benchmark", "--data", str(path), *COMMON, "--models", "harmony", "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["--quiet", "benchmark", "--data", str(path), *COMMON, "--models", "mima,pca",
                 "--no-figures", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["annotation_key"] is None and set(m["not_scored"]) == {"annotation", "scib"}
    assert "loocv" not in m["representations"]["mima"] and "scib" not in m["representations"]["mima"]
    assert set(m["representations"]["mima"]["translation"]["rna->protein"]) == {"model", "ridge", "knn"}


@pytest.mark.parametrize("models, message", [
    ("multivi", "multivi needs a chromatin accessibility modality"),
    ("scvi,banana", r"unknown model\(s\) \['banana'\]"),
])
def test_a_peer_the_data_cannot_support_is_refused_before_any_work(h5mu, tmp_path, capsys, models, message):
    out = tmp_path / "o"
    assert main(["--quiet", "benchmark", "--data", str(h5mu), *COMMON, "--models", models, "--out", str(out)]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_non_spatial_input_needs_its_batch_column_and_declared_preprocessing(h5mu, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["--quiet", "benchmark", "--data", str(h5mu), "--models", "pca", "--out", str(out)]) == 2
    assert "needs the batch column" in capsys.readouterr().err
    assert main(["--quiet", "benchmark", "--data", str(h5mu), "--batch-key", "donor", "--models", "pca",
                 "--out", str(out)]) == 2
    assert "declare how each modality is preprocessed" in capsys.readouterr().err
    assert main(["--quiet", "benchmark", "--data", str(h5mu), "--batch-key", "site", "--models", "pca",
                 "--preprocessing", "rna=counts,protein=protein", "--out", str(out)]) == 2
    assert "available columns" in capsys.readouterr().err


def test_all_takes_what_the_data_supports_and_says_what_it_left_out(h5mu):
    """`--models all` on one batch: no Harmony, no multiVI (no chromatin), each left out with its reason (shown
    in the report as 'not run'), never silently; named explicitly, the same method is an error."""
    import mudata as md

    from spatialmix.benchmark.inputs import _check_models
    from spatialmix.data import MultiModalData

    mdata = md.read_h5mu(h5mu)
    one = mdata[mdata["rna"].obs_names[mdata["rna"].obs["donor"] == "d0"]].copy()
    data = MultiModalData.from_mudata(one, batch_key="donor", preprocessing={"rna": "counts", "protein": "protein"})
    skipped: dict[str, str] = {}
    models = _check_models(["all"], data, None, skipped)
    assert models[:2] == ["mima", "pca"] and "harmony" not in models and "totalvi" in models
    assert "one batch only" in skipped["harmony"] and "chromatin" in skipped["multivi"]
    assert not set(models) & set(skipped)
