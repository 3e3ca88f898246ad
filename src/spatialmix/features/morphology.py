"""Per-spot morphology features of the H&E section: colour, texture, nuclei, or a user's image encoder.

Patches are resampled into each spot's own frame (micrometres of the sample coordinate system) with
:func:`scipy.ndimage.map_coordinates` through the inverse of the H&E transformation, so a feature never
depends on the H&E pixel size or on how the slide was rotated on the scanner.

Why not ``squidpy.im.calculate_image_features``: it crops every spot separately from an ``ImageContainer``
in the image's own pixel frame (orientation-dependent, no um resampling, no partial-coverage flag) and calls
scikit-image once per spot, which takes minutes for thousands of spots. Here the patches of a batch of spots
are sampled at once and the scikit-image / scipy building blocks (``rgb2hed``,
``graycoprops``, ``local_binary_pattern``, ``threshold_otsu``, ``ndimage.label``) run on whole stacks of
patches, so thousands of spots take seconds.

Why one file of about 670 lines: it is one feature extractor. Every feature family (colour, GLCM, LBP, nuclei,
encoder) runs on the same batches of patches from ``_PatchSampler`` with the same spot mask, and
:func:`iter_morphology_features` lays their outputs side by side in the column order that the constants at the
top define (it builds the 67 names and groups from them).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import ndimage

from spatialmix._elements import image_levels, level_to_level0, pick_level, pixel_size_in_frame
from spatialmix.errors import EncoderError, MissingFileError, ParameterError, ProjectError, check_positive
from spatialmix.features._spots import element_to_sample, require_element, sample_spots
from spatialmix.progress import Progress, ProgressGen, run

_COLOR_CHANNELS = ("R", "G", "B", "hematoxylin", "eosin", "dab", "saturation")
_COLOR_STATS = ("mean", "std", "p10", "p50", "p90")
_GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM", "entropy")
_GLCM_LEVELS = 32
_GLCM_DISTANCES = (1, 3)  # in patch pixels (resolution_um each)
_GLCM_ANGLES = ((0, 1), (-1, 1), (-1, 0), (-1, -1))  # (drow, dcol) for 0, 45, 90, 135 degrees
_LBP_POINTS, _LBP_RADIUS = 8, 1
_NUCLEI_NAMES = (
    "nuclei_count",
    "nuclei_density_per_1000um2",
    "nuclei_mean_area_um2",
    "nuclei_std_area_um2",
    "nuclei_mean_eccentricity",
    "nuclei_mean_solidity",
    "nuclei_area_fraction",
    "nuclei_mean_hematoxylin",
)
_HULL_DIRECTIONS = 32
_CACHE_BYTES = 2 << 30  # read the H&E region under all spots at once up to this size


# ----------------------------------------------------------------------------------------------- helpers
def _intensity_scale(data, cached: bool) -> float:
    """Factor taking the image's values to [0, 1]: 1/255 for uint8, 1/65535 for uint16, floats by their range."""
    dt = np.dtype(data.dtype)
    if dt == np.uint8:
        return 1 / 255.0
    if dt == np.uint16:
        return 1 / 65535.0
    if np.issubdtype(dt, np.integer):
        return 1 / float(np.iinfo(dt).max)
    if cached or not hasattr(data, "compute"):
        top = float(np.nanmax(data))
    else:
        top = float(data.max().compute())
    return 1.0 if top <= 1.0 else 1 / 255.0


def _morton_order(xy: np.ndarray, cell: float) -> np.ndarray:
    """Spot order along a Z-order curve (cells of ``cell`` um): consecutive spots are close in 2-D, so the
    H&E region read for a batch is compact instead of a band across the whole slide."""
    if len(xy) == 0:
        return np.zeros(0, dtype=np.int64)
    q = np.floor((xy - xy.min(axis=0)) / cell).astype(np.uint64)
    q = np.minimum(q, np.uint64(0xFFFF))

    def spread(v):
        v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF)
        v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F)
        v = (v | (v << np.uint64(2))) & np.uint64(0x33333333)
        return (v | (v << np.uint64(1))) & np.uint64(0x55555555)

    code = spread(q[:, 0]) | (spread(q[:, 1]) << np.uint64(1))
    return np.lexsort((xy[:, 0], xy[:, 1], code))


