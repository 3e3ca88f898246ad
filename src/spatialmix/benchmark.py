"""``spatialmix benchmark``: every listed model and baseline on one dataset, measured the way the papers do.

:func:`iter_benchmark` opens a dataset (a folder written by ``spatialmix simulate`` or any folder with a
``samples.csv``, prepared here; or a saved project zarr), builds the representations

- ``raw_<modality>`` and ``raw_concat``: the model inputs themselves (references),
- the baselines (:mod:`spatialmix.models.baselines`): ``pca_<modality>``, ``pca_concat``, ``harmony``,
- each model's shared embedding (``mima``), trained with its defaults (MIMA: ``epochs="auto"``, lr 1e-3),

and scores every one of them on the same spots (those with every modality):

- annotation prediction against the pathologist (:mod:`spatialmix.evaluate.annotations`), leave-one-sample-out
  and within-sample 4-fold; predictions, confidences and agreement are written into the project,
- scIB bio-conservation, batch-correction and total scores (scib-metrics' ``Benchmarker``),
- for models that translate: 4-fold cross-validated translation fidelity against the annotation-centroid
  baselines (:mod:`spatialmix.evaluate.translation`),
- for models with a latent per modality: FOSCTTM and label transfer between modalities, as if unpaired,
- for label-supervised domain-adaptation models (MoDAmix, calibration): half of the samples are labelled
  sources, the rest unlabelled targets; the model's own target predictions are scored against the paper's
  ensemble trained on the sources' raw concatenated features (and on every other representation), on the same
  target spots (:func:`_domain_adaptation`),
- for scMODAL: RNA of the source samples against MSI of the target samples, never paired; links from the
  correlation of paired spots of one reference sample; FOSCTTM and label transfer on the truly paired spots of
  the other samples, against Harmony on the PCA of the row-stacked linked features (:func:`_unpaired_alignment`),
- training time and peak memory.

It writes ``metrics.json``, ``metrics.csv``, ``report.md``, the figures and ``project.zarr`` into ``out``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.errors import ParameterError, ProjectError, SpatialMixError
from spatialmix.progress import Progress, forward

DEFAULT_MODELS = ("mima", "pca", "harmony")
#: peers trained by scvi-tools: a training length given to the benchmark (``--epochs``) becomes their max_epochs
SCVI_TOOLS_PEERS = ("scvi", "totalvi", "multivi")


def default_sources(samples) -> list[str]:
    """Half of the samples as labelled sources: every other one in sorted order (P1_S1, P2_S1 of P1_S1, P1_S2,
    P2_S1, P2_S2), so each patient has a source and a target section when samples are named by patient."""
    uniq = sorted(pd.unique(np.asarray(samples).astype(str)))
    return uniq[::2]


def _model_params(model_params: dict | None, name: str) -> dict:
    """``model_params`` is ``{model name: {param: value}}``; a flat dict (the older form) applies to ``mima``."""
    from spatialmix.models import MODELS
    from spatialmix.models.peers import PEERS

    model_params = model_params or {}
    if any(k in MODELS or k in PEERS for k in model_params):
        return dict(model_params.get(name) or {})
    return dict(model_params) if name == "mima" else {}


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


@dataclass
class Representation:
    name: str
    kind: str  # "raw", "baseline" or "model"
    X: np.ndarray  # (n_spots, dims); NaN rows where undefined
    resources: dict = field(default_factory=dict)
    source: str = ""  # the --models entry it came from


MULTIOMICS_SUFFIXES = (".h5mu", ".h5ad")


def _is_multiomics(data) -> bool:
    """True for non-spatial multi-omics input: a MultiModalData, or .h5mu / .h5ad path(s)."""
    from spatialmix.data import MultiModalData

    if isinstance(data, MultiModalData):
        return True
    items = data if isinstance(data, (list, tuple)) else str(data).split(",")
    return any(str(x).strip().split("=")[-1].lower().endswith(MULTIOMICS_SUFFIXES) for x in items)


def _open(data) -> tuple[Any, Path | None]:
    """(SpatialData, dataset folder or None) from a project zarr or a dataset folder."""
    from spatialmix.project import load_project

    path = Path(data)
    if not path.exists():
        raise ProjectError(f"{path} does not exist. Pass a dataset folder (with samples.csv, e.g. written by "
                           "`spatialmix simulate`), a project .zarr saved by spatialmix, an .h5mu file or "
                           ".h5ad files (one per modality)")
    if path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists():
        return load_project(path), None
    if not (path / "samples.csv").exists() and not path.is_file():
        raise ProjectError(f"{path} is neither a project .zarr nor a dataset folder with samples.csv "
                           "(non-spatial multi-omics: an .h5mu file or .h5ad files)")
    return None, path


def _raw(data) -> list[Representation]:
    from spatialmix.models.baselines import concatenated

    reps = []
    for m in data.modalities:
        X = data.dense(m)
        X[~data.mask[m]] = np.nan
        reps.append(Representation(f"raw_{m}", "raw", X, source="raw"))
    if len(data.modalities) > 1:
        Xc, keep = concatenated(data)
        full = np.full((data.n_obs, Xc.shape[1]), np.nan, np.float32)
        full[keep] = Xc
        reps.append(Representation("raw_concat", "raw", full, source="raw"))
    return reps


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


#: the MIMA preprint's own claims among those :func:`_claims` checks; the others are our targets (issue 14)
PAPER_CLAIMS = ("loocv_f1_above_each_raw_modality", "best_total_scib_among_model_and_baselines",
                "translation_beats_own_annotation_centroid")


def _claims(metrics: dict, model: str = "mima") -> dict[str, Any]:
    """The paper's three claims (:data:`PAPER_CLAIMS`) and ours (translation at least ridge and kNN, MIMA's
    annotation representation above each raw modality), checked on these numbers with the figures they rest on."""
    reps = metrics["representations"]
    out: dict[str, Any] = {}
    if model not in reps:
        return out
    f1 = {r: v["loocv"]["f1"] for r, v in reps.items() if "loocv" in v}
    singles = {r: f1[r] for r in f1 if r.startswith("raw_") and r != "raw_concat"}
    if model in f1 and singles:
        out["loocv_f1_above_each_raw_modality"] = {
            "holds": bool(all(f1[model] > v for v in singles.values())), model: f1[model], **singles}
    annot = f"{model}_corrected_pca"  # the representation MIMA predicts annotations from (ours, issue 14)
    if annot in f1 and singles:
        out["annotation_representation_loocv_f1_above_each_raw_modality"] = {
            "holds": bool(all(f1[annot] > v for v in singles.values())), annot: f1[annot], **singles}
    totals = {r: v["scib"]["Total"] for r, v in reps.items()
              if "scib" in v and (r == model or v["kind"] == "baseline")}
    if model in totals and len(totals) > 1:
        best = max(totals, key=totals.get)
        out["best_total_scib_among_model_and_baselines"] = {"holds": best == model, "best": best, **totals}
    trans = reps[model].get("translation", {})
    wins = {}
    for direction, methods in trans.items():
        if "->" not in direction or direction.split("->")[0] == direction.split("->")[1]:
            continue
        if "own_centroid" not in methods:  # unlabelled data: no centroid baseline
            continue
        m, own = methods["model"], methods["own_centroid"]
        wins[direction] = {"r2_spot_median": [m["r2_spot_median"], own["r2_spot_median"]],
                           "mse": [m["mse"], own["mse"]],
                           "beats_by_r2": m["r2_spot_median"] > own["r2_spot_median"],
                           "beats_by_mse": m["mse"] < own["mse"]}
    simple = {}
    for direction, methods in trans.items():
        src, tgt = direction.split("->")
        if src == tgt or "ridge" not in methods:
            continue
        r = {k: methods[k]["r_feature_median"] for k in ("model", "ridge", "knn") if k in methods}
        simple[direction] = {**r, "beats_ridge": r["model"] >= r["ridge"],
                             "beats_knn": "knn" not in r or r["model"] >= r["knn"]}
    if simple:
        out["translation_r_at_least_ridge_and_knn"] = {
            "holds": bool(all(v["beats_ridge"] and v["beats_knn"] for v in simple.values())),
            "directions_at_least_ridge": int(sum(v["beats_ridge"] for v in simple.values())),
            "directions": len(simple), "detail": simple}
    if wins:
        out["translation_beats_own_annotation_centroid"] = {
            "holds": bool(all(w["beats_by_r2"] and w["beats_by_mse"] for w in wins.values())),
            "directions_won_by_r2": int(sum(w["beats_by_r2"] for w in wins.values())),
            "directions_won_by_mse": int(sum(w["beats_by_mse"] for w in wins.values())),
            "directions": len(wins), "detail": wins}
    return out


def _other_claims(metrics: dict) -> dict[str, Any]:
    """Issue 6's claims: each domain-adaptation model's target macro-F1 above the ensemble on the raw
    concatenated features; scMODAL's FOSCTTM and label transfer better than Harmony on the linked-feature PCA."""
    out: dict[str, Any] = {}
    for name, e in metrics["representations"].items():
        da = e.get("domain_adaptation")
        if da and "raw_concat" in da:
            out[f"{name}_target_f1_above_raw_concat_ensemble"] = {
                "holds": bool(da["model"]["f1"] > da["raw_concat"]["f1"]), name: da["model"]["f1"],
                "raw_concat_ensemble": da["raw_concat"]["f1"]}
    ua = metrics.get("unpaired_alignment")
    if ua:
        sm, h = ua["scmodal"], ua["harmony_linked_pca"]
        lt = [k for k in sm if k.startswith("label_transfer_")]
        out["scmodal_better_than_harmony_on_linked_features"] = {
            "holds": bool(sm["foscttm"] < h["foscttm"] and all(sm[k] > h[k] for k in lt)),
            "foscttm": [sm["foscttm"], h["foscttm"]], **{k: [sm[k], h[k]] for k in lt}}
    return out


