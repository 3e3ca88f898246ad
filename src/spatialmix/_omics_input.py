"""Non-spatial multi-omics input for :class:`spatialmix.data.MultiModalData` (``from_anndata``, ``from_mudata``,
``read_multimodal``): the declared preprocessing kinds, the checks of the AnnData / MuData inputs, matching rows
by ``obs_names``, the per-modality preprocessing and z-scoring, and the file-path forms. Plain functions that
hold none of the class's state (moved out of ``data.py``, issue 18).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmix.errors import ParameterError, ProjectError

#: Preprocessing kinds that :meth:`MultiModalData.from_anndata` / ``from_mudata`` accept, and what they do.
PREPROCESSING_KINDS = {
    "counts": "non-negative whole counts (RNA, ATAC peaks / bins): normalize_total(1e4) + log1p, raw counts kept",
    "protein": "non-negative whole antibody counts (CITE-seq ADT): CLR per cell, raw counts kept",
    "normalized": "values already normalised (log-normalised, intensities, scores): used as given",
}
_PREPROCESSING_EXAMPLE = 'preprocessing={"rna": "counts", "protein": "protein", "lipids": "normalized"}'
# how a kind shows in repr (from_spatialdata's kinds included)
_KIND_SHORT = {
    "counts": "counts -> normalize_total+log1p",
    "protein": "protein -> CLR",
    "normalized": "normalized",
    "log1p": "log1p",
    "zscore": "zscore",
}
_ZSCORE_TEXT = "z-score per feature over the measured cells"
_TARGET_SUM = 1e4
_MAX_CHECKED_VALUES = 1_000_000  # whole-number check of counts: a random sample beyond this many stored values


# --- AnnData / MuData input: checks and preprocessing -----------------------------------------------------


def _is_anndata(x) -> bool:
    import anndata

    return isinstance(x, anndata.AnnData)


def _few(values, k: int = 3) -> str:
    values = list(values)
    text = ", ".join(repr(v) for v in values[:k])
    return text + (", ..." if len(values) > k else "")


def _kinds_help() -> str:
    return "; ".join(f"{k!r}: {v}" for k, v in PREPROCESSING_KINDS.items())


def _check_adatas(adatas) -> dict:
    if type(adatas).__name__ == "MuData":
        raise ParameterError("from_anndata takes {modality: AnnData}, got a MuData; use "
                             "MultiModalData.from_mudata(mdata, batch_key=..., preprocessing=...)")
    if _is_anndata(adatas):
        raise ParameterError("from_anndata takes {modality: AnnData}, got one AnnData; name its modality, e.g. "
                             "MultiModalData.from_anndata({'rna': adata}, batch_key=..., preprocessing=...)")
    if not isinstance(adatas, Mapping):
        raise ParameterError(f"from_anndata takes a dict {{modality: AnnData}}, got a {type(adatas).__name__}; "
                             "e.g. MultiModalData.from_anndata({'rna': rna, 'protein': adt}, ...)")
    if not adatas:
        raise ParameterError("no modalities given: pass {modality: AnnData}, e.g. {'rna': rna, 'protein': adt}")
    for m, a in adatas.items():
        if not isinstance(m, str) or not m:
            raise ParameterError(f"modality names must be non-empty strings, got {m!r}")
        if not _is_anndata(a):
            raise ParameterError(
                f"modality {m!r} is a {type(a).__name__}, not an AnnData; wrap a matrix with "
                "anndata.AnnData(X, obs=..., var=...) or read a file with anndata.read_h5ad(path)")
    return dict(adatas)


def _declared_kinds(preprocessing, names: list[str], known: list[str]) -> dict[str, str]:
    """``{modality: kind}`` from the user's declaration; every modality must be declared."""
    allowed = ", ".join(repr(k) for k in PREPROCESSING_KINDS)
    if preprocessing is None:
        raise ParameterError(
            f"declare how each modality is preprocessed (it is never guessed from its name): pass "
            f"preprocessing={{modality: kind}} for the modalities {names}, with kind one of {allowed} "
            f"({_kinds_help()}). Example: {_PREPROCESSING_EXAMPLE}")
    if isinstance(preprocessing, str):
        preprocessing = {m: preprocessing for m in names}
    if not isinstance(preprocessing, Mapping):
        raise ParameterError(f"preprocessing must be a dict {{modality: kind}}, got a {type(preprocessing).__name__}. "
                             f"Example: {_PREPROCESSING_EXAMPLE}")
    stray = [k for k in preprocessing if k not in known]
    if stray:
        raise ParameterError(f"preprocessing declares modality(ies) {stray} that the data does not have "
                             f"(modalities: {names})")
    missing = [m for m in names if m not in preprocessing]
    if missing:
        raise ParameterError(
            f"preprocessing does not declare modality(ies) {missing}; declare every modality ({names}) as one of "
            f"{allowed} ({_kinds_help()}). Example: {_PREPROCESSING_EXAMPLE}")
    kinds = {}
    for m in names:
        k = preprocessing[m]
        kk = k.strip().lower() if isinstance(k, str) else k
        if kk not in PREPROCESSING_KINDS:
            raise ParameterError(f"unknown preprocessing kind {k!r} for modality {m!r}; allowed: {allowed} "
                                 f"({_kinds_help()}). Example: {_PREPROCESSING_EXAMPLE}")
        kinds[m] = kk
    return kinds


