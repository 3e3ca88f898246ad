"""The training engine and the MIMA model on small synthetic data (fast; no project needed)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from spatialmix.data import MultiModalData
from spatialmix.errors import FeatureMismatchError, ModelError, ParameterError, TrainingError
from spatialmix.models import MIMA
from spatialmix.progress import Progress

import _claims


def toy_data(n=240, n_batches=2, seed=0, nan_at=None) -> MultiModalData:
    """Three modalities driven by 3 regions, with an additive per-batch offset; 'b' misses 25 % of spots."""
    rng = np.random.default_rng(seed)
    region = rng.integers(0, 3, n)
    batch = np.arange(n) % n_batches
    X, mask, var = {}, {}, {}
    for m, d in (("a", 40), ("b", 25), ("c", 8)):
        centres = rng.normal(0, 2, (3, d))
        offsets = rng.normal(0, 1.5, (n_batches, d))
        X[m] = (centres[region] + offsets[batch] + rng.normal(0, 0.3, (n, d))).astype(np.float32)
        mask[m] = np.ones(n, bool)
        var[m] = pd.Index([f"{m}{i}" for i in range(d)])
    mask["b"][rng.random(n) < 0.25] = False
    X["b"][~mask["b"]] = 0
    if nan_at is not None:
        X["a"][nan_at] = np.nan
    obs = pd.DataFrame({"sample": [f"S{b}" for b in batch], "batch": [f"S{b}" for b in batch],
                        "region": region.astype(str)}, index=[f"spot{i}" for i in range(n)])
    return MultiModalData(["a", "b", "c"], X, mask, var, obs, None, "batch", None)



def small_model(data=None, **kw):
    return MIMA(data or toy_data(), n_latent=8, n_hidden=16, direct_max_features=30, **kw)


def test_mima_architecture_follows_the_paper_rules():
    data = toy_data()
    model = MIMA(data, direct_max_features=30)
    # 'a' (40 features) gets two hidden layers of 300; 'b' and 'c' (<= 30) are projected directly
    assert model.params["hidden"] == {"a": [300, 300], "b": [], "c": []}
    vae_a = model.module.vaes[0]
    assert [layer.out_features for layer in vae_a.body if isinstance(layer, torch.nn.Linear)] == [300, 300]
    assert vae_a.shared.mu.out_features == 100 and vae_a.private.mu.out_features == 100
    assert [layer.p for layer in vae_a.body if isinstance(layer, torch.nn.Dropout)] == [0.1, 0.1]
    assert vae_a.shared.drop.p == 0.3
    # decoders mirror encoders
    assert [layer.out_features for layer in vae_a.decoder_body if isinstance(layer, torch.nn.Linear)] == [300, 300]
    assert vae_a.decoder_out.out_features == 40
    assert model.module.vaes[1].decoder_out.in_features == 100
    # any number of modalities, in the order asked for
    two = MIMA(data, modalities=["c", "a"], n_latent=8)
    assert two.modalities == ["c", "a"] and len(two.module.vaes) == 2


def test_loss_terms_match_the_paper_for_three_modalities():
    model = small_model()
    t = {k: torch.as_tensor(v) for k, v in model._training_tensors().items()}
    total, terms = model.module(t)
    pairs = {f"translate_{s}_to_{d}" for s in "abc" for d in "abc" if s != d}
    assert pairs <= set(terms) and len(pairs) == 6
    assert {"recon_poe_a", "recon_a", "kl_poe", "kl_shared_a", "kl_private_a", "kl_batch_a"} <= set(terms)
    assert torch.isfinite(total)
    # without the translation terms (ablation) they disappear
    no_tr = small_model(translation_loss=False)
    _, terms2 = no_tr.module({k: torch.as_tensor(v) for k, v in no_tr._training_tensors().items()})
    assert not any(k.startswith("translate") for k in terms2)


def test_product_of_experts_ignores_missing_modalities():
    from spatialmix.models._mima_module import product_of_experts

    mu1, lv1 = torch.tensor([[2.0]]), torch.tensor([[0.0]])
    mu2, lv2 = torch.tensor([[-4.0]]), torch.tensor([[0.0]])
    mu, lv = product_of_experts([mu1, mu2], [lv1, lv2], [torch.tensor([True]), torch.tensor([False])])
    # prior N(0,1) x expert N(2,1) = N(1, 1/2); the masked expert has no say
    assert mu.item() == pytest.approx(1.0) and lv.exp().item() == pytest.approx(0.5)
    mu, lv = product_of_experts([mu1, mu2], [lv1, lv2], [torch.tensor([False]), torch.tensor([False])])
    assert mu.item() == 0.0 and lv.item() == pytest.approx(0.0)  # nothing measured -> the prior


def test_training_events_and_outputs():
    model = small_model()
    events: list[Progress] = []
    out = model.train(epochs=3, lr=1e-3, batch_size=64, progress=events.append)
    assert out is model and model.is_trained
    epochs = [e for e in events if e.info.get("event") == "epoch"]
    steps = [e for e in events if e.info.get("event") == "step"]
    assert [e.info["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[0].info["steps_per_epoch"] == 3  # 192 train spots / 64
    # step events are throttled (at most 10 per second): the first step always reports
    assert 1 <= len(steps) <= 3 * 3 and steps[0].info["step"] == 1 and steps[0].info["epoch"] == 1
    last = epochs[-1].info
    assert set(last) >= {"terms", "val_loss", "val_terms", "seconds_per_epoch", "eta_s", "loss"}
    assert last["eta_s"] == 0 and epochs[0].info["eta_s"] > 0
    assert last["early_stopping"] is False  # a fixed schedule: the time left is not an upper bound
    assert "recon_poe_a" in last["terms"] and np.isfinite(last["val_loss"])
    assert len(model.split_["train"]) == 192 and len(model.split_["validation"]) == 48
    assert model.training_curve()["loss"].iloc[-1] < model.training_curve()["loss"].iloc[0]
    n = 240
    assert model.get_latent_representation().shape == (n, 8)
    assert model.get_latent_representation("private", "b").shape == (n, 8)
    assert model.get_corrected("a").shape == (n, 40)
    assert model.get_denoised("b").shape == (n, 25)
    assert model.translate(["a", "c"], "b").shape == (n, 25)
    assert model.translate("a", "b", batch_free=True).shape == (n, 25)
    with pytest.raises(ModelError, match="not in this model"):
        model.get_corrected("rna")
    with pytest.raises(ParameterError, match="also a source"):
        model.translate(["a", "b"], "b")


def test_outputs_are_nan_where_the_data_cannot_support_them():
    """'b' misses 25 % of spots: its reconstructions and per-modality latents are NaN there (decoded from
    zero-filled input they would be invented); a translation into 'b' is a value there, one from 'b' alone
    is not; the PoE embedding uses the experts that were measured."""
    data = toy_data()
    model = small_model(data).train(epochs=2, lr=1e-3, batch_size=64)
    missing = ~data.mask["b"]
    assert 40 < missing.sum() < 80
    for values in (model.get_corrected("b"), model.get_denoised("b"),
                   model.get_latent_representation("private", "b"), model.get_latent_representation("shared", "b"),
                   model.translate("b", "a")):
        np.testing.assert_array_equal(np.isnan(values).all(axis=1), missing)
        assert np.isfinite(values[~missing]).all()
    for values in (model.get_corrected("a"), model.translate(["a", "c"], "b"), model.translate(["b", "c"], "a"),
                   model.get_latent_representation(), model.get_latent_representation("batch", "b")):
        assert np.isfinite(values).all()  # every spot has a measured source


def test_untrained_model_says_so():
    with pytest.raises(ModelError, match="not trained yet"):
        small_model().get_latent_representation()


def test_same_seed_same_result_and_other_seed_differs():
    a = small_model().train(epochs=2, lr=1e-3, seed=3)
    b = small_model().train(epochs=2, lr=1e-3, seed=3)
    c = small_model().train(epochs=2, lr=1e-3, seed=4)
    za, zb, zc = (m.get_latent_representation() for m in (a, b, c))
    np.testing.assert_array_equal(za, zb)
    assert a.history[-1]["loss"] == b.history[-1]["loss"]
    assert not np.allclose(za, zc)


def test_mima_learns_the_regions_and_removes_the_batch_offset():
    """Enough training on toy data: the PoE embedding separates the regions better than the raw inputs, and the
    batch-corrected reconstruction carries less of the batch offset than the input (measured: region
    silhouette 0.69 vs 0.50 raw; batch silhouette of corrected 'a' 0.28 vs 0.35 raw)."""
    from sklearn.metrics import silhouette_score

    data = toy_data(n=400, seed=1)
    region, batch = data.obs["region"].to_numpy(), data.obs["batch"].to_numpy()
    raw = np.concatenate([data.dense(m) for m in data.modalities], axis=1)
    gains = {"region": [], "batch": [], "corrected_batch": []}
    for k in range(5):  # medians over 5 trainings (docs/reproducibility.md)
        model = small_model(data, seed=_claims.seed(k)).train(epochs=60, lr=3e-3, batch_size=64, seed=_claims.seed(k))
        z = model.get_latent_representation()
        gains["region"].append(silhouette_score(z, region) - silhouette_score(raw, region))
        gains["batch"].append(silhouette_score(z, batch) - silhouette_score(raw, batch))
        gains["corrected_batch"].append(silhouette_score(model.get_corrected("a"), batch)
                                        - silhouette_score(data.dense("a"), batch))
    print({k: np.round(v, 3) for k, v in gains.items()})
    C = "test_train::mima_learns_regions"
    _claims.check(f"{C}/median_region_silhouette_gain", _claims.median(gains["region"]), ">", 0.1)
    _claims.check(f"{C}/median_batch_silhouette_change", _claims.median(gains["batch"]), "<", 0.0)
    # -0.053 +/- 0.025 over 9 runs: the margin the spread allows is "not above raw + 0.03" (a regression guard)
    _claims.check(f"{C}/median_corrected_batch_silhouette_change", _claims.median(gains["corrected_batch"]), "<", 0.03)


def test_stop_keeps_the_last_completed_epoch():
    model = small_model()
    stop = threading.Event()
    gen = model.iter_train(epochs=5, lr=1e-3, batch_size=32, stop=stop)
    state_after_epoch1 = None
    for ev in gen:
        if ev.info.get("event") == "epoch" and ev.info["epoch"] == 1:
            state_after_epoch1 = {k: v.clone() for k, v in model.module.state_dict().items()}
            stop.set()  # seen by the engine after the next optimiser step, in the middle of epoch 2
    assert model.is_trained and model.stopped_early
    assert [h["epoch"] for h in model.history] == [1]
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, state_after_epoch1[k])
    assert model.get_latent_representation().shape[0] == 240  # usable


def test_closing_the_generator_mid_epoch_restores_the_last_epoch():
    model = small_model()
    gen = model.iter_train(epochs=5, lr=1e-3, batch_size=32, step_event_interval=0)  # an event every step
    snapshot = None
    for ev in gen:
        if ev.info.get("event") == "epoch":
            snapshot = {k: v.clone() for k, v in model.module.state_dict().items()}
        if ev.info.get("event") == "step" and ev.info["epoch"] == 2 and ev.info["step"] == 2:
            break
    gen.close()
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, snapshot[k])
    assert model.is_trained and len(model.history) == 1


def test_step_events_are_throttled_and_the_epoch_losses_are_read_once():
    """Per-step progress is at most 10 events per second (each costs a host sync, a progress bar shows no
    more), while every epoch still reports the mean loss over all its steps."""
    import time

    model = small_model()
    stamps, events = [], []

    def on_event(e):
        events.append(e)
        if e.info.get("event") == "step":
            stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    model.train(epochs=4, lr=1e-3, batch_size=4, progress=on_event)  # 48 steps per epoch
    elapsed = time.perf_counter() - t0
    epochs = [e for e in events if e.info.get("event") == "epoch"]
    assert epochs[0].info["steps_per_epoch"] == 48
    assert 1 <= len(stamps) <= 10 * elapsed + 1 < 4 * 48  # unthrottled, every one of the 192 steps would report
    every = []  # step_event_interval=0: one event per optimiser step
    again = small_model().train(epochs=2, lr=1e-3, batch_size=4, step_event_interval=0, progress=every.append)
    steps = [e for e in every if e.info.get("event") == "step"]
    assert len(steps) == 2 * 48
    # the loss summed on the device over the epoch is the mean of the steps' losses (equal batches of 4 rows)
    for h in [h for h in again.history if "loss" in h]:
        per_step = [e.info["loss"] for e in steps if e.info["epoch"] == h["epoch"]]
        assert h["loss"] == pytest.approx(np.mean(per_step), rel=1e-5)


def test_nan_input_stops_with_the_loss_term_and_epoch():
    data = toy_data(nan_at=5)
    model = small_model(data)
    with pytest.raises(TrainingError, match=r"epoch 1, step \d+: non-finite term\(s\) \[[^]]*'recon_poe_a'") as err:
        model.train(epochs=2, lr=1e-3)
    # the terms of the first step that went wrong (b's own path never sees a's NaN), not every term of the
    # weights that step broke
    assert "'recon_b'" not in str(err.value) and "'kl_private_b'" not in str(err.value)


def test_early_stopping_restores_the_best_epoch():
    model = small_model()
    model.train(epochs=200, lr=3e-2, batch_size=32, early_stopping=True, patience=2)
    done = [h for h in model.history if "loss" in h]
    marker = [h for h in model.history if h.get("early_stopped")]
    assert marker and len(done) < 200
    best = marker[0]["best_epoch"]
    assert min(done, key=lambda h: h["val_loss"])["epoch"] == best


def test_checkpoint_and_resume_give_the_uninterrupted_result(tmp_path):
    ref = small_model().train(epochs=4, lr=1e-3, seed=1)
    part = small_model()
    part.train(epochs=2, lr=1e-3, seed=1, checkpoint_every=1, checkpoint_dir=str(tmp_path))
    assert (tmp_path / "last.ckpt").exists()
    resumed = small_model()
    resumed.train(epochs=4, lr=1e-3, seed=1, checkpoint_dir=str(tmp_path), resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed.get_latent_representation(), ref.get_latent_representation(), atol=1e-5)
    other = MIMA(toy_data(), n_latent=4, n_hidden=16, direct_max_features=30)
    with pytest.raises(TrainingError, match="different model or dataset"):
        other.train(epochs=3, checkpoint_dir=str(tmp_path), resume=True)
    with pytest.raises(TrainingError, match="no checkpoint"):
        small_model().train(epochs=3, resume=str(tmp_path / "nowhere"))


def test_bad_options_are_named():
    model = small_model()
    with pytest.raises(ParameterError, match="unknown training option"):
        model.train(epoch=3)
    with pytest.raises(ParameterError, match="epochs"):
        model.train(epochs=0)
    with pytest.raises(ParameterError, match="device must be"):
        model.train(epochs=1, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA GPU"):
            model.train(epochs=1, device="cuda")
    with pytest.raises(ParameterError, match="unknown MIMA parameter"):
        MIMA(toy_data(), latent=3)


@pytest.mark.parametrize("name", ["mima", "modamix", "calibration", "scmodal"])
def test_every_model_names_unknown_parameters_and_bad_modalities(name):
    from spatialmix.models import MODELS

    cls = MODELS[name]
    data = toy_data()
    with pytest.raises(ParameterError, match=rf"unknown {cls.__name__} parameter\(s\) \['nonsense'\]; allowed: .*'modalities'"):
        cls(data, nonsense=1)
    with pytest.raises(ParameterError, match=r"modalities \['atac'\] are not in the data"):
        cls(data, modalities=["a", "atac"])
    with pytest.raises(ParameterError, match="name a modality twice"):
        cls(data, modalities=["a", "a"])
    with pytest.raises(ParameterError, match="needs at least one modality"):
        cls(data, modalities=[])


def test_save_load_round_trip_and_feature_checks(tmp_path):
    data = toy_data()
    model = small_model(data).train(epochs=2, lr=1e-3)
    model.save(tmp_path / "m")
    with pytest.raises(Exception, match="already exists"):
        model.save(tmp_path / "m")
    back = MIMA.load(tmp_path / "m", data)
    assert back.modalities == model.modalities and back.batches == model.batches
    assert back.params == model.params and back.history == model.history
    np.testing.assert_allclose(back.get_latent_representation(), model.get_latent_representation(), atol=1e-6)
    np.testing.assert_allclose(back.translate("a", "c"), model.translate("a", "c"), atol=1e-6)
    # a dataset with a renamed and a missing feature is refused, naming them
    bad = toy_data()
    bad.var_names["b"] = pd.Index(["zz"] + list(bad.var_names["b"][1:]))
    with pytest.raises(FeatureMismatchError, match=r"b: 1 feature\(s\) missing, e.g. \['b0'\]; 1 unknown feature\(s\), e.g. \['zz'\]"):
        MIMA.load(tmp_path / "m", bad)
    fewer = toy_data()
    fewer.modalities = ["a", "c"]
    with pytest.raises(FeatureMismatchError, match=r"modalities \['b'\] are missing"):
        back.get_latent_representation(data=fewer)
    with pytest.raises(Exception, match="not a saved spatialmix model"):
        MIMA.load(tmp_path)


def test_new_samples_get_batch_free_outputs_only(tmp_path):
    model = small_model().train(epochs=1, lr=1e-3)
    new = toy_data(seed=5)
    new.obs["batch"] = "S9"
    assert model.get_latent_representation(data=new).shape == (240, 8)
    assert model.get_corrected("a", data=new).shape == (240, 40)
    with pytest.raises(ModelError, match=r"samples \['S9'\] were not in the training data"):
        model.get_denoised("a", data=new)
    assert model.translate("a", "b", batch_free=True, data=new).shape == (240, 25)


@pytest.mark.slow
def test_the_same_engine_trains_with_ddp_on_two_processes(tmp_path):
    """Lightning Fabric DDP (gloo, CPU) through torchrun: each process sees half of the mini-batches and the
    weights stay identical across processes (gradients are all-reduced)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "_ddp_train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", str(script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("result_*.json"))]
    assert sorted(r["rank"] for r in results) == [0, 1] and all(r["world"] == 2 for r in results)
    assert all(r["epochs"] == 2 for r in results)
    assert all(r["steps_per_epoch"] == 3 for r in results)  # 192 training spots / 2 processes / 32 per batch
    assert results[0]["zsum"] == pytest.approx(results[1]["zsum"], rel=1e-6)


