"""MIMA's count likelihood (``count_likelihood="nb"``, ours, issue 14): the negative-binomial term checked against
scipy, the loss terms it replaces recomputed by hand, outputs in the input's units, a clear error without counts,
and a saved model that reloads with it."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from spatialmix.data import MultiModalData
from spatialmix.errors import ParameterError
from spatialmix.models import MIMA
from spatialmix.models._mima_module import nb_nll, product_of_experts


def _counts_data(n: int = 120, seed: int = 0, truth: bool = False):
    """RNA counts (20 genes, two cell types with different profiles, library sizes 50-400) + a normalised
    second modality, two donors; the last 10 cells have no protein."""
    rng = np.random.default_rng(seed)
    ct = np.where(np.arange(n) % 2 == 0, "A", "B")
    donor = np.where(np.arange(n) % 3 == 0, "d1", "d2")
    profile = {"A": rng.dirichlet(np.ones(20)), "B": rng.dirichlet(np.ones(20))}
    lib = rng.integers(50, 400, n)
    counts = np.stack([rng.multinomial(lib[i], profile[ct[i]]) for i in range(n)]).astype(np.float32)
    names = [f"c{i}" for i in range(n)]
    obs = pd.DataFrame({"donor": donor, "ct": ct}, index=names)
    rna = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(20)]))
    prot = rng.normal(size=(n - 10, 5)).astype(np.float32) + (ct[:-10] == "A")[:, None]
    other = ad.AnnData(prot, obs=obs.iloc[:-10].copy(), var=pd.DataFrame(index=[f"p{j}" for j in range(5)]))
    data = MultiModalData.from_anndata({"rna": rna, "prot": other}, batch_key="donor", label_key="rna:ct",
                                       preprocessing={"rna": "counts", "prot": "normalized"})
    return (data, np.log1p(1e4 * np.stack([profile[c] for c in ct]))) if truth else data


def test_nb_nll_is_the_negative_binomial_log_pmf_averaged_over_features():
    rng = np.random.default_rng(1)
    counts = rng.poisson(3.0, (4, 6)).astype(np.float32)
    counts[1] = 0  # a spot with no counts: library clamped to 1, still a finite likelihood
    logits = rng.normal(size=(4, 6)).astype(np.float32)
    log_theta = rng.normal(size=6).astype(np.float32)
    got = nb_nll(torch.as_tensor(counts), torch.as_tensor(logits), torch.as_tensor(log_theta)).numpy()
    lib = np.maximum(counts.sum(1, keepdims=True), 1.0)
    rho = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mu = lib * rho
    theta = np.exp(log_theta)[None, :]
    # scipy's nbinom(n, p): n = theta, p = theta / (theta + mu) has mean mu and variance mu + mu^2 / theta
    hand = -stats.nbinom.logpmf(counts, theta, theta / (theta + mu)).mean(axis=1)
    np.testing.assert_allclose(got, hand, rtol=1e-4)


def test_nb_loss_terms_match_a_hand_computation_and_outputs_are_in_the_inputs_units():
    data, expected = _counts_data(truth=True)
    model = MIMA(data, count_likelihood="nb", n_latent=4, direct_max_features=100, adversarial=0)
    assert model.params["likelihoods"] == {"rna": "nb", "prot": "mse"}
    mod = model.module.eval()
    t = model._training_tensors()
    rows = torch.arange(data.n_obs)
    batch = {k: (v[rows] if hasattr(v, "crow") else v) for k, v in t.items()}
    assert "counts_rna" in batch and "counts_prot" not in batch
    np.testing.assert_array_equal(batch["counts_rna"].numpy(), data.raw["rna"].toarray())
    total, terms = mod(batch)

    xs = [batch["x_rna"], batch["x_prot"]]
    masks = [batch["mask_rna"], batch["mask_prot"]]
    onehot = torch.nn.functional.one_hot(batch["batch"], 2).float()
    with torch.no_grad():
        enc = [vae.encode(x, onehot) for vae, x in zip(mod.vaes, xs)]
        poe_mu = product_of_experts([e["shared"][0] for e in enc], [e["shared"][1] for e in enc], masks)[0]
        z = poe_mu + enc[0]["private"][0] + enc[0]["batch"][0]
        logits = mod.vaes[0].decode(z).numpy().astype(np.float64)
        log_theta = mod.vaes[0].log_theta.detach().numpy().astype(np.float64)
    counts = data.raw["rna"].toarray().astype(np.float64)
    mu = counts.sum(1, keepdims=True) * np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    theta = np.exp(log_theta)[None, :]
    hand = -stats.nbinom.logpmf(counts, theta, theta / (theta + mu)).mean(axis=1).mean()
    np.testing.assert_allclose(float(terms["recon_poe_rna"].detach()), hand, rtol=1e-4)
    # the other modality keeps the squared error
    with torch.no_grad():
        zp = poe_mu + enc[1]["private"][0] + enc[1]["batch"][0]
        xp = mod.vaes[1].decode(zp).numpy()
    m = data.mask["prot"]
    np.testing.assert_allclose(float(terms["recon_poe_prot"].detach()), ((xp - xs[1].numpy()) ** 2).mean(1)[m].mean(), rtol=1e-4)
    assert np.isfinite(float(total.detach()))

    model.train(epochs=100, lr=1e-2, batch_size=64, progress=False)
    den = model.get_denoised("rna")
    # log1p(1e4 x proportions): the units of the encoder's input (normalize_total(1e4) + log1p), rows sum to 1e4
    np.testing.assert_allclose(np.expm1(den).sum(1), 1e4, rtol=1e-3)
    r_model = np.corrcoef(den.ravel(), expected.ravel())[0, 1]
    r_input = np.corrcoef(data.X["rna"].toarray().ravel(), expected.ravel())[0, 1]
    assert r_model > max(r_input, 0.9), (r_model, r_input)  # the cell types' profiles, closer than the noisy input
    imp = model.translate(["prot"], "rna")
    assert np.isnan(imp[-10:]).all() and np.isfinite(imp[:-10]).all()
    np.testing.assert_allclose(np.expm1(imp[:-10]).sum(1), 1e4, rtol=1e-3)


def test_nb_without_counts_says_what_to_do_and_a_saved_model_reloads_with_it(tmp_path):
    data = _counts_data()
    other = MultiModalData.from_anndata(
        {"prot": ad.AnnData(np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32),
                            obs=pd.DataFrame({"donor": ["a", "b"] * 15}, index=[f"c{i}" for i in range(30)]))},
        batch_key="donor", preprocessing={"prot": "normalized"})
    with pytest.raises(ParameterError, match="count_likelihood='nb' needs a modality of raw counts.*'counts'"):
        MIMA(other, count_likelihood="nb")
    with pytest.raises(ParameterError, match="count_likelihood must be 'mse' or 'nb'"):
        MIMA(data, count_likelihood="poisson")
    model = MIMA(data, count_likelihood="nb", n_latent=4, direct_max_features=100).train(
        epochs=3, lr=1e-2, batch_size=64, progress=False)
    model.save(tmp_path / "m")
    back = MIMA.load(tmp_path / "m", data)
    assert back.module.vaes[0].likelihood == "nb"
    np.testing.assert_allclose(back.get_corrected("rna"), model.get_corrected("rna"), rtol=1e-5)
