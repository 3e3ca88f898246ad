"""Multi-batch calibration (Niu et al., 2021): batch mixing, label transfer to target batches, the two-step
schedule, save / load and the errors a user can run into."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from torch.optim.optimizer import register_optimizer_step_post_hook

from spatialmix.data import MultiModalData
from spatialmix.errors import FeatureMismatchError, ModelError, ParameterError
from spatialmix.models.calibration import Calibration

import _claims



def calib_data(n_per_batch=150, n_batches=4, n_classes=4, n_sources=2, seed=0, missing_msi=0.0,
               compositions=None) -> MultiModalData:
    """Two modalities ('rna' 30, 'msi' 12 features) driven by ``n_classes`` classes, ``n_batches`` batches with
    strong multiplicative (x0.5-x2) and additive per-batch effects; the additive shifts run along differences
    between class centres, so that a classifier trained on the raw source batches confuses classes in the
    targets. The annotation column 'cell_type' is filled on the first ``n_sources`` batches only; 'truth' has
    every spot's class (for scoring). ``compositions=(source, target)``: class shares of the source and of the
    target batches (label shift; default: every class equally likely everywhere)."""
    rng = np.random.default_rng(seed)
    n = n_per_batch * n_batches
    batch = np.repeat(np.arange(n_batches), n_per_batch)
    if compositions is None:
        cls = rng.integers(0, n_classes, n)
    else:
        comp = [np.asarray(compositions[0] if b < n_sources else compositions[1], float) for b in range(n_batches)]
        cls = np.concatenate([rng.choice(n_classes, n_per_batch, p=c / c.sum()) for c in comp])
    X, mask, var = {}, {}, {}
    for m, d in (("rna", 30), ("msi", 12)):
        centres = rng.normal(0, 1.0, (n_classes, d))
        base = centres[cls] + rng.normal(0, 0.6, (n, d))
        pairs = [rng.permutation(n_classes)[:2] for _ in range(n_batches)]
        offsets = np.stack([1.2 * (centres[a] - centres[b]) for a, b in pairs]) + rng.normal(0, 1.5, (n_batches, d))
        mult = rng.uniform(0.5, 2.0, (n_batches, d))
        X[m] = (base * mult[batch] + offsets[batch] + 5).astype(np.float32)
        mask[m] = np.ones(n, bool)
        var[m] = pd.Index([f"{m}{i}" for i in range(d)])
    if missing_msi:
        mask["msi"][rng.random(n) < missing_msi] = False
        X["msi"][~mask["msi"]] = 0
    truth = np.array([f"class{c}" for c in range(n_classes)])[cls]
    annotation = pd.Series(truth, dtype=object)
    annotation[batch >= n_sources] = np.nan
    obs = pd.DataFrame({"sample": [f"B{b}" for b in batch], "batch": [f"B{b}" for b in batch], "truth": truth,
                        "cell_type": annotation.to_numpy()}, index=[f"spot{i}" for i in range(n)])
    return MultiModalData(["rna", "msi"], X, mask, var, obs, None, "batch", "cell_type")


def shift_data(source_composition, target_composition, seed=0, **kwargs) -> MultiModalData:
    """:func:`calib_data` with label shift: source batches draw their classes from ``source_composition``, target
    batches from ``target_composition`` (a 0 leaves the class out of the targets)."""
    return calib_data(n_classes=len(source_composition), seed=seed,
                      compositions=(source_composition, target_composition), **kwargs)


def knn_batch_accuracy(z, batches) -> float:
    """5-fold accuracy of a 15-NN classifier predicting the batch: 1 = batches apart, 1/n_batches = mixed."""
    return float(cross_val_score(KNeighborsClassifier(15), z, batches, cv=5).mean())


def raw_features(data) -> np.ndarray:
    return np.concatenate([data.dense(m) for m in data.modalities], axis=1)


@pytest.fixture(scope="module")
def trained4():
    _claims.set_torch_threads()
    data = calib_data(n_classes=4)
    model = Calibration(data, seed=_claims.seed())
    model.train(epochs=60, step_events=False, seed=_claims.seed())
    return data, model


def test_calibration_mixes_batches_and_transfers_labels_better_than_raw_logistic_regression(trained4):
    data, model = trained4
    # defaults: sources = the batches with labelled spots, classes from the source labels, paper weights
    assert model.params["source_batches"] == ["B0", "B1"]
    assert model.params["classes"] == ["class0", "class1", "class2", "class3"]
    assert {k: model.params[k] for k in ("alpha1", "alpha2", "beta", "gamma", "lambda1", "lambda2")} == \
        {"alpha1": 10.0, "alpha2": 10.0, "beta": 10.0, "gamma": 0.01, "lambda1": 1, "lambda2": 1}
    assert model.train_config["lr"] == 1e-3 and model.train_config["batch_size"] == 128
    assert len(model.module.reconstructors) == 2
    # multi-class head: softmax over 4 logits
    assert model.module.discriminator.head[-1].out_features == 4

    b = data.obs["batch"].to_numpy()
    truth = data.obs["truth"].to_numpy()
    src = np.isin(b, ["B0", "B1"])
    raw = StandardScaler().fit_transform(raw_features(data))
    z = model.get_latent_representation()
    assert z.shape == (data.n_obs, 42) and np.isfinite(z).all()
    raw_mix, cal_mix = knn_batch_accuracy(raw, b), knn_batch_accuracy(z, b)
    print(f"kNN batch accuracy raw {raw_mix:.3f} -> calibrated {cal_mix:.3f} (chance 0.25)")
    C = "test_calibration::mixes_and_transfers"
    assert raw_mix > 0.9  # the data's batch effect (no training involved)
    _claims.check(f"{C}/calibrated_knn_batch_accuracy", cal_mix, "<", 0.5)

    baseline = LogisticRegression(max_iter=2000).fit(raw[src], truth[src])
    f1_raw = f1_score(truth[~src], baseline.predict(raw[~src]), average="macro")
    pred = model.predict_labels()
    assert list(pred.columns) == ["label", "confidence"] and pred.index.equals(data.obs.index)
    assert list(pred["label"].cat.categories) == model.params["classes"]
    assert pred["confidence"].between(0.25, 1).all()
    f1_cal = f1_score(truth[~src], pred["label"].astype(str)[~src], average="macro")
    print(f"target macro-F1: LogisticRegression on raw sources {f1_raw:.3f}, calibration {f1_cal:.3f}")
    _claims.check(f"{C}/target_f1", f1_cal, ">", 0.85)
    _claims.check(f"{C}/target_f1_minus_logistic_regression", f1_cal - f1_raw, ">", 0.2)


def test_corrected_layer_is_in_the_reference_batchs_units_and_mixed(trained4):
    data, model = trained4
    b = data.obs["batch"].to_numpy()
    truth = data.obs["truth"].to_numpy()
    raw = data.dense("msi")
    corrected = model.get_corrected("msi")
    assert corrected.shape == raw.shape

    def class_mean_error(y, ref):
        # per class and batch, distance of the class mean from the reference batch's raw class mean
        return np.mean([np.abs(y[(b == bb) & (truth == c)].mean(0) - raw[(b == ref) & (truth == c)].mean(0)).mean()
                        for c in np.unique(truth) for bb in sorted(set(b) - {ref})])

    err_raw, err_cor = class_mean_error(raw, "B0"), class_mean_error(corrected, "B0")
    print(f"msi class-mean error vs batch B0: raw {err_raw:.3f}, corrected {err_cor:.3f}; kNN batch accuracy "
          f"raw {knn_batch_accuracy(raw, b):.3f} corrected {knn_batch_accuracy(corrected, b):.3f}")
    C = "test_calibration::corrected_layer"
    _claims.check(f"{C}/class_mean_error_ratio_B0", err_cor / err_raw, "<", 0.5)
    _claims.check(f"{C}/knn_batch_accuracy", knn_batch_accuracy(corrected, b), "<", 0.6)
    # another reference batch gives that batch's units
    other = model.get_corrected("msi", reference="B1")
    _claims.check(f"{C}/class_mean_error_ratio_B1", class_mean_error(other, "B1") / class_mean_error(raw, "B1"),
                  "<", 0.5)
    with pytest.raises(ParameterError, match="'B2' is not a source batch.*B0"):
        model.get_corrected("msi", reference="B2")
    with pytest.raises(ModelError, match="'he' is not in this model"):
        model.get_corrected("he")
    with pytest.raises(ModelError, match="does not produce translations"):
        model.translate("rna", "msi")


def test_two_classes_use_one_sigmoid_logit():
    data = calib_data(n_classes=2, seed=1)
    model = Calibration(data, seed=_claims.seed())
    assert model.module.discriminator.head[-1].out_features == 1
    # the label loss is the binary cross-entropy of that logit
    z = torch.randn(10, 42)
    y = torch.tensor([0, 1] * 5)
    model.module.eval()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(model.module.discriminator(z)[:, 0], y.float())
    assert torch.allclose(model.module.loss_label(z, y), expected)
    model.train(epochs=40, step_events=False, seed=_claims.seed())
    truth = data.obs["truth"].to_numpy()
    src = np.isin(data.obs["batch"].to_numpy(), ["B0", "B1"])
    pred = model.predict_labels()
    assert list(pred["label"].cat.categories) == ["class0", "class1"]
    assert pred["confidence"].between(0.5, 1).all()
    f1 = f1_score(truth[~src], pred["label"].astype(str)[~src], average="macro")
    print(f"two-class target macro-F1 {f1:.3f}")
    _claims.check("test_calibration::two_classes/target_f1", f1, ">", 0.9)


def _snapshot(module):
    def grab(net):
        return {k: v.detach().clone() for k, v in net.state_dict().items()}
    return {"C": grab(module.calibrator), "D": grab(module.discriminator), "R": grab(module.reconstructors)}


def _changed(a, b) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_two_optimisers_created_once_and_each_step_updates_only_its_networks(monkeypatch):
    data = calib_data(n_per_batch=40, seed=2)
    model = Calibration(data, lambda1=2, lambda2=1)
    assert model.module.phases(1, 1) == [("A", "cd"), ("A", "cd"), ("B", "cr")]
    created = []
    original = type(model.module).configure_optimizers

    def counting(self, lr, weight_decay=0.0):
        out = original(self, lr, weight_decay)
        created.append(out)
        return out

    monkeypatch.setattr(type(model.module), "configure_optimizers", counting)
    steps = []
    last = [_snapshot(model.module)]

    def hook(optimizer, args, kwargs):
        now = _snapshot(model.module)
        steps.append((id(optimizer), {k: _changed(last[0][k], now[k]) for k in now}))
        last[0] = now

    handle = register_optimizer_step_post_hook(hook)
    try:
        model.train(epochs=3, batch_size=64, device="cpu", step_events=False)
    finally:
        handle.remove()
    assert len(created) == 1  # once per training, not per epoch
    ids = {name: id(opt) for name, opt in created[0].items()}
    assert set(ids) == {"cd", "cr"}
    # 160 spots, 128 for training: 2 steps per epoch x 3 epochs, each A, A, B
    assert [i for i, _ in steps] == [ids["cd"], ids["cd"], ids["cr"]] * 6
    for opt_id, changed in steps:
        if opt_id == ids["cd"]:  # step A: C and D move, the reconstructors do not
            assert changed == {"C": True, "D": True, "R": False}
        else:  # step B: C and the reconstructors move, D (weights and BatchNorm statistics) does not
            assert changed == {"C": True, "D": False, "R": True}
    # the optimisers hold exactly their networks' parameters
    cd = {id(p) for g in created[0]["cd"].param_groups for p in g["params"]}
    cr = {id(p) for g in created[0]["cr"].param_groups for p in g["params"]}
    m = model.module
    assert cd == {id(p) for p in [*m.calibrator.parameters(), *m.discriminator.parameters()]}
    assert cr == {id(p) for p in [*m.calibrator.parameters(), *m.reconstructors.parameters()]}


def test_loss_weights_from_params_reach_the_loss():
    data = calib_data(n_per_batch=40, seed=3)
    model = Calibration(data, alpha1=3.0, alpha2=2.0, beta=7.0, gamma=0.5)
    batch = {k: v[::2] for k, v in model._training_tensors().items()}  # every batch present
    module = model.module
    module.eval()  # no dropout: the same features in every call
    with torch.no_grad():
        total_a, ta = module(batch, phase="A")
        total_b, tb = module(batch, phase="B")
        total_v, tv = module(batch)
    assert set(ta) == {"mmd_a", "label"} and set(tb) == {"mmd_b", "recon"} and set(tv) == {"mmd", "label", "recon"}
    assert float(ta["mmd_a"]) > 0 and float(ta["label"]) > 0 and float(tb["recon"]) > 0
    assert torch.allclose(total_a, 3.0 * ta["mmd_a"] + 7.0 * ta["label"])
    assert torch.allclose(total_b, 2.0 * tb["mmd_b"] + 0.5 * tb["recon"])
    assert torch.allclose(total_v, 3.0 * tv["mmd"] + 7.0 * tv["label"] + 0.5 * tv["recon"])
    # the MMD term is the mean over every pair of batches present (4 batches -> 6 pairs), not their sum
    from spatialmix.models._calibration_module import mmd2
    with torch.no_grad():
        z = module.calibrate(batch["x"])
        pairs = [float(mmd2(z[batch["batch"] == a], z[batch["batch"] == b])) for a in range(4) for b in range(a + 1, 4)]
    assert len(pairs) == 6 and np.isclose(float(tv["mmd"]), np.mean(pairs), rtol=1e-5)
    # the training curve records every term of both steps
    model.train(epochs=2, step_events=False)
    assert {"mmd_a", "label", "mmd_b", "recon", "val_mmd", "val_label", "val_recon"} <= set(model.training_curve())


def test_save_load_gives_identical_outputs(trained4, tmp_path):
    data, model = trained4
    model.save(tmp_path / "cal")
    state = torch.load(tmp_path / "cal" / "model.pt", weights_only=True)
    assert torch.equal(state["mean"], model.module.mean) and torch.equal(state["scale"], model.module.scale)
    loaded = Calibration.load(tmp_path / "cal", data)
    assert loaded.params == model.params and loaded.is_trained
    np.testing.assert_array_equal(loaded.get_latent_representation(), model.get_latent_representation())
    np.testing.assert_array_equal(loaded.get_corrected("rna"), model.get_corrected("rna"))
    pd.testing.assert_frame_equal(loaded.predict_labels(), model.predict_labels())
    # loaded without data: outputs for data passed explicitly; wrong features are named
    bare = Calibration.load(tmp_path / "cal")
    np.testing.assert_array_equal(bare.get_latent_representation(data=data), model.get_latent_representation())
    other = calib_data(n_per_batch=10)
    other.var_names["msi"] = pd.Index([f"mz{i}" for i in range(12)])
    with pytest.raises(FeatureMismatchError, match="msi: 12 feature"):
        model.predict_labels(data=other)


def test_missing_modality_spots_single_modality_and_exclude():
    data = calib_data(n_per_batch=60, seed=4, missing_msi=0.2)
    complete = data.mask["msi"]
    model = Calibration(data, exclude=["class3"])
    assert model.params["classes"] == ["class0", "class1", "class2"] and model.params["exclude"] == ["class3"]
    t = model._training_tensors()
    assert len(t["x"]) == int(complete.sum())  # training uses only spots with every modality
    labels = data.obs["cell_type"].to_numpy()[complete]
    assert (t["label"].numpy()[labels == "class3"] == -1).all()  # excluded class: unlabelled, still calibrated
    assert (t["label"].numpy()[pd.isna(labels)] == -1).all()
    assert (t["source"].numpy()[np.isin(data.obs["batch"].to_numpy()[complete], ["B2", "B3"])] == -1).all()
    model.train(epochs=10, step_events=False)
    z = model.get_latent_representation()
    assert z.shape == (data.n_obs, 42) and np.isfinite(z).all()
    assert "class3" not in set(model.predict_labels()["label"].astype(str))
    # a spot without msi is calibrated with the msi block at the training mean
    filled = calib_data(n_per_batch=60, seed=4, missing_msi=0.2)
    filled.X["msi"][~complete] = model.module.mean[30:].numpy()
    filled.mask["msi"] = np.ones(data.n_obs, bool)
    np.testing.assert_allclose(model.get_latent_representation(data=filled), z, rtol=1e-5, atol=1e-6)

    rna_only = Calibration(data, modalities=["rna"])
    rna_only.train(epochs=5, step_events=False)
    assert rna_only.get_latent_representation().shape == (data.n_obs, 30)
    assert rna_only.get_corrected("rna").shape == (data.n_obs, 30)
    with pytest.raises(ModelError, match="'msi' is not in this model"):
        rna_only.get_corrected("msi")


def test_errors_name_the_problem():
    data = calib_data(n_per_batch=30)
    unlabelled = calib_data(n_per_batch=30)
    unlabelled.annotation_key = None
    with pytest.raises(ParameterError, match="no annotation column.*annotation_key"):
        Calibration(unlabelled)
    empty = calib_data(n_per_batch=30)
    empty.obs["cell_type"] = ""
    with pytest.raises(ParameterError, match="no spot has a label in the annotation column 'cell_type'"):
        Calibration(empty)
    with pytest.raises(ParameterError, match=r"source batch\(es\) \['B2'\] have no labelled spot.*\['B0', 'B1'\]"):
        Calibration(data, source_batches=["B0", "B2"])
    with pytest.raises(ParameterError, match=r"source_batches \['B9'\] are not batches.*\['B0', 'B1', 'B2', 'B3'\]"):
        Calibration(data, source_batches=["B0", "B9"])
    with pytest.raises(ParameterError, match=r"unknown Calibration parameter\(s\) \['alpha'\]"):
        Calibration(data, alpha=1)
    with pytest.raises(ParameterError, match="lambda1 .* whole number >= 1"):
        Calibration(data, lambda1=0)
    with pytest.raises(ParameterError, match="gamma must be a finite number >= 0"):
        Calibration(data, gamma=-1)
    with pytest.raises(ParameterError, match=r"exclude names classes \['tumour'\]"):
        Calibration(data, exclude=["tumour"])
    with pytest.raises(ParameterError, match="at least two classes"):
        Calibration(data, exclude=["class0", "class1", "class2"])
    with pytest.raises(ParameterError, match=r"modalities \['he'\] are not in the data"):
        Calibration(data, modalities=["he"])
    one_batch = calib_data(n_per_batch=30, n_batches=1, n_sources=1)
    with pytest.raises(ParameterError, match="at least two batches"):
        Calibration(one_batch)
    model = Calibration(data, source_batches="B1")  # a single source batch by name works
    assert model.params["source_batches"] == ["B1"] and len(model.module.reconstructors) == 1
    with pytest.raises(ModelError, match="not trained yet"):
        model.predict_labels()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_and_predicts_on_gpu():
    data = calib_data(seed=5)
    cpu = Calibration(data)
    gpu = Calibration(data)
    gpu.train(epochs=40, device="cuda", step_events=False)
    assert next(gpu.module.parameters()).device.type == "cuda"
    truth = data.obs["truth"].to_numpy()
    src = np.isin(data.obs["batch"].to_numpy(), ["B0", "B1"])
    f1 = f1_score(truth[~src], gpu.predict_labels()["label"].astype(str)[~src], average="macro")
    assert f1 > 0.8
    assert gpu.get_corrected("msi").shape == (data.n_obs, 12)
    del cpu


# -- each loss term against a hand computation (numpy); docs/models.md "Calibration", "Losses and schedule" ----

def _np_mmd2(x, y, bandwidths=(0.25, 0.5, 1.0, 2.0, 4.0)):
    """Eq. 1's distance by hand: biased MMD^2 with a sum of Gaussian kernels whose bandwidths are multiples of the
    mean squared distance between the distinct rows of the pooled sample."""
    z = np.concatenate([x, y]).astype(np.float64)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    n = len(z)
    s = d2.sum() / (n * n - n)
    k = sum(np.exp(-d2 / (b * s)) for b in bandwidths)
    nx = len(x)
    return k[:nx, :nx].mean() + k[nx:, nx:].mean() - 2 * k[:nx, nx:].mean()


def test_mmd_term_is_the_mean_over_batch_pairs_of_a_multi_kernel_mmd2_as_computed_by_hand():
    from spatialmix.models._calibration_module import mmd2, pairwise_mmd

    rng = np.random.default_rng(0)
    z = rng.normal(size=(11, 3)).astype(np.float32)
    z[4:7] += 1.5  # batch 1 shifted
    batch = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3])  # batch 3 has one spot: left out (>= 2 spots per batch)
    zt, bt = torch.as_tensor(z), torch.as_tensor(batch)
    assert np.isclose(float(mmd2(zt[:4], zt[4:7])), _np_mmd2(z[:4], z[4:7]), rtol=1e-5)
    pairs = [(0, 1), (0, 2), (1, 2)]
    by_hand = np.mean([_np_mmd2(z[batch == a], z[batch == b]) for a, b in pairs])
    got = float(pairwise_mmd(zt, bt, 4))
    print(f"L_C: code {got:.6f}, numpy mean over 3 pairs {by_hand:.6f} (sum would be {3 * by_hand:.6f})")
    assert np.isclose(got, by_hand, rtol=1e-5)
    for detach in (False, True):
        assert np.isclose(float(pairwise_mmd(zt, bt, 4, detach_bandwidth=detach)), by_hand, rtol=1e-5)
    # one batch present: no pair, zero
    assert float(pairwise_mmd(zt[:4], bt[:4], 4)) == 0.0
    # the module's L_C is that mean (16 batches would otherwise weigh 120 pairs, not one)
    module = Calibration(calib_data(n_per_batch=10, seed=6)).module
    assert np.isclose(float(module.loss_mmd(zt[:10, :3].repeat(1, 14), bt[:10])),
                      np.mean([_np_mmd2(np.tile(z[batch == a], 14), np.tile(z[batch == b], 14)) for a, b in pairs]),
                      rtol=1e-5)


def test_mmd_bandwidth_detached_only_when_asked():
    """Default (ours): the bandwidth stays in the graph, so scaling C(x) changes neither the loss nor, to first
    order, lowers it (gradient along the scale ~ 0). detach_bandwidth=True (the paper's reference): the bandwidth is
    a constant, and shrinking C(x) lowers the MMD (positive derivative along the scale)."""
    from spatialmix.models._calibration_module import pairwise_mmd

    rng = np.random.default_rng(1)
    z = torch.as_tensor(rng.normal(size=(12, 4)).astype(np.float32))
    z[:6] += 1.0
    batch = torch.as_tensor(np.repeat([0, 1], 6))
    grads = {}
    for detach in (False, True):
        c = torch.tensor(1.0, requires_grad=True)
        loss = pairwise_mmd(c * z, batch, 2, detach_bandwidth=detach)
        loss.backward()
        grads[detach] = float(c.grad)
        assert np.isclose(float(loss.detach()), _np_mmd2(z[:6].numpy(), z[6:].numpy()), rtol=1e-5)
    print(f"d L_C / d scale: not detached {grads[False]:.2e}, detached {grads[True]:.3f}")
    assert abs(grads[False]) < 1e-5
    assert grads[True] > 1e-3
    assert Calibration(calib_data(n_per_batch=10)).module.detach_bandwidth is False
    assert Calibration(calib_data(n_per_batch=10), detach_bandwidth=True).module.detach_bandwidth is True
    with pytest.raises(ParameterError, match="detach_bandwidth must be True or False"):
        Calibration(calib_data(n_per_batch=10), detach_bandwidth="yes")


def test_reconstructors_have_the_papers_form_and_the_reconstruction_term_matches_a_hand_computation():
    data = calib_data(n_per_batch=10, seed=7)
    module = Calibration(data, dropout=0.2).module
    for r in module.reconstructors:  # FC -> dropout -> Tanhshrink -> FC
        kinds = [type(layer) for layer in r.net]
        assert kinds == [torch.nn.Linear, torch.nn.Dropout, torch.nn.Tanhshrink, torch.nn.Linear]
        assert r.net[1].p == 0.2 and r.net[0].in_features == r.net[3].out_features == 42
    module.eval()  # no dropout
    rng = np.random.default_rng(2)
    z = rng.normal(size=(9, 42)).astype(np.float32)
    x = rng.normal(size=(9, 42)).astype(np.float32)
    source = np.array([0, 0, 1, 1, 1, -1, -1, 0, 1])  # -1: spots of target batches take no part

    def r_np(i, v):
        w1, b1 = (t.detach().numpy().astype(np.float64) for t in (module.reconstructors[i].net[0].weight,
                                                                  module.reconstructors[i].net[0].bias))
        w2, b2 = (t.detach().numpy().astype(np.float64) for t in (module.reconstructors[i].net[3].weight,
                                                                  module.reconstructors[i].net[3].bias))
        h = v @ w1.T + b1
        return (h - np.tanh(h)) @ w2.T + b2

    # L_R: mean over the source batches present of the MSE (over spots and features) of R_i(C(x)) vs x
    by_hand = np.mean([((r_np(i, z[source == i]) - x[source == i]) ** 2).mean() for i in (0, 1)])
    with torch.no_grad():
        got = float(module.loss_recon(torch.as_tensor(z), torch.as_tensor(x), torch.as_tensor(source)))
    print(f"L_R: code {got:.6f}, numpy {by_hand:.6f}")
    assert np.isclose(got, by_hand, rtol=1e-5)
    # one source present: its MSE alone
    only0 = source.copy()
    only0[only0 == 1] = -1
    with torch.no_grad():
        got0 = float(module.loss_recon(torch.as_tensor(z), torch.as_tensor(x), torch.as_tensor(only0)))
    assert np.isclose(got0, ((r_np(0, z[only0 == 0]) - x[only0 == 0]) ** 2).mean(), rtol=1e-5)


def _d_np(disc, z):
    """The label discriminator D by hand (eval mode): BN, FC to 100, residual LeakyReLU-FC, FC 100-50-16-out."""
    def p(t):
        return t.detach().numpy().astype(np.float64)

    def leaky(v):
        return np.where(v > 0, v, 0.2 * v)

    bn = disc.norm
    h = (z - p(bn.running_mean)) / np.sqrt(p(bn.running_var) + bn.eps) * p(bn.weight) + p(bn.bias)
    h = h @ p(disc.project.weight).T + p(disc.project.bias)
    h = h + leaky(h) @ p(disc.residual[1].weight).T + p(disc.residual[1].bias)
    for lin in (disc.head[1], disc.head[3], disc.head[5]):
        h = leaky(h) @ p(lin.weight).T + p(lin.bias)
    return h


@pytest.mark.parametrize("n_classes", [4, 2])
def test_label_term_is_the_cross_entropy_of_d_on_labelled_source_spots_as_computed_by_hand(n_classes):
    module = Calibration(calib_data(n_per_batch=10, n_classes=n_classes, seed=8)).module
    rng = np.random.default_rng(3)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        module.discriminator.norm.running_mean.copy_(torch.as_tensor(rng.normal(size=42).astype(np.float32)))
        module.discriminator.norm.running_var.copy_(torch.as_tensor(rng.uniform(0.5, 2, 42).astype(np.float32)))
    module.eval()
    z = rng.normal(size=(8, 42)).astype(np.float32)
    label = np.array([0, 1, -1, 1, 0, -1, 1, 0]) if n_classes == 2 else np.array([0, 3, -1, 2, 1, -1, 3, 0])
    logits = _d_np(module.discriminator, z.astype(np.float64))[label >= 0]
    y = label[label >= 0]
    if n_classes == 2:  # one logit, binary cross-entropy
        q = 1 / (1 + np.exp(-logits[:, 0]))
        by_hand = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    else:  # softmax cross-entropy
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        by_hand = np.mean(lse - logits[np.arange(len(y)), y])
    with torch.no_grad():
        got = float(module.loss_label(torch.as_tensor(z), torch.as_tensor(label)))
    print(f"L_D ({n_classes} classes): code {got:.6f}, numpy {by_hand:.6f}")
    assert np.isclose(got, by_hand, rtol=1e-5)
    # no labelled spot in the minibatch: zero
    assert float(module.loss_label(torch.as_tensor(z), torch.full((8,), -1))) == 0.0


# -- BatchNorm and a last mini-batch of one row ---------------------------------------------------------------

def test_a_last_minibatch_of_one_row_is_merged_into_the_one_before():
    data = calib_data(n_per_batch=40, seed=9)  # 160 spots, 128 for training
    model = Calibration(data)
    steps = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(id(opt)))
    try:  # 128 = 127 + 1: without the merge, BatchNorm fails on the one-row last mini-batch
        model.train(epochs=2, batch_size=127, device="cpu", step_events=False)
    finally:
        handle.remove()
    assert model.is_trained and model.schedule_["steps_per_epoch"] == 1
    assert len(steps) == 2 * 2  # one training step per epoch (steps A and B): 128 rows in one mini-batch
    assert np.isfinite(model.get_latent_representation()).all()
    # a split that divides evenly is unchanged: 128 = 2 x 64
    model.train(epochs=1, batch_size=64, device="cpu", step_events=False)
    assert model.schedule_["steps_per_epoch"] == 2
    # the BatchNorm refresh after training: a one-row last chunk joins the one before (same statistics as one chunk)
    model._refresh_batchnorm(chunk=4096)
    whole = {k: v.clone() for k, v in model.module.state_dict().items() if "running" in k}
    model._refresh_batchnorm(chunk=159)  # 160 training spots: 159 + 1
    for k, v in model.module.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(v, whole[k])
    with pytest.raises(ParameterError, match="at least 2 rows per mini-batch.*batch_size=1"):
        model.train(epochs=1, batch_size=1, device="cpu", step_events=False)


# -- parameter count guard --------------------------------------------------------------------------------------

def test_parameter_count_is_estimated_and_too_large_networks_are_refused_before_building(monkeypatch):
    from spatialmix.models import calibration as calibration_mod
    from spatialmix.models._calibration_module import estimate_parameters, n_parameters

    data = calib_data(n_per_batch=10)
    for kw in ({}, {"source_batches": ["B0"]}):
        m = Calibration(data, **kw)
        assert n_parameters(m.module) == estimate_parameters(42, len(m.params["source_batches"]), 4)
    two = Calibration(calib_data(n_per_batch=10, n_classes=2, seed=1))
    assert n_parameters(two.module) == estimate_parameters(42, 2, 2)
    # (2 + 2K) d^2 dominates: 32,000 features and 8 sources are ~18.4 G parameters
    d = 32_000
    c_and_r = (2 * d + 2 * (d * d + d)) + 8 * 2 * (d * d + d)  # C: BN + 2 Linear(d, d); 8 R_i: 2 Linear(d, d)
    disc = 2 * d + (d * 100 + 100) + (100 * 100 + 100) + (100 * 50 + 50) + (50 * 16 + 16) + (16 * 5 + 5)
    assert estimate_parameters(d, 8, 5) == c_and_r + disc == 18_435_920_151
    # a wide dataset (32,000 features, 8 labelled batches) is refused before any network is built
    built = []
    monkeypatch.setattr(calibration_mod, "CalibrationModule", lambda *a, **k: built.append(a))
    rng = np.random.default_rng(0)
    n, d = 18, 32_000
    batch = np.repeat([f"B{i}" for i in range(9)], 2)
    obs = pd.DataFrame({"sample": batch, "batch": batch, "cell_type": (["a", "b"] * 8 + [np.nan, np.nan])},
                       index=[f"s{i}" for i in range(n)])
    wide = MultiModalData(["rna"], {"rna": rng.random((n, d), dtype=np.float32)}, {"rna": np.ones(n, bool)},
                          {"rna": pd.Index([f"g{i}" for i in range(d)])}, obs, None, "batch", "cell_type")
    with pytest.raises(ParameterError) as err:
        Calibration(wide)
    msg = str(err.value)
    print(msg)
    assert "18,435,920,083 parameters (73.7 GB" in msg and "max_parameters=250,000,000" in msg
    assert "d = 32,000 input features (rna 32,000)" in msg and "8 reconstructor(s)" in msg
    assert "highly variable" in msg and "PCA" in msg and "modalities=" in msg
    assert built == []
    # the bound is a parameter; a small one refuses the small data too, with the count
    monkeypatch.undo()
    with pytest.raises(ParameterError, match=f"would have {estimate_parameters(42, 2, 4):,} parameters"):
        Calibration(data, max_parameters=10_000)
    with pytest.raises(ParameterError, match="max_parameters must be a whole number >= 1"):
        Calibration(data, max_parameters=0)


def _np_weighted_mmd2(x, y, wx, wy, bandwidths=(0.25, 0.5, 1.0, 2.0, 4.0)):
    z = np.concatenate([x, y]).astype(np.float64)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    n = len(z)
    k = sum(np.exp(-d2 / (b * d2.sum() / (n * n - n))) for b in bandwidths)
    a, b = np.asarray(wx, float) / np.sum(wx), np.asarray(wy, float) / np.sum(wy)
    nx = len(x)
    return a @ k[:nx, :nx] @ a + b @ k[nx:, nx:] @ b - 2 * a @ k[:nx, nx:] @ b


def test_label_shift_weights_source_spots_by_the_estimated_target_composition_as_computed_by_hand():
    """label_shift=True (ours): source spots weigh target_prior / source_prior of their class in the MMD; the
    target prior moves by one EM step (Saerens et al. 2002) per step A, with momentum."""
    from spatialmix.models._calibration_module import mmd2

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 0.7
    wx, wy = np.array([1.0, 0.5, 0.5, 2.0, 0.0]), np.ones(4)
    got = float(mmd2(torch.as_tensor(x), torch.as_tensor(y), wx=torch.as_tensor(wx), wy=torch.as_tensor(wy)))
    assert np.isclose(got, _np_weighted_mmd2(x, y, wx, wy), rtol=1e-6)
    # equal weights give the unweighted (paper's) MMD
    assert np.isclose(float(mmd2(torch.as_tensor(x), torch.as_tensor(y), wx=torch.ones(5), wy=torch.ones(4))),
                      _np_mmd2(x, y), rtol=1e-6)

    data = calib_data(n_per_batch=20, seed=1)
    module = Calibration(data, label_shift=True).module
    assert module.label_shift and "target_prior" in module.state_dict()
    paper = Calibration(data).module  # the default, the paper's form: no prior, no weights
    assert "target_prior" not in paper.state_dict() and paper.mmd_weights(torch.tensor([0, 1, -1])) is None
    module.set_source_prior([30.0, 10.0, 10.0, 10.0])
    module.target_prior.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    label = torch.tensor([0, 1, 3, -1, -1])  # -1: unlabelled or target
    ratio = np.array([0.1, 0.2, 0.3, 0.4]) / np.array([0.5, 1 / 6, 1 / 6, 1 / 6])
    np.testing.assert_allclose(module.mmd_weights(label).numpy(), [ratio[0], ratio[1], ratio[3], 1, 1], rtol=1e-5)
    # one EM step: p(c|x) * target / source, renormalised per spot, averaged, mixed in with momentum 0.02
    z = torch.randn(6, module.calibrator.net[1].in_features)
    module.eval()
    p = module.class_probabilities(z).detach().numpy()
    q = p * ratio
    q /= q.sum(1, keepdims=True)
    is_target = torch.tensor([True, True, False, True, False, True])
    expect = 0.98 * np.array([0.1, 0.2, 0.3, 0.4]) + 0.02 * q[is_target.numpy()].mean(0)
    module.train()
    module.update_target_prior(z, is_target)
    np.testing.assert_allclose(module.target_prior.numpy(), expect, rtol=1e-5)
    assert module.discriminator.training  # D is back in training mode; its BatchNorm statistics did not move


def test_label_shift_keeps_target_spots_out_of_a_class_only_the_sources_have():
    """Sources B0, B1 hold class3 (30 %), the targets none. Unweighted, the MMD pulls target spots into class3;
    with label_shift the estimated target share of class3 falls towards 0 and few target spots are called class3
    (medians of 3 seeds)."""
    _claims.set_torch_threads()
    f1 = {"weighted": [], "paper": [], "lr": []}
    into_class3, prior3 = [], []
    for seed in range(3):
        data = shift_data([0.25, 0.25, 0.2, 0.3], [0.34, 0.33, 0.33, 0.0], seed=seed)
        b, truth = data.obs["batch"].to_numpy(), data.obs["truth"].to_numpy()
        src = np.isin(b, ["B0", "B1"])
        present = sorted(set(truth[~src]))
        raw = StandardScaler().fit_transform(raw_features(data))
        lr = LogisticRegression(max_iter=2000).fit(raw[src], truth[src]).predict(raw[~src])
        f1["lr"].append(f1_score(truth[~src], lr, labels=present, average="macro"))
        for key, params in (("weighted", {"label_shift": True}), ("paper", {})):  # default: the paper's MMD
            m = Calibration(data, seed=_claims.seed(seed), **params)
            m.train(epochs=60, step_events=False, seed=_claims.seed(seed))
            pred = m.predict_labels()["label"].astype(str).to_numpy()[~src]
            f1[key].append(f1_score(truth[~src], pred, labels=present, average="macro"))
            if key == "weighted":
                into_class3.append(float(np.mean(pred == "class3")))
                prior3.append(float(m.module.target_prior[3]))
    print({k: np.round(v, 3) for k, v in f1.items()}, "target spots called class3", np.round(into_class3, 3),
          "estimated target share of class3", np.round(prior3, 3))
    C = "test_calibration::label_shift"
    _claims.check(f"{C}/median_target_f1_minus_logistic_regression",
                  _claims.median(f1["weighted"]) - _claims.median(f1["lr"]), ">", 0.2)
    # the gain over the unweighted MMD (0.095 +- 0.040 over the claim-spread runs, 0.035-0.135) does not clear
    # the 3-sd rule of docs/reproducibility.md: printed above, not asserted
    _claims.check(f"{C}/median_share_of_targets_called_class3", _claims.median(into_class3), "<", 0.1)
    _claims.check(f"{C}/median_estimated_target_share_class3", _claims.median(prior3), "<", 0.15)
