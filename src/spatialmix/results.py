"""A trained model's outputs in the SpatialData, and per-spot results as images.

>>> write_results(sdata, model)                      # X_mima, X_mima_private, mima_corrected, ... + provenance
>>> v = spot_values(sdata, "msi", layer="mima_corrected", feature=798.54)   # nearest m/z within 20 ppm
>>> m = render_result(sdata, "P1_S1", v)             # RenderedMap: image (H, W), affine (row, col) -> (y, x) um

What is written, for a model written under ``key`` (default: the model's name, e.g. ``"mima"``):

============================================  ==================================================================
``<table>.obsm["X_<key>"]``                   shared (PoE) embedding, in every modality table of the model
``<m>.obsm["X_<key>_private"]``               private latent of modality ``m``
``<m>.layers["<key>_corrected"]``             batch-corrected reconstruction of ``m`` (dense float32)
``<table>.obsm["X_<key>_corrected_pca"]``     PCA-50 of every modality's corrected features: the representation
                                              for annotation prediction (NaN where a modality was not measured)
``<m>.layers["<key>_denoised"]``              denoised reconstruction of ``m`` (with each sample's batch latent)
``<t>.layers["<key>_from_<a>_and_<b>"]``      target ``t`` imputed from sources ``a``, ``b``
``<table>.obsm["X_<key>_rgb"]``               3D-UMAP RGB colouring of the PoE embedding, values in [0, 1]
``<table>.obsm["X_<key>_expert_weights"]``    each modality's (and the prior's) share of the PoE precision
``<table>.obsm["X_<key>_experts_rgb"]``       with three modalities: their shares as red, green, blue
``<m>.obsm["X_<m>_rgb"]``                     RGB colouring of the model input of ``m`` (NaN where not measured)
``<m>.obsm["X_<layer>_<m>_rgb"]``             RGB colouring of a layer of ``m`` (NaN where not measured)
``sdata.attrs["spatialmix"]["models"][key]``  provenance (model, parameters, features, training, versions)
``<table>.uns["spatialmix"][key]``            ``provenance_json`` (the same record as JSON) and ``history``
============================================  ==================================================================

Names only use letters, digits, ``_``, ``.`` and ``-``: SpatialData refuses to save other characters (so the
translation layers join their sources with ``_and_``, e.g. ``rna.layers["mima_from_msi_and_morphology"]``).

No value is invented: the corrected and denoised layers of a modality are NaN at spots where it was not
measured, and a translation layer is NaN where none of its sources was measured. A spot's unmeasured modality
gets values only in the translation layers (``<key>_from_<sources>``), which napari captions "imputed from …";
the tables' ``msi_covered`` / ``he_covered`` columns say which were measured. napari draws NaN spots
transparent.
Writing again under the same key replaces everything the previous write of that key put there.
"""

from __future__ import annotations

import difflib
import json
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.data import measured_only
from spatialmix.errors import ModelError, ParameterError, ProjectError, check_positive
from spatialmix.conventions import MODALITY_TABLES, translation_layer  # noqa: F401 - re-exported
from spatialmix.progress import Progress, run

#: characters SpatialData's zarr writer accepts in element and layer names
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]+$")
OUTPUTS = ("latent", "private", "corrected", "corrected_pca", "denoised", "translations", "rgb", "expert_weights",
           "labels")


def supported_outputs(model) -> list[str]:
    """The outputs of :data:`OUTPUTS` that ``model`` produces (its ``supports``; ``rgb`` needs the latent)."""
    supports = set(getattr(model, "supports", {"latent", "private", "corrected", "denoised", "translations"}))
    out = [o for o in OUTPUTS if o in supports]
    if "latent" in supports:
        out.insert(out.index("latent") + 1, "rgb")
    return out


def label_sources(model) -> list[str]:
    """The labelled source samples of a domain-adaptation model (``source_samples``, or the samples of its
    ``source_batches``)."""
    params = getattr(model, "params", {}) or {}
    if params.get("source_samples"):
        return [str(s) for s in params["source_samples"]]
    data = model.data
    if params.get("source_batches"):
        obs = data.obs
        keep = obs[data.batch_key].astype(str).isin([str(b) for b in params["source_batches"]])
        return [str(s) for s in pd.unique(obs.loc[keep, "sample"].astype(str))]
    raise ModelError(f"{type(model).__name__} predicts labels but names no labelled source samples")


# ---------------------------------------------------------------------------------------------------------------
# 3D-UMAP RGB colouring
# ---------------------------------------------------------------------------------------------------------------
_UMAP_EXECUTOR = None


def use_umap_process(enable: bool = True):
    """Run every :func:`rgb_embedding` (UMAP) in one helper process, spawned on first use and kept.

    The napari widgets turn this on. In-process, numba compiling UMAP holds Python's GIL for up to 0.7 s at a
    time (the viewer freezes), and under software OpenGL (Mesa's llvmpipe, e.g. Xvfb) the process holds two
    LLVMs, Mesa's and numba's: compiling in a worker thread while the viewer rendered hung the compilation in
    our tests. A separate process has neither problem. Returns the executor (None when turned off).
    """
    global _UMAP_EXECUTOR
    if enable and _UMAP_EXECUTOR is None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        _UMAP_EXECUTOR = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
    elif not enable and _UMAP_EXECUTOR is not None:
        _UMAP_EXECUTOR.shutdown(wait=False, cancel_futures=True)
        _UMAP_EXECUTOR = None
    return _UMAP_EXECUTOR