def test_paper_preset_loss_terms_match_a_hand_computation():
    """preset='paper': every loss term recomputed by hand (numpy) from the networks' outputs, the weights the
    preprint gives (beta 0.01 on every KL, no adversary) and the translation terms not training the target's
    batch latent. Eval mode: latent means, no dropout, so the loss is deterministic."""
    import torch.nn.functional as F

    data = toy_data(n=60)
    model = MIMA(data, preset="paper", n_latent=4, n_hidden=8, direct_max_features=30)
    assert model.params["adversarial"] == 0 and model.params["batch_input"] == "sample+features"
    assert model.module.discriminators is None and model.module.translation_detach
    mod = model.module.eval()
    t = model._tensors(data)
    t.pop("_known_batch")
    names = model.modalities
    xs, masks, batch = [t[f"x_{m}"] for m in names], [t[f"mask_{m}"] for m in names], t["batch"]
    total, terms = mod.loss(xs, masks, batch)

    onehot = F.one_hot(batch, 2).float()
    with torch.no_grad():
        enc = [vae.encode(x, onehot) for vae, x in zip(mod.vaes, xs)]
        e = [{k: (v[0].numpy().astype(np.float64), v[1].numpy().astype(np.float64)) for k, v in en.items()} for en in enc]
        dec = [lambda z, v=vae: v.decode(torch.as_tensor(z, dtype=torch.float32)).detach().numpy().astype(np.float64)
               for vae in mod.vaes]
    X = [x.numpy().astype(np.float64) for x in xs]
    M = [m.numpy() for m in masks]

    def mse(x, xhat, rows):  # per-spot mean over features, mean over the rows
        return ((xhat - x) ** 2).mean(axis=1)[rows].mean()

    def kl(mu, lv):
        return 0.5 * (mu ** 2 + np.exp(lv) - 1 - lv).sum(axis=1)

    prec = [np.exp(-e[i]["shared"][1]) * M[i][:, None] for i in range(3)]
    T = 1 + sum(prec)
    mu_poe = sum(e[i]["shared"][0] * prec[i] for i in range(3)) / T
    lv_poe = -np.log(T)
    hand = {}
    for i, m in enumerate(names):
        hand[f"recon_poe_{m}"] = mse(X[i], dec[i](mu_poe + e[i]["private"][0] + e[i]["batch"][0]), M[i])
        hand[f"recon_{m}"] = mse(X[i], dec[i](e[i]["shared"][0] + e[i]["private"][0] + e[i]["batch"][0]), M[i])
        for k in ("shared", "private", "batch"):
            hand[f"kl_{k}_{m}"] = kl(*e[i][k])[M[i]].mean()
    for s, a in enumerate(names):
        for u, b in enumerate(names):
            if s != u:
                both = M[s] & M[u]
                hand[f"translate_{a}_to_{b}"] = mse(X[u], dec[u](e[s]["shared"][0] + e[u]["batch"][0]), both)
    hand["kl_poe"] = kl(mu_poe, lv_poe).mean()  # every spot has at least one modality
    assert set(terms) == set(hand)  # no adversarial or other extra term
    for k, v in hand.items():
        np.testing.assert_allclose(float(terms[k].detach()), v, rtol=2e-4, err_msg=k)
    beta = 0.01
    expected = (sum(hand[f"recon_poe_{m}"] for m in names) + sum(v for k, v in hand.items() if k.startswith("translate_"))
                + beta * hand["kl_poe"]
                + sum(hand[f"recon_{m}"] + beta * (hand[f"kl_batch_{m}"] + hand[f"kl_private_{m}"]
                                                    + hand[f"kl_shared_{m}"]) for m in names))
    np.testing.assert_allclose(float(total.detach()), expected, rtol=2e-4)

    # translation does not train the target's batch latent, it trains the source's shared encoder
    mod.zero_grad()
    terms["translate_a_to_b"].backward()
    assert all(p.grad is None or not p.grad.any() for p in mod.vaes[1].batch.parameters())
    assert any(p.grad is not None and p.grad.any() for p in mod.vaes[0].shared.parameters())
    # ours: the same term trains the target's batch latent too
    ours = MIMA(data, n_latent=4, n_hidden=8, direct_max_features=30).module.eval()
    _, t2 = ours.loss(xs, masks, batch)
    t2["translate_a_to_b"].backward()
    assert any(p.grad is not None and p.grad.any() for p in ours.vaes[1].batch.parameters())


