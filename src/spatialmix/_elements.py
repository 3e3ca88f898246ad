"""Small helpers to get arrays and pixel->sample affines out of SpatialData elements."""

from __future__ import annotations

import numpy as np


def image_levels(element) -> list:
    """The resolution levels of an image element (a DataArray, or a multiscale DataTree), finest first."""
    if hasattr(element, "dims") and not hasattr(element, "children"):
        return [element]
    levels = []
    for key in sorted(element.children, key=lambda k: int(k.replace("scale", ""))):
        node = element[key]
        levels.append(next(iter(node.data_vars.values())) if hasattr(node, "data_vars") else node["image"])
    return levels


def element_affine(element, sample: str, *, axes: tuple[str, str] = ("x", "y")) -> np.ndarray:
    """3x3 matrix from the element's intrinsic (finest-level pixel) coordinates to the coordinate system ``sample``."""
    from spatialdata.transformations import get_transformation

    tr = get_transformation(element, to_coordinate_system=sample)
    return np.asarray(tr.to_affine_matrix(input_axes=axes, output_axes=axes), dtype=float)


def pyramid_step(nx_prev: int, nx: int, ny_prev: int, ny: int) -> np.ndarray:
    """(x, y) pixel-centre map from one pyramid level to the previous (finer) one.

    spatialdata builds pyramids with xarray ``coarsen(boundary="trim", side="right")``: each level averages
    whole k x k blocks of the previous one and drops the remainder ``r`` at the *start* of each axis, so pixel
    j covers previous pixels ``r + k j ... r + k j + k - 1`` and its centre is ``r + k j + (k - 1) / 2``. The
    level transforms spatialdata stores (``Scale(n_prev / n)``) ignore the remainder (a few micrometres off on
    coarse levels), so we compute the map from the shapes. Non-block pyramids fall back to ``n_prev / n``.
    """
    out = np.eye(3)
    for axis, (n_prev, n) in enumerate(((nx_prev, nx), (ny_prev, ny))):
        k = round(n_prev / n)
        if k >= 1 and 0 <= n_prev - k * n < k:
            out[axis, axis], out[axis, 2] = k, (n_prev - k * n) + (k - 1) / 2
        else:
            f = n_prev / n
            out[axis, axis], out[axis, 2] = f, (f - 1) / 2
    return out


def level_to_level0(levels_or_element, level: int) -> np.ndarray:
    """(x, y) matrix from pixel centres of pyramid ``level`` to level-0 pixel coordinates."""
    levels = image_levels(levels_or_element) if not isinstance(levels_or_element, list) else levels_or_element
    shapes = [tuple(lv.shape[-2:]) for lv in levels[: level + 1]]
    to0 = np.eye(3)
    for (hp, wp), (h, w) in zip(shapes[:-1], shapes[1:]):
        to0 = to0 @ pyramid_step(wp, w, hp, h)
    return to0


def level_affine(element, level: int, sample: str, *, axes: tuple[str, str] = ("x", "y")) -> np.ndarray:
    """Pixel -> sample affine of resolution ``level`` of a (possibly multiscale) image element.

    Pixel centres sit at integer coordinates (napari's convention, used throughout this package).
    """
    m = element_affine(element, sample) @ level_to_level0(element, level)
    if axes == ("x", "y"):
        return m
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
    return swap @ m @ swap


def pixel_size_in_frame(matrix: np.ndarray) -> float:
    """Geometric-mean size (in output units) of one pixel under a 2-D affine."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:2, :2]))))


def pick_level(element, base: np.ndarray, target_um: float) -> int:
    """The coarsest level whose pixels are still at most ``target_um`` wide (level 0 if none is).

    ``base`` is the level-0 pixel -> frame matrix (e.g. :func:`element_affine`); 0.1 % slack absorbs rounding
    when a level is exactly ``target_um`` wide.
    """
    best = 0
    for i in range(len(image_levels(element))):
        if pixel_size_in_frame(base @ level_to_level0(element, i)) <= target_um * 1.001:
            best = i
    return best


def resample_to_grid(image: np.ndarray, pixel_to_um: np.ndarray, bounds: tuple[float, float, float, float],
                     resolution_um: float, *, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Resample ``image`` ((y, x) or (c, y, x)) onto a regular grid of the sample frame.

    ``bounds`` = (xmin, ymin, xmax, ymax) in um; returns (c, H, W) (or (H, W) for a 2-D input). Uses
    :func:`scipy.ndimage.map_coordinates` with the inverse of ``pixel_to_um``.
    """
    from scipy import ndimage

    xmin, ymin, xmax, ymax = bounds
    xs = np.arange(xmin, xmax, resolution_um)
    ys = np.arange(ymin, ymax, resolution_um)
    gx, gy = np.meshgrid(xs, ys)
    inv = np.linalg.inv(pixel_to_um)
    px = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    py = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    arr = np.asarray(image)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[None]
    out = np.stack(
        [ndimage.map_coordinates(np.asarray(ch, dtype=np.float32), [py, px], order=order, cval=cval, mode="constant")
         for ch in arr]
    )
    return out[0] if squeeze else out
