"""MoDAmix (Choi & Chae, Sci Rep 2026): stages, ablations, domain adaptation, missing modalities, save / load,
errors. Synthetic data: 4 samples (S0, S1 labelled sources; T0, T1 targets) of 4 classes in 3 modalities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from spatialmix.data import MultiModalData
from spatialmix.errors import ModelError, ParameterError
from spatialmix.models._modamix_module import balanced_domain_loss
from spatialmix.models.modamix import MoDAmix

import _claims

SOURCES = ["S0", "S1"]



def shift_data(seed=0, n_per_sample=120, n_classes=4, shift_lat=1.0, shift_feat=2.0) -> MultiModalData:
    """Classes are clusters in a 6-d latent space, mapped linearly into 'rna' (60), 'msi' (30, 20 % of spots
    missing) and 'he' (12). The target samples share a strong offset: the latent moves by ``shift_lat`` times
    the mean distance between class centres (along the class directions) plus a feature-space offset. 10 % of
    the source spots are unlabelled; the targets keep their labels for scoring only."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (n_classes, 6))
    dist = np.mean([np.linalg.norm(centres[i] - centres[j]) for i in range(n_classes) for j in range(i)])
    delta = rng.normal(0, 1, 6)
    delta *= shift_lat * dist / np.linalg.norm(delta)
    dims = {"rna": 60, "msi": 30, "he": 12}
    W = {m: rng.normal(0, 1, (6, d)) / np.sqrt(6) for m, d in dims.items()}
    feat_off = {m: rng.normal(0, shift_feat, d) for m, d in dims.items()}
    ys, ss, X = [], [], {m: [] for m in dims}
    for s in ["S0", "S1", "T0", "T1"]:
        y = rng.integers(0, n_classes, n_per_sample)
        lat = centres[y] + rng.normal(0, 0.5, (n_per_sample, 6)) + (delta if s[0] == "T" else 0)
        for m, d in dims.items():
            off = rng.normal(0, 0.3, d) + (feat_off[m] if s[0] == "T" else 0)
            X[m].append(lat @ W[m] + off + rng.normal(0, 0.3, (n_per_sample, d)))
        ys.append(y)
        ss += [s] * n_per_sample
    y = np.concatenate(ys)
    n = len(y)
    X = {m: np.concatenate(v).astype(np.float32) for m, v in X.items()}
    mask = {m: np.ones(n, bool) for m in dims}
    mask["msi"][rng.random(n) < 0.2] = False
    X["msi"][~mask["msi"]] = 0
    obs = pd.DataFrame({"sample": ss, "batch": ss, "label": np.array([f"class{c}" for c in y], dtype=object)},
                       index=[f"spot{i}" for i in range(n)])
    obs.loc[(rng.random(n) < 0.1) & obs["sample"].str.startswith("S").to_numpy(), "label"] = np.nan
    var = {m: pd.Index([f"{m}{i}" for i in range(d)]) for m, d in dims.items()}
    return MultiModalData(list(dims), X, mask, var, obs, None, "batch", "label")


def small(data, **kw):
    kw.setdefault("stage_epochs", [2, 2, 2, 2])
    kw.setdefault("class_balance", False)  # balanced synthetic classes; weighting is tested on its own
    return MoDAmix(data, source_samples=SOURCES, hidden=[32], n_omics=16, joint_hidden=[16], n_latent=8,
                   disc_hidden=16, **kw)


def target_f1(model, data) -> float:
    tgt = ~data.obs["sample"].isin(SOURCES).to_numpy()
    pred = model.predict_labels()["label"].astype(str).to_numpy()
    return f1_score(data.obs["label"].astype(str).to_numpy()[tgt], pred[tgt], average="macro")


@pytest.fixture(scope="module")
def trained():
    _claims.set_torch_threads()
    data = shift_data(0, n_per_sample=60)
    model = small(data, threshold=0.6)  # 6 epochs of a tiny model rarely reach the default 0.9
    model.train(batch_size=32, step_events=False)
    return data, model


