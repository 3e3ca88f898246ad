"""Array-level automatic registration: a moving tissue image onto a fixed tissue image in micrometres.

The search is a brute-force scan over rotation (full circle) and scale with the translation of every
(rotation, scale) found at once by FFT cross-correlation of tissue masks, followed by a continuous refinement
(L-BFGS with analytic gradients) of a similarity or affine transform on smoothed masks at finer and finer
scales. scikit-image offers translation-only phase correlation and a log-polar trick for rotation/scale
that breaks down when the two sections only partly overlap (MSI covering tissue outside the capture area),
which is why the search is written here; all the image operations (masks, morphology, resampling, FFT,
optimisation) are scikit-image / SciPy calls.

Why one file of about 830 lines: it is one algorithm. Every stage of :func:`iter_register_to_reference` (coarse
search, refinement level by level, the Dice and boundary-RMS scores) takes the same two private ``_Raster`` maps
and common ``domain`` and hands on the same 3x3 pixel -> um matrix; the mask and landmark code is already apart
(``_masks``, ``_landmarks``), as is reading and writing the project (``_sdata``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, optimize

from spatialmix._elements import pixel_size_in_frame
from spatialmix.errors import ParameterError, RegistrationError
from spatialmix.progress import Progress, ProgressGen, run
from spatialmix.project import jsonable

from ._landmarks import apply_matrix, check_kind
from ._masks import tissue_mask


@dataclass
class RegistrationResult:
    """A transform from a moving element's pixels to the sample's micrometre frame, and how good it is.

    Attributes
    ----------
    matrix
        3x3 matrix, moving pixel ``[x=col, y=row, 1]`` -> sample ``[x_um, y_um, 1]``.
    rms_um
        Residual estimate in micrometres: the landmark RMS (``method="landmarks"``), or for the automatic
        method the RMS distance between the fixed and the registered moving tissue boundaries inside the
        common domain.
    score
        Overlap of the tissue masks in the common domain (Dice, 0..1) for ``"auto"``; ``nan`` for landmarks.
    method
        ``"auto"`` or ``"landmarks"``.
    kind
        ``"similarity"`` or ``"affine"``.
    parameters
        Search options and derived numbers (rotation, scale, ...), JSON-serialisable.
    n_landmarks, residuals_um
        Landmark registrations only.
    """

    matrix: np.ndarray
    rms_um: float
    score: float = float("nan")
    method: str = "auto"
    kind: str = "similarity"
    parameters: dict[str, Any] = field(default_factory=dict)
    n_landmarks: int | None = None
    residuals_um: np.ndarray | None = None

    @property
    def rotation_deg(self) -> float:
        """Rotation of the linear part (degrees, counter-clockwise in x-right/y-down axes as displayed)."""
        m = self.matrix
        return float(np.degrees(np.arctan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1])))

    @property
    def pixel_size_um(self) -> float:
        """Registered size of one moving pixel in micrometres (square root of the area scale)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:2, :2]))))

    def to_record(self) -> dict[str, Any]:
        """JSON-serialisable record for ``sdata.attrs["spatialmix"]["registration"][sample][modality]``."""
        rec: dict[str, Any] = {
            "method": self.method,
            "kind": self.kind,
            "matrix": [[float(v) for v in row] for row in np.asarray(self.matrix)],
            "rms_um": float(self.rms_um),
            "score": None if not np.isfinite(self.score) else float(self.score),
            "rotation_deg": self.rotation_deg,
            "pixel_size_um": self.pixel_size_um,
            "parameters": jsonable(self.parameters),
        }
        if self.n_landmarks is not None:
            rec["n_landmarks"] = int(self.n_landmarks)
        if self.residuals_um is not None:
            rec["residuals_um"] = [float(v) for v in np.asarray(self.residuals_um)]
        return rec


# ----------------------------------------------------------------------------------------------------------
# small geometry helpers


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _h(lin: np.ndarray, t=(0.0, 0.0)) -> np.ndarray:
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = t
    return m


def _translation(t) -> np.ndarray:
    return _h(np.eye(2), t)


def _swap_xy(m: np.ndarray) -> np.ndarray:
    p = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    return p @ m @ p


def _warp(image: np.ndarray, out_to_in_xy: np.ndarray, shape: tuple[int, int], *, order: int = 1) -> np.ndarray:
    """Resample ``image`` onto an output raster; ``out_to_in_xy`` maps output (x, y) to input (x, y) pixels."""
    m = _swap_xy(out_to_in_xy)
    return ndimage.affine_transform(
        image, m[:2, :2], offset=m[:2, 2], output_shape=shape, order=order, mode="constant", cval=0.0,
        prefilter=False,
    )


