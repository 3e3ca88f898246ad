"""SpatialData project -> napari layer data tuples (pure conversion, no Qt, testable without a viewer).

Every sample's elements are placed by their transformation into the sample's micrometre frame; samples are
laid out side by side along x (``layout="side_by_side"``) or stacked at the same place (``"overlay"``) with
only the first sample visible. napari works in (y, x) order: affines are taken with axes ("y", "x").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spatialmix._elements import image_levels
from spatialmix.frames import sample_bounds, spot_xy
from spatialmix.project import samples_of

SPOT_DIAMETER_UM = 55.0
SEP = " · "
#: Above this many spots in one sample (a Visium HD slide), spots are drawn as an image layer of the same
#: colours instead of a Points layer: napari's Points layer stalls the event loop for seconds at 10^5 points
#: (benchmarks/napari_many_spots.py measures both).
POINTS_LIMIT = 50_000


def spots_as_image(sdata, sample: str) -> bool:
    """Whether ``sample``'s spots are drawn as an image layer (more than :data:`POINTS_LIMIT` spots)."""
    return len(sdata.shapes[f"{sample}_spots"]) > POINTS_LIMIT


def percentile_limits(values) -> tuple[float, float]:
    """Contrast limits of a map: its 1st to 99th percentile over the finite values ((0, 1) with none, a unit
    range above a constant map)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return (0.0, 1.0)
    lo, hi = float(np.percentile(finite, 1)), float(np.percentile(finite, 99))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _spot_image_layer(sdata, sample: str, values: np.ndarray, meta: dict, *, offset=(0.0, 0.0)) -> tuple:
    """Values ((n,) numbers or (n, 4) RGBA in ``spot_id`` order) rasterised as the sample's spots (disks or
    Visium HD squares); an image layer tuple that keeps the Points layer's name, visibility and metadata."""
    from spatialmix.results import render_spot_values

    img, affine, res, _ = render_spot_values(sdata, sample, values)
    affine[0, 2] += offset[1]
    affine[1, 2] += offset[0]
    out = {k: meta[k] for k in ("name", "visible", "opacity", "blending") if k in meta}
    out["metadata"] = meta.get("metadata", {})
    out["metadata"].setdefault("spatialmix", {}).update(drawn_as="image", resolution_um=res)
    out["affine"] = affine
    if img.ndim == 3:  # RGBA as uint8 (a quarter of float32's texture upload); nothing drawn (NaN) is transparent
        img = np.round(np.nan_to_num(img, nan=0.0) * 255.0).astype(np.uint8)
        out["rgb"] = True
        return (img, out, "image")
    out["colormap"] = "viridis"
    out["contrast_limits"] = percentile_limits(img)
    return (img.astype(np.float32), out, "image")


