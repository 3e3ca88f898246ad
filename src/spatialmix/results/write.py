"""Writing a trained model's outputs into the project (:func:`iter_write_results`, :func:`write_translation`)
and reading back their provenance (:func:`provenance`); the names written are listed in
:mod:`spatialmix.results`.

:func:`iter_write_results` runs in five stages, each a function below: check the request (before any work),
plan the steps, compute every output (one inference pass where the model offers it), build the provenance
record, and only then commit everything to the tables, so an error leaves the project as it was.

Why one file of about 510 lines: it is one writer. The five stages hand one plan and one staged dict from stage to
stage, :func:`write_translation` reuses their translation checks (``_normalise_translations``), and
:func:`provenance` reads back the record that stage 4 builds; the names written are listed in
:mod:`spatialmix.results`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.conventions import MODALITY_TABLES, translation_layer
from spatialmix.data import measured_only
from spatialmix.errors import ModelError, ParameterError, ProjectError
from spatialmix.progress import Progress, run
from spatialmix import lazy as _lazy
from spatialmix.lazy import chunked_pca, frozen_model, is_lazy, lazy_layer
from spatialmix.results.rgb import rgb_embedding

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


def _check_request(sdata, model, key, outputs) -> tuple[str, list[str], Any, list[str]]:
    """Stage 1: everything that can be wrong with the request, before any work: the key, the outputs, the
    model's state, and that the project holds the tables and spots the model was trained on."""
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
    return key, outputs, data, modalities


def _plan(sdata, model, key: str, outputs: list[str], modalities: list[str], translations, rgb_of):
    """Stage 2: the translations, the extra RGB colourings and the steps (one per output, in writing order)."""
    pairs: list[tuple[list[str], str]] = []
    if "translations" in outputs:
        pairs = _default_translations(modalities, getattr(model, "single_source_translation", False)) \
            if translations is None else _normalise_translations(translations, modalities)
    rgb_pairs: list[tuple[str, str]] = []
    if "rgb" in outputs:
        if rgb_of is not None:
            rgb_pairs = _normalise_rgb_of(rgb_of, modalities)
        elif "msi" in modalities:
            rgb_pairs.append(("msi", "X"))
            if "corrected" in outputs or f"{key}_corrected" in sdata.tables["msi"].layers:
                rgb_pairs.append(("msi", f"{key}_corrected"))
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
    return pairs, rgb_pairs, steps


def _step_message(what: str, arg) -> str:
    if what in ("private", "corrected", "denoised"):
        return f"{what} {arg}"
    if what == "translation":
        return f"{arg[1]} from {'+'.join(arg[0])}"
    if what == "rgb_of":
        return f"RGB of {arg[0]} {arg[1]} (3D UMAP)"
    return {"latent": "shared (PoE) embedding", "rgb": "RGB of the shared embedding (3D UMAP)",
            "labels": "predicted labels of the target samples",
            "expert_weights": "expert weights (PoE precision shares)",
            "corrected_pca": "PCA of the corrected features (for annotation prediction)"}[what]


def _pass_key(what, arg):
    """``get_outputs``' key of a step (a translation's sources as a tuple)."""
    return (what, (tuple(arg[0]), arg[1]) if what == "translation" else arg)


def _rgb_of_values(sdata, data, staged: dict, table: str, source: str) -> np.ndarray:
    """The values an extra RGB colouring is computed from: the model input (``"X"``) or a layer (just computed
    or already in the table), NaN where the modality was not measured."""
    if source == "X":
        values = data.dense(table)
    elif (table, "layers", source) in staged:
        values = staged[(table, "layers", source)]
        if is_lazy(values):  # too large for memory: its PCA-50, block by block (NaN rows where not measured)
            return chunked_pca([values], 50, seed=0)
    elif source in sdata.tables[table].layers:
        layer = sdata.tables[table].layers[source]
        values = np.asarray(layer.toarray() if hasattr(layer, "toarray") else layer, dtype=np.float32)
    else:
        raise ParameterError(f"rgb_of: table {table!r} has no layer {source!r} (layers: "
                             f"{sorted(sdata.tables[table].layers)}); use 'X' for the model input")
    values = np.array(values, dtype=np.float32, copy=True)
    values[~np.asarray(data.mask[table], bool)] = np.nan
    return values


