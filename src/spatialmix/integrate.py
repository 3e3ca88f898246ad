"""Train a model on a prepared project, write its outputs back, measure it and draw the figures.

:func:`iter_integrate` is the second half of the main job (``spatialmix demo`` / ``spatialmix run``): build
:class:`~spatialmix.data.MultiModalData`, train the model with the one engine, save the model, write every
output into the SpatialData (:mod:`spatialmix.results`), compute ``metrics.json`` and draw per-sample PNGs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.conventions import DEMO_TRAIN  # noqa: F401 - re-exported (defined low, the models use it)
from spatialmix.progress import Progress, forward



def _truth_regions(truth_dir, obs: pd.DataFrame):
    if truth_dir is None:
        return None
    from spatialmix.errors import MissingFileError
    from spatialmix.simulate import load_truth

    try:
        return load_truth(truth_dir, obs)["region"]
    except MissingFileError:  # real data: no truth/ folders
        return None


def evaluate_integration(data, model, *, reference_labels=None, annotation_key: str | None = None,
                         key: str = "mima") -> dict[str, Any]:
    """Batch mixing and region separation of the raw inputs, the corrected MSI and the PoE embedding, and
    translation fidelity on the model's held-out (validation) spots against the class-mean baseline.

    ``reference_labels``: the true regions (simulated data) or, by default, the annotation column.
    """
    from spatialmix.evaluate.metrics import class_mean_baseline, integration_scores, translation_scores

    obs = data.obs
    supports = set(getattr(model, "supports", ()))
    labels = reference_labels if reference_labels is not None else (
        obs[annotation_key] if annotation_key and annotation_key in obs else None)
    out: dict[str, Any] = {"labels": "truth regions" if reference_labels is not None else annotation_key}
    batches = obs[data.batch_key].astype(str).to_numpy()
    if labels is not None and len(set(batches)) > 1:
        lab = pd.Series(np.asarray(labels, dtype=object), index=obs.index)
        reps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        every = np.ones(len(obs), bool)
        for m in model.modalities:
            reps[f"raw_{m}"] = (data.dense(m), data.mask[m])
        z = model.get_latent_representation()
        reps[f"{key}_poe"] = (z, every)
        if "msi" in model.modalities and "corrected" in supports:
            msi = data.mask["msi"]
            reps[f"{key}_corrected_msi"] = (model.get_corrected("msi"), msi)
            reps[f"{key}_poe_msi_spots"] = (z, msi)
        scores = {}
        for name, (X, keep) in reps.items():
            scores[name] = integration_scores(X[keep], batches[keep], lab[keep].to_numpy())
        out["integration"] = scores
    if (model.split_ is not None and "validation" in model.split_ and "translations" in supports
            and annotation_key and annotation_key in obs and len(model.modalities) > 1):
        val, train = model.split_["validation"], model.split_["train"]
        ann = obs[annotation_key].astype(str).to_numpy()
        trans = {}
        for target in model.modalities:
            sources = [m for m in model.modalities if m != target]
            X = data.dense(target)
            ok = data.mask[target]
            v, t = val[ok[val]], train[ok[train]]
            if len(v) < 10:
                continue
            if getattr(model, "single_source_translation", False):
                sources = sources[:1]
            pred = model.translate(sources, target)
            v = v[np.isfinite(pred[v]).all(axis=1)]  # a model may leave spots without its source(s) NaN
            if len(v) < 10:
                continue
            base = class_mean_baseline(X[t], ann[t], ann[v])
            trans[f"{'+'.join(sources)}->{target}"] = {
                **translation_scores(pred[v], X[v], base, top=1000), "n_heldout_spots": int(len(v))}
        out["translation_heldout"] = trans
    return out


def iter_integrate(sdata, out: str | Path, *, model: str = "mima", model_params: dict | None = None,
                   train: dict | None = None, annotation_key: str | None = "pathologist", truth_dir=None,
                   modalities=None, figures: bool = True, key: str | None = None,
                   results_options: dict | None = None, metrics: bool = True):
    """Train ``model`` on the project, write outputs into ``sdata``, save the model, metrics and figures.

    Returns a report dict (model, training curve summary, metrics, output paths). ``sdata`` is modified in
    place (results added); the caller saves it.
    """
    from spatialmix.project import jsonable

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mdl = yield from iter_fit(sdata, model=model, model_params=model_params, train=train,
                              annotation_key=annotation_key, modalities=modalities, key=key,
                              results_options=results_options, timings=(timings := {}))
    key = key or mdl.name
    data = mdl.data
    ann = data.annotation_key
    train_s = timings.get("train", time.perf_counter() - t0)
    mdl.save(out / "model", overwrite=True)
    yield Progress("metrics", 0, 1)
    scores: dict[str, Any] = {}
    if metrics:
        truth = _truth_regions(truth_dir, data.obs)
        scores = evaluate_integration(data, mdl, reference_labels=truth, annotation_key=ann, key=key)
    curve = mdl.training_curve()
    scores["train_seconds"] = round(train_s, 2)
    scores["epochs"] = len(curve)
    scores["final_loss"] = float(curve["loss"].iloc[-1]) if len(curve) else None
    scores["final_val_loss"] = float(curve["val_loss"].iloc[-1]) if len(curve) else None
    scores["schedule"] = (mdl.train_config or {}).get("schedule")
    curve.to_csv(out / "training_curve.csv", index=False)
    sdata.attrs.setdefault("spatialmix", {}).setdefault("models", {}).setdefault(key, {})["metrics"] = scores
    (out / "metrics.json").write_text(json.dumps(jsonable(scores), indent=2))
    yield Progress("metrics", 1, 1)
    pngs = []
    if figures:
        from spatialmix.plotting import iter_save_result_figures, save_training_curve

        pngs = yield from iter_save_result_figures(sdata, data, out, key=key)
        if len(curve):
            pngs.append(save_training_curve(mdl, out / "training_curve.png"))
    return {"model": repr(mdl), "metrics": scores, "figures": [str(p) for p in pngs],
            "model_dir": str(out / "model"), "metrics_json": str(out / "metrics.json")}


def iter_fit(sdata, *, model: str = "mima", model_params: dict | None = None, train: dict | None = None,
             modalities=None, batch_key: str = "batch", annotation_key: str | None = "pathologist",
             key: str | None = None, stop=None, results_options: dict | None = None, timings: dict | None = None):
    """Train a model on a project and write its outputs into it (what the napari Integrate widget runs).

    Builds the MSI / H&E spot tables first when the project has none yet
    (:func:`spatialmix.pipeline.iter_build_tables`). ``stop`` (a ``threading.Event``) ends training after the
    current step, keeping the last completed epoch, whose outputs are then written. Returns the model.
    """
    from spatialmix.data import MultiModalData
    from spatialmix.errors import ParameterError, TrainingError
    from spatialmix.models import MODELS
    from spatialmix.pipeline import iter_build_tables, needs_tables
    from spatialmix.results import iter_write_results

    if model not in MODELS:
        raise ParameterError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    timings = {} if timings is None else timings
    ann_key = annotation_key or "pathologist"
    if needs_tables(sdata):
        yield from iter_build_tables(sdata, annotation_key=ann_key)
    ann = annotation_key if annotation_key and annotation_key in sdata.tables["rna"].obs else None
    data = MultiModalData.from_spatialdata(sdata, modalities=modalities, batch_key=batch_key, annotation_key=ann)
    mdl = MODELS[model](data, **_sources_as_batches(MODELS[model], data, model_params))
    t0 = time.perf_counter()
    yield from mdl.iter_train(stop=stop, **(train or {}))
    timings["train"] = time.perf_counter() - t0
    if not mdl.is_trained:
        raise TrainingError("training was stopped before its first epoch finished; there is nothing to write. "
                            "Train again and stop later")
    yield from forward(iter_write_results(sdata, mdl, key=key or mdl.name, **(results_options or {})), "")
    return mdl


def iter_load_model(sdata, path):
    """Load a model saved by ``model.save(dir)`` onto a project's tables (checked against the features and
    batches it was trained on) and write its outputs into the project, as training would have; returns the
    model. The model class, modalities, batch and annotation columns come from the saved configuration."""
    import json
    from pathlib import Path

    from spatialmix.data import MultiModalData
    from spatialmix.errors import ModelError
    from spatialmix.models import MODELS
    from spatialmix.models._base import CONFIG
    from spatialmix.progress import Progress
    from spatialmix.results import iter_write_results

    yield Progress("load model", 0, 1, str(path))
    cfg_file = Path(path) / CONFIG
    if not cfg_file.exists():
        raise ModelError(f"{path} holds no saved model ({CONFIG} missing); choose the folder a model was saved to")
    config = json.loads(cfg_file.read_text())
    name = config.get("model", "mima")
    if name not in MODELS:
        raise ModelError(f"{path} holds a {name!r} model, which this version cannot load (it has {sorted(MODELS)})")
    ann = config.get("annotation_key")
    ann = ann if ann and "rna" in sdata.tables and ann in sdata.tables["rna"].obs else None
    data = MultiModalData.from_spatialdata(sdata, modalities=config.get("modalities"),
                                           batch_key=config.get("batch_key", "batch"), annotation_key=ann)
    model = MODELS[name].load(path, data)
    yield Progress("load model", 1, 1, str(path))
    yield from iter_write_results(sdata, model)
    return model


def _sources_as_batches(cls, data, params: dict | None) -> dict:
    """``source_samples`` for a model that takes ``source_batches`` (the calibration): the batches of those
    samples, so the widget and the configuration name labelled sources the same way for every model."""
    params = dict(params or {})
    defaults = cls.defaults
    if "source_samples" in params and "source_samples" not in defaults and "source_batches" in defaults:
        samples = [str(x) for x in params.pop("source_samples")]
        obs = data.obs
        keep = obs["sample"].astype(str).isin(samples)
        params.setdefault("source_batches", [str(b) for b in pd.unique(obs.loc[keep, data.batch_key].astype(str))])
    return params


def integrate(sdata, out, *, progress=False, **kwargs):
    from spatialmix.progress import run

    return run(iter_integrate(sdata, out, **kwargs), progress=progress)


def warm_up(seed: int = 0) -> float:
    """Import the training stack (torch, Lightning Fabric) and compile UMAP's numba code on a 200-point input.

    Importing and numba compilation hold Python's GIL for up to a few hundred milliseconds at a time, so when
    they first happen during training the napari event loop stalls. The Integrate widget runs this in a worker
    as soon as it opens, with UMAP in its helper process (:func:`spatialmix.results.use_umap_process`), so the
    compilation happens there. Returns the seconds it took.
    """
    t0 = time.perf_counter()
    import lightning_fabric  # noqa: F401
    import torch  # noqa: F401

    from spatialmix.models import mima  # noqa: F401
    from spatialmix.results import rgb_embedding

    rgb_embedding(np.random.default_rng(seed).normal(size=(200, 20)).astype(np.float32), seed=seed)
    return time.perf_counter() - t0
