"""Reading one per-spot result back out of a project: a feature, an m/z, an ``obsm`` matrix or an ``obs``
column (:func:`spot_values`), and the per-spot table behind a CSV export (:func:`spot_table`)."""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from spatialmix.errors import ParameterError, ProjectError, check_positive


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
