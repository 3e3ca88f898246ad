"""A sample's micrometre frame: its bounds, spot centres and geometry, images and spot values rendered on a grid
of it, and the class colours shared by figures and napari layers (no figure is drawn here; ``plotting`` draws,
``results.render`` and ``napari._layers`` use these without matplotlib). Split out of ``plotting`` in issue 18.
"""

from __future__ import annotations

import numpy as np

from spatialmix._elements import element_affine, image_levels, level_affine, pick_level, resample_to_grid


#: Categorical palette (tab10 without its grey, then tab20's light tones); grey is reserved for "unlabelled".
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5"]
UNLABELLED_COLOR = "#a0a0a0"


def category_colors(categories) -> dict[str, str]:
    """The same colour for the same class everywhere (figures and napari layers)."""
    return {str(c): PALETTE[i % len(PALETTE)] for i, c in enumerate(categories)}


def sample_bounds(sdata, sample: str, *, pad_um: float = 100.0) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) in um of a sample: its Visium capture area, else its spots, padded."""
    meta = sdata.attrs.get("spatialmix", {}).get("samples", {}).get(sample, {})
    area = meta.get("visium", {}).get("capture_area_um")
    if area is not None:
        xmin, ymin, xmax, ymax = map(float, area)
    else:
        xy = spot_xy(sdata, sample)
        xmin, ymin = xy.min(axis=0)
        xmax, ymax = xy.max(axis=0)
    return xmin - pad_um, ymin - pad_um, xmax + pad_um, ymax + pad_um


def spot_xy(sdata, sample: str) -> np.ndarray:
    """(n, 2) spot centres (x, y) in um in the sample frame, in ``spot_id`` order."""
    from spatialdata.transformations import get_transformation

    shapes = sdata.shapes[f"{sample}_spots"]
    xy = np.column_stack([shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()])
    m = np.asarray(get_transformation(shapes, to_coordinate_system=sample).to_affine_matrix(("x", "y"), ("x", "y")))
    return xy @ m[:2, :2].T + m[:2, 2]


def render_image(sdata, element: str, sample: str, *, bounds=None, resolution_um: float = 5.0) -> np.ndarray:
    """Resample an image element into the sample frame: (H, W, C) float32 on a ``resolution_um`` grid."""
    el = sdata.images[element]
    bounds = bounds or sample_bounds(sdata, sample)
    level = pick_level(el, element_affine(el, sample), resolution_um)
    arr = np.asarray(image_levels(el)[level])
    out = resample_to_grid(arr, level_affine(el, level, sample), bounds, resolution_um, cval=np.nan)
    return np.moveaxis(out, 0, -1)


def spot_geometry(sdata, sample: str) -> tuple[float, bool]:
    """(radius in um, square?) of a sample's spots: Visium's 55 um disks, or Visium HD's square bins
    (``attrs["spatialmix"]["samples"][sample]["visium"]["spot_shape"] == "square"``, radius = half the side)."""
    meta = sdata.attrs.get("spatialmix", {}).get("samples", {}).get(sample, {}).get("visium", {}) or {}
    square = meta.get("spot_shape") == "square"
    shapes = sdata.shapes.get(f"{sample}_spots") if hasattr(sdata, "shapes") else None
    radius = 27.5
    if meta.get("bin_size_um"):
        radius = float(meta["bin_size_um"]) / 2
    elif shapes is not None and "radius" in shapes and len(shapes):
        from spatialdata.transformations import get_transformation

        m = np.asarray(get_transformation(shapes, to_coordinate_system=sample).to_affine_matrix(("x", "y"),
                                                                                               ("x", "y")))
        radius = float(np.median(shapes["radius"])) * float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    return radius, square


def render_spots(values, xy: np.ndarray, *, bounds, resolution_um: float = 5.0, radius_um: float = 27.5,
                 square: bool = False) -> np.ndarray:
    """Rasterise per-spot values (n,) or (n, C) on the sample grid (NaN outside spots): disks of ``radius_um``
    (Visium: 55 um spots), or with ``square`` squares of side ``2 * radius_um`` (Visium HD bins; a grid pixel
    takes the bin nearest in the max-norm, so a slightly rotated bin grid leaves no gaps)."""
    from scipy.spatial import cKDTree

    vals = np.asarray(values, dtype=np.float32)
    if vals.ndim == 1:
        vals = vals[:, None]
    xmin, ymin, xmax, ymax = bounds
    gx, gy = np.meshgrid(np.arange(xmin, xmax, resolution_um), np.arange(ymin, ymax, resolution_um))
    # squares: max-norm distance, with 5 % slack that closes the seams of a grid not exactly parallel to the axes
    dist, idx = cKDTree(xy).query(np.column_stack([gx.ravel(), gy.ravel()]), p=np.inf if square else 2,
                                  distance_upper_bound=radius_um * 1.05 if square else radius_um)
    out = np.full((gx.size, vals.shape[1]), np.nan, np.float32)
    hit = np.isfinite(dist)
    out[hit] = vals[idx[hit]]
    return out.reshape(*gx.shape, vals.shape[1]).squeeze(-1) if vals.shape[1] == 1 else out.reshape(*gx.shape, -1)


def square_panel(xy: np.ndarray, *, pad_um: float = 100.0) -> tuple[tuple[float, float, float, float], float]:
    """Square bounds (xmin, ymin, xmax, ymax) around spot centres ``xy`` padded by ``pad_um``, and the
    rendering resolution (um per pixel) that gives about 500 pixels across."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    side = float(max(hi - lo)) + 2 * pad_um
    centre = (lo + hi) / 2
    bounds = (centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2)
    return bounds, max(2.0, side / 500)