def _block_mean(arr: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Average k x k blocks of a (y, x[, c]) array; returns it and the new-pixel -> old-pixel 3x3 matrix."""
    if k <= 1:
        return arr, np.eye(3)
    h, w = arr.shape[:2]
    h2, w2 = (h // k) * k, (w // k) * k
    a = np.asarray(arr[:h2, :w2], dtype=np.float32)
    a = a.reshape(h2 // k, k, w2 // k, k, *a.shape[2:]).mean(axis=(1, 3))
    off = (k - 1) / 2.0
    return a, np.array([[k, 0, off], [0, k, off], [0, 0, 1.0]])


# ----------------------------------------------------------------------------------------------------------
# rasters


@dataclass
class _Raster:
    """A 2-D float map with its pixel -> um matrix."""

    data: np.ndarray
    to_um: np.ndarray
    valid: np.ndarray | None = None  # 1 where the image was acquired (MSI pixels without a spectrum: 0)

    @property
    def px_um(self) -> float:
        return pixel_size_in_frame(self.to_um)

    def footprint(self) -> np.ndarray:
        return np.ones(self.data.shape, np.float32) if self.valid is None else self.valid


def _smooth(data: np.ndarray, valid: np.ndarray | None, sigma_px: float) -> np.ndarray:
    """Gaussian blur that neither invents an edge at the image border nor at unacquired pixels.

    ``mode="nearest"`` continues the image past its border; unacquired pixels are left out by normalised
    convolution (blur(data * valid) / blur(valid)).
    """
    if sigma_px <= 0.3:
        return data.astype(np.float32)
    if valid is None:
        return ndimage.gaussian_filter(data, sigma_px, mode="nearest").astype(np.float32)
    num = ndimage.gaussian_filter(data * valid, sigma_px, mode="nearest")
    den = ndimage.gaussian_filter(valid, sigma_px, mode="nearest")
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0).astype(np.float32)


def _as_soft_map(image: np.ndarray, kind: str) -> np.ndarray:
    if kind == "mask":
        arr = np.squeeze(np.asarray(image))
        if arr.ndim != 2:
            raise ParameterError(f"a mask must be 2-D, got shape {np.shape(image)}")
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, None)
        mx = float(arr.max()) if arr.size else 0.0
        return arr / mx if mx > 1 else arr
    return tissue_mask(image, kind, soft=True)


def _guess_kind(image: np.ndarray) -> str:
    arr = np.asarray(image)
    if arr.ndim == 3 and (arr.shape[0] in (3, 4) or arr.shape[-1] in (3, 4)) and min(arr.shape) in (3, 4):
        return "rgb"
    if arr.dtype == bool:
        return "mask"
    if np.issubdtype(arr.dtype, np.floating) and arr.size and np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1:
        return "mask"
    return "tic"


def _prepare_raster(image, to_um: np.ndarray, kind: str, base_um: float) -> _Raster:
    """Soft tissue map of ``image``, block-averaged so that its pixels are about ``base_um`` (never finer)."""
    arr = np.asarray(image)
    to_um = np.asarray(to_um, dtype=float)
    if kind == "rgb" and arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if kind != "rgb":
        arr = np.squeeze(arr)
    k = max(1, int(np.floor(base_um / pixel_size_in_frame(to_um))))
    if k > 1:
        dtype = arr.dtype
        arr, d = _block_mean(arr, k)
        if kind == "mask" and dtype == bool:
            arr = arr.astype(np.float32)
        to_um = to_um @ d
    soft = _as_soft_map(arr, kind)
    if soft.sum() <= 0:
        raise RegistrationError("no tissue found in the image")
    valid = None
    if kind == "tic":
        acquired = np.isfinite(arr) & (arr > 0)  # imzML readers leave pixels without a spectrum at 0
        if not acquired.all():
            valid = acquired.astype(np.float32)
    return _Raster(soft.astype(np.float32), to_um, valid)


@dataclass
class _Level:
    """Fixed-side data of one refinement level: blurred tissue map, blurred domain, their gradients (in um)."""

    sigma_um: float
    to_um: np.ndarray
    inv: np.ndarray
    maps: np.ndarray  # (H, W, 6) float32: tissue, d/dx, d/dy, domain, d/dx, d/dy (derivatives per um)

    def sample(self, xy_um: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of the 6 maps at (n, 2) um points (0 outside) -> (n, 6)."""
        # one index/weight computation for six maps (six map_coordinates calls cost ~4x more)
        pix = apply_matrix(self.inv, xy_um)
        h, w = self.maps.shape[:2]
        x = np.clip(pix[:, 0], 0.0, w - 1.000001)
        y = np.clip(pix[:, 1], 0.0, h - 1.000001)
        outside = (pix[:, 0] < 0) | (pix[:, 0] > w - 1) | (pix[:, 1] < 0) | (pix[:, 1] > h - 1)
        x0 = x.astype(np.intp)
        y0 = y.astype(np.intp)
        fx = (x - x0)[:, None]
        fy = (y - y0)[:, None]
        flat = self.maps.reshape(-1, self.maps.shape[2])
        i00 = y0 * w + x0
        out = (flat[i00] * (1 - fx) + flat[i00 + 1] * fx) * (1 - fy) + (
            flat[i00 + w] * (1 - fx) + flat[i00 + w + 1] * fx) * fy
        out[outside] = 0.0
        return out


def _domain_indicator(shape, to_um: np.ndarray, domain) -> np.ndarray:
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    um = apply_matrix(to_um, np.column_stack([xs.ravel(), ys.ravel()])).reshape(h, w, 2)
    xmin, ymin, xmax, ymax = domain
    return ((um[..., 0] >= xmin) & (um[..., 0] <= xmax) & (um[..., 1] >= ymin) & (um[..., 1] <= ymax)).astype(
        np.float32
    )


def _fixed_level(fixed: _Raster, domain, sigma_um: float) -> _Level:
    k = max(1, int(np.floor(sigma_um / (1.5 * fixed.px_um))))
    f, dmat = _block_mean(fixed.data, k)
    to_um = fixed.to_um @ dmat
    px = pixel_size_in_frame(to_um)
    dom = _domain_indicator(f.shape, to_um, domain)
    sig = sigma_um / px
    # the tissue map is blurred as a whole ("nearest" at the image edge): cutting it to the domain first would
    # create a false tissue edge along the capture-area border; the domain enters as the weight instead
    f = _smooth(f, None if fixed.valid is None else _block_mean(fixed.valid, k)[0], sig)
    if fixed.valid is not None:
        dom = dom * (_block_mean(fixed.valid, k)[0] > 0.5)
    dom = ndimage.gaussian_filter(dom, sig, mode="constant")
    inv = np.linalg.inv(to_um)
    j = inv[:2, :2]  # d(pixel)/d(um)

    def grad_um(a):
        gy, gx = np.gradient(a)
        # chain rule: d a / d um_k = sum_i d a / d px_i * d px_i / d um_k
        return (gx * j[0, 0] + gy * j[1, 0]).astype(np.float32), (gx * j[0, 1] + gy * j[1, 1]).astype(np.float32)

    fx, fy = grad_um(f)
    dx, dy = grad_um(dom)
    maps = np.ascontiguousarray(np.stack([f, fx, fy, dom, dx, dy], axis=-1), dtype=np.float32)
    return _Level(sigma_um, to_um, inv, maps)


# ----------------------------------------------------------------------------------------------------------
# coarse search


def _candidate_matrix(theta: float, scale: float, c0: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """moving pixel -> relative um: scale * R(theta) * (nominal(p) - c0)."""
    return _h(scale * _rot(theta)) @ _translation(-c0) @ nominal


def _ncc(n, s_f, s_f2, s_m, s_m2, s_fm, *, min_n: float):
    """Pearson correlation of fixed and moving maps over the common domain from the sums over it.

    Shifts whose common domain is smaller than ``min_n`` (pixels) score -1.
    """
    nn = np.maximum(n, 1.0)
    cov = s_fm - s_f * s_m / nn
    var = np.maximum(s_f2 - s_f**2 / nn, 0.0) * np.maximum(s_m2 - s_m**2 / nn, 0.0)
    out = cov / np.sqrt(np.maximum(var, 1e-9 * nn * nn))
    return np.where(n >= min_n, out, -1.0)


def _coarse_search(fixed: _Raster, moving: _Raster, domain, nominal: np.ndarray, c0: np.ndarray, *,
                   r_c: float, thetas: np.ndarray, scales: np.ndarray, n_keep: int, min_sep_deg: float,
                   min_overlap: float):
    xmin, ymin, xmax, ymax = domain
    nfx = int(np.ceil((xmax - xmin) / r_c)) + 1
    nfy = int(np.ceil((ymax - ymin) / r_c)) + 1
    o_f = np.array([xmin, ymin])
    grid_to_um = np.array([[r_c, 0, xmin], [0, r_c, ymin], [0, 0, 1.0]])
    f_in = np.linalg.inv(fixed.to_um) @ grid_to_um
    sig_f = 0.5 * r_c / fixed.px_um
    fblur = _smooth(fixed.data, fixed.valid, sig_f)
    Df = (_warp(fixed.footprint(), f_in, (nfy, nfx)) > 0.5).astype(np.float32)
    F = _warp(fblur.astype(np.float32), f_in, (nfy, nfx)) * Df
    if F.sum() <= 0:
        raise RegistrationError("no fixed (Visium) tissue inside the domain")

    # moving canvas (one size for all candidates): square around the tissue centroid
    h, w = moving.data.shape
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    rad = np.max(np.linalg.norm(apply_matrix(nominal, corners) - c0, axis=1)) * float(np.max(scales)) + 2 * r_c
    nm = int(np.ceil(2 * rad / r_c)) + 1
    o_m = np.array([-rad, -rad])
    canvas_to_rel = np.array([[r_c, 0, -rad], [0, r_c, -rad], [0, 0, 1.0]])
    k = max(1, int(np.floor(0.25 * r_c / moving.px_um)))
    mdata, dmat = _block_mean(moving.data, k)
    vdata = _block_mean(moving.footprint(), k)[0]
    nominal = nominal @ dmat  # block-averaged raster pixel -> nominal um
    mblur = _smooth(mdata, moving.valid if moving.valid is None else vdata, 0.5 * r_c / (moving.px_um * k))
    mblur = mblur * (vdata > 0.5)  # the sums below assume the moving map is 0 outside its footprint
    ones = np.pad(vdata.astype(np.float32), 1)  # footprint, padded so edges ramp at +-0.5 px
    pad = _translation((1.0, 1.0))

    shape = (sfft.next_fast_len(nfy + nm, real=True), sfft.next_fast_len(nfx + nm, real=True))

    def spec(a):
        return sfft.rfft2(a, shape, workers=1)

    def corr(fa, fb):  # sum_v a(v + t) b(v) for every shift t
        return sfft.irfft2(fa * np.conj(fb), shape, workers=1)

    fF, fF2, fDf = spec(F), spec(F * F), spec(Df)
    area_f = float(Df.sum())

    results = []  # (score, theta, scale, matrix)
    for i, theta in enumerate(thetas):
        best = None
        for scale in scales:
            rel = _candidate_matrix(theta, scale, c0, nominal)
            out_to_in = np.linalg.inv(rel) @ canvas_to_rel
            M = _warp(mblur, out_to_in, (nm, nm))
            Dm = _warp(ones, pad @ out_to_in, (nm, nm))
            fM, fM2, fDm = spec(M), spec(M * M), spec(Dm)
            score = _ncc(corr(fDf, fDm), corr(fF, fDm), corr(fF2, fDm), corr(fDf, fM), corr(fDf, fM2),
                         corr(fF, fM), min_n=min_overlap * min(area_f, float(Dm.sum())))
            idx = int(np.argmax(score))
            ty, tx = np.unravel_index(idx, score.shape)
            ty = ty if ty < nfy else ty - shape[0]
            tx = tx if tx < nfx else tx - shape[1]
            t_um = o_f - o_m + r_c * np.array([tx, ty], dtype=float)
            if best is None or score.flat[idx] > best[0]:
                best = (float(score.flat[idx]), float(theta), float(scale),
                        _translation(t_um) @ rel @ np.linalg.inv(dmat))
        results.append(best)
        yield i

    results.sort(key=lambda r: -r[0])
    keep = []
    for r in results:
        if all(abs((r[1] - k[1] + np.pi) % (2 * np.pi) - np.pi) > np.radians(min_sep_deg) for k in keep):
            keep.append(r)
        if len(keep) >= n_keep:
            break
    return keep


# ----------------------------------------------------------------------------------------------------------
# continuous refinement


@dataclass
class _MovingLevel:
    """Moving-side data of one refinement level: candidate sample points near tissue boundaries."""

    p: np.ndarray  # (n, 2) moving-raster pixel coordinates
    m: np.ndarray  # blurred moving tissue values at p


def _moving_level(moving: _Raster, sigma_um: float, band_um: float) -> _MovingLevel:
    """Blur the moving tissue map by ``sigma_um`` and keep the pixels within ``band_um`` of a tissue boundary.

    The map is block-averaged first so that its pixels are about ``sigma_um / 2`` (never finer than native).
    """
    k = max(1, int(np.floor(sigma_um / (2.0 * moving.px_um))))
    data, dmat = _block_mean(moving.data, k)
    px = moving.px_um * k
    valid = None if moving.valid is None else _block_mean(moving.valid, k)[0]
    # the edge of the moving image (MSI raster border, unacquired pixels) is not a tissue edge
    mb = _smooth(data, valid, sigma_um / px)
    binary = data > 0.5
    edge = binary ^ ndimage.binary_erosion(binary)
    sel = ndimage.distance_transform_edt(~edge) * px <= band_um
    if valid is not None:
        sel &= valid > 0.5
    ys, xs = np.nonzero(sel)
    p = apply_matrix(dmat, np.column_stack([xs, ys]).astype(float))
    return _MovingLevel(p, mb[ys, xs].astype(np.float64))


def _select_points(ml: _MovingLevel, matrix: np.ndarray, domain, margin_um: float, max_points: int):
    """The points of ``ml`` that land in / near the domain under ``matrix`` (at most ``max_points``)."""
    um = apply_matrix(matrix, ml.p)
    xmin, ymin, xmax, ymax = domain
    mg = margin_um
    inside = (um[:, 0] > xmin - mg) & (um[:, 0] < xmax + mg) & (um[:, 1] > ymin - mg) & (um[:, 1] < ymax + mg)
    idx = np.flatnonzero(inside)
    if len(idx) > max_points:
        idx = idx[:: int(np.ceil(len(idx) / max_points))]
    return ml.p[idx], ml.m[idx]


def _param_transform(x: np.ndarray, kind: str, c: np.ndarray, length: float):
    """Parametric update about the centre ``c``: (T_x as 3x3 um -> um, its 2x2 linear part).

    Parameters are in micrometres of displacement at distance ``length`` from ``c`` (rotation, log-scale or
    the 4 linear entries, then the translation), so that all of them have the same scale for the optimiser.
    """
    if kind == "similarity":
        theta, logs = x[0] / length, x[1] / length
        s = np.exp(logs)
        lin = s * _rot(theta)
    else:
        lin = np.eye(2) + np.array([[x[0], x[1]], [x[2], x[3]]]) / length
    t = x[-2:]
    return _h(lin, c - lin @ c + t), lin


def _objective(x, kind, q, c, length, pts_m, lev: _Level, norm):
    """Negative domain-weighted SSD between fixed samples at T_x(q) and the moving values, and its gradient."""
    _, lin = _param_transform(x, kind, c, length)
    d = q - c
    tq = d @ lin.T + c + x[-2:]
    smp = lev.sample(tq).astype(np.float64)
    F, W = smp[:, 0], smp[:, 3]
    # sum of squared differences weighted by the (smoothed) domain: matched tissue scores 0 wherever it is, so
    # nothing pulls moving tissue into or out of the capture area except genuine mismatches
    e = F - pts_m
    val = -e * e
    S = float(np.sum(W * val))
    dF = -2.0 * W * e
    gx = dF * smp[:, 1] + val * smp[:, 4]
    gy = dF * smp[:, 2] + val * smp[:, 5]
    grad = np.zeros_like(x)
    if kind == "similarity":
        theta = x[0] / length
        s = np.exp(x[1] / length)
        ct, st = np.cos(theta), np.sin(theta)
        dr = s * np.array([[-st, -ct], [ct, -st]]) / length
        dth = d @ dr.T
        dsc = (d @ lin.T) / length
        grad[0] = np.sum(gx * dth[:, 0] + gy * dth[:, 1])
        grad[1] = np.sum(gx * dsc[:, 0] + gy * dsc[:, 1])
    else:
        grad[0] = np.sum(gx * d[:, 0]) / length
        grad[1] = np.sum(gx * d[:, 1]) / length
        grad[2] = np.sum(gy * d[:, 0]) / length
        grad[3] = np.sum(gy * d[:, 1]) / length
    grad[-2] = np.sum(gx)
    grad[-1] = np.sum(gy)
    return -S / norm, -grad / norm


def _refine(matrix: np.ndarray, ml: _MovingLevel, lev: _Level, domain, kind: str, *, margin_um: float,
            max_points: int, maxiter: int = 100, scale_bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Continuous refinement (L-BFGS-B, analytic gradient) of ``matrix`` (moving raster pixel -> um) at one level.

    ``scale_bounds`` = (lowest, highest) pixel size in um that the similarity may reach.
    """
    p, mvals = _select_points(ml, matrix, domain, margin_um, max_points)
    if len(p) < 10:
        return matrix
    q = apply_matrix(matrix, p)
    w = np.clip(mvals, 0, None) + 1e-6
    c = (q * w[:, None]).sum(0) / w.sum()
    length = float(np.sqrt(np.mean(np.sum((q - c) ** 2, axis=1)))) or 1.0
    n = 4 if kind == "similarity" else 6
    norm = max(float(np.sum(mvals)), 1.0)
    bounds = None
    if kind == "similarity" and scale_bounds is not None:
        cur = pixel_size_in_frame(matrix)
        lo, hi = np.log(scale_bounds[0] / cur) * length, np.log(scale_bounds[1] / cur) * length
        bounds = [(None, None), (min(lo, 0.0), max(hi, 0.0)), (None, None), (None, None)]
    res = optimize.minimize(
        _objective, np.zeros(n), args=(kind, q, c, length, mvals, lev, norm), jac=True, method="L-BFGS-B",
        bounds=bounds, options={"maxiter": maxiter, "ftol": 1e-10, "gtol": 1e-7},
    )
    tmat, _ = _param_transform(res.x, kind, c, length)
    return tmat @ matrix


# ----------------------------------------------------------------------------------------------------------
# scores


def _overlap(fixed: _Raster, moving: _Raster, matrix: np.ndarray, domain, r: float, *, min_overlap: float = 0.0):
    """Scores of a pose on a grid of ``r`` um over the common domain.

    Returns ``(score, dice)``: ``score`` is the correlation of the smoothed tissue maps (the coarse search's
    criterion), ``dice`` the Dice coefficient of the tissue masks.
    """
    xmin, ymin, xmax, ymax = domain
    nx = int(np.ceil((xmax - xmin) / r)) + 1
    ny = int(np.ceil((ymax - ymin) / r)) + 1
    g = np.array([[r, 0, xmin], [0, r, ymin], [0, 0, 1.0]])

    def smoothed(raster: _Raster, matrix_um: np.ndarray):
        k = max(1, int(np.floor(0.25 * r / raster.px_um)))
        data, dmat = _block_mean(raster.data, k)
        foot = _block_mean(raster.footprint(), k)[0]
        data = _smooth(data, None if raster.valid is None else foot, 0.5 * r / (raster.px_um * k))
        return data, np.pad(foot.astype(np.float32), 1), np.linalg.inv(matrix_um @ dmat) @ g

    fb, ffoot, f_in = smoothed(fixed, fixed.to_um)
    mb, mfoot, m_in = smoothed(moving, matrix)
    F = _warp(fb, f_in, (ny, nx))
    pad = _translation((1.0, 1.0))
    Df = _warp(ffoot, pad @ f_in, (ny, nx)) > 0.5
    M = _warp(mb, m_in, (ny, nx))
    Dm = _warp(mfoot, pad @ m_in, (ny, nx)) > 0.5
    both = Df & Dm
    n = float(both.sum())
    if n < max(min_overlap * min(float(Df.sum()), float(Dm.sum())), 3):
        return -1.0, 0.0
    f, m = F[both], M[both]
    score = float(_ncc(n, f.sum(), (f * f).sum(), m.sum(), (m * m).sum(), (f * m).sum(), min_n=0.0))
    fm, mm = f > 0.5, m > 0.5
    denom = float(fm.sum() + mm.sum())
    dice = 2.0 * float((fm & mm).sum()) / denom if denom > 0 else 0.0
    return score, dice


def _boundary_rms(fixed: _Raster, moving: _Raster, matrix: np.ndarray, domain, sigma_um: float,
                  cap_um: float) -> tuple[float, float]:
    """RMS distance between the fixed and registered moving tissue boundaries inside the common domain.

    Returns the RMS (um) and the fraction of boundary points that have a counterpart within ``cap_um``.
    """
    from scipy.spatial import cKDTree
    from skimage.measure import find_contours

    def contour_px(r: _Raster):
        data = _smooth(r.data, r.valid, sigma_um / r.px_um)
        pts = find_contours(np.pad(data, 1), 0.5)
        if not pts:
            return np.zeros((0, 2))
        xy = (np.concatenate(pts) - 1.0)[:, ::-1]
        if r.valid is not None:  # no boundary next to unacquired pixels
            near_gap = ndimage.binary_dilation(r.valid < 0.5, iterations=2)
            ij = np.clip(np.round(xy).astype(int), 0, np.array(r.data.shape[::-1]) - 1)
            xy = xy[~near_gap[ij[:, 1], ij[:, 0]]]
        return xy

    f_px = contour_px(fixed)
    m_px = contour_px(moving)
    f_um = apply_matrix(fixed.to_um, f_px)
    m_um = apply_matrix(matrix, m_px)
    # keep boundary points well inside both footprints and the domain (image and domain edges are not tissue edges)
    xmin, ymin, xmax, ymax = domain
    margin = 2 * sigma_um + 2 * max(fixed.px_um, moving.px_um)

    def keep(um):
        ok = (um[:, 0] > xmin + margin) & (um[:, 0] < xmax - margin) & (um[:, 1] > ymin + margin) & (
            um[:, 1] < ymax - margin)
        mp = apply_matrix(np.linalg.inv(matrix), um)
        h, w = moving.data.shape
        mm = margin / moving.px_um
        ok &= (mp[:, 0] > mm) & (mp[:, 0] < w - 1 - mm) & (mp[:, 1] > mm) & (mp[:, 1] < h - 1 - mm)
        fp = apply_matrix(np.linalg.inv(fixed.to_um), um)
        h, w = fixed.data.shape
        fm = margin / fixed.px_um
        ok &= (fp[:, 0] > fm) & (fp[:, 0] < w - 1 - fm) & (fp[:, 1] > fm) & (fp[:, 1] < h - 1 - fm)
        return um[ok]

    f_um, m_um = keep(f_um), keep(m_um)
    if len(f_um) < 3 or len(m_um) < 3:
        return float("nan"), 0.0
    d1, _ = cKDTree(f_um).query(m_um)
    d2, _ = cKDTree(m_um).query(f_um)
    d = np.concatenate([d1, d2])
    # boundary pieces with no counterpart within ``cap_um`` (a hole or fold seen in one section only) are left
    # out, unless they are the majority, which means the registration itself is off
    near = d <= cap_um
    frac = float(near.mean())
    if frac >= 0.5:
        return float(np.sqrt(np.mean(d[near] ** 2))), frac
    return float(np.sqrt(np.mean(np.minimum(d, cap_um) ** 2))), frac


# ----------------------------------------------------------------------------------------------------------
# public array-level entry point


def iter_register_to_reference(
    fixed_mask_or_image: np.ndarray,
    fixed_to_um: np.ndarray,
    moving_image: np.ndarray,
    moving_to_um_initial: np.ndarray,
    domain_um=None,
    *,
    kind: str = "similarity",
    fixed_kind: str | None = None,
    moving_kind: str | None = None,
    scale_range: tuple[float, float] = (0.85, 1.15),
    scale_step: float = 0.05,
    rotation_step_deg: float = 5.0,
    coarse_pixels: int = 64,
    fine_um: float | None = None,
    n_candidates: int = 4,
    min_overlap: float = 0.3,
    ambiguity_margin: float = 0.03,
    max_points: int = 40_000,
    label: str = "register",
) -> ProgressGen[RegistrationResult]:
    """Automatically register a moving tissue image onto a fixed one (generator with progress events).

    Parameters
    ----------
    fixed_mask_or_image
        Fixed tissue: an RGB image ((y, x, 3) or (3, y, x), white background, e.g. the Visium hires image),
        or a 2-D tissue mask / soft map in [0, 1].
    fixed_to_um
        3x3 matrix fixed pixel (x=col, y=row) -> sample um.
    moving_image
        Moving tissue: a 2-D MSI TIC image ``[y, x]``, an RGB H&E image, or a 2-D mask.
    moving_to_um_initial
        3x3 nominal matrix moving pixel -> um; its scale (pixel size) centres the scale search. Rotation and
        translation are searched over the full range, so they need not be known.
    domain_um
        ``(xmin, ymin, xmax, ymax)`` in um where the fixed tissue is known (the Visium capture area); moving
        tissue outside it is not penalised. Default: the fixed image's extent.
    kind
        ``"similarity"`` or ``"affine"`` (the affine is refined from the similarity result).
    fixed_kind, moving_kind
        ``"rgb"``, ``"tic"`` or ``"mask"``; guessed from the array shapes / dtype when omitted.
    scale_range, scale_step
        Relative scales searched around the nominal pixel size.
    rotation_step_deg
        Rotation step of the coarse search (full circle).
    coarse_pixels
        Size in pixels of the larger side of the coarse search grid.
    fine_um
        Smoothing scale (um) of the last refinement level; default from the pixel sizes.
    n_candidates
        Distinct (rotation) candidates of the coarse search that are refined; the best one wins.
    min_overlap
        Smallest accepted common area of the fixed domain and the moving image, as a fraction of the smaller
        of the two (guards the correlation score against tiny overlaps).
    ambiguity_margin
        When the best distinct alternative pose scores within this of the winner, a ``UserWarning`` is issued
        and ``parameters["ambiguous"]`` is set.
    max_points
        Most moving sample points used per refinement step (speed).
    label
        Stage name of the progress events.

    Yields
    ------
    Progress
        One event per coarse rotation and per refined candidate.

    Returns
    -------
    RegistrationResult
        ``method="auto"``.
    """
    check_kind(kind)
    if not (0 < scale_range[0] <= 1 <= scale_range[1]):
        raise ParameterError(f"scale_range must bracket 1 (e.g. (0.85, 1.15)), got {scale_range!r}")
    fixed_to_um = np.asarray(fixed_to_um, dtype=float)
    nominal = np.asarray(moving_to_um_initial, dtype=float)
    for name, m in (("fixed_to_um", fixed_to_um), ("moving_to_um_initial", nominal)):
        if m.shape != (3, 3) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:2, :2])) < 1e-12:
            raise ParameterError(f"{name} must be an invertible 3x3 matrix, got {m.tolist()!r}")
    fixed_kind = fixed_kind or _guess_kind(fixed_mask_or_image)
    moving_kind = moving_kind or _guess_kind(moving_image)

    n_rot = int(round(360.0 / rotation_step_deg))
    total = n_rot + n_candidates + 2
    yield Progress(label, 0, total, "tissue masks")

    pm_native = pixel_size_in_frame(nominal)
    pf_native = pixel_size_in_frame(fixed_to_um)
    if fine_um is None:
        fine_um = float(np.clip(0.4 * max(pm_native, pf_native), 8.0, 30.0))
    base = 0.5 * fine_um
    try:
        fixed = _prepare_raster(fixed_mask_or_image, fixed_to_um, fixed_kind, base)
    except RegistrationError as err:
        raise RegistrationError(f"fixed image: {err}; check that it shows tissue on a bright background") from None
    try:
        moving = _prepare_raster(moving_image, nominal, moving_kind, base)
    except RegistrationError as err:
        raise RegistrationError(f"moving image: {err}") from None
    nominal_m = moving.to_um  # moving raster pixel -> nominal um
    to_native = np.linalg.inv(nominal) @ nominal_m  # raster pixel -> native moving pixel

    if domain_um is None:
        h, w = fixed.data.shape
        corners = apply_matrix(fixed.to_um, np.array([[-0.5, -0.5], [w - 0.5, h - 0.5]]))
        domain = (float(corners[:, 0].min()), float(corners[:, 1].min()), float(corners[:, 0].max()),
                  float(corners[:, 1].max()))
    else:
        domain = tuple(float(v) for v in domain_um)
        if len(domain) != 4 or not (domain[2] > domain[0] and domain[3] > domain[1]):
            raise ParameterError(f"domain_um must be (xmin, ymin, xmax, ymax) with xmax > xmin, ymax > ymin, "
                                 f"got {domain_um!r}")

    # moving tissue centroid and size (nominal um)
    ys, xs = np.nonzero(moving.data > 0.5)
    if len(xs) < 3:
        raise RegistrationError("moving image: too little tissue found to register")
    mum = apply_matrix(nominal_m, np.column_stack([xs, ys]).astype(float))
    c0 = mum.mean(axis=0)
    h, w = moving.data.shape
    ext_m = np.ptp(apply_matrix(nominal_m, np.array([[0, 0], [w, h], [0, h], [w, 0]], float)), axis=0).max()
    ext_f = max(domain[2] - domain[0], domain[3] - domain[1])
    r_c = max(max(ext_f, ext_m) / coarse_pixels, moving.px_um, fixed.px_um)

    thetas = np.radians(np.arange(n_rot) * (360.0 / n_rot) - 180.0)
    n_s = max(1, int(round((scale_range[1] - scale_range[0]) / scale_step)) + 1)
    scales = np.exp(np.linspace(np.log(scale_range[0]), np.log(scale_range[1]), n_s))

    search = _coarse_search(fixed, moving, domain, nominal_m, c0, r_c=r_c, thetas=thetas, scales=scales,
                            n_keep=n_candidates, min_sep_deg=3 * rotation_step_deg, min_overlap=min_overlap)
    try:
        while True:
            i = next(search)
            yield Progress(label, 1 + i, total, "coarse search (rotation x scale x FFT translation)")
    except StopIteration as stop:
        candidates = stop.value

    # refinement levels (smoothing in um), coarse to fine
    sig_levels = []
    sg = r_c
    while sg > fine_um * 1.4:
        sig_levels.append(sg)
        sg /= 2.0
    sig_levels.append(fine_um)
    levels = [_fixed_level(fixed, domain, sg) for sg in sig_levels]
    bands = [3 * sg + (r_c if i < len(sig_levels) - 1 else 2 * fine_um) for i, sg in enumerate(sig_levels)]
    mlevels = [_moving_level(moving, sg, bd) for sg, bd in zip(sig_levels, bands)]
    r_score = max(r_c / 2, fine_um)
    # the refinement may leave the searched scale range by a little (a coarse step), not run away with it
    px_bounds = (moving.px_um * scale_range[0] * 0.97, moving.px_um * scale_range[1] * 1.03)

    refined = []
    for j, (cscore, theta, scale, mat) in enumerate(candidates):
        m = mat
        for lev, ml, bd in list(zip(levels, mlevels, bands))[: min(2, len(levels) - 1)]:
            m = _refine(m, ml, lev, domain, "similarity", margin_um=bd, max_points=max_points // 4, maxiter=60,
                        scale_bounds=px_bounds)
        score, dice = _overlap(fixed, moving, m, domain, r_score, min_overlap=min_overlap)
        refined.append((score, dice, m, theta, scale, cscore))
        yield Progress(label, 1 + n_rot + j, total, f"refine candidate {j + 1}/{len(candidates)}")

    refined.sort(key=lambda r: -r[0])
    # candidates that converged to the same pose count once; the margin to the best *different* pose says
    # how clearly the tissue shapes determine the answer
    probe = np.column_stack(np.nonzero(moving.data > 0.5)[::-1]).astype(float)[::97]
    distinct = []
    for cand in refined:
        if all(np.sqrt(np.mean(np.sum((apply_matrix(cand[2], probe) - apply_matrix(d[2], probe)) ** 2, axis=1)))
               > 2 * r_c for d in distinct):
            distinct.append(cand)
    margin = float(distinct[0][0] - distinct[1][0]) if len(distinct) > 1 else float("inf")
    score, dice, m, theta, scale, cscore = distinct[0]
    for lev, ml, bd in list(zip(levels, mlevels, bands))[min(2, len(levels) - 1):]:
        m = _refine(m, ml, lev, domain, "similarity", margin_um=bd, max_points=max_points, scale_bounds=px_bounds)
    if kind == "affine":
        for lev, ml, bd in zip(levels[-2:], mlevels[-2:], bands[-2:]):
            m = _refine(m, ml, lev, domain, "affine", margin_um=bd, max_points=max_points)
    yield Progress(label, total - 1, total, "residual estimate")
    score, dice = _overlap(fixed, moving, m, domain, max(fine_um, fixed.px_um, moving.px_um / 2))
    rms, matched = _boundary_rms(fixed, moving, m, domain, fine_um,
                                 cap_um=3 * max(fine_um, moving.px_um, fixed.px_um))
    matrix = m @ np.linalg.inv(to_native)
    params = {
        "scale_range": list(scale_range),
        "scale_step": scale_step,
        "rotation_step_deg": rotation_step_deg,
        "coarse_um": r_c,
        "fine_um": fine_um,
        "levels_um": sig_levels,
        "n_candidates": len(candidates),
        "candidate_scores": [float(r[0]) for r in distinct],
        "candidate_margin": margin,
        "domain_um": list(domain),
        "nominal_pixel_size_um": pm_native,
        "scale_vs_nominal": pixel_size_in_frame(matrix) / pm_native,
        "boundary_matched_fraction": matched,
        "fixed_kind": fixed_kind,
        "moving_kind": moving_kind,
    }
    ambiguous = margin < ambiguity_margin
    params["ambiguous"] = bool(ambiguous)
    if ambiguous:
        warnings.warn(
            f"{label}: the tissue shapes fit two different poses almost equally well (scores "
            f"{distinct[0][0]:.3f} vs {distinct[1][0]:.3f}); the automatic result may be wrong. Check the overlay, "
            "align the MSI to the registered H&E (reference='he'), or give landmarks (register_landmarks)",
            UserWarning, stacklevel=2,
        )
    yield Progress(label, total, total, f"done: Dice {dice:.3f}, boundary RMS {rms:.1f} um")
    return RegistrationResult(matrix=matrix, rms_um=rms, score=dice, method="auto", kind=kind, parameters=params)


def register_to_reference(fixed_mask_or_image, fixed_to_um, moving_image, moving_to_um_initial, domain_um=None,
                          **options) -> RegistrationResult:
    """Plain-function form of :func:`iter_register_to_reference` (same parameters)."""
    return run(iter_register_to_reference(fixed_mask_or_image, fixed_to_um, moving_image, moving_to_um_initial,
                                          domain_um, **options))
