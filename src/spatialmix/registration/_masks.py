"""Tissue masks of Visium / H&E RGB images and of MSI TIC images."""

from __future__ import annotations

import numpy as np

from spatialmix.errors import ParameterError, RegistrationError

MASK_KINDS = ("rgb", "tic")


def _channels_last(image: np.ndarray) -> np.ndarray:
    """(c, y, x) or (y, x, c) RGB(A) -> (y, x, 3) float in [0, 255]."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ParameterError(f"an RGB image must have shape (y, x, 3) or (3, y, x), got {arr.shape}")
    arr = arr[..., :3].astype(np.float32)
    if np.issubdtype(np.asarray(image).dtype, np.floating) and np.nanmax(arr) <= 1.0 + 1e-6:
        arr = arr * 255.0
    return arr


def tissue_signal(image: np.ndarray, kind: str) -> np.ndarray:
    """The scalar per-pixel signal that separates tissue from background.

    ``"rgb"``: total optical density ``-sum(log((I + 1) / 256))`` (white background ~ 0, stained tissue > 0),
    robust to stain colour. ``"tic"``: the TIC itself (NaN -> 0).
    """
    if kind == "rgb":
        rgb = _channels_last(image)
        return -np.log((rgb + 1.0) / 256.0).sum(axis=-1).astype(np.float32)
    if kind == "tic":
        arr = np.asarray(image, dtype=np.float32)
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise ParameterError(f"a TIC image must be 2-D (y, x) (or (1, y, x)), got shape {np.shape(image)}")
        arr = np.where(np.isfinite(arr), arr, 0.0)
        return np.clip(arr, 0.0, None)
    raise ParameterError(f"kind must be one of {MASK_KINDS}, got {kind!r}")


def _threshold_values(signal: np.ndarray, kind: str) -> tuple[float, float, float]:
    """(threshold, background level, tissue level) on the linear signal scale.

    The split is Otsu's threshold on the signal (on log TIC for MSI, whose intensities span decades);
    the soft map ramps from the background median to a low percentile of the tissue class, so that
    nearly all tissue is 1 while boundary pixels (partial tissue) keep intermediate values.
    """
    from skimage.filters import threshold_otsu

    values = signal[np.isfinite(signal)].ravel()
    if values.size > 400_000:
        values = values[:: values.size // 400_000 + 1]
    if kind == "tic":
        pos = values[values > 0]
        if pos.size < 10:
            raise RegistrationError("the TIC image has (almost) no pixel with signal; no tissue found")
        eps = max(float(np.percentile(pos, 1)) * 0.5, 1e-12)
        logv = np.log(values + eps)
        if np.ptp(logv) <= 0:
            raise RegistrationError("the TIC image is constant; no tissue/background contrast to find tissue")
        thr = float(np.exp(threshold_otsu(logv)) - eps)
    else:
        if np.ptp(values) <= 0:
            raise RegistrationError("the RGB image is uniform; no tissue/background contrast to find tissue")
        thr = float(threshold_otsu(values))
    bg = values[values <= thr]
    fg = values[values > thr]
    if fg.size == 0 or bg.size == 0:
        raise RegistrationError("no tissue/background contrast found in the image")
    lo = float(np.median(bg))
    hi = float(np.percentile(fg, 20))
    if hi <= lo:
        hi = thr + (thr - lo)
    return thr, lo, hi


def _clean(mask: np.ndarray, *, min_fraction: float = 0.01, hole_fraction: float = 0.002) -> np.ndarray:
    """Remove specks (components < ``min_fraction`` of the tissue) and fill tiny holes."""
    from scipy import ndimage
    from skimage import morphology

    total = int(mask.sum())
    if total == 0:
        return mask
    mask = ndimage.binary_opening(mask, morphology.disk(1)) if total > 200 else mask
    min_size = max(4, int(min_fraction * total))
    try:
        mask = morphology.remove_small_objects(mask, max_size=min_size)
        mask = morphology.remove_small_holes(mask, max_size=max(4, int(hole_fraction * total)))
    except TypeError:  # pragma: no cover - scikit-image < 0.26 (min_size / area_threshold)
        mask = morphology.remove_small_objects(mask, min_size=min_size)
        mask = morphology.remove_small_holes(mask, area_threshold=max(4, int(hole_fraction * total)))
    return mask


def tissue_mask(image: np.ndarray, kind: str = "rgb", *, soft: bool = False, clean: bool = True) -> np.ndarray:
    """Tissue mask of an RGB histology image (white background) or of an MSI TIC image.

    Parameters
    ----------
    image
        ``"rgb"``: (y, x, 3) or (3, y, x) uint8 (or float in [0, 1]); ``"tic"``: (y, x) or (1, y, x) TIC.
    kind
        ``"rgb"``: optical density summed over channels, Otsu threshold. ``"tic"``: Otsu threshold on
        log TIC.
    soft
        Return a float map in [0, 1] instead of a boolean mask: 0 on background, 1 in tissue, intermediate
        at boundary pixels that are partly tissue (used by the registration to locate boundaries below
        one pixel).
    clean
        Remove small specks and fill tiny holes with scikit-image morphology.

    Returns
    -------
    numpy.ndarray
        (y, x) boolean mask, or float32 map when ``soft=True``.
    """
    if kind not in MASK_KINDS:
        raise ParameterError(f"kind must be one of {MASK_KINDS}, got {kind!r}")
    signal = tissue_signal(image, kind)
    thr, lo, hi = _threshold_values(signal, kind)
    mask = signal > thr
    if clean:
        mask = _clean(mask)
    if not soft:
        return mask
    from scipy import ndimage

    ramp = np.clip((signal - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    keep = ndimage.binary_dilation(mask, iterations=1) if clean else np.ones_like(mask)
    return np.where(keep, ramp, 0.0).astype(np.float32)
