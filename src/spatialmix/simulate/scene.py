"""Everything geometric about one simulated sample, without RNA counts or full spectra (fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..errors import ParameterError
from ._config import FIDUCIAL_RATIO, SPOT_DIAMETER_UM, SizeSpec, get_size, sample_name
from ._random import (
    S_FIELDS, S_GEOMETRY, S_HE, S_LABELS, S_MSI_GRID, S_MSI_TIC, S_STAIN, S_VISIUM, SAMPLE, rng_for,
)
from .biology import N_PRIVATE, N_SHARED, Biology, make_biology
from .render import Stain, render_histology
from .tissue import Tissue, make_labels, make_tissue

#: typical on-tissue total ion count of one MSI pixel before the per-sample intensity factor
TIC_SCALE = 2.0e4


@dataclass
class SampleScene:
    """The geometry and images of one simulated sample, exactly as :func:`iter_simulate` writes them.

    Coordinates follow ``docs/conventions.md``: the sample frame is in micrometres, ``x_um =
    pxl_col_in_fullres * mpp_fullres``; image pixel ``[row, col]`` has its centre at ``(col, row)``.

    Attributes
    ----------
    sample, patient, section
        ``"P1_S2"``, 1, 2.
    visium_hires, visium_lowres
        Space Ranger ``tissue_hires_image.png`` / ``tissue_lowres_image.png`` content, (H, W, 3) uint8.
    scalefactors
        ``scalefactors_json.json`` content.
    mpp_fullres
        Micrometres per fullres pixel (``55 / spot_diameter_fullres``).
    spots
        All spots of the capture area in ``tissue_positions.csv`` order: ``barcode, in_tissue, array_row,
        array_col, pxl_row_in_fullres, pxl_col_in_fullres, x_um, y_um, region, label``.
    msi_tic
        Total ion count of every MSI pixel, (ny, nx) float32, indexed ``[y, x]`` with 0-based imzML indices.
    msi_pixel_size_um
        The nominal MSI raster (what a user types in); the true one is in ``msi_to_um``.
    msi_to_um
        3x3 matrix mapping 0-based MSI pixel ``(x, y, 1)`` to the sample frame (um).
    msi_mode
        ``"continuous"`` (patient 1) or ``"processed"``.
    he_image
        The H&E slide, (H, W, 3) uint8.
    he_microns_per_pixel
        The nominal H&E resolution (the true scale differs by up to 3%, see ``he_to_um``).
    he_to_um
        3x3 matrix mapping H&E pixel ``(col, row, 1)`` to the sample frame (um).
    classes
        Tissue classes present in this sample.
    tissue, msi_signal
        Internal: the simulated tissue fields and the per-pixel MSI signal components that
        :func:`iter_simulate` builds the counts and spectra from.
    """

    sample: str
    patient: int
    section: int
    index: int
    seed: int
    size: str
    visium_hires: np.ndarray
    visium_lowres: np.ndarray
    scalefactors: dict[str, float]
    mpp_fullres: float
    spots: pd.DataFrame
    msi_tic: np.ndarray
    msi_pixel_size_um: float
    msi_to_um: np.ndarray
    msi_mode: str
    he_image: np.ndarray
    he_microns_per_pixel: float
    he_to_um: np.ndarray
    classes: tuple[str, ...]
    tissue: Tissue = field(repr=False)
    msi_signal: dict[str, Any] = field(repr=False)

    @property
    def in_tissue(self) -> pd.DataFrame:
        """In-tissue spots in filtered-matrix order (barcodes sorted, as Space Ranger writes them)."""
        s = self.spots[self.spots.in_tissue == 1]
        return s.sort_values("barcode", kind="stable")


def _check_args(seed: Any, size: str, n_samples: Any) -> tuple[int, SizeSpec, int]:
    spec = get_size(size)
    if n_samples is None:
        n_samples = spec.default_n_samples
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ParameterError(
            f"n_samples must be a whole number >= 1, got {n_samples!r}. Samples come in pairs of sections per "
            "patient (4 -> P1_S1, P1_S2, P2_S1, P2_S2)"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be a non-negative whole number, got {seed!r}")
    return int(seed), spec, int(n_samples)


def _rotation(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _tissue_points(tissue: Tissue, max_points: int = 40000) -> np.ndarray:
    w = tissue.world
    iy, ix = np.nonzero(w.mask > 0.5)
    step = max(1, iy.size // max_points)
    return np.stack([w.x0 + ix[::step] * w.res, w.y0 + iy[::step] * w.res], axis=1)


def _he_geometry(tissue: Tissue, spec: SizeSpec, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """A rotated, shifted, slightly mis-scaled pixel grid covering the whole section with a white margin."""
    A = _rotation(rng.uniform(-15, 15)) * spec.he_mpp * (1 + rng.uniform(-0.03, 0.03))
    q = _tissue_points(tissue) @ np.linalg.inv(A).T  # pixel units, before translation
    lo, hi = q.min(0), q.max(0)
    margin = rng.uniform(150, 350, 4) / spec.he_mpp
    origin = lo - margin[:2]
    size = np.ceil(hi + margin[2:] - origin).astype(int) + 1
    M = np.eye(3)
    M[:2, :2] = A
    M[:2, 2] = A @ origin
    return M, (int(size[1]), int(size[0]))


def _msi_geometry(tissue: Tissue, spec: SizeSpec, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """The MSI raster: rotated (<= 25 deg), shifted, scaled 0.95-1.05, covering the tissue except strips
    cut off two neighbouring sides (towards the capture-area centre when the tissue extends beyond it),
    plus a few background pixels on the others."""
    A = _rotation(rng.uniform(-25, 25)) * spec.msi_pixel_size_um * rng.uniform(0.95, 1.05)
    q = _tissue_points(tissue) @ np.linalg.inv(A).T
    lo, hi = q.min(0), q.max(0)
    ext = hi - lo
    pad = rng.uniform(1, 3, 4)  # left, top, right, bottom (pixels)
    side = int(rng.integers(0, 4))
    if tissue.extends:
        # cut on the side towards the capture-area centre, so that the raster keeps the tissue outside it
        x0, y0, x1, y1 = tissue.geometry.capture_bounds
        d = np.linalg.solve(A, [(x0 + x1) / 2 - tissue.shape.cx, (y0 + y1) / 2 - tissue.shape.cy])
        side = (2 if d[0] > 0 else 0) if abs(d[0]) > abs(d[1]) else (3 if d[1] > 0 else 1)
    pad[side] = -rng.uniform(0.25, 0.38) * ext[side % 2]  # a strip of tissue left out on one side ...
    other = (side + 1 + 2 * int(rng.integers(0, 2))) % 4
    pad[other] = -rng.uniform(0.12, 0.22) * ext[other % 2]  # ... and a thinner one on a neighbouring side
    origin = np.floor(lo - pad[:2])
    end = hi + pad[2:]
    n = np.floor(end - origin).astype(int) + 1
    M = np.eye(3)
    M[:2, :2] = A
    M[:2, 2] = A @ origin
    return M, (int(n[1]), int(n[0]))


def intensity_factor(index: int, rng: np.random.Generator) -> float:
    """Per-sample global MSI intensity factor, spread over 0.3-3x along a golden-ratio sequence so that
    any set of samples differs strongly."""
    frac = (index * 0.6180339887) % 1.0
    return float(np.exp(np.log(0.3) + frac * np.log(10.0) + rng.normal(0, 0.05)))


def msi_yield(tissue: Tissue, bio: Biology, ux: np.ndarray, uy: np.ndarray):
    """Ion yield of an area sampled at sub-points ``(n, k)`` (um): returns the tissue-weighted yield ``S``,
    the tissue fraction ``f`` and the yield-weighted hidden state of the MSI network (n, hidden)."""
    w = tissue.world
    t = w.sample(w.tissue, ux, uy, cval=0.0)  # (n, k)
    z = w.sample(w.z, ux, uy)  # (n, k, K)
    p = w.sample(w.private["msi"], ux, uy, coarse=True)
    inp = np.concatenate([z, p], axis=-1).reshape(-1, N_SHARED + N_PRIVATE["msi"])
    h = bio.msi_net.hidden(inp)
    yld = np.exp(0.5 * bio.msi_net.output(h, cols=slice(0, 1))[:, 0]).reshape(t.shape)
    wgt = t * yld
    h = h.reshape(*t.shape, -1)
    wsum = wgt.sum(1, keepdims=True)
    h_mean = np.where(wsum > 1e-6, (h * wgt[..., None]).sum(1) / np.maximum(wsum, 1e-6), h.mean(1))
    return wgt.mean(1), t.mean(1), h_mean.astype(np.float32)


def _msi_pixels(tissue: Tissue, bio: Biology, M: np.ndarray, shape: tuple[int, int], index: int,
                rng: np.random.Generator) -> dict[str, Any]:
    """TIC of every MSI pixel and the pieces the spectra are built from (signal, background, baseline)."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    sub = np.array([-1 / 3, 0, 1 / 3])
    ox, oy = np.meshgrid(sub, sub)
    px = xx.ravel()[:, None] + ox.ravel()[None]
    py = yy.ravel()[:, None] + oy.ravel()[None]
    ux = M[0, 0] * px + M[0, 1] * py + M[0, 2]
    uy = M[1, 0] * px + M[1, 1] * py + M[1, 2]
    S, f, h_pix = msi_yield(tissue, bio, ux, uy)
    G = intensity_factor(index, rng)
    noise = np.exp(rng.normal(0, 0.18, ny * nx))
    period = rng.uniform(12, 40)
    row_drift = np.exp(0.12 * np.sin(2 * np.pi * yy.ravel() / period + rng.uniform(0, 2 * np.pi)))
    noise *= row_drift
    dead = rng.random(ny * nx) < 0.003
    noise[dead] *= 0.03
    beta = rng.uniform(0.01, 0.06)
    sig = G * TIC_SCALE * S * noise
    bg = G * TIC_SCALE * 0.03 * (1 - f + 0.2) * noise
    base = TIC_SCALE * beta * np.clip(1 + 0.1 * rng.standard_normal(ny * nx), 0.5, None)
    tic = sig + bg + base
    return {
        "shape": shape,
        "signal": sig,
        "background": bg,
        "baseline": base,
        "tic": tic,
        "hidden": h_pix.astype(np.float32),
        "tissue_fraction": f.astype(np.float32),
        "intensity_factor": G,
        "baseline_level": beta,
    }