def sample_extent(sdata, sample: str) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) in um of everything a sample shows: capture area, spots and every image."""
    from spatialmix._elements import element_affine

    boxes = [sample_bounds(sdata, sample, pad_um=0.0)]
    for name, el in sdata.images.items():
        if not name.startswith(f"{sample}_"):
            continue
        h, w = image_levels(el)[0].shape[-2:]
        corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]])
        xy = corners @ element_affine(el, sample).T
        boxes.append((xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()))
    b = np.array(boxes)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def sample_offsets(sdata, samples: list[str], *, layout: str = "side_by_side", gap_um: float = 500.0) -> dict:
    """(dx, dy) in um that places each sample in the viewer: side by side along x, tops aligned."""
    offsets, x = {}, 0.0
    for s in samples:
        xmin, ymin, xmax, _ = sample_extent(sdata, s)
        if layout == "side_by_side":
            offsets[s] = (x - xmin, -ymin)
            x += (xmax - xmin) + gap_um
        else:
            offsets[s] = (0.0, 0.0)
    return offsets


def _image_affine(element, sample: str, offset: tuple[float, float]) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    tr = get_transformation(element, to_coordinate_system=sample)
    m = np.asarray(tr.to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")), dtype=float)
    shift = np.eye(3)
    shift[1, 2], shift[0, 2] = offset
    return shift @ m


def fading_colormap(name: str = "magma"):
    """A colormap whose lowest tenth fades to transparent, so off-tissue background does not hide the H&E."""
    from matplotlib import colormaps
    from napari.utils.colormaps import Colormap

    base = colormaps[name](np.linspace(0, 1, 64))
    base[:, 3] = np.clip(np.linspace(0, 1, 64) / 0.1, 0, 1)
    return Colormap(base, name=f"{name} (transparent low)")


def _signal_limits(img: np.ndarray) -> tuple[float, float]:
    """Contrast limits from the off-tissue background level (transparent below it) to the 99.5th percentile."""
    from spatialmix.registration import tissue_mask

    img = np.nan_to_num(np.asarray(img, dtype=float))
    finite = img[img > 0]
    if finite.size < 10:
        return (0.0, 1.0)
    hi = float(np.percentile(finite, 99.5))
    try:
        mask = tissue_mask(img, "tic")
        lo = float(np.percentile(img[~mask], 95)) if (~mask).sum() > 10 and mask.sum() > 10 else 0.0
    except Exception:  # an image with no tissue / background contrast: show its full range
        lo = 0.0
    return (lo, hi) if hi > lo else (0.0, hi or 1.0)


def image_layer(sdata, name: str, sample: str, *, offset: tuple[float, float] = (0.0, 0.0), **kwargs) -> tuple:
    """A napari image layer tuple for image element ``name`` (RGB H&E/Visium, or a single-channel map)."""
    el = sdata.images[name]
    levels = image_levels(el)
    n_c = levels[0].shape[0]
    if n_c in (3, 4) and levels[0].dtype == np.uint8:
        data = [lv.data.transpose(1, 2, 0) for lv in levels]
        meta = {"rgb": True}
    else:
        data = [lv.data[0] for lv in levels]
        meta = {"colormap": fading_colormap("magma"), "contrast_limits": _signal_limits(np.asarray(levels[-1].data[0]))}
    meta.update(
        name=kwargs.pop("layer_name", name),
        affine=_image_affine(el, sample, offset),
        multiscale=len(data) > 1,
        metadata={"spatialmix": {"sample": sample, "element": name}},
    )
    meta.update(kwargs)
    return (data if len(data) > 1 else data[0], meta, "image")


def spots_layer(sdata, sample: str, *, offset: tuple[float, float] = (0.0, 0.0), color_by: str = "total_counts",
                **kwargs) -> tuple:
    """Spots of ``sample`` as a Points layer tuple: size = 55 um, features = the spot table, coloured by ``color_by``."""
    xy = spot_xy(sdata, sample)
    features = spot_features(sdata, sample)
    points = np.column_stack([xy[:, 1] + offset[1], xy[:, 0] + offset[0]])
    meta = {
        "name": kwargs.pop("layer_name", f"{sample}{SEP}spots"),
        "size": SPOT_DIAMETER_UM,
        "features": features,
        "border_width": 0.0,
        "opacity": 0.85,
        "metadata": {"spatialmix": {"sample": sample, "element": f"{sample}_spots"}},
    }
    numeric = color_by in features and pd.api.types.is_numeric_dtype(features[color_by]) \
        and not isinstance(features[color_by].dtype, pd.CategoricalDtype)
    if numeric:
        meta["face_color"] = color_by
        meta["face_colormap"] = "viridis"
    elif color_by in features:
        meta["face_color"], meta["metadata"]["spatialmix"]["legend"] = categorical_face_colors(
            features[color_by], _categories(sdata, color_by))
    meta.update(kwargs)
    if spots_as_image(sdata, sample):
        if numeric:
            values = features[color_by].to_numpy(dtype=float)
        elif color_by in features:
            values = meta["face_color"]
        else:  # no colouring asked for (category_spots_layer sets its own): the spots' outline in grey
            values = np.tile(np.array([0.6, 0.6, 0.6, 1.0], np.float32), (len(points), 1))
        return _spot_image_layer(sdata, sample, values, meta, offset=offset)
    return (points, meta, "points")


def _categories(sdata, column: str) -> list[str] | None:
    """Categories of an obs column over all samples (so every sample uses the same colours)."""
    for t in sdata.tables.values():
        if column in t.obs and isinstance(t.obs[column].dtype, pd.CategoricalDtype):
            return [str(c) for c in t.obs[column].cat.categories]
    return None


def categorical_face_colors(values, categories=None) -> tuple[np.ndarray, dict[str, str]]:
    """RGBA per spot for a categorical column (the figures' palette; grey = unlabelled) and the legend."""
    from matplotlib.colors import to_rgba

    from spatialmix.frames import UNLABELLED_COLOR, category_colors

    values = pd.Series(values)
    if categories is None:
        categories = sorted(str(v) for v in values.dropna().unique())
    palette = category_colors(categories)
    # one colour per distinct value, then a vectorised lookup (a Visium HD slide has 10^5-10^6 spots)
    codes, uniques = pd.factorize(values.astype(str).where(values.notna()))  # missing: code -1
    lut = np.array([to_rgba(palette.get(u, UNLABELLED_COLOR)) for u in uniques] + [to_rgba(UNLABELLED_COLOR)],
                   dtype=np.float64).reshape(-1, 4)
    colors = lut[np.where(codes < 0, len(uniques), codes)]
    legend = {c: palette[c] for c in categories if (values.astype(str) == c).any()}
    legend["unlabelled"] = UNLABELLED_COLOR
    return colors, legend


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


def sample_layers(sdata, sample: str, *, offset=(0.0, 0.0), visible: bool = True) -> list[tuple]:
    """One sample's layers: the Visium image (hidden), the H&E, the MSI TIC and the spots."""
    s, off, layers = sample, offset, []
    if f"{s}_visium_hires" in sdata.images:
        layers.append(image_layer(sdata, f"{s}_visium_hires", s, offset=off,
                                  layer_name=f"{s}{SEP}Visium image", visible=False))
    if f"{s}_he" in sdata.images:
        layers.append(image_layer(sdata, f"{s}_he", s, offset=off, layer_name=f"{s}{SEP}H&E", visible=visible))
    if f"{s}_msi_tic" in sdata.images:
        layers.append(image_layer(sdata, f"{s}_msi_tic", s, offset=off, layer_name=f"{s}{SEP}MSI TIC",
                                  opacity=0.7, blending="translucent", visible=visible))
    if f"{s}_spots" in sdata.shapes:
        layers.append(spots_layer(sdata, s, offset=off, visible=visible))
    return layers


def project_layers(sdata, *, samples: list[str] | None = None, layout: str = "side_by_side") -> list[tuple]:
    """All layers of a project: per sample the Visium image, the H&E, the MSI TIC and the spots."""
    samples = samples or samples_of(sdata)
    offsets = sample_offsets(sdata, samples, layout=layout)
    layers = []
    for i, s in enumerate(samples):
        layers += sample_layers(sdata, s, offset=offsets[s], visible=layout == "side_by_side" or i == 0)
    return layers


#: Colours of the agreement between a prediction and the pathologist (green / red / grey / light grey).
AGREEMENT_COLORS = {"agree": "#1a9850", "disagree": "#d73027", "unlabelled": "#a0a0a0", "excluded": "#e0e0e0"}


def _sample_rows(sdata, sample: str, table: str) -> tuple[np.ndarray, np.ndarray]:
    """(row indices of ``sample`` in ``table``, their positions in the sample's spot order)."""
    t = sdata.tables[table]
    rows = np.flatnonzero((t.obs["region"].astype(str) == f"{sample}_spots").to_numpy())
    pos = pd.Index(sdata.shapes[f"{sample}_spots"].index).get_indexer(t.obs["spot_id"].to_numpy()[rows])
    return rows, pos


def rgb_spots_layer(sdata, sample: str, obsm: str, *, table: str = "rna", offset=(0.0, 0.0),
                    layer_name: str | None = None, **kwargs) -> tuple:
    """Spots of ``sample`` coloured by a 3-column RGB colouring ``obsm`` (values in [0, 1]); spots without a
    value (NaN, e.g. no MSI there) are drawn hollow grey."""
    from spatialmix.errors import ProjectError

    t = sdata.tables[table]
    if obsm not in t.obsm:
        raise ProjectError(f"table {table!r} has no RGB colouring {obsm!r} (obsm: {sorted(t.obsm)}); write the "
                           "model's results first")
    xy = spot_xy(sdata, sample)
    rows, pos = _sample_rows(sdata, sample, table)
    rgb = np.full((len(xy), 3), np.nan, np.float32)
    rgb[pos] = np.asarray(t.obsm[obsm], dtype=np.float32)[rows]
    missing = ~np.isfinite(rgb).all(axis=1)
    face = np.ones((len(xy), 4), np.float32)
    face[:, :3] = np.nan_to_num(rgb, nan=0.6)
    face[missing, 3] = 0.0
    edge = np.zeros((len(xy), 4), np.float32)
    edge[missing] = (0.6, 0.6, 0.6, 1.0)
    if spots_as_image(sdata, sample):  # a Visium HD slide: an RGBA image, spots without a value transparent
        meta = {"name": layer_name or f"{sample}{SEP}{obsm.removeprefix('X_')}",
                "metadata": {"spatialmix": {"sample": sample, "element": f"{sample}_spots", "obsm": obsm}}}
        meta.update(kwargs)
        return _spot_image_layer(sdata, sample, face, meta, offset=offset)
    points = np.column_stack([xy[:, 1] + offset[1], xy[:, 0] + offset[0]])
    meta = {
        "name": layer_name or f"{sample}{SEP}{obsm.removeprefix('X_')}",
        "size": SPOT_DIAMETER_UM, "face_color": face, "border_color": edge, "border_width": 0.08,
        "border_width_is_relative": True, "features": spot_features(sdata, sample),
        "metadata": {"spatialmix": {"sample": sample, "element": f"{sample}_spots", "obsm": obsm}},
    }
    meta.update(kwargs)
    return (points, meta, "points")


def category_spots_layer(sdata, sample: str, column: str, *, offset=(0.0, 0.0), layer_name: str | None = None,
                         **kwargs) -> tuple:
    """Spots of ``sample`` coloured by a categorical obs column: the annotation's palette (a prediction
    ``pred_*`` shares the pathologist's colours), or green / red / grey for an agreement column ``agree_*``.
    ``metadata["spatialmix"]["legend"]`` holds {label: colour} of the categories present."""
    from matplotlib.colors import to_rgba

    from spatialmix.errors import ProjectError

    feats = spot_features(sdata, sample)
    if column not in feats:
        raise ProjectError(f"the spot tables have no column {column!r}; run the prediction first")
    values = feats[column]
    if column.startswith("agree_"):
        present = set(values.dropna().astype(str))
        lut = {k: to_rgba(c) for k, c in AGREEMENT_COLORS.items()}
        colors = np.array([lut.get(str(v), to_rgba("#ffffff")) if pd.notna(v) else (1, 1, 1, 0) for v in values],
                          dtype=np.float32).reshape(-1, 4)
        legend = {k: c for k, c in AGREEMENT_COLORS.items() if k in present}
    else:
        colors, legend = categorical_face_colors(values, _categories(sdata, column))
    name = layer_name or f"{sample}{SEP}{column}"
    if spots_as_image(sdata, sample):
        meta = {"name": name, "opacity": kwargs.pop("opacity", 1.0),
                "metadata": {"spatialmix": {"sample": sample, "element": f"{sample}_spots", "legend": legend,
                                            "column": column}}}
        meta.update(kwargs)
        return _spot_image_layer(sdata, sample, colors, meta, offset=offset)
    layer = spots_layer(sdata, sample, offset=offset, color_by="__none__", layer_name=name, **kwargs)
    layer[1]["face_color"] = colors
    layer[1]["metadata"]["spatialmix"].update(legend=legend, column=column)
    layer[1]["opacity"] = kwargs.get("opacity", 1.0)
    return layer


def map_image_layer(rendered, *, offset=(0.0, 0.0), layer_name: str | None = None, colormap: str = "viridis",
                    contrast_limits=None, **kwargs) -> tuple:
    """An image layer tuple for a :class:`spatialmix.results.RenderedMap` (per-spot values as 55 um disks in
    the sample's frame), shifted by the sample's ``offset``; NaN (no spot) is transparent."""
    img = np.asarray(rendered.image, dtype=np.float32)
    if contrast_limits is None:
        contrast_limits = percentile_limits(img)
    affine = np.array(rendered.affine, dtype=float)
    affine[0, 2] += offset[1]
    affine[1, 2] += offset[0]
    meta = {
        "name": layer_name or f"{rendered.sample}{SEP}{rendered.name}",
        "affine": affine, "colormap": colormap, "contrast_limits": contrast_limits,
        "metadata": {"spatialmix": {"sample": rendered.sample, "colorbar": True, "values": rendered.name}},
    }
    meta.update(kwargs)
    return (img, meta, "image")