def _load(data, *, annotation_key, label_key, batch_key, preprocessing, zscore, sample_key, modalities):
    """(SpatialData or None, MultiModalData, label column or None) of any benchmark input, checked before any
    long work: a spatial dataset folder (prepared here) or project, or non-spatial multi-omics."""
    from spatialmix.data import as_multimodal

    if _is_multiomics(data):
        return None, None, as_multimodal(data, batch_key=batch_key, label_key=label_key, preprocessing=preprocessing,
                                         zscore=zscore, sample_key=sample_key, modalities=modalities)
    sdata, folder = _open(data)
    return sdata, folder, None


def applicable_peers(data, why: dict[str, str] | None = None) -> list[str]:
    """The peers (:data:`spatialmix.models.peers.PEERS`) that can run on ``data`` (their ``check`` passes);
    ``why`` (a dict), when given, receives the reason of each one that cannot."""
    from spatialmix.models.peers import PEERS

    out = []
    for name, peer in PEERS.items():
        try:
            peer.check(data)
        except SpatialMixError as err:
            if why is not None:
                why[name] = str(err)
            continue
        out.append(name)
    return out


def _check_models(models, mmd, labels, skipped: dict[str, str] | None = None) -> list[str]:
    """Expand ``peers`` / ``all`` and refuse, before any work, a listed method the data cannot support.

    ``peers`` / ``all`` take what can run on this data; each method they leave out is recorded with the reason
    in ``skipped`` (shown in the report, never dropped silently). A method named explicitly that cannot run
    is an error."""
    from spatialmix.models import MODELS
    from spatialmix.models.baselines import BASELINES
    from spatialmix.models.peers import PEERS

    skipped = {} if skipped is None else skipped
    models = [m.strip().lower() for m in models if m.strip()]
    n_batches = mmd.obs[mmd.batch_key].nunique()
    expanded: list[str] = []
    for m in models:
        if m in ("peers", "all"):
            extra = []
            if m == "all":
                extra += ["mima", "pca"]
                if n_batches >= 2:
                    extra.append("harmony")
                else:
                    skipped["harmony"] = f"one batch only ({mmd.obs[mmd.batch_key].iloc[0]!r}): nothing to integrate"
            extra += applicable_peers(mmd, skipped)
            expanded += [x for x in extra if x not in expanded]
        elif m not in expanded:
            expanded.append(m)
    for m in expanded:
        skipped.pop(m, None)
    unknown = [m for m in expanded if m not in MODELS and m not in BASELINES and m not in PEERS]
    if unknown:
        raise ParameterError(f"unknown model(s) {unknown}; choose from "
                             f"{sorted(MODELS) + sorted(BASELINES) + sorted(PEERS)}, or 'peers' / 'all'")
    if not expanded:
        raise ParameterError("no model to benchmark; pass e.g. --models mima,pca,harmony")
    for m in expanded:
        if m in PEERS:
            PEERS[m].check(mmd)  # raises a ParameterError that says why
        elif m == "harmony" and n_batches < 2:
            raise ParameterError("harmony needs at least two batches; this data has one "
                                 f"({mmd.obs[mmd.batch_key].iloc[0]!r}). Leave it out of --models")
        elif m in MODELS and MODELS[m].needs_labels and labels is None:
            raise ParameterError(f"{m} is trained on labelled source samples; this data has no label column "
                                 "(pass --label-key / annotation_key)")
        elif m in ("modamix", "calibration", "scmodal") and mmd.obs["sample"].nunique() < 2:
            raise ParameterError(f"{m} aligns samples with each other; this data has one sample")
    return expanded


