"""SpatialData project -> napari layer data tuples (pure conversion, no Qt, testable without a viewer).

Every sample's elements are placed by their transformation into the sample's micrometre frame; samples are
laid out side by side along x (``layout="side_by_side"``) or stacked at the same place (``"overlay"``) with
only the first sample visible. napari works in (y, x) order: affines are taken with axes ("y", "x").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spatialmix._elements import image_levels
from spatialmix.plotting import sample_bounds, spot_xy
from spatialmix.project import samples_of

SPOT_DIAMETER_UM = 55.0
SEP = " · "


def sample_offsets(sdata, samples: list[str], *, layout: str = "side_by_side", gap_um: float = 300.0) -> dict:
    """x offset (um) of each sample in the viewer's world frame."""
    offsets, x = {}, 0.0
    for s in samples:
        xmin, _, xmax, _ = sample_bounds(sdata, s, pad_um=0.0)
        if layout == "side_by_side":
            offsets[s] = x - xmin
            x += (xmax - xmin) + gap_um
        else:
            offsets[s] = 0.0
    return offsets


def _image_affine(element, sample: str, offset_x: float) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    tr = get_transformation(element, to_coordinate_system=sample)
    m = np.asarray(tr.to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")), dtype=float)
    shift = np.eye(3)
    shift[1, 2] = offset_x
    return shift @ m


def image_layer(sdata, name: str, sample: str, *, offset_x: float = 0.0, **kwargs) -> tuple:
    """A napari image layer tuple for image element ``name`` (RGB H&E/Visium, or a single-channel map)."""
    el = sdata.images[name]
    levels = image_levels(el)
    n_c = levels[0].shape[0]
    if n_c in (3, 4) and levels[0].dtype == np.uint8:
        data = [lv.data.transpose(1, 2, 0) for lv in levels]
        meta = {"rgb": True}
    else:
        data = [lv.data[0] for lv in levels]
        finite = np.asarray(levels[-1].data[0], dtype=float)
        finite = finite[np.isfinite(finite) & (finite > 0)]
        lims = (0.0, float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)
        meta = {"colormap": "magma", "contrast_limits": lims}
    meta.update(
        name=kwargs.pop("layer_name", name),
        affine=_image_affine(el, sample, offset_x),
        multiscale=len(data) > 1,
        metadata={"spatialmix": {"sample": sample, "element": name}},
    )
    meta.update(kwargs)
    return (data if len(data) > 1 else data[0], meta, "image")


def spots_layer(sdata, sample: str, *, offset_x: float = 0.0, color_by: str = "total_counts", **kwargs) -> tuple:
    """Spots of ``sample`` as a Points layer tuple: size = 55 um, features = the spot table, coloured by ``color_by``."""
    xy = spot_xy(sdata, sample)
    features = spot_features(sdata, sample)
    points = np.column_stack([xy[:, 1], xy[:, 0] + offset_x])
    meta = {
        "name": kwargs.pop("layer_name", f"{sample}{SEP}spots"),
        "size": SPOT_DIAMETER_UM,
        "features": features,
        "border_width": 0.0,
        "metadata": {"spatialmix": {"sample": sample, "element": f"{sample}_spots"}},
    }
    if color_by in features and pd.api.types.is_numeric_dtype(features[color_by]):
        meta["face_color"] = color_by
        meta["face_colormap"] = "viridis"
    meta.update(kwargs)
    return (points, meta, "points")


def spot_features(sdata, sample: str) -> pd.DataFrame:
    """Per-spot table of one sample (in ``spot_id`` order): obs columns of the tables plus total counts."""
    n = len(sdata.shapes[f"{sample}_spots"])
    feats = pd.DataFrame(index=pd.RangeIndex(n, name="spot_id"))
    for tname in ("rna", "msi", "morphology"):
        if tname not in sdata.tables:
            continue
        t = sdata.tables[tname]
        obs = t.obs[t.obs["region"].astype(str) == f"{sample}_spots"]
        ids = obs["spot_id"].to_numpy()
        for col in obs.columns:
            if col in feats or col in ("region", "spot_id"):
                continue
            series = pd.Series(obs[col].to_numpy(), index=ids).reindex(feats.index)
            feats[col] = series.to_numpy()
        if tname == "rna":
            counts = t.layers["counts"] if "counts" in t.layers else t.X
            rows = t.obs_names.get_indexer(obs.index)
            feats["total_counts"] = pd.Series(np.asarray(counts[rows].sum(axis=1)).ravel(), index=ids).reindex(
                feats.index).to_numpy()
    return feats.reset_index()


def project_layers(sdata, *, samples: list[str] | None = None, layout: str = "side_by_side") -> list[tuple]:
    """All layers of a project: per sample the Visium image, the H&E, the MSI TIC and the spots."""
    samples = samples or samples_of(sdata)
    offsets = sample_offsets(sdata, samples, layout=layout)
    layers = []
    for i, s in enumerate(samples):
        visible = layout == "side_by_side" or i == 0
        off = offsets[s]
        if f"{s}_visium_hires" in sdata.images:
            layers.append(image_layer(sdata, f"{s}_visium_hires", s, offset_x=off,
                                      layer_name=f"{s}{SEP}Visium image", visible=False))
        if f"{s}_he" in sdata.images:
            layers.append(image_layer(sdata, f"{s}_he", s, offset_x=off, layer_name=f"{s}{SEP}H&E", visible=visible))
        if f"{s}_msi_tic" in sdata.images:
            layers.append(image_layer(sdata, f"{s}_msi_tic", s, offset_x=off, layer_name=f"{s}{SEP}MSI TIC",
                                      opacity=0.55, blending="translucent", visible=visible))
        if f"{s}_spots" in sdata.shapes:
            layers.append(spots_layer(sdata, s, offset_x=off, visible=visible))
    return layers