def test_stages_run_in_order_and_stage4_pseudo_label_loss_is_on(trained):
    data, model = trained
    assert model.train_config["epochs"] == 8  # train_defaults["epochs"] = sum(stage_epochs)
    assert [model.stage_of_epoch(e) for e in range(1, 10)] == [1, 1, 2, 2, 3, 3, 4, 4, 4]
    curve = model.training_curve().set_index("epoch")
    mods = ["rna", "msi", "he"]
    omics = {f"adv_{m}" for m in mods} | {f"disc_{m}" for m in mods}
    expected = {1: {"cls"}, 2: {"cls"} | omics, 3: {"cls", "adv_joint", "disc_joint"} | omics,
                4: {"cls", "adv_joint", "disc_joint", "pseudo", "center"} | omics}
    for epoch, row in curve.iterrows():
        present = {k for k in row.index if not k.startswith("val_") and k not in ("loss", "val_loss", "seconds")
                   and pd.notna(row[k])}
        assert present == expected[model.stage_of_epoch(epoch)], epoch
    module = model.module
    for epoch in (7, 8):  # stage 4, from its first epoch on (the reference's weight stayed 0)
        row = curve.loc[epoch]
        assert row["pseudo"] > 0 and row["center"] > 0
        assert module.ramp(epoch) > 0.4
        # the logged loss is disc + cls + adv_weight * adv + ramp * (pseudo + centre): the stage-4 terms count
        adv = [k for k in omics | {"adv_joint"} if k.startswith("adv_")]
        rest = (row["loss"] - row["cls"] - sum(row[k] for k in row.index if k.startswith("disc_"))
                - module.adv_weight * sum(row[k] for k in adv))
        assert rest == pytest.approx(module.ramp(epoch) * (row["pseudo"] + row["center"]), rel=1e-3, abs=1e-6)
        assert rest > 0.01
    assert [module.ramp(e) for e in range(1, 7)] == [0.0] * 6
    assert 0.95 < module.ramp(8) <= 1.0
    # validation is the held-out labelled source classification loss
    assert curve["val_loss"].notna().all() and (curve["val_loss"] == curve["val_cls"]).all()


def test_ablation_option_selects_the_adversarial_levels():
    data = shift_data(1, n_per_sample=40)
    seen = {}
    for adv in ("omics", "none"):
        model = small(data, adversarial=adv, stage_epochs=[1, 1, 1, 1])
        model.train(batch_size=32, step_events=False)
        seen[adv] = set().union(*[set(h) for h in model.history])
        assert set(model.module.configure_optimizers(1e-3, 0.0)) == ({"main", "disc"} if adv == "omics" else {"main"})
    assert {"adv_rna", "adv_msi", "adv_he", "disc_msi"} <= seen["omics"]
    assert not {"adv_joint", "disc_joint"} & seen["omics"]
    assert not {k for k in seen["none"] if k.startswith(("adv_", "disc_"))}
    assert {"pseudo", "center", "cls"} <= seen["none"] and {"pseudo", "center"} <= seen["omics"]
    with pytest.raises(ParameterError, match="adversarial must be one of"):
        small(data, adversarial="joint")


def test_each_modality_discriminator_sees_its_own_spots_and_domain_codes():
    data = shift_data(2, n_per_sample=40)
    # msi is missing on every S1 spot and on 20 % elsewhere: its discriminator must see fewer source spots
    data.mask["msi"][data.obs["sample"].to_numpy() == "S1"] = False
    model = small(data)
    module = model.module
    groups = model._training_groups()
    batch = {f"{g}/{k}": v for g, t in groups.items() for k, v in t.items()}
    calls = {m: [] for m in model.modalities}
    hooks = [module.omics_discriminators[m].register_forward_hook(
        lambda mod, inp, out, m=m: calls[m].append((inp[0].shape[0], out.detach().squeeze(1))))
        for m in model.modalities]
    module.epoch = 5  # stage 3
    with torch.no_grad():
        _, terms = module(batch, phase="discriminate")
    for h in hooks:
        h.remove()
    for m in model.modalities:
        (n_src, logit_src), (n_tgt, logit_tgt) = calls[m]
        assert n_src == int(groups["source"][f"mask_{m}"].sum()) and n_tgt == int(groups["target"][f"mask_{m}"].sum())
        # the term is that modality's own source (0) / target (1) cross-entropy
        assert float(terms[f"disc_{m}"]) == pytest.approx(float(balanced_domain_loss(logit_src, logit_tgt)), rel=1e-6)
    assert calls["msi"][0][0] < calls["rna"][0][0] == len(groups["source"]["y"])