@dataclass
class _Run:
    """What the stages of one benchmark run share (built by :func:`iter_benchmark`, filled stage by stage)."""

    mmd: Any
    sdata: Any
    spatial: bool
    annotation_key: str | None
    models: list[str]
    sources: list[str]
    exclude: tuple
    options: Any  # EnsembleOptions
    seed: int
    cv_folds: int
    train: dict | None
    model_params: dict | None
    reps: list = field(default_factory=list)
    trained: dict = field(default_factory=dict)
    peer_records: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)  # representation -> scheme -> AnnotationResult
    translations: dict = field(default_factory=dict)
    scmodal_run: bool = False
    first: Any = None  # the first AnnotationResult (its excluded classes and classes)

    @property
    def labels(self):
        return self.mmd.labels

    @property
    def samples(self) -> np.ndarray:
        return self.mmd.obs["sample"].astype(str).to_numpy()

    @property
    def batches(self) -> np.ndarray:
        return self.mmd.obs[self.mmd.batch_key].astype(str).to_numpy()

    def train_for(self, name) -> dict:
        """MIMA's default training for MIMA (and MIMA-Unimodal); the other models train with their papers'
        defaults (plus the seed); ``train`` given by the caller applies to every model."""
        from spatialmix.models import MODELS
        from spatialmix.models.peers import PEERS

        base = {"seed": self.seed}
        if name in ("mima", "mima_unimodal"):  # MIMA's defaults for both (MIMA-Unimodal's own default is the demo's)
            base.update({k: MODELS["mima"].train_defaults[k] for k in ("epochs", "lr")})
        given = dict(self.train or {})
        if any(k in MODELS or k in PEERS for k in given):  # {model name: {option: value}}
            return {**base, **dict(given.get(name) or {})}
        return {**base, **given}


def _iter_representations(run: _Run):
    """Stage 2: the raw inputs, every baseline and peer, and every trained model's embedding (scMODAL is only
    marked: its section runs last)."""
    from spatialmix._resources import measure
    from spatialmix.models import MODELS
    from spatialmix.models.baselines import BASELINES
    from spatialmix.models.peers import PEERS

    mmd, seed = run.mmd, run.seed
    run.reps = _raw(mmd)
    for name in run.models:
        if name in BASELINES or name in PEERS:
            yield Progress(f"{'baseline' if name in BASELINES else 'peer'} {name}", 0, 1)
            with measure() as res:
                if name in BASELINES:
                    embs = BASELINES[name](mmd, seed=seed)
                else:
                    opts = _model_params(run.model_params, name)
                    if name == "mima_unimodal":
                        opts.setdefault("train", {k: v for k, v in run.train_for(name).items() if k != "seed"})
                    elif name in SCVI_TOOLS_PEERS and "epochs" in run.train_for(name):  # --epochs given by the user
                        opts.setdefault("max_epochs", int(run.train_for(name)["epochs"]))
                    run.peer_records[name] = PEERS[name].info(mmd, seed=seed, **opts)
                    embs = PEERS[name](mmd, seed=seed, **opts)
            for rep, X in embs.items():
                if any(r.name == rep for r in run.reps):
                    continue
                run.reps.append(Representation(rep, "baseline" if name in BASELINES else "peer", X, dict(res),
                                               source=name))
            yield Progress(f"{'baseline' if name in BASELINES else 'peer'} {name}", 1, 1)
        elif name == "scmodal":
            run.scmodal_run = True  # after the other representations: its section compares with Harmony itself
        else:
            cls = MODELS[name]
            params = _model_params(run.model_params, name)
            if cls.needs_labels:
                batches_of = mmd.obs.groupby(mmd.obs["sample"].astype(str), observed=True)[mmd.batch_key].first()
                params.setdefault("source_samples" if name == "modamix" else "source_batches",
                                  list(run.sources) if name == "modamix" else [str(batches_of[x]) for x in run.sources])
            mdl = cls(mmd, **params)
            with measure() as res:
                yield from forward(mdl.iter_train(**run.train_for(name)), f"train {name}: ")
            run.trained[name] = mdl
            run.reps.append(Representation(name, "model", mdl.get_latent_representation(), dict(res), source=name))
            if "corrected_pca" in cls.supports:  # MIMA's representation for annotation prediction (issue 14, item 6)
                run.reps.append(Representation(f"{name}_corrected_pca", "model", mdl.get_corrected_pca(seed=seed),
                                               dict(res), source=name))