def rgb_embedding(X, *, n_pcs: int = 50, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """The paper's RGB colouring of spots: a 3D UMAP whose axes, min-max scaled to [0, 1], are R, G, B.

    Runs in the helper process of :func:`use_umap_process` when that is on (same result: same code, same seed).
    """
    kwargs = {"n_pcs": n_pcs, "seed": seed, "n_neighbors": n_neighbors, "min_dist": min_dist}
    if _UMAP_EXECUTOR is not None:
        # the helper gets the PCA (at most n_pcs columns), never the full matrix (e.g. 500 m/z bins per spot);
        # _rgb_embedding does the same PCA itself otherwise, so the colours are the same either way
        return _in_helper(_rgb_embedding, _reduced(np.asarray(X, dtype=np.float32), n_pcs, seed), **kwargs)
    return _rgb_embedding(X, **kwargs)


def _reduced(X: np.ndarray, n_pcs: int, seed: int) -> np.ndarray:
    """``X`` with more than ``n_pcs`` columns as its first principal components (fit on the rows without NaN;
    NaN rows stay NaN), else ``X``: the first step of :func:`_rgb_embedding`."""
    if X.ndim != 2 or X.shape[1] <= int(n_pcs) or int(n_pcs) < 3:
        return X
    ok = np.isfinite(X).all(axis=1)
    n_ok = int(ok.sum())
    if n_ok < 5:
        return X  # _rgb_embedding says what is wrong
    from sklearn.decomposition import PCA

    out = np.full((X.shape[0], min(int(n_pcs), n_ok)), np.nan, np.float32)
    out[ok] = PCA(n_components=out.shape[1], random_state=seed).fit_transform(X[ok]).astype(np.float32)
    return out


#: a helper process that uses no CPU for this long while a task waits is taken as stuck and replaced
HELPER_IDLE_S = 30.0
#: ... "no CPU": less than this many CPU seconds in that time (a busy helper uses most of a core)
HELPER_MIN_CPU_S = 0.3


def _in_helper(fn, *args, attempts: int = 3, **kwargs):
    """Run ``fn(*args, **kwargs)`` in the helper process; replace the helper when it sits idle with a task pending.

    In the GUI tests the helper sometimes never started a task it was given: the executor's pipe was fed, the
    helper waited on it with no CPU used, the result never came (seen 4 times in about 40 widget runs, most on a
    loaded machine; cause not found). Rather than waiting forever, a helper that uses (almost) no CPU for
    :data:`HELPER_IDLE_S` seconds while the task is pending is shut down and the task goes to a fresh one.
    """
    import concurrent.futures as cf

    import psutil

    global _UMAP_EXECUTOR
    for attempt in range(attempts):
        executor = use_umap_process()
        future = executor.submit(fn, *args, **kwargs)
        window_cpu, window_start = None, time.monotonic()
        while True:
            try:
                return future.result(timeout=2.0)
            except cf.TimeoutError:
                pass
            procs = [psutil.Process(pid) for pid in list(getattr(executor, "_processes", {}) or {})]
            try:
                cpu = sum(sum(pr.cpu_times()[:2]) for pr in procs)
            except psutil.Error:
                cpu = None
            if cpu is None or window_cpu is None or cpu - window_cpu > HELPER_MIN_CPU_S:
                window_cpu, window_start = cpu, time.monotonic()  # working (or just started): a new window
            elif time.monotonic() - window_start > HELPER_IDLE_S:
                if attempt + 1 < attempts:
                    warnings.warn(f"the UMAP helper process used no CPU for {HELPER_IDLE_S:.0f} s with a task "
                                  f"pending; starting a new one (attempt {attempt + 2} of {attempts})",
                                  RuntimeWarning, stacklevel=3)
                future.cancel()
                for pr in procs:
                    try:
                        pr.kill()
                    except psutil.Error:
                        pass
                executor.shutdown(wait=False, cancel_futures=True)
                _UMAP_EXECUTOR = None
                break
    from spatialmix.errors import SpatialMixError

    raise SpatialMixError(f"the UMAP helper process did not run the RGB colouring in {attempts} attempts; "
                          "turn the helper off with spatialmix.results.use_umap_process(False) and retry")


def _rgb_embedding(X, *, n_pcs: int = 50, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """The paper's RGB colouring of spots: a 3D UMAP whose axes, min-max scaled to [0, 1], are R, G, B.

    Parameters
    ----------
    X
        (n_spots, n_features) values (an embedding or features). Rows containing NaN (e.g. spots without MSI)
        are left out of the fit and come back as NaN rows.
    n_pcs
        ``X`` with more columns is reduced to this many principal components first (for speed).
    seed
        UMAP's (and PCA's) ``random_state``: the same seed gives the same colours.
    n_neighbors, min_dist
        UMAP options (capped to the number of usable rows on tiny data).

    Returns
    -------
    (n_spots, 3) float32 in [0, 1], NaN rows where ``X`` had NaN.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ParameterError(f"rgb_embedding needs a 2-D (spots x features) matrix, got shape {X.shape}")
    if int(n_pcs) < 3:
        raise ParameterError(f"n_pcs must be >= 3 (the colouring has 3 axes), got {n_pcs!r}")
    if int(n_neighbors) < 2:
        raise ParameterError(f"n_neighbors must be >= 2, got {n_neighbors!r}")
    ok = np.isfinite(X).all(axis=1)
    n_ok = int(ok.sum())
    if n_ok < 5:
        raise ParameterError(
            f"rgb_embedding needs at least 5 spots with finite values, got {n_ok} of {X.shape[0]}; "
            "check that the values are not NaN for (almost) every spot"
        )
    Z = _reduced(X, n_pcs, seed)[ok]
    import umap

    reducer = umap.UMAP(n_components=3, n_neighbors=min(int(n_neighbors), n_ok - 1), min_dist=float(min_dist),
                        random_state=seed)
    with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": that is the point
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*[Ss]pectral initialisation failed.*")
        emb = np.asarray(reducer.fit_transform(Z), dtype=np.float64)
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = np.full((X.shape[0], 3), np.nan, np.float32)
    out[ok] = np.clip((emb - lo) / span, 0.0, 1.0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# writing a model's outputs
# ---------------------------------------------------------------------------------------------------------------
def _default_translations(modalities: list[str], single_source: bool = False) -> list[tuple[list[str], str]]:
    """Every modality from all the others; models that translate from one source only (scMODAL): every
    ordered pair."""
    if len(modalities) < 2:
        return []
    if single_source:
        return [([s], t) for t in modalities for s in modalities if s != t]
    return [([s for s in modalities if s != t], t) for t in modalities]


def _normalise_translations(translations, modalities) -> list[tuple[list[str], str]]:
    out = []
    for entry in translations:
        try:
            sources, target = entry
        except (TypeError, ValueError):
            raise ParameterError(
                f"translations entries are (sources, target) pairs, e.g. (['msi', 'morphology'], 'rna'); got {entry!r}"
            ) from None
        sources = [sources] if isinstance(sources, str) else [str(s) for s in sources]
        bad = [m for m in [*sources, target] if m not in modalities]
        if bad:
            raise ParameterError(f"translation {sources} -> {target!r} names modalities {bad} that the model does not "
                                 f"integrate (it has {modalities})")
        out.append((sources, str(target)))
    return out


def _normalise_rgb_of(rgb_of, modalities) -> list[tuple[str, str]]:
    out = []
    for entry in rgb_of:
        try:
            table, source = entry
        except (TypeError, ValueError):
            raise ParameterError(f"rgb_of entries are (table, 'X' or layer name) pairs, e.g. ('msi', 'X'); "
                                 f"got {entry!r}") from None
        if table not in modalities:
            raise ParameterError(f"rgb_of names table {table!r}, which is not a modality of the model ({modalities})")
        out.append((str(table), str(source)))
    return out


def _rgb_name(table: str, source: str) -> str:
    return f"X_{table}_rgb" if source == "X" else f"X_{source}_{table}_rgb"


def _history_frame(model) -> pd.DataFrame:
    """The training curve as a numeric DataFrame (None -> NaN) that AnnData's zarr writer accepts."""
    df = model.training_curve().reset_index(drop=True)
    for col in df.columns:
        conv = pd.to_numeric(df[col], errors="coerce")
        if conv.notna().sum() or df[col].isna().all():
            df[col] = conv.astype(np.int64) if col == "epoch" and conv.notna().all() else conv.astype(np.float64)
        else:
            df[col] = df[col].astype(str)
    df.columns = [str(c) for c in df.columns]
    df.index = df.index.astype(str)
    return df


def _remove_previous(sdata, key: str) -> None:
    """Delete what an earlier write under ``key`` put into the tables (from its provenance record)."""
    old = sdata.attrs.get("spatialmix", {}).get("models", {}).get(key)
    if not isinstance(old, dict):
        return
    for table, slots in (old.get("outputs") or {}).items():
        if table not in sdata.tables:
            continue
        ad = sdata.tables[table]
        for name in slots.get("obsm", []):
            if name in ad.obsm:
                del ad.obsm[name]
        for name in slots.get("layers", []):
            if name in ad.layers:
                del ad.layers[name]
        sm = ad.uns.get("spatialmix")
        if isinstance(sm, dict) and key in sm:
            del sm[key]


def iter_write_results(
    sdata,
    model,
    *,
    key: str | None = None,
    outputs: Sequence[str] | None = None,
    translations: Sequence[tuple[Sequence[str] | str, str]] | None = None,
    rgb_of: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
):
    """Generator: write a trained model's outputs into ``sdata`` (see the module docstring for the names).

    Parameters
    ----------
    sdata
        The project the model was trained on (its ``rna`` / ``msi`` / ``morphology`` tables).
    model
        A trained model (e.g. :class:`spatialmix.models.MIMA`) holding the data it was trained on.
    key
        Prefix of every name written (default: the model's name, ``"mima"``).
    outputs
        Which outputs to write, any of ``"latent"``, ``"private"``, ``"corrected"``, ``"denoised"``,
        ``"translations"``, ``"rgb"``, ``"expert_weights"``, ``"labels"`` (default: every output the model supports,
        :func:`supported_outputs`). ``"labels"`` writes the model's own predictions for its target samples as
        ``pred_<key>`` / ``pred_<key>_confidence`` / ``agree_<key>`` with their scores, like
        :func:`spatialmix.evaluate.annotations.write_predictions`.
    translations
        ``[(sources, target), ...]`` to impute; default: every modality from all the others.
    rgb_of
        ``[(table, "X" | layer), ...]``: extra RGB colourings of a table's model input (``"X"``) or of one of its
        layers, NaN on spots where the modality is not measured. Default: ``[("msi", "X"),
        ("msi", "<key>_corrected")]`` when MSI is a modality.
    seed
        Seed of the UMAP behind the RGB colourings.

    Yields :class:`~spatialmix.progress.Progress` events (one per output) and returns ``sdata``. Nothing is
    written until every output is computed, so an error leaves ``sdata`` as it was.
    """
    from spatialmix.models._base import versions
    from spatialmix.project import jsonable, spatialmix_attrs

    key = getattr(model, "name", None) if key is None else key
    if not isinstance(key, str) or not _NAME_OK.match(key):
        raise ParameterError(f"key must be a non-empty name of letters, digits, '_', '.' or '-' (SpatialData cannot "
                             f"save other characters), got {key!r}")
    if outputs is None:
        outputs = supported_outputs(model)
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:
        raise ParameterError(f"unknown output(s) {unknown}; choose from {list(OUTPUTS)}")
    unsupported = [o for o in outputs if o not in supported_outputs(model)]
    if unsupported:
        raise ModelError(f"{type(model).__name__} does not produce {unsupported}; it provides "
                         f"{supported_outputs(model)}")
    if not getattr(model, "is_trained", False):
        raise ModelError(f"cannot write the results of {type(model).__name__}: the model is not trained yet. "
                         "Call model.train(...) first, or load a trained model with Model.load(folder, data)")
    data = getattr(model, "data", None)
    if data is None:
        raise ModelError(f"{type(model).__name__} was loaded without data; load it with Model.load(folder, data) "
                         "(data = MultiModalData.from_spatialdata(sdata)) to write its results")
    modalities = list(model.modalities)
    missing = [m for m in modalities if m not in sdata.tables]
    if missing:
        raise ProjectError(f"the model integrates {modalities}, but table(s) {missing} are not in this project "
                           f"(it has {sorted(sdata.tables)}); write the results into the project the model was "
                           "trained on")
    for m in modalities:
        names = sdata.tables[m].obs_names
        if not names.equals(pd.Index(data.obs.index)):
            raise ProjectError(
                f"table {m!r} ({len(names)} spots) does not hold the spots the model was trained on "
                f"({len(data.obs)} spots) in the same order; write the results into the project the data was built "
                "from, or rebuild the data with MultiModalData.from_spatialdata(sdata)"
            )
    if "translations" in outputs:
        pairs = _default_translations(modalities, getattr(model, "single_source_translation", False)) \
            if translations is None else \
            _normalise_translations(translations, modalities)
    else:
        pairs = []
    if "rgb" in outputs:
        if rgb_of is None:
            rgb_pairs = []
            if "msi" in modalities:
                rgb_pairs.append(("msi", "X"))
                if "corrected" in outputs or f"{key}_corrected" in sdata.tables["msi"].layers:
                    rgb_pairs.append(("msi", f"{key}_corrected"))
        else:
            rgb_pairs = _normalise_rgb_of(rgb_of, modalities)
    else:
        rgb_pairs = []

    # the plan: one step per output
    steps: list[tuple[str, Any]] = []
    if "latent" in outputs or "rgb" in outputs:
        steps.append(("latent", None))
    steps += [("private", m) for m in modalities if "private" in outputs]
    steps += [("corrected", m) for m in modalities if "corrected" in outputs]
    if "corrected_pca" in outputs:
        steps.append(("corrected_pca", None))
    steps += [("denoised", m) for m in modalities if "denoised" in outputs]
    steps += [("translation", p) for p in pairs]
    if "rgb" in outputs:
        steps.append(("rgb", None))
    steps += [("rgb_of", p) for p in rgb_pairs]
    if "expert_weights" in outputs:
        steps.append(("expert_weights", None))
    if "labels" in outputs:
        steps.append(("labels", None))
    stage = f"write results ({key})"
    total = len(steps) + 1

    staged: dict[tuple[str, str, str], np.ndarray] = {}  # (table, "obsm" | "layers", name) -> values
    n_obs = len(data.obs)

    def put(table, slot, name, values):
        values = np.asarray(values, dtype=np.float32)
        if values.shape[0] != n_obs:
            raise ModelError(f"{type(model).__name__} returned {values.shape[0]} rows for {name!r}, the table "
                             f"{table!r} has {n_obs} spots")
        if slot == "layers" and values.shape != sdata.tables[table].shape:
            raise ModelError(f"{name!r} has shape {values.shape}, the table {table!r} has {sdata.tables[table].shape}; "
                             "the table's features changed since the model was trained")
        staged[(table, slot, name)] = values

    z = None
    label_result = None
    expert_columns: list[str] | None = None
    # a model that computes several outputs from one encoding of each chunk (MIMA.get_outputs) gets them all in
    # one pass: the demo's 11 model outputs cost one pass over the spots, not 11
    def pass_key(what, arg):  # get_outputs' key of a step (a translation's sources as a tuple)
        return (what, (tuple(arg[0]), arg[1]) if what == "translation" else arg)

    one_pass: dict = {}
    batched = [pass_key(w, a) for w, a in steps
               if w in ("latent", "private", "corrected", "denoised", "translation", "expert_weights")]
    offset = 0
    if hasattr(model, "get_outputs") and len(batched) > 1:
        offset, total = 1, total + 1
        yield Progress(stage, 0, total, f"{len(batched)} outputs in one inference pass")
        one_pass = model.get_outputs(batched)

    def computed(what, arg, single, mods=None):
        """The step's value from the one pass, else ``single()``; with ``mods``, NaN where none of them was
        measured (an array of the one pass is ours: masked in place, no second copy of a layer)."""
        k = pass_key(what, arg)
        if k in one_pass:
            value = one_pass.pop(k)
            return value if mods is None else measured_only(np.asarray(value, dtype=np.float32), data, mods,
                                                            inplace=True)
        return single() if mods is None else measured_only(single(), data, mods)

    for i, (what, arg) in enumerate(steps):
        if what == "latent":
            msg = "shared (PoE) embedding"
        elif what in ("private", "corrected", "denoised"):
            msg = f"{what} {arg}"
        elif what == "translation":
            msg = f"{arg[1]} from {'+'.join(arg[0])}"
        elif what == "rgb":
            msg = "RGB of the shared embedding (3D UMAP)"
        elif what == "labels":
            msg = "predicted labels of the target samples"
        elif what == "expert_weights":
            msg = "expert weights (PoE precision shares)"
        elif what == "corrected_pca":
            msg = "PCA of the corrected features (for annotation prediction)"
        else:
            msg = f"RGB of {arg[0]} {arg[1]} (3D UMAP)"
        yield Progress(stage, i + offset, total, msg)
        if what == "latent":
            z = computed("latent", None, model.get_latent_representation)
            if "latent" in outputs:
                for m in modalities:
                    put(m, "obsm", f"X_{key}", z)
        elif what == "private":
            put(arg, "obsm", f"X_{key}_private",
                computed("private", arg, lambda: model.get_latent_representation("private", arg)))
        elif what == "corrected":
            put(arg, "layers", f"{key}_corrected",
                computed("corrected", arg, lambda: model.get_corrected(arg), [arg]))
        elif what == "corrected_pca":
            # the corrected layers just computed are not decoded again (None: computed by the model)
            have = {m: staged[(m, "layers", f"{key}_corrected")] for m in modalities
                    if (m, "layers", f"{key}_corrected") in staged}
            zc = model.get_corrected_pca(corrected=have or None)
            for m in modalities:
                put(m, "obsm", f"X_{key}_corrected_pca", zc)
        elif what == "denoised":
            put(arg, "layers", f"{key}_denoised",
                computed("denoised", arg, lambda: model.get_denoised(arg), [arg]))
        elif what == "translation":
            sources, target = arg
            put(target, "layers", translation_layer(key, sources),
                computed("translation", arg, lambda: model.translate(sources, target), sources))
        elif what == "labels":
            from spatialmix.evaluate.annotations import PAPER_EXCLUDED, score_predictions

            if data.annotation_key is None:
                raise ModelError(f"{type(model).__name__} was trained without an annotation column; "
                                 "there are no labels to compare its predictions with")
            pred = model.predict_labels()
            label_result = score_predictions(
                pred["label"].astype(object).to_numpy(), pred["confidence"].to_numpy(float), data.labels,
                data.obs["sample"].astype(str).to_numpy(), source_samples=label_sources(model),
                representation=key, index=data.obs.index,
                exclude=model.params["exclude"] if model.params.get("exclude") is not None else PAPER_EXCLUDED)
        elif what == "expert_weights":
            weights = computed("expert_weights", None, model.get_expert_weights)
            expert_columns = [str(c) for c in weights.columns]
            w = weights.to_numpy(np.float32)
            for m in modalities:
                put(m, "obsm", f"X_{key}_expert_weights", w)
            if len(modalities) == 3:  # red / green / blue = each modality's share among the three
                shares = w[:, :3] / np.maximum(w[:, :3].sum(axis=1, keepdims=True), 1e-12)
                for m in modalities:
                    put(m, "obsm", f"X_{key}_experts_rgb", shares)
        elif what == "rgb":
            rgb = rgb_embedding(z, seed=seed)
            for m in modalities:
                put(m, "obsm", f"X_{key}_rgb", rgb)
        else:
            table, source = arg
            if source == "X":
                values = data.dense(table)
            elif (table, "layers", source) in staged:
                values = staged[(table, "layers", source)]
            elif source in sdata.tables[table].layers:
                layer = sdata.tables[table].layers[source]
                values = np.asarray(layer.toarray() if hasattr(layer, "toarray") else layer, dtype=np.float32)
            else:
                raise ParameterError(f"rgb_of: table {table!r} has no layer {source!r} (layers: "
                                     f"{sorted(sdata.tables[table].layers)}); use 'X' for the model input")
            values = np.array(values, dtype=np.float32, copy=True)
            values[~np.asarray(data.mask[table], bool)] = np.nan
            put(table, "obsm", _rgb_name(table, source), rgb_embedding(values, seed=seed))

    # provenance
    written: dict[str, dict[str, list[str]]] = {m: {"obsm": [], "layers": []} for m in modalities}
    for table, slot, name in staged:
        written[table][slot].append(name)
    curve = model.training_curve()
    cfg = dict(getattr(model, "train_config", {}) or {})
    record = jsonable({
        "key": key,
        "model": model.name,
        "class": type(model).__name__,
        "params": model.params,
        "modalities": modalities,
        "n_features": {m: len(model.var_names[m]) for m in modalities},
        "features": {m: [str(v) for v in model.var_names[m]] for m in modalities},
        "batches": [str(b) for b in model.batches],
        "batch_key": getattr(data, "batch_key", "batch"),
        "train_config": cfg,
        "seed": cfg.get("seed"),
        "model_seed": model.params.get("seed"),
        "rgb_seed": seed,
        "stopped_early": bool(getattr(model, "stopped_early", False)),
        "versions": versions(),
        "outputs": written,
        "translations": [{"sources": s, "target": t, "layer": translation_layer(key, s)} for s, t in pairs],
        "rgb_of": [{"table": t, "source": s, "obsm": _rgb_name(t, s)} for t, s in rgb_pairs],
        "expert_weights": None if expert_columns is None else {
            "obsm": f"X_{key}_expert_weights", "columns": expert_columns,
            "rgb": f"X_{key}_experts_rgb" if len(modalities) == 3 else None},
        "labels": None if label_result is None else {
            "column": f"pred_{key}", "source_samples": label_sources(model), **label_result.summary},
        "training_curve": curve.to_dict("records"),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    history = _history_frame(model)
    yield Progress(stage, len(steps) + offset, total, "write into the tables")

    # write (only now: an error above leaves sdata untouched)
    _remove_previous(sdata, key)
    for (table, slot, name), values in staged.items():
        getattr(sdata.tables[table], slot)[name] = values
    prov_json = json.dumps(record)
    for m in modalities:
        uns = sdata.tables[m].uns
        if not isinstance(uns.get("spatialmix"), dict):
            uns["spatialmix"] = {}
        uns["spatialmix"][key] = {"provenance_json": prov_json, "history": history.copy()}
    if label_result is not None:
        from spatialmix.evaluate.annotations import write_predictions

        write_predictions(sdata, label_result, name=key, annotation_key=data.annotation_key, tables=modalities)
    spatialmix_attrs(sdata).setdefault("models", {})[key] = record
    yield Progress(stage, total, total, f"wrote {len(staged)} result(s) into {modalities}")
    return sdata


def write_results(sdata, model, *, progress=False, **options):
    """Write a trained model's outputs into ``sdata`` (see :func:`iter_write_results`); returns ``sdata``."""
    return run(iter_write_results(sdata, model, **options), progress=progress)


def provenance(sdata, key: str = "mima") -> dict:
    """The provenance record of the results written under ``key`` (raises ProjectError when there are none)."""
    rec = sdata.attrs.get("spatialmix", {}).get("models", {}).get(key)
    if rec is None:
        for table in MODALITY_TABLES:
            if table in sdata.tables:
                sm = sdata.tables[table].uns.get("spatialmix", {})
                if isinstance(sm, dict) and key in sm:
                    return json.loads(sm[key]["provenance_json"])
        have = sorted(sdata.attrs.get("spatialmix", {}).get("models", {}))
        raise ProjectError(f"no results written under {key!r} in this project (it has {have or 'none'}); "
                           "write them with spatialmix.results.write_results(sdata, model)")
    return rec


# ---------------------------------------------------------------------------------------------------------------
# picking one per-spot result
# ---------------------------------------------------------------------------------------------------------------
def _mz_values(ad) -> np.ndarray | None:
    if "mz" in ad.var:
        mz = pd.to_numeric(ad.var["mz"], errors="coerce").to_numpy(float)
    else:
        mz = pd.to_numeric(pd.Series(ad.var_names), errors="coerce").to_numpy(float)
    return mz if np.isfinite(mz).any() else None


def _as_float(feature) -> float | None:
    if isinstance(feature, (bool, np.bool_)):
        return None
    if isinstance(feature, (int, float, np.integer, np.floating)):
        return float(feature)
    try:
        return float(str(feature))
    except ValueError:
        return None


def _pick_feature(ad, table: str, feature, ppm: float) -> int:
    names = ad.var_names
    if isinstance(feature, str) and feature in names:
        return int(names.get_loc(feature))
    target = _as_float(feature)
    mz = _mz_values(ad) if target is not None else None
    if target is not None and mz is not None and target > 0:
        dev = np.abs(mz - target) / target * 1e6
        dev = np.where(np.isfinite(dev), dev, np.inf)
        best = int(np.argmin(dev))
        if dev[best] <= ppm:
            return best
        near = np.argsort(dev)[:5]
        close = ", ".join(f"{names[j]} ({dev[j]:.0f} ppm)" for j in near)
        raise ParameterError(f"no m/z within {ppm:g} ppm of {target:g} in table {table!r} (nearest: {close}); "
                             "pass a larger ppm= or one of these names")
    close = difflib.get_close_matches(str(feature), [str(n) for n in names], n=5, cutoff=0.6)
    hint = f"close matches: {close}" if close else f"e.g. {[str(n) for n in names[:5]]}"
    raise ParameterError(f"feature {feature!r} is not in table {table!r} ({len(names)} features; {hint})")


def spot_values(sdata, table: str, *, layer: str | None = None, obsm: str | None = None, feature=None,
                column: str | None = None, ppm: float = 20.0):
    """One per-spot result of a table, aligned with its rows (index = ``obs_names``).

    Give exactly one of:

    - ``feature`` (with optional ``layer``): a feature of ``X`` or of a layer, by name; for MSI also a float m/z
      (or its text), matched to the nearest feature within ``ppm``. Returns a Series named after the feature.
    - ``obsm``: all columns of an ``obsm`` matrix, as a DataFrame (``R``, ``G``, ``B`` for an RGB colouring).
    - ``column``: an ``obs`` column, as a Series.
    """
    if table not in sdata.tables:
        raise ProjectError(f"no table {table!r} in this project (it has {sorted(sdata.tables)})")
    ad = sdata.tables[table]
    given = [name for name, v in (("feature", feature), ("obsm", obsm), ("column", column)) if v is not None]
    if len(given) != 1:
        raise ParameterError(f"spot_values needs exactly one of feature= (with optional layer=), obsm= or column=; "
                             f"got {given or 'none'}")
    if layer is not None and feature is None:
        raise ParameterError(f"layer={layer!r} needs feature= (which feature of the layer to return)")
    if column is not None:
        if column not in ad.obs:
            raise ParameterError(f"table {table!r} has no obs column {column!r} (columns: {list(ad.obs.columns)})")
        return ad.obs[column].copy()
    if obsm is not None:
        if obsm not in ad.obsm:
            raise ParameterError(f"table {table!r} has no obsm {obsm!r} (obsm: {sorted(ad.obsm)}); "
                                 "write model results with spatialmix.results.write_results first")
        mat = ad.obsm[obsm]
        if isinstance(mat, pd.DataFrame):
            return mat.copy()
        mat = np.asarray(mat.toarray() if hasattr(mat, "toarray") else mat)
        if mat.ndim == 1:
            mat = mat[:, None]
        cols = ["R", "G", "B"] if obsm.endswith("_rgb") and mat.shape[1] == 3 else \
            [f"{obsm}_{i}" for i in range(mat.shape[1])]
        return pd.DataFrame(mat, index=ad.obs_names.copy(), columns=cols)
    ppm = check_positive("ppm", ppm)
    if layer is None:
        mat = ad.X
    elif layer in ad.layers:
        mat = ad.layers[layer]
    else:
        raise ParameterError(f"table {table!r} has no layer {layer!r} (layers: {sorted(ad.layers)})")
    j = _pick_feature(ad, table, feature, ppm)
    col = mat[:, j]
    col = np.asarray(col.toarray() if hasattr(col, "toarray") else col).ravel()
    return pd.Series(col, index=ad.obs_names.copy(), name=str(ad.var_names[j]))


# ---------------------------------------------------------------------------------------------------------------
# rasterising per-spot values
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class RenderedMap:
    """Per-spot values rasterised in a sample's micrometre frame.

    ``image`` is (H, W) or (H, W, C) float32 (NaN outside spots); ``affine`` (3x3) maps ``[row, col, 1]`` to
    ``[y_um, x_um, 1]`` with pixel centres at integer indices (napari's ``affine`` for an Image layer in the
    sample's coordinate system). ``categories`` names the codes of a categorical map.
    """

    image: np.ndarray
    bounds: tuple[float, float, float, float]
    resolution_um: float
    affine: np.ndarray
    sample: str = ""
    name: str = ""
    categories: list[str] | None = None

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """matplotlib ``imshow`` extent (left, right, bottom, top) in um: pixel edges, half a pixel around centres."""
        h, w = self.image.shape[:2]
        r = self.resolution_um
        x0, y0 = self.affine[1, 2], self.affine[0, 2]
        return (x0 - r / 2, x0 + (w - 0.5) * r, y0 + (h - 0.5) * r, y0 - r / 2)


def _spot_table(sdata, table: str | None):
    if table is not None:
        if table not in sdata.tables:
            raise ProjectError(f"no table {table!r} in this project (it has {sorted(sdata.tables)})")
        return sdata.tables[table]
    for name in MODALITY_TABLES:
        if name in sdata.tables:
            return sdata.tables[name]
    raise ProjectError(f"no spot table ({', '.join(MODALITY_TABLES)}) in this project; pass table=")


#: Largest map render_result draws by default (pixels); a larger slide gets coarser pixels.
MAX_RENDER_PIXELS = 16_000_000


def render_spot_values(sdata, sample: str, values, *, bounds=None, resolution_um: float | None = None):
    """Rasterise values in the sample's ``spot_id`` order ((n,) or (n, C); NaN = nothing drawn) as its spots.

    Returns ``(image, affine, resolution_um, bounds)``: ``affine`` (3x3) maps ``[row, col, 1]`` to
    ``[y_um, x_um, 1]``; ``bounds`` are the grid's (square bins move its origin onto the bin edges).
    The default pixel is 5 um (Visium's 55 um disks) or half a Visium HD bin when that is smaller, coarser
    only where the map would exceed :data:`MAX_RENDER_PIXELS` (a 2 um-bin slide at 1 um: ~40 M pixels).
    """
    from spatialmix.plotting import render_spots, sample_bounds, spot_geometry, spot_xy

    bounds = tuple(float(b) for b in (bounds or sample_bounds(sdata, sample)))
    if len(bounds) != 4 or not (bounds[2] > bounds[0] and bounds[3] > bounds[1]):
        raise ParameterError(f"bounds must be (xmin, ymin, xmax, ymax) with max > min, got {bounds}")
    radius, square = spot_geometry(sdata, sample)
    if resolution_um is None:
        area = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
        resolution_um = max(min(5.0, radius), float(np.sqrt(area / MAX_RENDER_PIXELS)))
    xy = spot_xy(sdata, sample)
    if square and len(xy):  # pixel edges on the bins' edges, so pixels of half a bin tile each bin exactly
        first = xy.min(axis=0) - radius + resolution_um / 2  # centre of the first pixel inside the first bin
        x0, y0 = (first - np.ceil((first - np.array(bounds[:2])) / resolution_um) * resolution_um)
        bounds = (float(x0), float(y0), bounds[2], bounds[3])
    image = render_spots(values, xy, bounds=bounds, resolution_um=resolution_um, radius_um=radius, square=square)
    # render_spots samples the grid x = xmin + col * res, y = ymin + row * res: that point is the pixel centre
    affine = np.array([[resolution_um, 0.0, bounds[1]], [0.0, resolution_um, bounds[0]], [0.0, 0.0, 1.0]])
    return image, affine, float(resolution_um), bounds


def render_result(sdata, sample: str, values, *, resolution_um: float | None = None, bounds=None,
                  table: str | None = None) -> RenderedMap:
    """Rasterise per-spot values of one sample as its spots (Visium: 55 um disks; Visium HD: square bins, see
    :func:`spatialmix.plotting.spot_geometry`) on a ``resolution_um`` grid of its frame.

    Parameters
    ----------
    sdata
        The project.
    sample
        Which sample's spots to draw.
    values
        Per-spot values for the rows of the spot tables (all samples): a Series / DataFrame indexed by
        ``obs_names`` (e.g. from :func:`spot_values`), or an array of length ``n_obs`` ((n,) or (n, C)).
        Categorical or text values are drawn as codes (``RenderedMap.categories`` names them).
    resolution_um
        Pixel size in um (default: 5 um, or half a Visium HD bin when that is smaller).
    bounds
        ``(xmin, ymin, xmax, ymax)`` in um (default: the sample's capture area, padded).
    table
        Table whose ``obs`` (``sample``, ``spot_id``) the values follow (default: ``rna``, else ``msi``, ...).
    """
    from spatialmix.plotting import sample_bounds

    if resolution_um is not None:
        resolution_um = check_positive("resolution_um", resolution_um)
    ad = _spot_table(sdata, table)
    obs = ad.obs
    if "sample" not in obs or "spot_id" not in obs:
        raise ProjectError("the spot table has no 'sample' / 'spot_id' columns; "
                           "rebuild it with spatialmix.pipeline.prepare")
    samples = list(dict.fromkeys(obs["sample"].astype(str)))
    rows = np.flatnonzero((obs["sample"].astype(str) == sample).to_numpy())
    if not len(rows):
        raise ProjectError(f"sample {sample!r} has no spots in the table (samples: {samples})")
    shapes_name = f"{sample}_spots"
    if shapes_name not in sdata.shapes:
        raise ProjectError(f"no shapes {shapes_name!r} in this project; the sample's spots are needed to draw it")

    name = ""
    categories = None
    if isinstance(values, (pd.Series, pd.DataFrame)):
        name = str(values.name) if isinstance(values, pd.Series) and values.name is not None else ""
        sample_names = obs.index[rows]
        if not sample_names.isin(values.index).any():
            raise ProjectError(f"the values' index shares no spot with sample {sample!r} of the table; pass values "
                               "indexed by the table's obs_names (e.g. from spot_values) or an array in table order")
        picked = values.reindex(sample_names)
    else:
        arr = np.asarray(values)
        if arr.ndim not in (1, 2) or arr.shape[0] != ad.n_obs:
            raise ParameterError(f"values must have one row per table row ({ad.n_obs}), got shape {arr.shape}")
        picked = pd.Series(arr[rows]) if arr.ndim == 1 else pd.DataFrame(arr[rows])
    if isinstance(picked, pd.Series) and not pd.api.types.is_numeric_dtype(picked.dtype) \
            and not pd.api.types.is_bool_dtype(picked.dtype):
        cat = pd.Categorical(picked) if not isinstance(picked.dtype, pd.CategoricalDtype) else picked.array
        categories = [str(c) for c in cat.categories]
        vals = np.where(cat.codes < 0, np.nan, cat.codes).astype(np.float32)
    else:
        try:
            vals = np.asarray(picked.to_numpy(dtype=float, na_value=np.nan), dtype=np.float32)
        except (TypeError, ValueError):
            raise ParameterError("values must be numbers (or categories) to render them") from None

    shapes = sdata.shapes[shapes_name]
    pos = pd.Index(shapes.index).get_indexer(obs["spot_id"].to_numpy()[rows])
    if (pos < 0).any():
        raise ProjectError(f"{int((pos < 0).sum())} spot_id(s) of sample {sample!r} are not in {shapes_name!r}; "
                           "the table and the spots do not match")
    full = np.full((len(shapes),) + vals.shape[1:], np.nan, np.float32)
    full[pos] = vals
    bounds = tuple(float(b) for b in (bounds or sample_bounds(sdata, sample)))
    image, affine, resolution_um, bounds = render_spot_values(sdata, sample, full, bounds=bounds,
                                                              resolution_um=resolution_um)
    return RenderedMap(image, bounds, resolution_um, affine, sample=sample, name=name, categories=categories)


def write_translation(sdata, model, sources: str | Sequence[str], target: str, *, key: str | None = None) -> str:
    """Impute ``target`` from ``sources`` with a trained model and write it as the layer
    ``<key>_from_<a>_and_<b>`` of the target table (replacing an earlier one); returns the layer name.

    :func:`iter_write_results` writes every target from all other modalities; this adds any other choice of
    sources (e.g. RNA from MSI alone) without touching the other outputs.
    """
    key = getattr(model, "name", None) if key is None else key
    if not getattr(model, "is_trained", False):
        raise ModelError(f"{type(model).__name__} is not trained; train or load a trained model first")
    pairs = _normalise_translations([(sources, target)], list(model.modalities))
    srcs, tgt = pairs[0]
    if tgt not in sdata.tables:
        raise ProjectError(f"no table {tgt!r} in this project (it has {sorted(sdata.tables)})")
    values = np.asarray(model.translate(srcs, tgt), dtype=np.float32)
    if getattr(model, "data", None) is not None:
        values = measured_only(values, model.data, srcs)
    if values.shape != sdata.tables[tgt].shape:
        raise ModelError(f"the translation has shape {values.shape}, table {tgt!r} has {sdata.tables[tgt].shape}; "
                         "the model was trained on another version of this project")
    name = translation_layer(key, srcs)
    sdata.tables[tgt].layers[name] = values
    return name


def spot_table(sdata, table: str = "rna", *, with_rgb: bool = True) -> pd.DataFrame:
    """One row per spot: the table's ``obs`` (sample, barcode, annotations, predictions, ...) and, with
    ``with_rgb``, every RGB colouring as ``<name>_R`` / ``_G`` / ``_B`` columns (for a CSV export)."""
    if table not in sdata.tables:
        raise ProjectError(f"no table {table!r} (tables: {sorted(sdata.tables)})")
    ad = sdata.tables[table]
    df = ad.obs.copy()
    if with_rgb:
        for k in ad.obsm:
            if k.endswith("_rgb"):
                df = df.join(pd.DataFrame(np.asarray(ad.obsm[k]), index=ad.obs_names,
                                          columns=[f"{k[2:]}_{c}" for c in "RGB"]))
    df.index.name = "spot"
    return df