def _visium_images(tissue: Tissue, spec: SizeSpec, rng: np.random.Generator):
    geom = tissue.geometry
    H_f, W_f = geom.fullres_shape
    s_hi = spec.hires_long_px / max(H_f, W_f)
    s_lo = spec.lowres_long_px / max(H_f, W_f)
    hi_shape = (int(round(H_f * s_hi)), int(round(W_f * s_hi)))
    lo_shape = (int(round(H_f * s_lo)), int(round(W_f * s_lo)))
    px_to_um = np.diag([geom.mpp_fullres / s_hi, geom.mpp_fullres / s_hi, 1.0])
    stain = Stain.random(rng)
    hires = render_histology(tissue.world, px_to_um, hi_shape, rng, stain, coarse_um=8.0)
    # lowres: anti-aliased resampling of the hires image with pixel centres mapped as Space Ranger's scale
    r = s_hi / s_lo
    lowres = np.empty((*lo_shape, 3), dtype=np.uint8)
    for ch in range(3):
        blurred = ndi.gaussian_filter(hires[..., ch].astype(np.float32), max(0.0, (r - 1) / 2))
        lowres[..., ch] = np.clip(ndi.affine_transform(blurred, [r, r], output_shape=lo_shape, order=1,
                                                       mode="nearest") + 0.5, 0, 255).astype(np.uint8)
    spot_d = SPOT_DIAMETER_UM / geom.mpp_fullres
    scalefactors = {
        "tissue_hires_scalef": float(s_hi),
        "tissue_lowres_scalef": float(s_lo),
        "fiducial_diameter_fullres": float(spot_d * FIDUCIAL_RATIO),
        "spot_diameter_fullres": float(spot_d),
    }
    return hires, lowres, scalefactors