def test_missing_modality_unlabelled_and_excluded_spots(trained):
    data, model = trained
    missing = ~data.mask["msi"]
    h = model.get_latent_representation("omics", modality="msi")
    assert h.shape == (data.n_obs, 16) and np.isnan(h[missing]).all() and np.isfinite(h[~missing]).all()
    z = model.get_latent_representation()
    assert z.shape == (data.n_obs, 8) and np.isfinite(z).all()
    # the msi extractor never sees a spot without msi: garbage there changes nothing
    noisy = data.subset(np.arange(data.n_obs))
    noisy.X = dict(noisy.X)
    noisy.X["msi"] = noisy.X["msi"].copy()
    noisy.X["msi"][missing] = 1e3
    np.testing.assert_array_equal(model.get_latent_representation(data=noisy), z)
    # no classification loss for unlabelled source spots; target labels are never used for training
    groups = model._training_groups()
    src_lab = data.obs.loc[data.obs["sample"].isin(SOURCES), "label"]
    y = groups["source"]["y"].numpy()
    assert (y[src_lab.isna().to_numpy()] == -1).all() and (y[src_lab.notna().to_numpy()] >= 0).all()
    assert "y" not in groups["target"]
    # an excluded class is not a class and its source spots get no classification loss
    excl = small(data, exclude=["class3"])
    assert excl.classes == ["class0", "class1", "class2"]
    y_ex = excl._training_groups()["source"]["y"].numpy()
    assert (y_ex[(src_lab == "class3").to_numpy()] == -1).all()
    # both lists given: samples in neither are left out of training but still predicted
    part = MoDAmix(data, source_samples=["S0"], target_samples=["T1"], stage_epochs=[1, 0, 0, 1], hidden=[8],
                   n_omics=8, joint_hidden=[], n_latent=4)
    g = part._training_groups()
    assert len(g["source"]["y"]) == (data.obs["sample"] == "S0").sum()
    assert len(g["target"]["x_rna"]) == (data.obs["sample"] == "T1").sum()
    part.train(batch_size=32, step_events=False)
    assert len(part.predict_labels()) == data.n_obs


def test_pseudo_label_threshold():
    data = shift_data(3, n_per_sample=40)
    model = small(data)
    groups = model._training_groups()
    batch = {f"{g}/{k}": v for g, t in groups.items() for k, v in t.items()}
    module = model.module.eval()
    module.epoch = 7
    with torch.no_grad():
        module.threshold = 1e-6  # every target spot is pseudo-labelled
        _, low = module(batch, phase="pseudo_label")
        module.threshold = 1.0  # an untrained classifier is never that sure
        _, high = module(batch, phase="pseudo_label")
    assert float(low["pseudo"]) > 0.5 and float(high["pseudo"]) == 0.0
    with pytest.raises(ParameterError, match="threshold"):
        small(data, threshold=0)


def test_save_load_round_trip_and_seeded_training(trained, tmp_path):
    data, model = trained
    pred = model.predict_labels()
    assert list(pred.columns) == ["label", "confidence"] and pred.index.equals(data.obs.index)
    assert list(pred["label"].cat.categories) == model.classes == ["class0", "class1", "class2", "class3"]
    assert pred["confidence"].between(0.25, 1.0).all()
    model.save(tmp_path / "m")
    loaded = MoDAmix.load(tmp_path / "m", data)
    assert loaded.params["source_samples"] == SOURCES and loaded.params["target_samples"] == ["T0", "T1"]
    assert loaded.classes == model.classes and loaded.is_trained
    np.testing.assert_array_equal(loaded.get_latent_representation(), model.get_latent_representation())
    np.testing.assert_array_equal(loaded.get_latent_representation("omics", modality="he"),
                                  model.get_latent_representation("omics", modality="he"))
    pd.testing.assert_frame_equal(loaded.predict_labels(), pred)
    torch.testing.assert_close(loaded.module.centers, model.module.centers)
    # new data (a subset) goes through the same networks
    sub = data.subset(np.arange(0, data.n_obs, 3))
    np.testing.assert_array_equal(loaded.get_latent_representation(data=sub), model.get_latent_representation()[::3])
    # same weight seed and training seed: same model; another weight seed: another model
    again = small(data, threshold=0.6)
    again.train(batch_size=32, step_events=False)
    np.testing.assert_array_equal(again.get_latent_representation(), model.get_latent_representation())
    other = small(data, seed=1)
    assert not np.allclose(other.module.classifier.weight.detach(), model.module.classifier.weight.detach())