def test_paper_preset_trains_translates_with_the_sample_mean_batch_latent_and_explicit_parameters_win():
    data = toy_data()
    model = small_model(data, preset="paper").train(epochs=2, lr=1e-3, batch_size=64)
    rna = model.translate(["a", "c"], "b")
    assert rna.shape == (240, 25) and np.isfinite(rna).all()
    assert not np.allclose(rna, model.translate(["a", "c"], "b", batch_free=True))  # the batch latent is added
    assert small_model(data, preset="paper", adversarial=0.2).params["adversarial"] == 0.2
    with pytest.raises(ParameterError, match="preset must be one of"):
        small_model(data, preset="nope")


def test_translation_terms_decode_what_translate_decodes():
    """Ours (translation_poe): each translation term decodes the product of the sources' experts *and the prior
    expert* plus the target's batch latent, exactly what translate() returns; with three modalities the pairs
    and 'all the other modalities' are trained. The paper's preset trains the source's own shared latent and
    translate() then decodes that one, without the prior expert."""
    import torch.nn.functional as F

    from spatialmix.models._mima_module import product_of_experts

    data = toy_data(n=60)
    model = MIMA(data, n_latent=4, n_hidden=8, direct_max_features=30)
    mod = model.module.eval()
    t = model._tensors(data)
    t.pop("_known_batch")
    xs, masks, batch = [t[f"x_{m}"] for m in "abc"], [t[f"mask_{m}"] for m in "abc"], t["batch"]
    _, terms = mod.loss(xs, masks, batch)
    assert {"translate_b+c_to_a", "translate_a+c_to_b", "translate_a+b_to_c", "translate_a_to_b"} <= set(terms)
    onehot = F.one_hot(batch, 2).float()
    with torch.no_grad():
        enc = [vae.encode(x, onehot) for vae, x in zip(mod.vaes, xs)]
        for sources, target in (([0], 1), ([0, 2], 1), ([1], 2)):
            mu, _ = product_of_experts([enc[s]["shared"][0] for s in sources], [enc[s]["shared"][1] for s in sources],
                                       [masks[s] for s in sources])
            decoded = mod.vaes[target].decode(mu + enc[target]["batch"][0])
            via_translate = mod.translate(xs, masks, batch, sources=sources, target=target, with_batch=True)
            np.testing.assert_allclose(decoded.numpy(), via_translate.numpy(), rtol=1e-5, atol=1e-6)
            rows = (masks[target] & torch.stack([masks[s] for s in sources]).any(dim=0)).numpy()
            hand = ((decoded.numpy() - xs[target].numpy()) ** 2).mean(axis=1)[rows].mean()
            key = f"translate_{'+'.join('abc'[s] for s in sources)}_to_{'abc'[target]}"
            np.testing.assert_allclose(float(terms[key]), hand, rtol=2e-4)
        # the prior expert shrinks a single source's mean: the term is not the paper's (no prior) one
        raw = mod.vaes[1].decode(enc[0]["shared"][0] + enc[1]["batch"][0])
        assert not np.allclose(raw.numpy(), mod.translate(xs, masks, batch, sources=[0], target=1,
                                                          with_batch=True).numpy(), atol=1e-4)
    # the paper's preset: translate from one source decodes that source's shared mean, as its term trains
    paper = MIMA(data, preset="paper", n_latent=4, n_hidden=8, direct_max_features=30)
    pm = paper.module.eval()
    _, pterms = pm.loss(xs, masks, batch)
    assert not any("+" in k for k in pterms)
    with torch.no_grad():
        e0 = pm.vaes[0].encode(xs[0], onehot)
        table = torch.zeros(2, 4)
        got = pm.translate(xs, masks, batch, sources=[0], target=1, with_batch=True, batch_table=table)
        np.testing.assert_allclose(got.numpy(), pm.vaes[1].decode(e0["shared"][0]).numpy(), rtol=1e-5, atol=1e-6)