def _lazy_plan(model, data, steps, modalities, lazy_layers: bool | None) -> set:
    """The ``get_outputs`` keys of the layers staged lazily (:mod:`spatialmix.lazy`): every layer with
    ``lazy_layers=True``, none with ``False``, and by default those larger than ``LAZY_LAYER_BYTES`` dense. Only
    for models with ``get_outputs`` (MIMA); the corrected layers of every modality are candidates for the
    corrected-feature PCA even when not written."""
    if lazy_layers is False or not hasattr(model, "get_outputs"):
        return set()
    keys = set()
    candidates = [(w, a) for w, a in steps if w in ("corrected", "denoised", "translation")]
    if any(w == "corrected_pca" for w, _ in steps):
        candidates += [("corrected", m) for m in modalities]
    for what, arg in candidates:
        if lazy_layers or data.n_obs * len(model.var_names[_layer_table(what, arg)]) * 4 > _lazy.LAZY_LAYER_BYTES:
            keys.add(_pass_key(what, arg))
    return keys


def _layer_table(what, arg) -> str:
    """The table a layer step writes into: the target of a translation, else the step's modality."""
    return arg[1] if what == "translation" else arg


def _iter_compute(sdata, model, data, key: str, outputs: list[str], modalities: list[str], steps, seed: int,
                  stage: str, lazy_layers: bool | None = None):
    """Stage 3, a generator: compute every step's values (nothing written yet). Returns ``(staged, total,
    offset, label_result, expert_columns)``; ``staged`` maps (table, "obsm" | "layers", name) to the values
    (a dask array for a lazy layer, computed block by block when the project is saved)."""
    total = len(steps) + 1
    staged: dict[tuple[str, str, str], np.ndarray] = {}
    n_obs = len(data.obs)
    lazy = _lazy_plan(model, data, steps, modalities, lazy_layers)
    frozen = frozen_model(model) if lazy else None

    def lazily(k):
        return lazy_layer(frozen, data, k, len(model.var_names[_layer_table(*k)]))

    def put(table, slot, name, values):
        if not is_lazy(values):
            values = np.asarray(values, dtype=np.float32)
        if values.shape[0] != n_obs:
            raise ModelError(f"{type(model).__name__} returned {values.shape[0]} rows for {name!r}, the table "
                             f"{table!r} has {n_obs} spots")
        if slot == "layers" and values.shape != sdata.tables[table].shape:
            raise ModelError(f"{name!r} has shape {values.shape}, the table {table!r} has {sdata.tables[table].shape}; "
                             "the table's features changed since the model was trained")
        staged[(table, slot, name)] = values

    # a model that computes several outputs from one encoding of each chunk (MIMA.get_outputs) gets them all in
    # one pass: the demo's 11 model outputs cost one pass over the spots, not 11
    one_pass: dict = {}
    batched = [_pass_key(w, a) for w, a in steps
               if w in ("latent", "private", "corrected", "denoised", "translation", "expert_weights")
               and _pass_key(w, a) not in lazy]
    offset = 0
    if hasattr(model, "get_outputs") and len(batched) > 1:
        offset, total = 1, total + 1
        yield Progress(stage, 0, total, f"{len(batched)} outputs in one inference pass")
        one_pass = model.get_outputs(batched)

    def computed(what, arg, single, mods=None):
        """The step's value from the one pass, else ``single()``; with ``mods``, NaN where none of them was
        measured (an array of the one pass is ours: masked in place, no second copy of a layer)."""
        k = _pass_key(what, arg)
        if k in lazy:  # masked by get_outputs block by block, like the in-memory value
            return lazily(k)
        if k in one_pass:
            value = one_pass.pop(k)
            return value if mods is None else measured_only(np.asarray(value, dtype=np.float32), data, mods,
                                                            inplace=True)
        return single() if mods is None else measured_only(single(), data, mods)

    z = label_result = expert_columns = None
    for i, (what, arg) in enumerate(steps):
        yield Progress(stage, i + offset, total, _step_message(what, arg))
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
            have.update({m: lazily(("corrected", m)) for m in modalities
                         if m not in have and ("corrected", m) in lazy})
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
            label_result = _score_labels(model, data, key)
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
        else:  # rgb_of
            table, source = arg
            put(table, "obsm", _rgb_name(table, source),
                rgb_embedding(_rgb_of_values(sdata, data, staged, table, source), seed=seed))
    return staged, total, offset, label_result, expert_columns