def _iter_annotation_cv(run: _Run, metrics: dict):
    """Stage 3: every representation's annotation prediction (leave-one-sample-out and 4-fold)."""
    from spatialmix.evaluate import annotations as ann_mod
    from spatialmix.models import MODELS
    from spatialmix.models.baselines import common_spots

    samples, labels = run.samples, run.labels
    evaluated = common_spots(run.mmd)
    schemes = ()
    if labels is None:
        metrics["not_scored"]["annotation"] = "no label column"
    else:
        schemes = ("loocv", "4cv") if len(set(samples)) > 1 else ("4cv",)
        if len(set(samples)) < 2:
            metrics["not_scored"]["loocv"] = "one sample only: nothing to leave out"
    for i, rep in enumerate(run.reps):
        entry = {"kind": rep.kind, "source": rep.source, "dims": int(rep.X.shape[1]), **rep.resources}
        run.results[rep.name] = {}
        supervised = rep.kind == "model" and MODELS[rep.source].needs_labels
        if supervised:
            entry["note"] = ("trained on the source samples' labels: scored on its target-sample predictions "
                             "(domain_adaptation), not by the leave-one-sample-out classifier")
        for scheme in (() if supervised else schemes):
            r = yield from forward(ann_mod.iter_cross_validate(
                rep.X, labels, samples, representation=rep.name, scheme=scheme, exclude=run.exclude,
                mask=evaluated, n_folds=run.cv_folds, options=run.options), f"annotations {i + 1}/{len(run.reps)} ")
            run.results[rep.name][scheme] = r
            run.first = run.first or r
            entry[scheme] = {k: v for k, v in r.to_dict().items() if k not in ("representation", "options")}
            entry[scheme]["confusion"] = json.loads(r.confusion.to_json(orient="split"))
        metrics["representations"][rep.name] = entry
    if run.first is not None:
        metrics["classifier"]["excluded_classes"] = run.first.excluded
        metrics["classifier"]["classes"] = run.first.classes


def _iter_scib(run: _Run, metrics: dict):
    """Stage 4: scIB bio-conservation and batch-correction scores of every representation."""
    from spatialmix.evaluate.metrics import representation, scib_benchmark
    from spatialmix.models.baselines import common_spots

    labels, batches, seed = run.labels, run.batches, run.seed
    if labels is None or len(set(batches)) < 2:
        metrics["not_scored"]["scib"] = "no label column" if labels is None else "one batch only"
        return
    evaluated = common_spots(run.mmd)
    yield Progress("scIB metrics (scib-metrics Benchmarker)", 0, 1)
    excluded = run.first.excluded if run.first is not None else []
    scib_labels = labels.astype(object).where(~labels.astype(str).isin(excluded))
    # scIB evaluates feature matrices (the raw inputs) on their PCA, as scIB does for unintegrated data
    embs = {r.name: (representation(r.X[evaluated], seed=seed) if r.kind == "raw" else r.X[evaluated])
            for r in run.reps}
    pre = "pca_concat" if "pca_concat" in embs else None
    table = scib_benchmark(embs, batches[evaluated], scib_labels.to_numpy()[evaluated], pre_integrated=pre,
                           seed=seed)
    for name, row in table.iterrows():
        metrics["representations"][name]["scib"] = {k: float(v) for k, v in row.items()}
    metrics["scib"] = {"pre_integrated": pre or f"PCA of {next(iter(embs))}", "labels": run.annotation_key,
                       "batches": run.mmd.batch_key}
    yield Progress("scIB metrics (scib-metrics Benchmarker)", 1, 1)


def _iter_domain_adaptation(run: _Run, metrics: dict):
    """Stage 5: the label-supervised models' target-sample predictions against source-trained ensembles."""
    from spatialmix.models import MODELS
    from spatialmix.models.baselines import common_spots

    transfer_cache: dict = {}
    for name, mdl in run.trained.items():
        if MODELS[name].needs_labels:
            yield Progress(f"{name}: target-sample predictions vs the source-trained ensembles", 0, 1)
            da, da_results = _domain_adaptation(name, mdl, run.mmd, run.reps, run.labels, run.samples,
                                                common_spots(run.mmd), run.sources, run.exclude, run.options,
                                                transfer_cache)
            metrics["representations"][name]["domain_adaptation"] = da
            for rep_name, r in da_results.items():
                run.results.setdefault(rep_name, {})["transfer"] = r


def _iter_translation_cv(run: _Run, metrics: dict, translation: bool):
    """Stage 6: for models with a latent per modality, matching as if unpaired and cross-validated translation."""
    from spatialmix.models import MODELS

    for name, mdl in run.trained.items():
        if "private" in MODELS[name].supports and len(run.mmd.modalities) > 1:
            metrics["representations"][name]["unpaired"] = _unpaired(mdl, run.mmd, run.labels)
            if translation:
                from spatialmix.evaluate.translation import iter_translation_cv

                tr = yield from forward(iter_translation_cv(
                    run.mmd, model=name, model_params=_model_params(run.model_params, name),
                    train=run.train_for(name), annotation_key=run.annotation_key, n_folds=run.cv_folds,
                    seed=run.seed), f"{name} ")
                run.translations[name] = tr
                metrics["representations"][name]["translation"] = tr.to_dict()
                metrics["representations"][name]["translation_fold_train_seconds"] = tr.train_seconds


