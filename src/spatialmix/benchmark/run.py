"""The benchmark run, stage by stage (:func:`iter_benchmark`), and its outputs in the project or an AnnData.

Why one file of about 450 lines: it is one run. The eight stages of :func:`iter_benchmark` (``_iter_*``) read and
fill the one ``_Run`` defined here, and the two output writers take what the stages filled; opening the inputs,
the extra sections and the report are already apart (``inputs``, ``sections``, ``report``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.benchmark.inputs import (
    DEFAULT_MODELS, SCVI_TOOLS_PEERS, Representation, _check_models, _load, _model_params, _raw, default_sources,
)
from spatialmix.benchmark.report import _claims, _other_claims, _ranking, _versions, format_benchmark, metrics_table
from spatialmix.benchmark.sections import _domain_adaptation, _unpaired, _unpaired_alignment
from spatialmix.errors import ParameterError, ProjectError
from spatialmix.progress import Progress, forward


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

    # derived once from the data, read by several stages
    @cached_property
    def samples(self) -> np.ndarray:
        return self.mmd.obs["sample"].astype(str).to_numpy()

    @cached_property
    def batches(self) -> np.ndarray:
        return self.mmd.obs[self.mmd.batch_key].astype(str).to_numpy()

    @cached_property
    def evaluated(self) -> np.ndarray:
        """The spots every representation is scored on: those with every modality measured."""
        from spatialmix.models.baselines import common_spots

        return common_spots(self.mmd)

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
            latent = mdl.get_latent_representation()
            run.reps.append(Representation(name, "model", latent, dict(res), source=name))
            if "corrected_pca" in cls.supports:  # MIMA's representation for annotation prediction (issue 14, item 6)
                run.reps.append(Representation(f"{name}_corrected_pca", "model", mdl.get_corrected_pca(seed=seed),
                                               dict(res), source=name))
            if name == "mima" and len(set(run.batches)) > 1:
                # ours, beside the PoE: Harmony (the baselines' own call) on MIMA's PoE embedding; raised scIB total
                # on STARmap, seed 7 and the bundled sample (docs/models.md, "Harmony on the PoE embedding")
                from spatialmix.models.baselines import _full, harmony

                ok = np.isfinite(latent).all(axis=1)
                run.reps.append(Representation(f"{name}_harmony", "model",
                                               _full(harmony(latent[ok], run.batches[ok], seed=seed), ok),
                                               dict(res), source=name))


def _iter_annotation_cv(run: _Run, metrics: dict):
    """Stage 3: every representation's annotation prediction (leave-one-sample-out and 4-fold)."""
    from spatialmix.evaluate import annotations as ann_mod
    from spatialmix.models import MODELS
    samples, labels, evaluated = run.samples, run.labels, run.evaluated
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
    yield from _iter_annotation_choice(run, metrics, schemes)
    if run.first is not None:
        metrics["classifier"]["excluded_classes"] = run.first.excluded
        metrics["classifier"]["classes"] = run.first.classes


def _iter_annotation_choice(run: _Run, metrics: dict, schemes: tuple):
    """Stage 3, continued: ``<model>_corrected_pca-with-measured`` for every corrected-feature PCA: in each fold
    the corrected PCA alone, beside one modality's measured features (the ``raw_<m>`` inputs) or beside all of them,
    whichever scores
    best in an inner cross-validation on that fold's training samples (``iter_cross_validate`` with candidates;
    docs/models.md, "Annotation representation"). Scored like the others, with each fold's choice; not an
    embedding, so it has no scIB row."""
    from spatialmix.evaluate import annotations as ann_mod

    raw = {r.name: r.X for r in run.reps if r.kind == "raw" and r.name != "raw_concat"}
    bases = [r for r in run.reps if r.kind == "model" and r.name.endswith("_corrected_pca")]
    for i, rep in enumerate(bases if schemes and raw else []):
        name = rep.name + ann_mod.MEASURED
        combos = [[k] for k in raw] + ([list(raw)] if len(raw) > 1 else [])  # each modality, then all of them
        candidates = {rep.name: rep.X, **{ann_mod.JOIN.join([rep.name, *c]): np.hstack([rep.X, *(raw[k] for k in c)])
                                          for c in combos}}
        entry = {"kind": rep.kind, "source": rep.source, "dims": int(rep.X.shape[1]), "candidates": list(candidates),
                 **rep.resources}
        run.results[name] = {}
        for scheme in schemes:
            r = yield from forward(ann_mod.iter_cross_validate(
                candidates, run.labels, run.samples, representation=name, scheme=scheme, exclude=run.exclude,
                mask=run.evaluated, n_folds=run.cv_folds, options=run.options),
                f"annotations, chosen per fold {i + 1}/{len(bases)} ")
            run.results[name][scheme] = r
            entry[scheme] = {k: v for k, v in r.to_dict().items() if k not in ("representation", "options")}
            entry[scheme]["confusion"] = json.loads(r.confusion.to_json(orient="split"))
            entry[scheme]["chosen"] = r.options["chosen"]
            entry[scheme]["inner_f1"] = r.options["inner_f1"]
        metrics["representations"][name] = entry


def _iter_scib(run: _Run, metrics: dict):
    """Stage 4: scIB bio-conservation and batch-correction scores of every representation."""
    from spatialmix.evaluate.metrics import representation, scib_benchmark
    labels, batches, seed = run.labels, run.batches, run.seed
    if labels is None or len(set(batches)) < 2:
        metrics["not_scored"]["scib"] = "no label column" if labels is None else "one batch only"
        return
    evaluated = run.evaluated
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

    transfer_cache: dict = {}
    for name, mdl in run.trained.items():
        if MODELS[name].needs_labels:
            yield Progress(f"{name}: target-sample predictions vs the source-trained ensembles", 0, 1)
            da, da_results = _domain_adaptation(name, mdl, run.mmd, run.reps, run.labels, run.samples,
                                                run.evaluated, run.sources, run.exclude, run.options,
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
    run = _Run(mmd=mmd, sdata=sdata, spatial=spatial, annotation_key=mmd.annotation_key, models=models,
               sources=list(source_samples or []), exclude=exclude, options=options, seed=seed, cv_folds=cv_folds,
               train=train, model_params=model_params)
    run.sources = run.sources or default_sources(run.samples)

    yield from _iter_representations(run)  # stage 2

    rows = "spots" if spatial else getattr(mmd, "row_kind", "cells")
    metrics: dict[str, Any] = {
        "data": str(data) if not isinstance(data, MultiModalData) else repr(data), "spatial": spatial,
        "input": repr(mmd), "preprocessing": dict(mmd.preprocessing), "annotation_key": run.annotation_key,
        "batch_key": batch_key if (batch_key and not spatial) else mmd.batch_key, "models": models,
        "train": {name: run.train_for(name) for name in models if name in MODELS or name == "mima_unimodal"},
        "peers": run.peer_records,
        "source_samples": run.sources,
        "samples": sorted(set(run.samples)), "n_batches": int(len(set(run.batches))),
        "n_spots": int(mmd.n_obs), "n_evaluated_spots": int(run.evaluated.sum()), "rows": rows,
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