def _declared_zscore(zscore, names: list[str], known: list[str]) -> dict[str, bool]:
    if isinstance(zscore, (bool, np.bool_)):
        return {m: bool(zscore) for m in names}
    if not isinstance(zscore, Mapping):
        raise ParameterError(f"zscore must be True / False or {{modality: True}}, got {zscore!r}")
    stray = [k for k in zscore if k not in known]
    if stray:
        raise ParameterError(f"zscore names modality(ies) {stray} that the data does not have (modalities: {names})")
    bad = {k: v for k, v in zscore.items() if not isinstance(v, (bool, np.bool_))}
    if bad:
        raise ParameterError(f"zscore values must be True or False, got {bad}")
    return {m: bool(zscore.get(m, False)) for m in names}


def _matrix(adata, m: str):
    """``adata.X`` in memory: CSR for sparse, a numpy array otherwise."""
    x = adata.X
    if x is None:
        raise ProjectError(f"modality {m!r} has no .X matrix; put its values in .X "
                           "(e.g. adata.X = adata.layers['counts'])")
    if hasattr(x, "to_memory"):  # backed sparse datasets
        x = x.to_memory()
    x = sp.csr_matrix(x) if sp.issparse(x) else np.asarray(x)
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise ProjectError(f"modality {m!r}: .X must be a 2-D numeric matrix, got {x.dtype} with shape {x.shape}")
    return x


def _match_rows(mods: dict) -> tuple[pd.Index, dict[str, np.ndarray]]:
    """Union of the modalities' obs_names and each modality's row positions in it."""
    idxs = {m: a.obs_names for m, a in mods.items()}
    names = list(idxs)
    if len(names) > 1:
        shared = {(a, b): int(idxs[a].isin(idxs[b]).sum()) for a, b in combinations(names, 2)}
        firsts = "; ".join(f"{m}: {_few(idx)}" for m, idx in idxs.items())
        fix = ("Give each cell the same name in every modality (e.g. strip a modality prefix or suffix from the "
               "barcodes), then try again")
        if not any(shared.values()):
            raise ProjectError(f"the modalities share no obs_names: rows are matched by obs_names, and no name of "
                               f"one modality appears in another ({firsts}). {fix}")
        for m in names:
            if not any(v for pair, v in shared.items() if m in pair):
                raise ProjectError(f"modality {m!r} shares no obs_names with any other modality: rows are matched "
                                   f"by obs_names ({firsts}). {fix}")
        empty = [f"{a} and {b}" for (a, b), v in shared.items() if v == 0]
        if empty:
            warnings.warn(
                f"no cell is measured in all {len(names)} modalities: {'; '.join(empty)} share no obs_names, so "
                "each such pair is linked only through the other modalities. If they were measured on the same "
                "cells, make their obs_names match", UserWarning, stacklevel=4)
    union = idxs[names[0]]
    for m in names[1:]:
        idx = idxs[m]
        union = union.append(idx[~idx.isin(union)])
    return union, {m: union.get_indexer(idx) for m, idx in idxs.items()}