def _iter_scmodal(run: _Run, metrics: dict):
    """Stage 7 (when scMODAL is listed): RNA of the sources against MSI of the targets, never paired."""
    yield Progress("scMODAL: RNA of the sources against MSI of the targets", 0, 1)
    section, _ = _unpaired_alignment(run.mmd, run.labels, run.samples, run.sources, seed=run.seed,
                                     train={k: v for k, v in run.train_for("scmodal").items() if k != "seed"},
                                     params=_model_params(run.model_params, "scmodal"))
    metrics["unpaired_alignment"] = section
    yield Progress("scMODAL: RNA of the sources against MSI of the targets", 1, 1)


def _iter_write(run: _Run, metrics: dict, out: Path, *, figures: bool, save: bool, map_representation,
                t_start: float):
    """Stage 8: metrics.json / .csv, per-class scores, figures, report.md and (spatial) the project."""
    from spatialmix.project import jsonable, save_project

    yield Progress("write outputs", 0, 1)
    written = ["metrics.json", "metrics.csv"]
    if run.spatial:
        yield from _write_spatial_outputs(run.sdata, run.reps, run.trained, run.results, run.annotation_key)
    else:
        written.append(_write_cell_outputs(run.mmd, run.reps, run.results, out / "embeddings.h5ad",
                                           run.annotation_key))
    metrics["seconds_total"] = round(time.perf_counter() - t_start, 1)
    (out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2))
    metrics_table(metrics).to_csv(out / "metrics.csv")
    results = run.results
    if results and any(results.values()):
        per_class = pd.concat([r.per_class.assign(representation=name, scheme=scheme).reset_index(names="class")
                               for name, by_scheme in results.items() for scheme, r in by_scheme.items()])
        per_class[["representation", "scheme", "class", "n_folds", "n_spots", "accuracy", "precision", "recall",
                   "f1"]].to_csv(out / "annotation_per_class.csv", index=False)
        written.append("annotation_per_class.csv")
    if figures:
        from spatialmix.evaluate import plots

        yield Progress("figures", 0, 1)
        written += [p.name for p in plots.save_benchmark_figures(
            metrics, results, run.translations, run.sdata, out, annotation_key=run.annotation_key,
            map_representation=map_representation or next(iter(run.trained), "harmony"))]
        yield Progress("figures", 1, 1)
    (out / "report.md").write_text(format_benchmark(metrics))
    written.append("report.md")
    if save and run.spatial:
        yield Progress("save project", 0, 1)
        save_project(run.sdata, out / "project.zarr", overwrite=True)
        written.append("project.zarr")
    metrics["files"] = written


