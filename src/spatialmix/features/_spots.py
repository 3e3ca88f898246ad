"""Which spots of a sample get features, in which order, and where they are (um, sample frame)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spatialmix.errors import ProjectError

#: obs columns copied from the ``rna`` table onto every per-spot feature table (when present)
ID_COLUMNS = ("sample", "patient", "batch", "barcode", "spot_id", "region")


@dataclass
class SampleSpots:
    """In-tissue spots of one sample, in the row order of the ``rna`` table.

    Attributes
    ----------
    obs
        Identification columns (``sample``, ``barcode``, ``spot_id``, ``region``, ...), index = obs names
        (``"{sample}_{barcode}"`` as in ``rna``).
    xy
        ``(n, 2)`` spot centres in um in coordinate system ``sample``.
    radius
        ``(n,)`` spot radii in um.
    """

    obs: pd.DataFrame
    xy: np.ndarray
    radius: np.ndarray


def _available_samples(sdata) -> list[str]:
    return sorted(k[: -len("_spots")] for k in sdata.shapes.keys() if k.endswith("_spots"))


def require_element(sdata, kind: str, name: str, sample: str, what: str):
    """Return ``sdata.<kind>[name]`` or raise :class:`ProjectError` naming the element and what to do."""
    container = getattr(sdata, kind)
    if name not in container:
        raise ProjectError(
            f"Sample {sample!r} has no {kind[:-1]} element {name!r} (needed for {what}); "
            f"elements present: {sorted(container.keys())}. Load that modality for this sample first "
            f"(spatialmix.io) or pick another sample"
        )
    return container[name]


def element_to_sample(element, sample: str, name: str, *, hint: str) -> np.ndarray:
    """3x3 affine (x, y) of ``element``'s intrinsic coordinates into coordinate system ``sample``."""
    from spatialdata.transformations import get_transformation

    try:
        tr = get_transformation(element, to_coordinate_system=sample)
    except (ValueError, KeyError):
        have = sorted(get_transformation(element, get_all=True).keys())
        raise ProjectError(
            f"Element {name!r} has no transformation into coordinate system {sample!r} "
            f"(it has: {have}). {hint}"
        ) from None
    m = np.asarray(tr.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
    if not np.isfinite(m).all() or abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise ProjectError(
            f"The transformation of {name!r} into {sample!r} is degenerate ({m.tolist()}). {hint}"
        )
    return m


def sample_spots(sdata, sample: str) -> SampleSpots:
    """The spots of ``sample`` that features are computed for, in the order of the ``rna`` rows.

    Rows are the ``rna`` rows annotating ``{sample}_spots`` (obs names unchanged). When the project has no
    ``rna`` table, all spots of ``{sample}_spots`` in index order, named ``"{sample}_{barcode}"`` (or
    ``"{sample}_{spot_id}"`` without a barcode column).
    """
    name = f"{sample}_spots"
    if name not in sdata.shapes:
        raise ProjectError(
            f"No spots element {name!r} in this project; samples present: {_available_samples(sdata)}. "
            f"Check the sample name"
        )
    shapes = sdata.shapes[name]
    if "radius" not in shapes.columns:
        raise ProjectError(f"{name!r} has no 'radius' column: Visium spots must be circles (ShapesModel with radius)")
    geom = shapes.geometry
    if not (geom.geom_type == "Point").all():
        raise ProjectError(f"{name!r} must hold circles (points with a radius), found {set(geom.geom_type)}")
    m = element_to_sample(shapes, sample, name, hint="Spots must have an identity transformation into their sample")
    xy_all = np.column_stack([geom.x.to_numpy(float), geom.y.to_numpy(float)])
    xy_all = xy_all @ m[:2, :2].T + m[:2, 2]
    r_all = shapes["radius"].to_numpy(float) * np.sqrt(abs(np.linalg.det(m[:2, :2])))

    if "rna" in sdata.tables:
        rna = sdata.tables["rna"]
        attrs = rna.uns.get("spatialdata_attrs", {})
        region_key = attrs.get("region_key", "region")
        instance_key = attrs.get("instance_key", "spot_id")
        if region_key in rna.obs:
            rows = (rna.obs[region_key].astype(str) == name).to_numpy()
        elif "sample" in rna.obs:
            rows = (rna.obs["sample"].astype(str) == sample).to_numpy()
        else:
            raise ProjectError(f"The 'rna' table has neither a {region_key!r} nor a 'sample' column")
        if not rows.any():
            raise ProjectError(
                f"The 'rna' table has no rows for sample {sample!r} (region {name!r}). "
                f"Samples with spots: {_available_samples(sdata)}"
            )
        if instance_key not in rna.obs:
            raise ProjectError(f"The 'rna' table has no {instance_key!r} column linking rows to {name!r}")
        sub = rna.obs.loc[rows]
        ids = sub[instance_key].to_numpy()
        pos = shapes.index.get_indexer(pd.Index(ids).astype(shapes.index.dtype, copy=False))
        if (pos < 0).any():
            bad = ids[pos < 0][:5].tolist()
            raise ProjectError(
                f"{int((pos < 0).sum())} 'rna' rows of sample {sample!r} point to spot ids missing from "
                f"{name!r} (e.g. {bad}); rebuild the project with spatialmix.io"
            )
        cols = [c for c in ID_COLUMNS if c in sub.columns]
        if region_key in sub.columns and region_key not in cols:
            cols.append(region_key)
        obs = sub[cols].copy()
        obs.index = sub.index.astype(str)
    else:
        pos = np.arange(len(shapes))
        ids = shapes.index.to_numpy()
        labels = shapes["barcode"].astype(str).to_numpy() if "barcode" in shapes.columns else ids.astype(str)
        obs = pd.DataFrame(
            {"sample": sample, "spot_id": ids, "region": name},
            index=pd.Index([f"{sample}_{b}" for b in labels]),
        )
        if "barcode" in shapes.columns:
            obs["barcode"] = labels
    for c in obs.columns:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            obs[c] = obs[c].cat.remove_unused_categories()
    return SampleSpots(obs=obs, xy=xy_all[pos], radius=r_all[pos])