def _same(v) -> str:
    """Comparable text of an obs value (1 and 1.0 agree)."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _obs_column(key: str, what: str, mods: dict, gobs: pd.DataFrame | None, union: pd.Index, *,
                required: bool) -> pd.Series:
    """One ``.obs`` column over the union of cells, combined from every place that has it (values must agree)."""
    role = {"batch_key": "each cell's batch", "sample_key": "each cell's sample",
            "label_key": "cell labels (or label_key=None for unlabelled data)"}[what]
    sources: list[tuple[str, pd.Series]] = []
    if gobs is not None and key in gobs.columns:
        sources.append(("mdata.obs", gobs[key]))
    prefix, sep, col = key.partition(":")
    if sep and prefix in mods:
        if not sources:
            if col not in mods[prefix].obs.columns:
                raise ParameterError(f"{what}={key!r}: column {col!r} is not in modality {prefix!r}'s .obs "
                                     f"(columns: {list(mods[prefix].obs.columns)})")
            sources.append((prefix, mods[prefix].obs[col]))
    else:
        sources += [(m, a.obs[key]) for m, a in mods.items() if key in a.obs.columns]
    if not sources:
        avail = "; ".join(f"{m}: {list(a.obs.columns)[:30]}" for m, a in mods.items())
        if gobs is not None:
            avail += f"; mdata.obs: {list(gobs.columns)[:30]}"
        raise ParameterError(f"{what}={key!r} is not an .obs column of any modality (available columns: {avail}). "
                             f"Pass the column that holds {role}")
    where = sources[0][0]
    result = sources[0][1].astype(object).reindex(union)
    origin = pd.Series(np.where(result.notna(), where, None), index=union, dtype=object)
    for w, s in sources[1:]:
        s = s.astype(object).reindex(union)
        diff = (result.notna() & s.notna()).to_numpy()
        diff[diff] = result.to_numpy()[diff] != s.to_numpy()[diff]  # then 1 vs 1.0 and the like agree:
        diff[diff] = [_same(a) != _same(b) for a, b in zip(result.to_numpy()[diff], s.to_numpy()[diff])]
        if diff.any():
            cells = union[diff][:5]
            shown = "; ".join(f"{c!r}: {origin[c]} has {result[c]!r}, {w} has {s[c]!r}" for c in cells)
            raise ProjectError(f"{what}={key!r}: the values disagree between modalities for {int(diff.sum())} "
                               f"shared cell(s) ({shown}). Make the column agree, or take it from one modality "
                               f"with {what}='<modality>:{col if sep and prefix in mods else key}'")
        fill = result.isna() & s.notna()
        result = result.where(~fill, s)
        origin = origin.where(~fill, w)
    if required and result.isna().any():
        missing = union[result.isna().to_numpy()]
        cell = missing[0]
        measured = [m for m, a in mods.items() if cell in a.obs_names]
        places = ", ".join(dict.fromkeys(w for w, _ in sources))
        raise ProjectError(f"{len(missing)} cell(s) have no value in {what}={key!r} (first: {_few(missing, 5)}); "
                           f"e.g. {cell!r} is measured in {measured} and the column comes from {places}. Give every "
                           "cell a value (add the column to each modality's .obs) or remove those cells")
    return result


def _check_values(mat, m: str, kind: str, var_names: pd.Index, *, what: str | None = None) -> None:
    """NaN / Inf, all zeros, and (counts / protein) non-negative whole numbers; names the modality and column."""
    what = what or f"modality {m!r}"
    sparse = sp.issparse(mat)
    vals = mat.data if sparse else mat.ravel()

    def column(i):
        return var_names[int(mat.indices[i] if sparse else i % mat.shape[1])]

    if vals.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(vals))
        if bad.size:
            cols = np.unique(mat.indices[bad] if sparse else bad % mat.shape[1])
            raise ProjectError(
                f"{what} has {bad.size} NaN / Inf value(s), first in column {var_names[int(cols[0])]!r} "
                f"({cols.size} column(s) affected); fill them (e.g. 0 where NaN means 'not detected') or drop those "
                "features before building the data")
    if not np.any(vals):
        raise ProjectError(f"{what} holds only zeros ({mat.shape[0]} x {mat.shape[1]}); check that .X holds "
                           "its values (they may be in a layer: adata.X = adata.layers[...]) or remove the modality")
    if kind not in ("counts", "protein"):
        return
    hint = (f"{kind!r} needs raw counts (non-negative whole numbers). If {m!r} is already normalised, declare "
            f"preprocessing={{{m!r}: 'normalized'}}; if its raw counts are in a layer, put them in .X")
    neg = np.flatnonzero(vals < 0)
    if neg.size:
        raise ProjectError(f"modality {m!r} is declared {kind!r} but holds negative values "
                           f"(e.g. {vals[neg[0]]:g} in column {column(neg[0])!r}); {hint}")
    if vals.dtype.kind == "f":
        idx = np.arange(vals.size) if vals.size <= _MAX_CHECKED_VALUES else \
            np.random.default_rng(0).integers(0, vals.size, _MAX_CHECKED_VALUES)
        frac = idx[vals[idx] != np.round(vals[idx])]
        if frac.size:
            raise ProjectError(f"modality {m!r} is declared {kind!r} but holds non-integer values "
                               f"(e.g. {vals[frac[0]]:g} in column {column(frac[0])!r}); {hint}")


def _preprocess(mat, kind: str, m: str):
    """(model input, raw counts or None, description) of one modality's measured rows."""
    if kind == "counts":
        raw = sp.csr_matrix(mat, dtype=np.float32, copy=True)
        raw.eliminate_zeros()
        total = np.asarray(raw.sum(axis=1, dtype=np.float64)).ravel()
        scale = np.divide(_TARGET_SUM, total, out=np.zeros_like(total), where=total > 0)
        x = raw.copy()
        x.data = np.log1p(raw.data * np.repeat(scale, np.diff(raw.indptr))).astype(np.float32)
        return x, raw, f"normalize_total(1e4) + log1p; raw counts kept in .raw[{m!r}]"
    dense = np.array(mat.toarray() if sp.issparse(mat) else mat, dtype=np.float32)
    if kind == "protein":
        logged = np.log1p(dense.astype(np.float64))
        x = (logged - logged.mean(axis=1, keepdims=True)).astype(np.float32)
        return x, dense, (f"CLR per cell: log1p(x) - mean of log1p(x) over the cell's proteins (Stoeckius et al. "
                          f"2017; not muon's log1p(x / geometric mean)); raw counts kept in .raw[{m!r}]")
    return dense, None, "used as given (declared 'normalized')"


