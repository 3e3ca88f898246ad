"""The benchmark's sections for aligners: domain adaptation (MoDAmix, calibration), unpaired alignment
(scMODAL) and per-modality latents matched as if unpaired."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from spatialmix.errors import ParameterError


def _domain_adaptation(name, mdl, mmd, reps, labels, samples, evaluated, sources, exclude, options, cache):
    """Target-sample predictions of a label-supervised model and, on the same target spots, the ensemble trained
    on the source samples of every unsupervised representation (raw_concat is the reference to beat); ``cache``
    keeps those ensembles' results between models."""
    from spatialmix.models import MODELS

    from spatialmix.evaluate import annotations as ann_mod

    pred = mdl.predict_labels()
    own = ann_mod.score_predictions(pred["label"].astype(object).to_numpy(), pred["confidence"].to_numpy(float),
                                    labels, samples, source_samples=sources, representation=name, exclude=exclude,
                                    mask=evaluated, index=labels.index)
    out = {"model": {**own.summary, "per_class": json.loads(own.per_class.to_json(orient="index"))}}
    results = {name: own}
    for rep in reps:
        if rep.kind == "model" and MODELS[rep.source].needs_labels:
            continue
        if rep.name not in cache:
            cache[rep.name] = ann_mod.transfer(rep.X, labels, samples, source_samples=sources,
                                               representation=rep.name, exclude=exclude, mask=evaluated,
                                               index=labels.index, options=options)
        r = cache[rep.name]
        out[rep.name] = r.summary
        results[rep.name] = r
    ref = out.get("raw_concat", {}).get("f1")
    out["beats_raw_concat_ensemble"] = None if ref is None else bool(out["model"]["f1"] > ref)
    out["source_samples"] = list(sources)
    out["target_samples"] = sorted(set(samples) - set(sources))
    return out, results


def _unpaired_alignment(mmd, labels, samples, sources, *, seed, train, params, link_options=None):
    """scMODAL on RNA of ``sources`` against MSI of the other samples, never paired, against Harmony on the PCA of
    the row-stacked linked features. Scored on the truly paired spots of the samples other than the reference.
    ``link_options`` go to :func:`~spatialmix.models.scmodal.correlation_links` (e.g. ``top``, ``max_per_feature``)."""
    from spatialmix._resources import measure
    from spatialmix.evaluate.metrics import foscttm, label_transfer_accuracy
    from spatialmix.models.baselines import harmony, pca
    from spatialmix.models.scmodal import SCMODAL, correlation_links

    a, b = "rna", "msi"
    if a not in mmd.modalities or b not in mmd.modalities:
        raise ParameterError(f"the scMODAL benchmark aligns rna with msi; the data has {mmd.modalities}")
    uniq = sorted(pd.unique(samples))
    targets = [x for x in uniq if x not in sources]
    reference = sources[0]
    links = correlation_links(mmd, a, b, samples=[reference], **dict(link_options or {}))
    mdl = SCMODAL(mmd, modalities=[a, b], samples={a: list(sources), b: targets}, links={f"{a}|{b}": links},
                  **params)
    with measure() as res:
        mdl.train(**{"seed": seed, **train})
    za = mdl.get_latent_representation(modality=a)
    zb = mdl.get_latent_representation(modality=b)
    ev = mmd.mask[a] & mmd.mask[b] & (samples != reference)
    lab = labels.to_numpy()

    def scores(Za, Zb):
        return {"foscttm": foscttm(Za[ev], Zb[ev]),
                f"label_transfer_{a}_to_{b}": label_transfer_accuracy(Za[ev], lab[ev], Zb[ev], lab[ev]),
                f"label_transfer_{b}_to_{a}": label_transfer_accuracy(Zb[ev], lab[ev], Za[ev], lab[ev])}

    # Harmony on the concatenated (row-stacked) linked features: RNA rows and MSI rows of the same spots, the
    # modality as Harmony's batch; it never sees which rows pair either
    la = _standardise(mmd.dense(a)[:, mmd.var_names[a].get_indexer([x[0] for x in links])][ev])
    lb = _standardise(mmd.dense(b)[:, mmd.var_names[b].get_indexer([x[1] for x in links])][ev])
    stacked = np.vstack([la, lb])
    Z = pca(stacked, n_components=min(50, stacked.shape[1] - 1), seed=seed)
    mod = np.array([a] * len(la) + [b] * len(lb))
    Zh = harmony(Z, mod, seed=seed)
    full_a, full_b = np.full((len(ev), Zh.shape[1]), np.nan, np.float32), np.full((len(ev), Zh.shape[1]), np.nan, np.float32)
    full_a[ev], full_b[ev] = Zh[: len(la)], Zh[len(la):]
    return {
        "setup": {"rna_samples": list(sources), "msi_samples": targets, "link_reference_sample": reference,
                  "n_links": len(links), "link_options": dict(link_options or {}),
                  "distinct_linked_features": [len({x[0] for x in links}), len({x[1] for x in links})],
                  "evaluated_spots": int(ev.sum()),
                  "evaluated": "spots with RNA and MSI of the samples other than the link reference"},
        "scmodal": {**scores(za, zb), **res},
        "harmony_linked_pca": scores(full_a, full_b),
    }, mdl


def _standardise(X: np.ndarray) -> np.ndarray:
    X = X - X.mean(axis=0)
    sd = X.std(axis=0)
    return X / np.where(sd > 0, sd, 1.0)


def _unpaired(model, data, labels: pd.Series | None) -> dict[str, dict[str, float]]:
    """FOSCTTM and (with labels) kNN label transfer between every pair of per-modality shared latents (paired
    spots treated as unpaired; each modality's latent is computed from that modality alone)."""
    from spatialmix.evaluate.metrics import foscttm, label_transfer_accuracy

    z = {m: model.get_latent_representation("shared", m) for m in data.modalities}
    out = {}
    mods = data.modalities
    for i, a in enumerate(mods):
        for b in mods[i + 1:]:
            ok = data.mask[a] & data.mask[b]
            if ok.sum() < 20:
                continue
            out[f"{a}-{b}"] = {"foscttm": foscttm(z[a][ok], z[b][ok]), "n_spots": int(ok.sum())}
            if labels is not None:
                lab = labels.to_numpy()[ok]
                out[f"{a}-{b}"][f"label_transfer_{a}_to_{b}"] = label_transfer_accuracy(z[a][ok], lab, z[b][ok], lab)
                out[f"{a}-{b}"][f"label_transfer_{b}_to_{a}"] = label_transfer_accuracy(z[b][ok], lab, z[a][ok], lab)
    return out
