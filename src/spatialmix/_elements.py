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


def level_affine(element, level: int, sample: str, *, axes: tuple[str, str] = ("x", "y")) -> np.ndarray:
    """Pixel -> sample affine of resolution ``level`` of a (possibly multiscale) image element."""
    levels = image_levels(element)
    base = element_affine(element, sample, axes=axes)
    if level == 0:
        return base
    h0, w0 = levels[0].shape[-2:]
    h, w = levels[level].shape[-2:]
    fx, fy = w0 / w, h0 / h
    # pixel centres sit at integer coordinates (napari's convention, used throughout this package), so the
    # centre of level-k pixel i lies at f*i + (f-1)/2 in level-0 pixels
    if axes == ("x", "y"):
        scale = np.array([[fx, 0, (fx - 1) / 2], [0, fy, (fy - 1) / 2], [0, 0, 1.0]])
    else:
        scale = np.array([[fy, 0, (fy - 1) / 2], [0, fx, (fx - 1) / 2], [0, 0, 1.0]])
    return base @ scale


def pixel_size_in_frame(matrix: np.ndarray) -> float:
    """Geometric-mean size (in output units) of one pixel under a 2-D affine."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))


def pick_level(element, sample: str, target_um: float) -> int:
    """The coarsest level whose pixels are still at most ``target_um`` wide (level 0 if none is)."""
    best = 0
    for i in range(len(image_levels(element))):
        if pixel_size_in_frame(level_affine(element, i, sample)) <= target_um:
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