def iter_benchmark(data, out, *, models: Sequence[str] = DEFAULT_MODELS, annotation_key: str = "pathologist",
                   label_key: str | None = None, batch_key: str | None = None,
                   preprocessing: dict[str, str] | str | None = None, zscore: bool | dict[str, bool] = False,
                   sample_key: str | None = None, modalities: Sequence[str] | None = None,
                   source_samples: Sequence[str] | None = None,
                   exclude: Sequence[str] | None = None, train: dict | None = None,
                   model_params: dict | None = None, translation: bool = True, cv_folds: int = 4,
                   classifier: dict | None = None, figures: bool = True, save: bool = True,
                   map_representation: str | None = None, seed: int = 0, overwrite: bool = True):
    """Run the benchmark; yields progress events, returns the metrics dict (also in ``out/metrics.json``).

    Parameters
    ----------
    data
        Spatial: a dataset folder (``samples.csv``; prepared here) or a saved project ``.zarr``. Non-spatial
        paired multi-omics (CITE-seq, multiome, any paired modalities): a :class:`~spatialmix.data.MultiModalData`,
        an ``.h5mu`` file or ``.h5ad`` files, one per modality (:func:`spatialmix.data.read_multimodal`).
    models
        Names from :data:`spatialmix.models.MODELS` (trained), :data:`~spatialmix.models.baselines.BASELINES`
        and :data:`~spatialmix.models.peers.PEERS` (the MIMA paper's peers: scanorama, scvi, totalvi, multivi,
        mofa, mima_unimodal); ``peers`` adds every peer the data supports, ``all`` also mima, pca and harmony.
        A listed method the data cannot support is refused before any work.
    annotation_key, label_key
        The label column: ``annotation_key`` (the pathologist's, default ``pathologist``) for spatial projects,
        ``label_key`` for non-spatial input (``None``: unlabelled; the annotation, scIB-bio and centroid
        scores are then left out). A ``label_key`` given for a spatial project replaces ``annotation_key``.
    batch_key, preprocessing, zscore, sample_key, modalities
        Non-spatial input only: see :func:`spatialmix.data.read_multimodal` (``batch_key`` is required there).
        ``sample_key`` (default ``batch_key``) groups the rows left out together by the leave-one-sample-out
        classifier.
    exclude
        Annotation classes left out of the classifier and of the scIB labels (default: the paper's list,
        :data:`spatialmix.evaluate.annotations.PAPER_EXCLUDED`).
    source_samples
        The labelled source samples of the domain-adaptation models and the RNA samples of scMODAL (default:
        :func:`default_sources`, half of the samples).
    train
        Training options of every trained model, or ``{model name: {option: value}}`` per model (default: MIMA
        and MIMA-Unimodal MIMA's defaults, ``epochs="auto"`` at lr 1e-3; the other models their papers' defaults).
    model_params
        ``{model name: {parameter: value}}``; for a peer its options (e.g. ``{"scvi": {"max_epochs": 50}}``).
    classifier
        :class:`~spatialmix.evaluate.annotations.EnsembleOptions` fields (``n_bags``, ``n_trees``, ``n_jobs``).
    map_representation
        Whose predictions the per-sample maps show (default: the first trained model, else ``harmony``).
    """
    from spatialmix.data import MultiModalData
    from spatialmix.evaluate import annotations as ann_mod
    from spatialmix.models import MODELS
    from spatialmix.models.baselines import common_spots

    # stage 1: check the request and open the data (nothing long runs before these checks)
    exclude = ann_mod.PAPER_EXCLUDED if exclude is None else tuple(exclude)
    out = Path(out)
    if (out / "metrics.json").exists() and not overwrite:
        raise ProjectError(f"{out / 'metrics.json'} already exists; pass --overwrite or choose another --out")
    options = ann_mod.EnsembleOptions(**{"seed": seed, **(classifier or {})})
    if cv_folds < 2:
        raise ParameterError(f"cv_folds must be >= 2, got {cv_folds}")
    t_start = time.perf_counter()

    sdata, folder, mmd = _load(data, annotation_key=annotation_key, label_key=label_key, batch_key=batch_key,
                               preprocessing=preprocessing, zscore=zscore, sample_key=sample_key,
                               modalities=modalities)
    spatial = mmd is None
    if spatial:
        annotation_key = label_key or annotation_key
        if sdata is None:
            from spatialmix.pipeline import iter_prepare

            sdata = yield from forward(iter_prepare(folder, annotation_key=annotation_key), "prepare: ")
        if annotation_key not in sdata.tables["rna"].obs:
            raise ProjectError(f"annotation column {annotation_key!r} not in the project (columns: "
                               f"{list(sdata.tables['rna'].obs.columns)}); pass --annotation-key")
        mmd = MultiModalData.from_spatialdata(sdata, annotation_key=annotation_key, batch_key=batch_key or "batch")
    skipped_models: dict[str, str] = {}
    models = _check_models(models, mmd, mmd.labels, skipped_models)
    out.mkdir(parents=True, exist_ok=True)
    samples = mmd.obs["sample"].astype(str).to_numpy()
    run = _Run(mmd=mmd, sdata=sdata, spatial=spatial, annotation_key=mmd.annotation_key, models=models,
               sources=list(source_samples) if source_samples else default_sources(samples), exclude=exclude,
               options=options, seed=seed, cv_folds=cv_folds, train=train, model_params=model_params)

    yield from _iter_representations(run)  # stage 2

    evaluated = common_spots(mmd)
    rows = "spots" if spatial else getattr(mmd, "row_kind", "cells")
    metrics: dict[str, Any] = {
        "data": str(data) if not isinstance(data, MultiModalData) else repr(data), "spatial": spatial,
        "input": repr(mmd), "preprocessing": dict(mmd.preprocessing), "annotation_key": run.annotation_key,
        "batch_key": batch_key if (batch_key and not spatial) else mmd.batch_key, "models": models,
        "train": {name: run.train_for(name) for name in models if name in MODELS or name == "mima_unimodal"},
        "peers": run.peer_records,
        "source_samples": run.sources,
        "samples": sorted(set(samples)), "n_batches": int(len(set(run.batches))),
        "n_spots": int(mmd.n_obs), "n_evaluated_spots": int(evaluated.sum()), "rows": rows,
        "evaluated_spots": f"{rows} with every modality measured (" + ", ".join(mmd.modalities) + ")",
        "classifier": {"n_bags": options.n_bags, "n_trees": options.n_trees, "min_instances": 3,
                       "excluded_requested": list(exclude)},
        "versions": _versions(),
        "not_scored": {},
        "not_run": dict(skipped_models),
        "representations": {}}
    stage = metrics["stage_seconds"] = {"prepare_and_train": round(time.perf_counter() - t_start, 1)}
    for name, step in (("annotation_cv", _iter_annotation_cv(run, metrics)), ("scib", _iter_scib(run, metrics)),
                       ("domain_adaptation", _iter_domain_adaptation(run, metrics)),
                       ("translation_cv", _iter_translation_cv(run, metrics, translation)),
                       *((("scmodal", _iter_scmodal(run, metrics)),) if run.scmodal_run else ())):
        t0 = time.perf_counter()
        yield from step
        stage[name] = round(time.perf_counter() - t0, 1)
    metrics["claims"] = _claims(metrics, "mima")  # the MIMA paper's claims (empty when MIMA is not benchmarked)
    metrics["claims"].update(_other_claims(metrics))
    metrics["ranking"] = _ranking(metrics)
    yield from _iter_write(run, metrics, out, figures=figures, save=save, map_representation=map_representation,
                           t_start=t_start)
    return metrics