def test_loss_and_every_output_decode_through_the_one_generative_path(monkeypatch):
    """Issue 18: the loss terms, corrected / denoised outputs and translations all decode through
    MIMAModule.generative (as scvi-tools' inference / generative split), so no output can decode a latent that
    training never decoded; a second decode path written elsewhere fails here."""
    import inspect

    from spatialmix.models._mima_module import ModalityVAE

    data = toy_data(n=40)
    model = MIMA(data, n_latent=4, n_hidden=8, direct_max_features=30)
    mod = model.module
    callers = []
    original = ModalityVAE.decode

    def recording(self, z):
        callers.append(inspect.stack()[1].function)
        return original(self, z)

    monkeypatch.setattr(ModalityVAE, "decode", recording)
    t = model._tensors(data)
    t.pop("_known_batch")
    xs, masks, batch = [t[f"x_{m}"] for m in "abc"], [t[f"mask_{m}"] for m in "abc"], t["batch"]
    mod.train()
    _, terms = mod.loss(xs, masks, batch)
    n_loss = len(callers)  # one decode per reconstruction and translation term
    assert n_loss == sum(k.startswith(("recon_", "translate_")) for k in terms) == 3 + 9 + 3
    mod.eval()
    mod.outputs(xs, masks, batch, [("corrected", 0), ("denoised", 1), ("translation", [0, 2], 1, True, None)])
    mod.translate(xs, masks, batch, sources=[2], target=0, with_batch=False)
    mod.reconstruct(xs, masks, batch, modality=2, with_batch=True)
    assert len(callers) == n_loss + 5
    assert set(callers) == {"generative"}, callers