def _score_labels(model, data, key: str):
    """The model's own label predictions for its target samples, scored against the annotation."""
    from spatialmix.evaluate.annotations import PAPER_EXCLUDED, score_predictions

    if data.annotation_key is None:
        raise ModelError(f"{type(model).__name__} was trained without an annotation column; "
                         "there are no labels to compare its predictions with")
    pred = model.predict_labels()
    return score_predictions(
        pred["label"].astype(object).to_numpy(), pred["confidence"].to_numpy(float), data.labels,
        data.obs["sample"].astype(str).to_numpy(), source_samples=label_sources(model),
        representation=key, index=data.obs.index,
        exclude=model.params["exclude"] if model.params.get("exclude") is not None else PAPER_EXCLUDED)


def _provenance_record(model, data, key: str, modalities: list[str], staged: dict, pairs, rgb_pairs,
                       expert_columns, label_result, seed: int) -> dict:
    """Stage 4: the provenance record (model, parameters, features, training, versions, what was written)."""
    from spatialmix.models._base import versions
    from spatialmix.project import jsonable

    written: dict[str, dict[str, list[str]]] = {m: {"obsm": [], "layers": []} for m in modalities}
    for table, slot, name in staged:
        written[table][slot].append(name)
    cfg = dict(getattr(model, "train_config", {}) or {})
    return jsonable({
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
        "training_curve": model.training_curve().to_dict("records"),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def _commit(sdata, data, key: str, modalities: list[str], staged: dict, record: dict, history: pd.DataFrame,
            label_result) -> None:
    """Stage 5, the only one that changes ``sdata``: replace an earlier write under ``key`` by this one."""
    from spatialmix.project import spatialmix_attrs

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


def iter_write_results(
    sdata,
    model,
    *,
    key: str | None = None,
    outputs: Sequence[str] | None = None,
    translations: Sequence[tuple[Sequence[str] | str, str]] | None = None,
    rgb_of: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
    lazy_layers: bool | None = None,
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
    lazy_layers
        Corrected, denoised and translated layers as lazy dask arrays (:mod:`spatialmix.lazy`), computed
        block by block by the model (a frozen copy of its weights) when read or when the project is saved, which
        writes them block by block: ``None`` (default) for layers larger than ``LAZY_LAYER_BYTES`` (2 GiB) dense,
        e.g. Visium HD; ``True`` for every layer; ``False`` for none. The corrected-feature PCA of lazy layers is
        an incremental PCA over blocks. Models with ``get_outputs`` (MIMA) only; others compute in memory.

    Yields :class:`~spatialmix.progress.Progress` events (one per output) and returns ``sdata``. Nothing is
    written until every output is computed, so an error leaves ``sdata`` as it was; a lazy layer is computed
    later, when it is read or saved (an error then comes from that call, and ``save_project`` leaves the saved
    project as it was).
    """
    key, outputs, data, modalities = _check_request(sdata, model, key, outputs)
    pairs, rgb_pairs, steps = _plan(sdata, model, key, outputs, modalities, translations, rgb_of)
    stage = f"write results ({key})"
    staged, total, offset, label_result, expert_columns = yield from _iter_compute(
        sdata, model, data, key, outputs, modalities, steps, seed, stage, lazy_layers)
    record = _provenance_record(model, data, key, modalities, staged, pairs, rgb_pairs, expert_columns,
                                label_result, seed)
    history = _history_frame(model)
    yield Progress(stage, len(steps) + offset, total, "write into the tables")
    _commit(sdata, data, key, modalities, staged, record, history, label_result)  # only now: nothing before wrote
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
