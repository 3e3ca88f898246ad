"""Per-spot values rasterised as the sample's spots in its micrometre frame (:func:`render_result`), for napari
image layers and figures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spatialmix.conventions import MODALITY_TABLES
from spatialmix.errors import ParameterError, ProjectError, check_positive


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
    from spatialmix.frames import render_spots, sample_bounds, spot_geometry, spot_xy

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
    from spatialmix.frames import sample_bounds

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