def test_auto_schedule_fits_the_data_size_and_early_stopping_keeps_the_best_epoch(monkeypatch):
    from spatialmix import train as train_mod

    # the paper's size (~33,600 training spots, 263 steps of 128) gets the paper's 50 epochs; tiny data many
    assert train_mod.auto_schedule(263) == (50, 10)
    assert train_mod.auto_schedule(1) == (13_000, 500)
    assert train_mod.auto_schedule(24) == (542, 21)
    assert MIMA.train_defaults["epochs"] == "auto"
    assert small_model(preset="paper").train_defaults["epochs"] == 50
    monkeypatch.setattr(train_mod, "AUTO_STEPS", 400)
    monkeypatch.setattr(train_mod, "AUTO_PATIENCE_STEPS", 30)
    events: list[Progress] = []
    model = small_model().train(lr=3e-2, progress=events.append)  # epochs="auto": 192 rows -> 2 steps per epoch
    s = model.train_config["schedule"]
    # each epoch event counts down the epochs left before an early stop (what the Integrate dock shows)
    last = [e.info for e in events if e.info.get("event") == "epoch"][-1]
    assert last["early_stopping"] and last["patience_left"] == s["patience"] - (last["epoch"] - s["best_epoch"])
    assert s["auto"] and s["early_stopping"] and s["steps_per_epoch"] == 2
    assert s["epochs"] == 200 and s["patience"] == 15
    done = [h for h in model.history if "loss" in h]
    best = min(done, key=lambda h: h["val_loss"])["epoch"]
    assert s["best_epoch"] == best and s["epochs_run"] == len(done)
    # the restored weights are the best epoch's: their validation loss is the best one recorded
    from spatialmix.train import _validate  # noqa: F401  (the engine's own validation)
    val_rows = model.split_["validation"]
    t = {k: torch.as_tensor(v)[val_rows] for k, v in model._training_tensors().items()}
    model.module.eval()
    with torch.no_grad():
        total, _ = model.module(t)
    np.testing.assert_allclose(float(total), min(h["val_loss"] for h in done), rtol=1e-4)
    # without a validation split there is nothing to stop on: the whole schedule runs
    full = small_model().train(lr=1e-3, train_fraction=1.0)
    assert not full.train_config["schedule"]["early_stopping"] and len(full.training_curve()) == 200
    with pytest.raises(ParameterError, match="'auto'"):
        small_model().train(epochs="many")