def test_errors_name_the_problem(trained):
    data, model = trained
    unlabelled = MultiModalData(data.modalities, data.X, data.mask, data.var_names, data.obs, None, "batch", None)
    with pytest.raises(ParameterError, match="no annotation column"):
        MoDAmix(unlabelled, source_samples=SOURCES)
    with pytest.raises(ParameterError, match=r"\['P9'\] are not samples of the data"):
        MoDAmix(data, source_samples=["S0", "P9"])
    with pytest.raises(ParameterError, match="leave no target sample"):
        MoDAmix(data, source_samples=["S0", "S1", "T0", "T1"])
    with pytest.raises(ParameterError, match="source_samples= .* or target_samples="):
        MoDAmix(data)
    with pytest.raises(ParameterError, match="both source and target"):
        MoDAmix(data, source_samples=["S0"], target_samples=["S0", "T0"])
    with pytest.raises(ParameterError, match="at least 2 classes"):
        MoDAmix(data, source_samples=SOURCES, exclude=["class0", "class1", "class2"])
    with pytest.raises(ParameterError, match="unknown MoDAmix parameter"):
        MoDAmix(data, source_samples=SOURCES, n_epochs=3)
    with pytest.raises(ParameterError, match="stage_epochs must be 4 whole numbers"):
        MoDAmix(data, source_samples=SOURCES, stage_epochs=[10, 10, 10])
    # target_samples alone: the sources are the rest
    assert MoDAmix(data, target_samples=["T0", "T1"]).params["source_samples"] == SOURCES
    with pytest.raises(ModelError, match="not trained yet"):
        small(data).get_latent_representation()
    with pytest.raises(ModelError, match="does not produce batch-corrected features.*not the measured features"):
        model.get_corrected("rna")
    with pytest.raises(ParameterError, match="needs modality="):
        model.get_latent_representation("omics")


def test_adaptation_beats_a_plain_classifier_and_the_no_adversarial_ablation():
    """Targets offset by one class distance along the class directions: a logistic regression on the
    concatenated source features, and MoDAmix without adversarial alignment, mislabel them. Medians over 4
    training seeds on one synthetic dataset. Measured (docs/reproducibility.md): on this dataset (seed 0) the
    F1 gain over the logistic regression was 0.90, 0.90, 0.28, 0.90 for training seeds 0-3; on a second one
    (seed 1) all four trainings of seeds 10-13 collapsed (gain -0.38), so MoDAmix's adaptation is not robust
    across data (issue 17) and the test claims it for this dataset only."""
    gain_lr, gain_adv = [], []
    data = shift_data(0, n_per_sample=100)
    src = data.obs["sample"].isin(SOURCES).to_numpy()
    lab = data.obs["label"]
    X = np.concatenate([data.dense(m) for m in data.modalities], axis=1)
    train = src & lab.notna().to_numpy()
    lr = LogisticRegression(max_iter=2000).fit(X[train], lab[train].astype(str))
    f1_lr = f1_score(lab[~src].astype(str), lr.predict(X[~src]), average="macro")
    for k in range(4):
        f1 = {}
        for adv in ("both", "none"):
            # the synthetic classes are balanced: measured (as in docs/models.md) without class weights
            model = MoDAmix(data, source_samples=SOURCES, adversarial=adv, stage_epochs=[20, 40, 40, 20],
                            seed=_claims.seed(k), class_balance=False)
            model.train(batch_size=64, seed=_claims.seed(k), step_events=False)
            f1[adv] = target_f1(model, data)
        gain_lr.append(f1["both"] - f1_lr)
        gain_adv.append(f1["both"] - f1["none"])
    print({"f1 gain over logistic regression": np.round(gain_lr, 3), "over no adversary": np.round(gain_adv, 3)})
    C = "test_modamix::adaptation"
    _claims.check(f"{C}/median_f1_minus_logistic_regression", _claims.median(gain_lr), ">", 0.3)
    _claims.check(f"{C}/median_f1_minus_no_adversary", _claims.median(gain_adv), ">", 0.2)


def test_balanced_class_weights_follow_the_source_labels():
    """Rare source classes get proportionally larger weights in the classification loss (without them MoDAmix
    never predicted PIN on the bundled sample: docs/models.md); the weights are saved with the model."""
    import torch

    data = shift_data(seed=0)
    lab = data.obs[data.annotation_key].astype(object).copy()
    src = data.obs["sample"].isin(SOURCES).to_numpy()
    first = lab[src & (lab == "class0").to_numpy()].index
    lab.loc[first[5:]] = np.nan  # class0 keeps 5 labelled source spots
    data.obs[data.annotation_key] = lab
    model = MoDAmix(data, source_samples=SOURCES)
    w = dict(zip(model.params["classes"], model.params["class_weights"]))
    counts = {c: int((lab[src] == c).sum()) for c in model.params["classes"]}
    n, k = sum(counts.values()), len(counts)
    assert w == pytest.approx({c: n / (k * counts[c]) for c in counts})
    assert w["class0"] > 3 * max(v for c, v in w.items() if c != "class0")
    assert torch.allclose(model.module.class_weight, torch.tensor(model.params["class_weights"]))
    plain = MoDAmix(data, source_samples=SOURCES, class_balance=False)
    assert plain.params["class_weights"] is None and bool((plain.module.class_weight == 1).all())
