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
    """The scalar per-pixel signal that separates tissue from background, linear in the tissue fraction.

    ``"rgb"``: darkness ``sum_c (255 - I_c)`` (white background ~ 0, tissue > 0; a pixel half covered by tissue
    reads half the tissue's darkness, unlike optical density). ``"tic"``: the TIC itself (NaN -> 0).
    """
    if kind == "rgb":
        rgb = _channels_last(image)
        return (765.0 - rgb.sum(axis=-1)).astype(np.float32)
    if kind == "tic":
        arr = np.asarray(image, dtype=np.float32)
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise ParameterError(f"a TIC image must be 2-D (y, x) (or (1, y, x)), got shape {np.shape(image)}")
        arr = np.where(np.isfinite(arr), arr, 0.0)
        return np.clip(arr, 0.0, None)
    raise ParameterError(f"kind must be one of {MASK_KINDS}, got {kind!r}")


def _log_signal(signal: np.ndarray, kind: str) -> np.ndarray:
    """log(signal + eps): the scale on which tissue and background separate (see :func:`_threshold_values`)."""
    pos = signal[signal > 0]
    if pos.size < 10:
        raise RegistrationError("the image has (almost) no pixel with signal; no tissue found")
    eps = 1.0 if kind == "rgb" else max(float(np.percentile(pos, 1)) * 0.5, 1e-12)
    return np.log(signal + eps).astype(np.float32)


def _threshold_values(signal: np.ndarray, logsig: np.ndarray, valid: np.ndarray | None = None
                      ) -> tuple[float, float, float]:
    """(threshold on the log signal, background level, tissue level on the linear scale).

    The split is Otsu's threshold on the log signal: tissue brightness spans a wide range (pale stroma to
    dark nuclei, ion yields over decades) while the background is tight, so the log scale separates them
    where the linear one splits the tissue itself.
    """
    from skimage.filters import threshold_otsu

    lin, lg = signal.ravel(), logsig.ravel()
    if valid is not None:
        lin, lg = lin[valid.ravel()], lg[valid.ravel()]
    step = lg.size // 400_000 + 1
    lin, lg = lin[::step], lg[::step]
    if lg.size == 0 or np.ptp(lg) <= 0:
        raise RegistrationError("the image is uniform; no tissue/background contrast to find tissue")
    thr = float(threshold_otsu(lg))
    bg, fg = lin[lg <= thr], lin[lg > thr]
    if fg.size == 0 or bg.size == 0:
        raise RegistrationError("no tissue/background contrast found in the image")
    return thr, float(np.median(bg)), float(np.median(fg))


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
        ``"rgb"``: darkness (255 - intensity, summed over channels), Otsu threshold on its log.
        ``"tic"``: Otsu threshold on log TIC.
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
    from scipy import ndimage

    signal = tissue_signal(image, kind)
    # MSI pixels without a spectrum (TIC 0) are neither tissue nor background: they stay out of the statistics
    valid = signal > 0 if kind == "tic" and not np.all(signal > 0) else None
    # smoothing the log signal (not the signal) keeps a sharp edge where it is: the log mid-level between
    # background and tissue is crossed at the edge, while a linear blur would cross it one pixel outside
    logsig = _log_signal(signal, kind)
    if valid is not None:  # fill the gaps with background level so that the blur does not reach into them
        logsig = np.where(valid, logsig, np.percentile(logsig[valid], 1) if valid.any() else 0.0).astype(np.float32)
    logsig = ndimage.gaussian_filter(logsig, 1.0)
    thr, lo, hi = _threshold_values(signal, logsig, valid)
    mask = logsig > thr
    if valid is not None:
        mask &= valid
    if clean:
        mask = _clean(mask)
    if not soft:
        return mask
    return _partial_volume(signal, mask, lo, hi)


def _partial_volume(signal: np.ndarray, mask: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Tissue fraction per pixel: (signal - background) / (local tissue level - background), clipped to [0, 1].

    The local tissue level is the Gaussian-weighted mean signal of nearby interior tissue pixels
    (normalised convolution), so that a boundary pixel half covered by bright tissue and one half covered by
    faint tissue both read ~0.5; a global ramp would shift boundaries outwards in bright regions.
    """
    from scipy import ndimage

    interior = ndimage.binary_erosion(mask, iterations=1)
    if interior.sum() < 10:
        interior = mask
    sig = 2.0
    w = ndimage.gaussian_filter(interior.astype(np.float32), sig)
    v = ndimage.gaussian_filter(np.where(interior, signal, 0.0).astype(np.float32), sig)
    local = np.where(w > 1e-3, v / np.maximum(w, 1e-3), hi)
    local = np.maximum(local, lo + 0.5 * (hi - lo))
    frac = np.clip((signal - lo) / (local - lo), 0.0, 1.0)
    keep = ndimage.binary_dilation(mask, iterations=1)
    return np.where(keep, frac, 0.0).astype(np.float32)