def _versions() -> dict[str, str]:
    """Versions of the packages whose numbers the benchmark depends on (metrics.json)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("napari-spatialmix", "torch", "numpy", "scikit-learn", "scib-metrics", "jax", "scanpy", "anndata",
                "harmonypy", "scanorama", "scvi-tools", "mofapy2", "imbalanced-learn", "umap-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _ranking(metrics: dict) -> list[dict[str, Any]]:
    """Representations ranked by scIB total (when scored), else by LOOCV / 4CV F1."""
    reps = metrics["representations"]
    key = next((k for k in ("scib", "loocv", "4cv") if any(k in e for e in reps.values())), None)
    if key is None:
        return []
    score = (lambda e: e["scib"]["Total"]) if key == "scib" else (lambda e: e[key]["f1"])
    ranked = sorted((n for n, e in reps.items() if key in e), key=lambda n: -score(reps[n]))
    return [{"rank": i + 1, "representation": n, "kind": reps[n]["kind"],
             "by": "scIB total" if key == "scib" else f"{key} F1", "score": float(score(reps[n]))}
            for i, n in enumerate(ranked)]


def _write_spatial_outputs(sdata, reps, trained, results, annotation_key):
    """Predictions, baseline / peer embeddings and model outputs into the project's tables."""
    from spatialmix.evaluate import annotations as ann_mod
    from spatialmix.models import MODELS
    from spatialmix.results import iter_write_results

    for name, by_scheme in results.items():
        for scheme, r in by_scheme.items():
            if scheme == "transfer":  # a supervised model's own target predictions keep its name
                own = name in trained and MODELS[name].needs_labels
                ann_mod.write_predictions(sdata, r, name=name if own else f"{name}_transfer",
                                          annotation_key=annotation_key)
            else:
                ann_mod.write_predictions(sdata, r, name=name if scheme == "loocv" else f"{name}_{scheme}",
                                          annotation_key=annotation_key)
    # embeddings of the baselines and peers next to the model outputs, so the project shows them all
    for rep in reps:
        if rep.kind in ("baseline", "peer"):
            for t in ("rna", "msi", "morphology"):
                if t in sdata.tables:
                    sdata.tables[t].obsm[f"X_{rep.name}"] = rep.X
    for name, mdl in trained.items():
        yield from forward(iter_write_results(sdata, mdl, key=name), f"write {name} outputs: ")


def _write_cell_outputs(mmd, reps, results, path: Path, annotation_key) -> str:
    """Non-spatial input: every embedding (``obsm["X_<representation>"]``) and prediction column on the cells'
    ``obs``, as one AnnData (written to a temporary file, then renamed: never half-written)."""
    import anndata as ad

    from spatialmix.evaluate import annotations as ann_mod

    cells = ad.AnnData(obs=mmd.obs.copy())
    for rep in reps:
        if rep.kind != "raw":
            cells.obsm[f"X_{rep.name}"] = np.asarray(rep.X, dtype=np.float32)
    for name, by_scheme in results.items():
        for scheme, r in by_scheme.items():
            ann_mod.write_predictions_into(cells, r, name=name if scheme == "loocv" else f"{name}_{scheme}",
                                           annotation_key=annotation_key)
    for k, v in list(cells.uns.items()):
        cells.uns[k] = json.loads(json.dumps(v, default=str))
    tmp = path.with_name(path.name + ".tmp")
    cells.write_h5ad(tmp)
    tmp.replace(path)
    return path.name


def benchmark(data, out, *, progress: bool = False, **kwargs) -> dict:
    from spatialmix.progress import run

    return run(iter_benchmark(data, out, **kwargs), progress=progress)


def metrics_table(metrics: dict) -> pd.DataFrame:
    """One row per representation: kind, dims, scIB aggregates and metrics, LOOCV / 4CV scores, resources,
    and for models the per-direction translation fidelity (model and both baselines)."""
    rows = {}
    for name, e in metrics["representations"].items():
        row = {"kind": e["kind"], "dims": e["dims"]}
        for k in ("seconds", "peak_rss_mb", "peak_increase_mb", "cuda_peak_mb"):
            if k in e:
                row[f"train_{k}"] = e[k]
        for k, v in e.get("scib", {}).items():
            row[f"scib_{k.lower().replace(' ', '_')}"] = v
        for scheme in ("loocv", "4cv"):
            for k in ("accuracy", "precision", "recall", "f1", "n_scored"):
                if scheme in e:
                    row[f"{scheme}_{k}"] = e[scheme][k]
        for direction, methods in e.get("translation", {}).items():
            for method, vals in methods.items():
                for k in ("mse", "r2_spot_median", "r2_feature_median"):
                    row[f"translation_{direction}_{method}_{k}"] = vals[k]
        da = e.get("domain_adaptation", {})
        for k, v in da.items():
            if isinstance(v, dict) and "f1" in v:
                row[f"transfer_f1_{'own' if k == 'model' else k}"] = v["f1"]
        for pair, vals in e.get("unpaired", {}).items():
            for k, v in vals.items():
                if k != "n_spots":
                    row[f"unpaired_{pair}_{k}"] = v
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "representation"
    return df