def sample_scene(*, seed: int = 0, size: str = "small", sample_index: int = 0,
                 n_samples: int | None = None) -> SampleScene:
    """Generate the geometry and images of one sample, identical to what :func:`iter_simulate` writes.

    Fast (no RNA counts, no full spectra): use it to test registration on many samples.

    Parameters
    ----------
    seed
        Dataset seed; the same seed gives the same data.
    size
        ``"small"`` (bundled demo) or ``"paper"`` (full-size Visium slide, 2 um/px H&E).
    sample_index
        0-based index of the sample (0 -> ``P1_S1``, 1 -> ``P1_S2``, 2 -> ``P2_S1`` ...).
    n_samples
        Number of samples in the dataset (which classes appear where depends on it); default 4 for
        ``small`` and 16 for ``paper``.

    Returns
    -------
    SampleScene
    """
    seed, spec, n_samples = _check_args(seed, size, n_samples)
    if isinstance(sample_index, bool) or not isinstance(sample_index, (int, np.integer)) or not (
        0 <= sample_index < n_samples
    ):
        raise ParameterError(f"sample_index must be in 0..{n_samples - 1} for n_samples={n_samples}, "
                             f"got {sample_index!r}")
    i = int(sample_index)
    bio = make_biology(seed, spec.name, n_samples)
    name, patient, section = sample_name(i)
    tissue = make_tissue(spec, bio, i, rng_for(seed, SAMPLE, i, S_GEOMETRY), rng_for(seed, SAMPLE, i, S_FIELDS))
    region, label = make_labels(tissue, rng_for(seed, SAMPLE, i, S_LABELS))
    spots = tissue.geometry.spots
    spots = spots[["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres",
                   "x_um", "y_um"]].copy()
    spots["region"] = region
    spots["label"] = label

    hires, lowres, scalefactors = _visium_images(tissue, spec, rng_for(seed, SAMPLE, i, S_VISIUM))
    he_to_um, he_shape = _he_geometry(tissue, spec, rng_for(seed, SAMPLE, i, S_HE))
    he = render_histology(tissue.world, he_to_um, he_shape, rng_for(seed, SAMPLE, i, S_HE, 1),
                          Stain.random(rng_for(seed, SAMPLE, i, S_STAIN)), coarse_um=spec.he_coarse_um)
    msi_to_um, msi_shape = _msi_geometry(tissue, spec, rng_for(seed, SAMPLE, i, S_MSI_GRID))
    msi = _msi_pixels(tissue, bio, msi_to_um, msi_shape, i, rng_for(seed, SAMPLE, i, S_MSI_TIC))
    return SampleScene(
        sample=name,
        patient=patient,
        section=section,
        index=i,
        seed=seed,
        size=spec.name,
        visium_hires=hires,
        visium_lowres=lowres,
        scalefactors=scalefactors,
        mpp_fullres=float(tissue.geometry.mpp_fullres),
        spots=spots,
        msi_tic=msi["tic"].reshape(msi_shape).astype(np.float32),
        msi_pixel_size_um=float(spec.msi_pixel_size_um),
        msi_to_um=msi_to_um,
        msi_mode="continuous" if patient == 1 else "processed",
        he_image=he,
        he_microns_per_pixel=float(spec.he_mpp),
        he_to_um=he_to_um,
        classes=tissue.classes_present,
        tissue=tissue,
        msi_signal=msi,
    )