def test_ctrl_c_mid_epoch_writes_the_last_completed_epoch_and_resume_finishes_it(tmp_path):
    ref = small_model().train(epochs=4, lr=1e-3, seed=1)
    part = small_model()
    gen = part.iter_train(epochs=4, lr=1e-3, seed=1, checkpoint_dir=str(tmp_path), step_event_interval=0)
    for ev in gen:
        if ev.info.get("event") == "step" and ev.info["epoch"] == 3 and ev.info["step"] == 2:
            with pytest.raises(KeyboardInterrupt):
                gen.throw(KeyboardInterrupt)  # where Ctrl-C lands: inside the training step
            break
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 2 and not ckpt.get("finished")
    assert [h["epoch"] for h in part.history] == [1, 2]  # the model keeps epoch 2 as well
    resumed = small_model()
    resumed.train(epochs=4, lr=1e-3, seed=1, checkpoint_dir=str(tmp_path), resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed.get_latent_representation(), ref.get_latent_representation(), atol=1e-5)
    # training that ended leaves a finished checkpoint: resuming it with the same schedule trains nothing more
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["finished"]
    again = small_model()
    events = list(again.iter_train(epochs=4, lr=1e-3, seed=1, checkpoint_dir=str(tmp_path), resume=True))
    assert not [e for e in events if e.info.get("event") == "step"]
    np.testing.assert_allclose(again.get_latent_representation(), ref.get_latent_representation(), atol=1e-5)