def format_benchmark(metrics: dict) -> str:
    """Markdown report: the main table, the ranking, translation fidelity (model, ridge, kNN, centroids),
    unpaired alignment, what was not scored and why, the peers' versions and parameters, the paper's claims."""
    rows = metrics.get("rows", "spots")
    excluded = ", ".join(metrics["classifier"].get("excluded_classes", [])) or "none"
    lines = [f"# Benchmark on `{metrics['data']}`", "",
             f"{metrics['n_evaluated_spots']} of {metrics['n_spots']} {rows} evaluated ({metrics['evaluated_spots']}); "
             f"samples {', '.join(metrics['samples'])}; batches `{metrics.get('batch_key', 'batch')}` "
             f"({metrics.get('n_batches', len(metrics['samples']))}); labels `{metrics['annotation_key']}`; "
             f"classes left out: {excluded}.", ""]
    if metrics.get("preprocessing"):
        lines += ["Inputs: " + "; ".join(f"{m}: {k}" for m, k in metrics["preprocessing"].items()) + ".", ""]
    lines += ["| representation | kind | dims | scIB bio | scIB batch | scIB total | LOOCV F1 | LOOCV acc | 4CV F1 "
              "| 4CV acc | train s | peak MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, d=3):
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else (f"{v:.{d}f}" if isinstance(v, float) else str(v))

    for name, e in metrics["representations"].items():
        s = e.get("scib", {})
        lines.append(
            f"| {name} | {e['kind']} | {e['dims']} | {f(s.get('Bio conservation'))} | {f(s.get('Batch correction'))} "
            f"| {f(s.get('Total'))} | {f(e.get('loocv', {}).get('f1'))} | {f(e.get('loocv', {}).get('accuracy'))} "
            f"| {f(e.get('4cv', {}).get('f1'))} | {f(e.get('4cv', {}).get('accuracy'))} | {f(e.get('seconds'), 1)} "
            f"| {f(e.get('peak_increase_mb'), 0)} |")
    if metrics.get("ranking"):
        by = metrics["ranking"][0]["by"]
        lines += ["", f"Ranked by {by}: " + ", ".join(f"{r['rank']}. {r['representation']} ({r['score']:.3f})"
                                                     for r in metrics["ranking"]) + "."]
    for what, why in (metrics.get("not_scored") or {}).items():
        lines.append(f"- not scored: {what} ({why})")
    for what, why in (metrics.get("not_run") or {}).items():
        lines.append(f"- not run: {what} ({why})")
    for name, e in metrics["representations"].items():
        if "translation" in e:
            methods = [m for m in ("model", "ridge", "knn", "own_centroid", "other_centroids")
                       if any(m in v for v in e["translation"].values())]
            label = {"model": name, "ridge": "ridge", "knn": "kNN", "own_centroid": "own-class centroid",
                     "other_centroids": "other-classes centroid"}
            lines += ["", f"## Translation fidelity of `{name}` (cross-validated; median per-feature Pearson r, "
                      "median per-spot R^2, MSE)", "",
                      "| direction | " + " | ".join(f"{label[m]} r" for m in methods) + " | "
                      + " | ".join(f"{label[m]} R^2" for m in methods) + " | "
                      + " | ".join(f"{label[m]} MSE" for m in methods) + f" | {rows} | features |",
                      "|---|" + "---|" * (3 * len(methods) + 2)]
            for d, m in e["translation"].items():
                cells = [f(m.get(k, {}).get("r_feature_median")) for k in methods]
                cells += [f(m.get(k, {}).get("r2_spot_median")) for k in methods]
                cells += [f(m.get(k, {}).get("mse")) for k in methods]
                lines.append(f"| {d} | " + " | ".join(cells) + f" | {m['model']['n_spots']} | {m['model']['n_features']} |")
        if e.get("unpaired"):
            lines += ["", f"## `{name}` modalities treated as unpaired (per-modality shared latents)", "",
                      "| pair | FOSCTTM (0 best, 0.5 random) | label transfer a->b | label transfer b->a | " + rows + " |",
                      "|---|---|---|---|---|"]
            for pair, v in e["unpaired"].items():
                a, b = pair.split("-")
                lines.append(f"| {pair} | {f(v['foscttm'])} | {f(v.get(f'label_transfer_{a}_to_{b}'))} "
                             f"| {f(v.get(f'label_transfer_{b}_to_{a}'))} | {v['n_spots']} |")
    for name, e in metrics["representations"].items():
        da = e.get("domain_adaptation")
        if not da:
            continue
        lines += ["", f"## `{name}`: labelled sources {', '.join(da['source_samples'])} -> targets "
                  f"{', '.join(da['target_samples'])} (mean per-class F1 over target samples, classes with >= 3 spots)",
                  "", "| predictions of | target F1 | target accuracy | precision | recall | scored (sample, class) |",
                  "|---|---|---|---|---|---|"]
        rows = [("model" , f"**{name}** (its own classifier)")] + [
            (k, f"ensemble on {k}") for k in da if isinstance(da[k], dict) and k != "model"]
        for k, label in rows:
            v = da[k]
            lines.append(f"| {label} | {f(v.get('f1'))} | {f(v.get('accuracy'))} | {f(v.get('precision'))} "
                         f"| {f(v.get('recall'))} | {v.get('n_scored', '')} |")
    ua = metrics.get("unpaired_alignment")
    if ua:
        st = ua["setup"]
        lines += ["", f"## scMODAL: RNA of {', '.join(st['rna_samples'])} against MSI of {', '.join(st['msi_samples'])}, "
                  f"never paired ({st['n_links']} gene-lipid links from the paired spots of {st['link_reference_sample']})",
                  "", f"Scored on {st['evaluated_spots']} {st['evaluated']}.", "",
                  "| method | FOSCTTM (0 best, 0.5 random) | label transfer rna->msi | label transfer msi->rna | train s "
                  "| peak MB |", "|---|---|---|---|---|---|"]
        for k, label in (("scmodal", "scMODAL"), ("harmony_linked_pca", "Harmony on the PCA of the stacked linked features")):
            v = ua[k]
            lines.append(f"| {label} | {f(v['foscttm'])} | {f(v['label_transfer_rna_to_msi'])} "
                         f"| {f(v['label_transfer_msi_to_rna'])} | {f(v.get('seconds'), 1)} | {f(v.get('peak_increase_mb'), 0)} |")
    if metrics.get("claims"):
        lines += ["", "## The paper's claims on these numbers, and ours", "",
                  "The MIMA paper's three claims are marked (paper); the others are targets we set ourselves "
                  "(ours).", ""]
        for claim, v in metrics["claims"].items():
            detail = {k: (round(x, 3) if isinstance(x, float) else x) for k, x in v.items()
                      if k not in ("holds", "detail")}
            whose = "paper" if claim in PAPER_CLAIMS else "ours"
            lines.append(f"- **{claim.replace('_', ' ')}** ({whose}): {'holds' if v['holds'] else 'DOES NOT HOLD'} "
                         f"({detail})")
    if metrics.get("peers"):
        lines += ["", "## Peers: versions and parameters", ""]
        for name, rec in metrics["peers"].items():
            lines.append(f"- **{name}**: " + json.dumps(rec, default=str))
    lines += ["", f"Total time {metrics.get('seconds_total', 0):.0f} s.", ""]
    return "\n".join(lines)