class _PatchSampler:
    """Sample square patches (in um, axis-aligned in the sample frame) from one pyramid level.

    ``n_px`` x ``n_px`` points at the centres of a regular grid over the square of side ``side_um``; the level
    read is the coarsest whose pixels are at most ``side_um / n_px`` wide, or the finest.
    """

    def __init__(self, element, base: np.ndarray, side_um: float, n_px: int, centres: np.ndarray):
        self.side_um = float(side_um)
        self.n_px = int(n_px)
        self.res_um = self.side_um / self.n_px
        self.level = pick_level(element, base, self.res_um)
        data = image_levels(element)[self.level].data  # numpy or dask (c, y, x)
        self.affine = base @ level_to_level0(element, self.level)
        self.level_um = pixel_size_in_frame(self.affine)
        self.inv = np.linalg.inv(self.affine)
        off = (np.arange(self.n_px) + 0.5) * self.res_um - self.side_um / 2
        gx, gy = np.meshgrid(off, off, indexing="xy")  # row = y, column = x
        self.offsets = np.column_stack([gx.ravel(), gy.ravel()])  # (P, 2) um
        self.height, self.width = data.shape[-2:]
        # anti-aliasing when the level is finer than the patch grid (sigma as skimage.transform.rescale)
        self.sigma = max(0.0, (self.res_um / self.level_um - 1.0) / 2.0)
        if self.sigma <= 0.3:
            self.sigma = 0.0
        # Read the part of the level under all spots once when it fits in memory: a dask-backed level
        # (e.g. a pyramid level computed lazily from the full resolution) would otherwise be recomputed
        # for every batch. Larger regions (whole-slide levels on disk) are read batch by batch.
        self.data, self.origin, self.cached = data, (0, 0), False
        box = self._box(centres) if len(centres) else None
        if box is not None:
            x0, x1, y0, y1 = box
            if 3 * (x1 - x0) * (y1 - y0) * np.dtype(data.dtype).itemsize <= _CACHE_BYTES:
                self.data, self.origin, self.cached = np.asarray(data[:3, y0:y1, x0:x1]), (x0, y0), True
        self.scale = _intensity_scale(self.data, self.cached)

    def _pixels(self, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pts = (centres[:, None, :] + self.offsets[None, :, :]).reshape(-1, 2)
        px = self.inv[0, 0] * pts[:, 0] + self.inv[0, 1] * pts[:, 1] + self.inv[0, 2]
        py = self.inv[1, 0] * pts[:, 0] + self.inv[1, 1] * pts[:, 1] + self.inv[1, 2]
        return px, py

    def _box(self, centres: np.ndarray) -> tuple[int, int, int, int] | None:
        """Bounding box (x0, x1, y0, y1) in level pixels of the patches around ``centres``, padded, clipped."""
        half = self.side_um / 2
        corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        pts = (centres[:, None, :] + corners[None]).reshape(-1, 2)
        px = self.inv[0, 0] * pts[:, 0] + self.inv[0, 1] * pts[:, 1] + self.inv[0, 2]
        py = self.inv[1, 0] * pts[:, 0] + self.inv[1, 1] * pts[:, 1] + self.inv[1, 2]
        pad = 3 + int(np.ceil(3 * self.sigma))
        x0 = max(0, int(np.floor(px.min())) - pad)
        x1 = min(self.width, int(np.ceil(px.max())) + pad + 1)
        y0 = max(0, int(np.floor(py.min())) - pad)
        y1 = min(self.height, int(np.ceil(py.max())) + pad + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, x1, y0, y1

    def sample(self, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patches ``(n, n_px, n_px, 3)`` float32 in [0, 1] and ``inside`` ``(n, n_px, n_px)`` bool.

        Bilinear interpolation (:func:`scipy.ndimage.map_coordinates`, ``order=1``); points outside the
        image are white (glass) and ``inside`` is False there.
        """
        n, P = centres.shape[0], self.offsets.shape[0]
        px, py = self._pixels(centres)
        inside = (px >= -0.5) & (px <= self.width - 0.5) & (py >= -0.5) & (py <= self.height - 0.5)
        out = np.ones((n * P, 3), dtype=np.float32)
        box = self._box(centres) if inside.any() else None
        if box is not None:
            ox, oy = self.origin
            if self.cached and self.sigma == 0.0:
                src, x0, y0 = self.data, ox, oy  # sample the cached region directly, no copy
            else:
                x0, x1, y0, y1 = box
                src = np.asarray(self.data[:3, y0 - oy : y1 - oy, x0 - ox : x1 - ox]).astype(np.float32)
                if self.sigma > 0:
                    src = ndimage.gaussian_filter(src, sigma=(0, self.sigma, self.sigma), mode="nearest")
            coords = np.vstack([py[inside] - y0, px[inside] - x0])
            for c in range(3):
                out[inside, c] = ndimage.map_coordinates(src[c], coords, output=np.float32, order=1, mode="nearest")
            out[inside] *= self.scale
            np.clip(out, 0.0, 1.0, out=out)
        return out.reshape(n, self.n_px, self.n_px, 3), inside.reshape(n, self.n_px, self.n_px)


# ---------------------------------------------------------------------------------------- colour / texture
def _color_features(rgb: np.ndarray, hed: np.ndarray, sat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, 7 channels x 5 stats) colour statistics over the mask pixels."""
    chans = [rgb[..., 0], rgb[..., 1], rgb[..., 2], hed[..., 0], hed[..., 1], hed[..., 2], sat]
    feats = []
    for ch in chans:
        v = ch[:, mask].astype(np.float64)  # (n, M)
        p10, p50, p90 = np.percentile(v, [10, 50, 90], axis=1)
        feats.extend([v.mean(axis=1), v.std(axis=1), p10, p50, p90])
    return np.column_stack(feats)


def _glcm_features(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, props x distances) GLCM properties averaged over 4 angles, mask pixels only.

    The co-occurrence counts of a whole stack of patches come from one ``np.bincount`` per offset (the
    same counts ``skimage.feature.graycomatrix`` gives per image, which costs ~1 ms per call for thousands of
    calls); pixels outside the mask get grey level 0, whose row and column are dropped, so only pairs of
    mask pixels count. The properties are ``skimage.feature.graycoprops`` on all patches at once.
    """
    from skimage.feature import graycoprops

    n, h, w = gray.shape
    L = _GLCM_LEVELS + 1
    q = (np.minimum((gray * _GLCM_LEVELS).astype(np.int64), _GLCM_LEVELS - 1) + 1) * mask[None]
    base = (np.arange(n, dtype=np.int64) * L * L)[:, None, None]
    mats = []
    for d in _GLCM_DISTANCES:
        for dr, dc in _GLCM_ANGLES:
            dr, dc = dr * d, dc * d
            r0, r1 = max(0, -dr), h - max(0, dr)
            c0, c1 = max(0, -dc), w - max(0, dc)
            a = q[:, r0:r1, c0:c1]
            b = q[:, r0 + dr : r1 + dr, c0 + dc : c1 + dc]
            cnt = np.bincount((base + a * L + b).ravel(), minlength=n * L * L).reshape(n, L, L)
            cnt = cnt + cnt.transpose(0, 2, 1)  # symmetric, as graycomatrix(symmetric=True)
            mats.append(cnt[:, 1:, 1:])
    P = np.stack(mats, axis=-1).astype(np.float64)  # (n, levels, levels, n_offsets)
    P = P.transpose(1, 2, 0, 3).reshape(_GLCM_LEVELS, _GLCM_LEVELS, 1, -1)
    n_ang = len(_GLCM_ANGLES)
    out = []
    for prop in _GLCM_PROPS:
        vals = graycoprops(P, prop).reshape(n, len(_GLCM_DISTANCES), n_ang).mean(axis=2)
        out.append(vals)
    # columns ordered distance-major: all props at d1, then all props at d3
    return np.concatenate([np.stack([o[:, i] for o in out], axis=1) for i in range(len(_GLCM_DISTANCES))], axis=1)


def _lbp_features(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, P+2) histogram of rotation-invariant uniform LBP codes over the mask pixels.

    Patches are edge-padded and stacked into one mosaic so ``local_binary_pattern`` runs once.
    """
    from skimage.feature import local_binary_pattern

    n, h, w = gray.shape
    g8 = np.round(gray * 255).astype(np.uint8)
    pad = _LBP_RADIUS + 1
    tiles = np.pad(g8, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    H, W = tiles.shape[1:]
    codes = local_binary_pattern(tiles.reshape(n * H, W), _LBP_POINTS, _LBP_RADIUS, method="uniform")
    codes = codes.reshape(n, H, W)[:, pad:-pad, pad:-pad].astype(np.int64)
    nb = _LBP_POINTS + 2
    idx = (np.arange(n)[:, None] * nb + codes[:, mask]).ravel()
    hist = np.bincount(idx, minlength=n * nb).reshape(n, nb).astype(np.float64)
    return hist / max(1, int(mask.sum()))


# --------------------------------------------------------------------------------------------------- nuclei
def _convex_areas(rows: np.ndarray, cols: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Convex area (in pixels, as ``skimage.measure.regionprops(...).area_convex`` counts it) of each object.

    ``rows``/``cols`` are the pixels sorted by object, object ``k`` owning ``[starts[k], starts[k+1])``.
    The convex hull of the pixel centres is the polygon of ``_HULL_DIRECTIONS`` support lines (support
    function = max over pixels of the projection; it circumscribes the exact hull by < 0.4 %), and the number
    of pixels it holds is estimated with Pick's theorem, ``area + perimeter / 2 + 1`` (exact for rectangles;
    on random blobs solidity is within 0.01 of scikit-image's on average, 0.05 at most). Vectorised over all
    objects, instead of one scipy ConvexHull per object as ``regionprops`` does (~0.2 ms each, i.e. tens of
    seconds for the ~10^5 nuclei of a section).
    """
    theta = 2 * np.pi * np.arange(_HULL_DIRECTIONS) / _HULL_DIRECTIONS
    ct, st = np.cos(theta), np.sin(theta)
    h = np.empty((starts.size, _HULL_DIRECTIONS))
    for k in range(_HULL_DIRECTIONS):
        h[:, k] = np.maximum.reduceat(cols * ct[k] + rows * st[k], starts)
    # vertex between support lines k and k+1
    h1 = np.roll(h, -1, axis=1)
    ct1, st1 = np.roll(ct, -1), np.roll(st, -1)
    det = np.sin(2 * np.pi / _HULL_DIRECTIONS)
    vx = (h * st1 - h1 * st) / det
    vy = (h1 * ct - h * ct1) / det
    nx, ny = np.roll(vx, -1, axis=1), np.roll(vy, -1, axis=1)
    area = 0.5 * np.abs((vx * ny - nx * vy).sum(axis=1))
    perimeter = np.hypot(nx - vx, ny - vy).sum(axis=1)
    return area + perimeter / 2 + 1


def _nuclei_features(
    hs: np.ndarray, mask: np.ndarray, threshold: float, res_um: float, min_area_um2: float
) -> np.ndarray:
    """(n, 8) nuclei statistics from the smoothed hematoxylin stack ``hs`` (n, h, w)."""
    n = hs.shape[0]
    fg = hs > threshold
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected, within each patch only
    lab, n_lab = ndimage.label(fg, structure=structure)
    out = np.zeros((n, len(_NUCLEI_NAMES)))
    mask_px = float(mask.sum())
    if n_lab == 0:
        return out
    flat = np.flatnonzero(lab)
    lv = lab.ravel()[flat]
    order = np.argsort(lv, kind="stable")
    flat, lv = flat[order], lv[order]
    pid, rows, cols = np.unravel_index(flat, lab.shape)
    starts = np.flatnonzero(np.r_[True, lv[1:] != lv[:-1]])
    area = np.diff(np.r_[starts, lv.size]).astype(np.float64)
    patch = pid[starts]
    rows_f, cols_f = rows.astype(np.float64), cols.astype(np.float64)
    sr = np.add.reduceat(rows_f, starts)
    sc = np.add.reduceat(cols_f, starts)
    mr, mc = sr / area, sc / area
    crr = np.add.reduceat(rows_f * rows_f, starts) / area - mr * mr
    ccc = np.add.reduceat(cols_f * cols_f, starts) / area - mc * mc
    crc = np.add.reduceat(rows_f * cols_f, starts) / area - mr * mc
    # eigenvalues of the inertia tensor, eccentricity as skimage.measure.regionprops defines it
    tr, dif = crr + ccc, np.sqrt(np.maximum(0.0, (crr - ccc) ** 2 + 4 * crc * crc))
    l1, l2 = (tr + dif) / 2, np.maximum(0.0, (tr - dif) / 2)
    ecc = np.where(l1 > 1e-12, np.sqrt(np.clip(1 - l2 / np.where(l1 > 1e-12, l1, 1.0), 0, 1)), 0.0)
    solidity = np.clip(area / _convex_areas(rows_f, cols_f, starts), 0.0, 1.0)
    hsum = np.add.reduceat(hs.ravel()[flat].astype(np.float64), starts)

    min_px = min_area_um2 / res_um**2
    big = area >= min_px
    ri = np.clip(np.rint(mr).astype(int), 0, mask.shape[0] - 1)
    ci = np.clip(np.rint(mc).astype(int), 0, mask.shape[1] - 1)
    counted = big & mask[ri, ci]  # nuclei whose centroid lies in the spot

    def per_patch(values, sel):
        return np.bincount(patch[sel], weights=values[sel], minlength=n)

    cnt = per_patch(np.ones_like(area), counted)
    safe = np.where(cnt > 0, cnt, 1.0)
    a_um = area * res_um**2
    mean_a = per_patch(a_um, counted) / safe
    var_a = np.maximum(0.0, per_patch(a_um**2, counted) / safe - mean_a**2)
    # nuclear pixels (of nuclei above the size limit) inside the mask
    pix_obj = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, lv.size]))
    in_mask = mask[rows, cols] & big[pix_obj]
    frac = np.bincount(pid[in_mask], minlength=n) / mask_px
    out[:, 0] = cnt
    out[:, 1] = cnt / (mask_px * res_um**2) * 1000.0
    out[:, 2] = mean_a
    out[:, 3] = np.sqrt(var_a)
    out[:, 4] = per_patch(ecc, counted) / safe
    out[:, 5] = per_patch(solidity, counted) / safe
    out[:, 6] = frac
    out[:, 7] = per_patch(hsum, counted) / np.where(cnt > 0, per_patch(area, counted), 1.0)
    return out


# --------------------------------------------------------------------------------------------------- encoder
def _load_encoder(encoder, device: str):
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={device!r} but no CUDA GPU is available here; use device='cpu'")
    if isinstance(encoder, torch.nn.Module):
        return encoder.to(device).eval(), repr(type(encoder).__name__)
    path = Path(encoder)
    if not path.is_file():
        raise MissingFileError(
            "Image-encoder checkpoint not found",
            path,
            fix="Give the path of a TorchScript file saved with torch.jit.save(torch.jit.script(model), path)",
        )
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError / ValueError / pickle errors depending on the content
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(
            f"Cannot load the image encoder as a TorchScript model ({type(exc).__name__}: {first[:200]})",
            path,
            fix="Export the encoder with torch.jit.script(model) or torch.jit.trace(model, torch.rand(1, 3, 224, 224)) "
            "and save it with .save(path); plain state_dict / torch.save checkpoints cannot be used",
        ) from None
    return model.eval(), str(path)


def _run_encoder(model, batch: np.ndarray, size: int, device: str, where: str, expect_dim: int | None) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)
    if x.shape[-1] != size:  # resize to the encoder's input (patches are sampled at most at the H&E's resolution)
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=x.shape[-1] > size).clamp_(0.0, 1.0)
    try:
        with torch.inference_mode():
            y = model(x)
    except Exception as exc:
        raise EncoderError(
            f"The image encoder failed on a batch of shape {tuple(x.shape)} (float32 in [0, 1]): "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}",
            where,
            fix="The encoder must take a float tensor (N, 3, H, W) and return (N, D); set encoder_input_size "
            "to the input size it expects",
        ) from None
    if not isinstance(y, torch.Tensor) or y.ndim != 2 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise EncoderError(
            f"The image encoder returned {shape} for an input of shape {tuple(x.shape)}; expected a tensor "
            f"(N, D) = ({x.shape[0]}, D)",
            where,
            fix="Make the model end with a global pooling / flatten so it returns one D-vector per patch",
        )
    if expect_dim is not None and y.shape[1] != expect_dim:
        raise EncoderError(
            f"The image encoder returned {y.shape[1]} features for one batch and {expect_dim} for another", where
        )
    out = y.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(out).all():
        raise EncoderError("The image encoder returned NaN or Inf features", where,
                           fix="Check the checkpoint's weights and that it expects inputs in [0, 1]")
    return out


# -------------------------------------------------------------------------------------------------- public
def iter_morphology_features(
    sdata,
    sample: str,
    *,
    encoder: str | Path | Any | None = None,
    patch_um: float | None = None,
    batch_size: int = 64,
    resolution_um: float = 1.0,
    min_coverage: float = 0.9,
    min_nucleus_area_um2: float = 8.0,
    nuclei_threshold: float | None = None,
    encoder_input_size: int = 224,
    device: str = "cpu",
) -> ProgressGen[ad.AnnData]:
    """Morphology features of the H&E under each spot of one sample (progress generator).

    Each spot's patch is resampled from ``{sample}_he`` into the spot's frame (um of coordinate system
    ``sample``, through the inverse of the H&E transformation), so features do not depend on the H&E pixel
    size or orientation. For a multiscale H&E the coarsest level whose pixels are at most the sampling
    resolution wide is read (the finest level if none is).

    Hand-crafted features (default), 67 columns, ``var["group"]``:

    - ``color``: mean, std, 10/50/90th percentiles of R, G, B (0-1), of the hematoxylin, eosin and DAB
      channels of :func:`skimage.color.rgb2hed` and of HSV saturation (``color_R_mean``,
      ``color_hematoxylin_p90``, ...);
    - ``texture``: GLCM contrast, dissimilarity, homogeneity, energy, correlation, ASM, entropy
      (:func:`skimage.feature.graycoprops`, 32 grey levels, symmetric, averaged over 0/45/90/135 degrees) at
      1 and 3 patch pixels (``glcm_contrast``, ``glcm_contrast_d3``, ...) and the 10-bin histogram of
      rotation-invariant uniform LBP codes (P=8, R=1; ``lbp_0`` .. ``lbp_9``);
    - ``nuclei``: hematoxylin (smoothed, sigma 1 um) above one Otsu threshold per sample (computed over
      all covered spots, so that a spot without nuclei does not get a per-patch threshold splitting noise),
      4-connected objects of at least ``min_nucleus_area_um2``, counted when the centroid is in the spot:
      ``nuclei_count``, ``nuclei_density_per_1000um2``, ``nuclei_mean_area_um2``, ``nuclei_std_area_um2``,
      ``nuclei_mean_eccentricity``, ``nuclei_mean_solidity``, ``nuclei_area_fraction``,
      ``nuclei_mean_hematoxylin``. Touching nuclei are not split (counts are a lower bound in dense tissue);
      per-nucleus means are 0 for spots without nuclei.

    Parameters
    ----------
    sdata
        Project holding ``{sample}_spots``, ``{sample}_he`` (RGB, (c, y, x), possibly multiscale) with its
        registration into ``sample``, and the ``rna`` table.
    sample
        Sample (= coordinate system) name.
    encoder
        Path to a TorchScript image encoder (or an already loaded ``torch.nn.Module``) taking float
        ``(N, 3, H, W)`` in [0, 1] and returning ``(N, D)``. Its features ``enc_0 .. enc_{D-1}`` (group
        ``encoder``) replace the hand-crafted ones. Patches (squares of side ``patch_um``, 55 um by default)
        are sampled at the H&E's full resolution (at most ``encoder_input_size`` pixels wide) and resized
        to ``encoder_input_size`` (bilinear).
    patch_um
        ``None`` (default): the spot disk (diameter = 2 x spot radius, 55 um), statistics over the disk
        only. A number: a square of that side (um) centred on the spot, statistics over the whole square.
    batch_size
        Spots sampled and processed per step (and encoder batch size).
    resolution_um
        Pixel size (um) of the patches for the hand-crafted features.
    min_coverage
        Spots whose patch lies inside the H&E image for less than this fraction get all-zero features,
        ``obs["he_covered"] = False``, are listed in ``uns["he_uncovered_spots"]`` and counted in a warning.
        ``obs["he_coverage"]`` always holds the fraction (spots with a patch partly outside keep their
        features when above the limit; outside pixels count as white glass).
    min_nucleus_area_um2
        Smallest hematoxylin object counted as a nucleus.
    nuclei_threshold
        Fixed hematoxylin threshold (``rgb2hed`` units) instead of Otsu's.
    encoder_input_size
        Side (pixels) of the encoder's input.
    device
        Torch device for the encoder (``"cpu"``, ``"cuda"``, ...).

    Yields
    ------
    :class:`~spatialmix.progress.Progress` events.

    Returns
    -------
    AnnData
        One row per in-tissue spot of ``sample``, in the order (and with the obs names) of the ``rna``
        rows of that sample; X float32; var ``group``; obs: the id columns of ``rna``, ``he_coverage``,
        ``he_covered``; ``uns["he_uncovered_spots"]``, ``uns["spatialmix"]["morphology"]`` (level used,
        um per pixel, threshold, parameters).
    """
    resolution_um = check_positive("resolution_um", resolution_um)
    if patch_um is not None:
        patch_um = check_positive("patch_um", patch_um)
    if not 0.0 <= float(min_coverage) <= 1.0:
        raise ParameterError(f"min_coverage must be a fraction in [0, 1], got {min_coverage!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    if int(encoder_input_size) != encoder_input_size or encoder_input_size < 8:
        raise ParameterError(f"encoder_input_size must be an integer >= 8, got {encoder_input_size!r}")
    batch_size = int(batch_size)
    stage = f"morphology {sample}"
    yield Progress(stage, 0, None, "reading elements")

    spots = sample_spots(sdata, sample)
    he_name = f"{sample}_he"
    he = require_element(sdata, "images", he_name, sample, "morphology features")
    base = element_to_sample(
        he, sample, he_name,
        hint="Register the H&E to the Visium spots first (spatialmix.registration) so that it maps into "
        f"coordinate system {sample!r}",
    )
    n_channels = image_levels(he)[0].shape[0]
    if n_channels < 3:
        raise ProjectError(
            f"H&E image {he_name!r} has {n_channels} channel(s); morphology features need an RGB image "
            f"(c=3, y, x). Re-read the slide as RGB"
        )
    n = len(spots.obs)
    radius = float(np.median(spots.radius)) if n else 27.5
    disk = patch_um is None
    side = 2 * radius if disk else float(patch_um)
    # spatially compact batches: each reads one small region of the slide
    order = _morton_order(spots.xy, side)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]

    if encoder is not None:
        model, where = _load_encoder(encoder, device)
        # sample at the H&E's full resolution (or the input size if coarser), then resize to the input size
        n_sample = int(min(encoder_input_size, max(8, round(side / pixel_size_in_frame(base)))))
        sampler = _PatchSampler(he, base, side, n_sample, spots.xy)
        inside_all = np.ones((n, sampler.n_px, sampler.n_px), dtype=bool)
        feats = None
        for b, idx in enumerate(batches):
            patches, inside = sampler.sample(spots.xy[idx])
            f = _run_encoder(model, patches, int(encoder_input_size), device, where,
                             None if feats is None else feats.shape[1])
            if feats is None:
                feats = np.zeros((n, f.shape[1]), dtype=np.float32)
            feats[idx] = f
            inside_all[idx] = inside
            yield Progress(stage, b + 1, len(batches), "encoder")
        if feats is None:
            feats = np.zeros((0, 0), dtype=np.float32)
        mask = np.ones((sampler.n_px, sampler.n_px), dtype=bool)
        coverage = inside_all[:, mask].mean(axis=1) if n else np.zeros(0)
        names = [f"enc_{i}" for i in range(feats.shape[1])]
        groups = ["encoder"] * len(names)
        info: dict[str, Any] = {"encoder": where, "encoder_input_size": int(encoder_input_size), "device": device}
    else:
        from skimage.color import rgb2hed
        from skimage.filters import threshold_otsu

        n_px = max(8, int(round(side / resolution_um)))
        sampler = _PatchSampler(he, base, side, n_px, spots.xy)
        res = sampler.res_um
        if disk:
            c = (np.arange(n_px) + 0.5) * res - side / 2
            mask = (c[None, :] ** 2 + c[:, None] ** 2) <= radius**2
        else:
            mask = np.ones((n_px, n_px), dtype=bool)
        n_base = 35 + len(_GLCM_DISTANCES) * len(_GLCM_PROPS) + _LBP_POINTS + 2
        base_feats = np.zeros((n, n_base), dtype=np.float64)
        hs_all = np.zeros((n, n_px, n_px), dtype=np.float32)
        coverage = np.zeros(n)
        total = len(batches) + 1
        for b, idx in enumerate(batches):
            rgb, inside = sampler.sample(spots.xy[idx])
            hed = rgb2hed(rgb, channel_axis=-1).astype(np.float32)
            # HSV saturation as skimage.color.rgb2hsv defines it, without computing hue and value
            vmax, vmin = rgb.max(axis=-1), rgb.min(axis=-1)
            sat = np.where(vmax > 0, (vmax - vmin) / np.where(vmax > 0, vmax, 1.0), 0.0).astype(np.float32)
            gray = (0.2125 * rgb[..., 0] + 0.7154 * rgb[..., 1] + 0.0721 * rgb[..., 2])  # skimage rgb2gray weights
            base_feats[idx] = np.hstack(
                [_color_features(rgb, hed, sat, mask), _glcm_features(gray, mask), _lbp_features(gray, mask)]
            )
            hs_all[idx] = ndimage.gaussian_filter(hed[..., 0], sigma=(0, 1.0 / res, 1.0 / res), mode="nearest")
            coverage[idx] = inside[:, mask].mean(axis=1)
            yield Progress(stage, b + 1, total, "colour and texture")
        covered_pre = coverage >= float(min_coverage)
        if nuclei_threshold is not None:
            thr = float(nuclei_threshold)
        else:
            vals = hs_all[covered_pre][:, mask].ravel()
            if vals.size > 2_000_000:
                vals = vals[np.random.default_rng(0).choice(vals.size, 2_000_000, replace=False)]
            thr = float(threshold_otsu(vals)) if vals.size and np.ptp(vals) > 0 else float("inf")
        nuc = _nuclei_features(hs_all, mask, thr, res, float(min_nucleus_area_um2))
        yield Progress(stage, total, total, "nuclei")
        feats = np.hstack([base_feats, nuc]).astype(np.float32)
        names = [f"color_{ch}_{st}" for ch in _COLOR_CHANNELS for st in _COLOR_STATS]
        for d in _GLCM_DISTANCES:
            names += [f"glcm_{p}" + ("" if d == 1 else f"_d{d}") for p in _GLCM_PROPS]
        names += [f"lbp_{i}" for i in range(_LBP_POINTS + 2)]
        names += list(_NUCLEI_NAMES)
        n_texture = len(_GLCM_DISTANCES) * len(_GLCM_PROPS) + _LBP_POINTS + 2
        groups = ["color"] * 35 + ["texture"] * n_texture + ["nuclei"] * len(_NUCLEI_NAMES)
        info = {"nuclei_threshold": thr, "min_nucleus_area_um2": float(min_nucleus_area_um2),
                "glcm_levels": _GLCM_LEVELS, "glcm_distances_px": list(_GLCM_DISTANCES)}

    covered = coverage >= float(min_coverage)
    feats = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)
    feats[~covered] = 0.0
    obs = spots.obs.copy()
    obs["he_coverage"] = coverage.astype(np.float32)
    obs["he_covered"] = covered
    var = pd.DataFrame({"group": pd.Categorical(groups)}, index=pd.Index(names))
    result = ad.AnnData(X=feats.astype(np.float32), obs=obs, var=var)
    uncovered = obs.index[~covered].tolist()
    result.uns["he_uncovered_spots"] = uncovered
    result.uns["spatialmix"] = {
        "morphology": {
            "sample": sample,
            "he_level": int(sampler.level),
            "he_level_um_per_px": float(sampler.level_um),
            "patch_um": float(side),
            "patch_shape": "disk" if (disk and encoder is None) else "square",
            "patch_px": int(sampler.n_px),
            "patch_um_per_px": float(sampler.res_um),
            "min_coverage": float(min_coverage),
            "n_uncovered": len(uncovered),
            **info,
        }
    }
    if uncovered:
        warnings.warn(
            f"{len(uncovered)} of {n} spots of sample {sample!r} have less than min_coverage={min_coverage:g} of "
            f"their H&E patch inside the image; their morphology features are set to 0 and flagged "
            f"(obs['he_covered'] == False, uns['he_uncovered_spots'])",
            UserWarning,
            stacklevel=2,
        )
    return result


def morphology_features(
    sdata,
    sample: str,
    *,
    encoder: str | Path | Any | None = None,
    patch_um: float | None = None,
    batch_size: int = 64,
    resolution_um: float = 1.0,
    min_coverage: float = 0.9,
    min_nucleus_area_um2: float = 8.0,
    nuclei_threshold: float | None = None,
    encoder_input_size: int = 224,
    device: str = "cpu",
    progress: bool = False,
) -> ad.AnnData:
    """Morphology features of the H&E under each spot of one sample.

    Plain-function form of :func:`iter_morphology_features` (same parameters and result); ``progress=True``
    shows a terminal progress bar.
    """
    return run(
        iter_morphology_features(
            sdata,
            sample,
            encoder=encoder,
            patch_um=patch_um,
            batch_size=batch_size,
            resolution_um=resolution_um,
            min_coverage=min_coverage,
            min_nucleus_area_um2=min_nucleus_area_um2,
            nuclei_threshold=nuclei_threshold,
            encoder_input_size=encoder_input_size,
            device=device,
        ),
        progress=progress,
    )


__all__ = ["iter_morphology_features", "morphology_features"]