def test_closing_or_stopping_mid_epoch_writes_the_last_completed_epoch(tmp_path):
    model = small_model()
    gen = model.iter_train(epochs=5, lr=1e-3, batch_size=32, checkpoint_dir=str(tmp_path / "closed"),
                           step_event_interval=0)
    for ev in gen:
        if ev.info.get("event") == "step" and ev.info["epoch"] == 2:
            break
    gen.close()  # what a GUI worker or an interrupted consumer does
    assert torch.load(tmp_path / "closed" / "last.ckpt", weights_only=False)["epoch"] == 1
    stop = threading.Event()
    events = []
    for ev in small_model().iter_train(epochs=5, lr=1e-3, batch_size=32, stop=stop, step_event_interval=0,
                                       checkpoint_dir=str(tmp_path / "stopped")):
        events.append(ev)
        if ev.info.get("event") == "step" and ev.info["epoch"] == 3:
            stop.set()
    assert events[-1].info["checkpoint"] == str(tmp_path / "stopped" / "last.ckpt")
    assert torch.load(tmp_path / "stopped" / "last.ckpt", weights_only=False)["epoch"] == 2


def test_sparse_inputs_train_sparse_and_give_the_dense_result():
    """A CSR modality stays sparse in training (one dense mini-batch at a time, SparseRows) and the model is
    the one the same values as a dense matrix give: same losses, same embedding."""
    import scipy.sparse as sp

    from spatialmix.train import SparseRows

    dense = toy_data()
    X = dict(dense.X)
    a = np.where(np.abs(X["a"]) < 1.0, 0.0, X["a"]).astype(np.float32)  # ~30 % zeros
    sparse_data = MultiModalData(dense.modalities, {**X, "a": sp.csr_matrix(a), "b": sp.csr_matrix(X["b"])},
                                 dense.mask, dense.var_names, dense.obs, None, "batch", None)
    dense_data = MultiModalData(dense.modalities, {**X, "a": a}, dense.mask, dense.var_names, dense.obs, None,
                                "batch", None)
    ms = small_model(sparse_data)
    t = ms._training_tensors()
    assert isinstance(t["x_a"], SparseRows) and isinstance(t["x_b"], SparseRows) and isinstance(t["x_c"], torch.Tensor)
    rows = torch.tensor([5, 0, 239, 5])
    np.testing.assert_array_equal(t["x_a"][rows].numpy(), a[[5, 0, 239, 5]])
    ms.train(epochs=3, lr=1e-3, seed=2)
    md = small_model(dense_data).train(epochs=3, lr=1e-3, seed=2)
    assert [h["loss"] for h in ms.history] == pytest.approx([h["loss"] for h in md.history], rel=1e-6)
    np.testing.assert_allclose(ms.get_latent_representation(), md.get_latent_representation(), atol=1e-5)
    np.testing.assert_allclose(ms.get_corrected("a"), md.get_corrected("a"), atol=1e-5)