def _zscore(x) -> np.ndarray:
    dense = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
    mu = dense.mean(axis=0)
    sd = dense.std(axis=0)
    sd[sd == 0] = 1.0
    return ((dense - mu) / sd).astype(np.float32)


def _expand(x, pos: np.ndarray, n: int):
    """Rows of ``x`` placed at ``pos`` of an ``n``-row matrix, 0 elsewhere (same sparse / dense kind)."""
    rows = x.shape[0]
    if rows == n and np.array_equal(pos, np.arange(n)):
        return x
    src = np.full(n, rows)
    src[pos] = np.arange(rows)
    if sp.issparse(x):
        return sp.csr_matrix(sp.vstack([x, sp.csr_matrix((1, x.shape[1]), dtype=x.dtype)], format="csr")[src])
    return np.vstack([x, np.zeros((1, x.shape[1]), x.dtype)])[src]


# --- files ------------------------------------------------------------------------------------------------

_ACCEPTED_FORMS = ("one .h5mu file (MuData), or .h5ad files, one per modality: a list of paths, "
                   "'rna.h5ad,protein.h5ad' (modality = file stem) or 'rna=a.h5ad,protein=b.h5ad'")


def _split_paths(paths) -> list[tuple[str | None, Path]]:
    if isinstance(paths, (str, Path)):
        items = [p for p in str(paths).split(",")] if isinstance(paths, str) else [paths]
    elif isinstance(paths, Sequence):
        items = list(paths)
    else:
        raise ParameterError(f"paths must be a path, a comma-separated string or a list of paths, got "
                             f"{type(paths).__name__}; accepted: {_ACCEPTED_FORMS}")
    out = []
    for item in items:
        if isinstance(item, Path):
            out.append((None, item))
            continue
        text = str(item).strip()
        if not text:
            continue
        name, sep, rest = text.partition("=")
        if sep and name.strip() and not any(c in name for c in "/\\"):
            out.append((name.strip(), Path(rest.strip())))
        else:
            out.append((None, Path(text)))
    if not out:
        raise ParameterError(f"no input files given; accepted: {_ACCEPTED_FORMS}")
    return out
