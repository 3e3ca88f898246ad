"""SpatialData-level registration: read the elements, call the array cores, write transform + record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from spatialmix._elements import image_levels, level_to_level0, pixel_size_in_frame
from spatialmix.errors import ParameterError, ProjectError, RegistrationError
from spatialmix.progress import Progress, ProgressGen, forward, run

from ._core import RegistrationResult, iter_register_to_reference
from ._landmarks import check_kind, fit_landmarks

MODALITIES = {"msi": "{sample}_msi_tic", "he": "{sample}_he"}
#: H&E pyramid level used by the automatic registration: the coarsest whose pixels are at most this wide
HE_LEVEL_UM = 5.0


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {tuple(MODALITIES)}, got {modality!r}")
    return modality


def _sample_meta(sdata, sample: str) -> dict:
    return dict(sdata.attrs.get("spatialmix", {}).get("samples", {}).get(sample, {}) or {})


def _image(sdata, name: str, what: str):
    if name not in sdata.images:
        have = ", ".join(sorted(sdata.images)) or "none"
        raise ProjectError(
            f"the SpatialData object has no image element {name!r} ({what}); images present: {have}. "
            "Read the sample with spatialmix.io (or name the element as in docs/conventions.md)"
        )
    return sdata.images[name]


def _affine_to(element, cs: str) -> np.ndarray | None:
    from spatialdata.transformations import get_transformation

    transforms = get_transformation(element, get_all=True)
    if cs not in transforms:
        return None
    return np.asarray(transforms[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def _nominal_matrix(sdata, element, sample: str, modality: str, name: str) -> np.ndarray:
    """Nominal moving pixel -> um matrix (only its scale matters): the pixel size the user gave."""
    meta = _sample_meta(sdata, sample).get(modality, {}) or {}
    size = meta.get("pixel_size_um") if modality == "msi" else meta.get("microns_per_pixel")
    if size is None:
        for cs in ((f"{sample}_msi", sample) if modality == "msi" else (sample,)):
            m = _affine_to(element, cs)
            if m is not None:
                size = pixel_size_in_frame(m)
                break
    if size is None or not np.isfinite(size) or size <= 0:
        raise ProjectError(
            f"cannot tell the pixel size of {name!r}: no attrs['spatialmix']['samples'][{sample!r}][{modality!r}] "
            f"record and no transformation into {sample!r}. Read it with spatialmix.io giving the pixel size"
        )
    return np.diag([float(size), float(size), 1.0])


def _capture_area(sdata, sample: str):
    vis = _sample_meta(sdata, sample).get("visium", {}) or {}
    cap = vis.get("capture_area_um")
    if cap is not None:
        return tuple(float(v) for v in cap)
    spots = sdata.shapes.get(f"{sample}_spots") if hasattr(sdata, "shapes") else None
    if spots is not None and len(spots):
        xy = np.column_stack([spots.geometry.x, spots.geometry.y])
        r = float(np.max(spots["radius"])) if "radius" in spots else 27.5
        return (float(xy[:, 0].min() - r), float(xy[:, 1].min() - r), float(xy[:, 0].max() + r),
                float(xy[:, 1].max() + r))
    return None


def _pick_level(levels, px0: float, target_um: float) -> tuple[int, np.ndarray]:
    """Coarsest level whose pixels are at most ``target_um``; and its pixel -> level-0 pixel matrix."""
    shapes = [tuple(lev.shape[-2:]) for lev in levels]
    h0, w0 = shapes[0]
    best = 0
    for i, (h, w) in enumerate(shapes):
        if px0 * np.sqrt((h0 / h) * (w0 / w)) <= target_um:
            best = i
    return best, level_to_level0(list(levels), best)


def _fixed_inputs(sdata, sample: str):
    """The Visium hires image (or lowres when there is no hires) and its pixel -> um matrix."""
    name = f"{sample}_visium_hires"
    if name not in sdata.images and f"{sample}_visium_lowres" in sdata.images:
        name = f"{sample}_visium_lowres"
    element = _image(sdata, name, "the Visium tissue image that the registration aligns to")
    level = image_levels(element)[0]
    matrix = _affine_to(element, sample)
    if matrix is None:
        raise ProjectError(f"{name!r} has no transformation into the coordinate system {sample!r}")
    return name, np.asarray(level.data), matrix


def _registered_he(sdata, sample: str):
    """The registered H&E as a fixed reference: (name, array of a ~4 um level, level pixel -> um), or None."""
    name = f"{sample}_he"
    rec = sdata.attrs.get("spatialmix", {}).get("registration", {}).get(sample, {}).get("he")
    if name not in sdata.images or rec is None:
        return None
    element = sdata.images[name]
    matrix = _affine_to(element, sample)
    if matrix is None:
        return None
    levels = image_levels(element)
    level, to0 = _pick_level(levels, pixel_size_in_frame(matrix), HE_LEVEL_UM)
    return name, np.asarray(levels[level].data), matrix @ to0


def _moving_inputs(sdata, sample: str, modality: str):
    """(name, element, array of the chosen level, nominal level-0 pixel -> um, level -> level-0 pixels, level)."""
    name = MODALITIES[modality].format(sample=sample)
    element = _image(sdata, name, "MSI TIC image" if modality == "msi" else "H&E image")
    levels = image_levels(element)
    nominal0 = _nominal_matrix(sdata, element, sample, modality, name)
    best, to0 = (0, np.eye(3)) if modality == "msi" else _pick_level(levels, pixel_size_in_frame(nominal0), HE_LEVEL_UM)
    lev = levels[best]
    arr = np.asarray(lev.data)
    if modality == "msi":
        arr = arr.reshape(arr.shape[-2:]) if arr.ndim == 3 and arr.shape[0] == 1 else arr
        if arr.ndim != 2:
            raise ProjectError(f"{name!r} must have one channel (the TIC), got shape {arr.shape}")
    return name, element, arr, nominal0, to0, best


def _write(sdata, sample: str, modality: str, element_name: str, result: RegistrationResult,
           extra: dict[str, Any] | None = None) -> None:
    from spatialdata.transformations import Affine, set_transformation

    element = sdata.images[element_name]
    affine = Affine(np.asarray(result.matrix, dtype=float), input_axes=("x", "y"), output_axes=("x", "y"))
    set_transformation(element, affine, to_coordinate_system=sample)
    record = result.to_record()
    record["element"] = element_name
    if extra:
        record.update(extra)
    meta = sdata.attrs.setdefault("spatialmix", {})
    meta.setdefault("registration", {}).setdefault(sample, {})[modality] = record


def iter_auto_register(
    sdata,
    sample: str,
    modality: str,
    *,
    kind: str = "similarity",
    reference: str = "auto",
    domain: str = "image",
    scale_range: tuple[float, float] = (0.85, 1.15),
    rotation_step_deg: float = 5.0,
    **options,
) -> ProgressGen[RegistrationResult]:
    """Automatically register a sample's MSI TIC image or H&E image onto its Visium tissue (generator).

    The fixed side is ``{sample}_visium_hires`` (its transformation into ``sample``), or for the MSI the
    registered H&E (see ``reference``); the moving side is
    ``{sample}_msi_tic`` (``modality="msi"``) or ``{sample}_he`` (``"he"``, a pyramid level of about
    5 um/px when multiscale). Rotation (full circle), scale (``scale_range`` around the nominal pixel size
    the element was read with) and translation are searched, then refined; see
    :func:`~spatialmix.registration.register_to_reference`.

    Parameters
    ----------
    sdata
        SpatialData following ``docs/conventions.md``.
    sample
        Sample name (coordinate system).
    modality
        ``"msi"`` or ``"he"``.
    kind
        ``"similarity"`` or ``"affine"``.
    reference
        What the MSI is aligned to: ``"visium"`` (the hires image), ``"he"`` (the sample's H&E, which must be
        registered already; it shows the whole section, so MSI tissue edges outside the Visium image still
        count), or ``"auto"`` (default: the H&E when it is registered, else Visium). The H&E is always
        aligned to Visium.
    domain
        Where the Visium tissue is known: ``"image"`` (the whole hires image, default: tissue outside the
        capture area is visible there and anchors sections that cover little of the capture area) or
        ``"capture"`` (only the capture area, ``attrs["spatialmix"]["samples"][sample]["visium"]
        ["capture_area_um"]``). Moving tissue outside the domain is never penalised.
    scale_range, rotation_step_deg, **options
        Passed to :func:`~spatialmix.registration.iter_register_to_reference`.

    Yields
    ------
    Progress

    Returns
    -------
    RegistrationResult
        Also written: the element's transformation into ``sample`` becomes ``Affine(result.matrix)`` and
        ``sdata.attrs["spatialmix"]["registration"][sample][modality]`` holds ``result.to_record()``.
    """
    _check_modality(modality)
    check_kind(kind)
    if domain not in ("image", "capture"):
        raise ParameterError(f"domain must be 'image' or 'capture', got {domain!r}")
    if reference not in ("auto", "visium", "he"):
        raise ParameterError(f"reference must be 'auto', 'visium' or 'he', got {reference!r}")
    name, element, arr, nominal0, to0, level = _moving_inputs(sdata, sample, modality)
    he_ref = _registered_he(sdata, sample) if modality == "msi" and reference in ("auto", "he") else None
    if reference == "he" and he_ref is None:
        if modality == "he":
            raise ParameterError("reference='he' only applies to modality='msi' (the H&E is aligned to Visium)")
        raise ProjectError(
            f"reference='he' needs a registered {sample}_he (none in attrs['spatialmix']['registration']"
            f"[{sample!r}]); run auto_register(sdata, {sample!r}, 'he') first"
        )
    domain_um = None
    if he_ref is not None:
        fixed_name, fixed_arr, fixed_to_um = he_ref
    else:
        fixed_name, fixed_arr, fixed_to_um = _fixed_inputs(sdata, sample)
        if domain == "capture":
            domain_um = _capture_area(sdata, sample)
            if domain_um is None:
                raise ProjectError(f"sample {sample!r} has no capture area (attrs or {sample}_spots) to use as domain")
    nominal_level = nominal0 @ to0
    try:
        result = yield from forward(
            iter_register_to_reference(
                fixed_arr, fixed_to_um, arr, nominal_level, domain_um, kind=kind, fixed_kind="rgb",
                moving_kind="tic" if modality == "msi" else "rgb", scale_range=scale_range,
                rotation_step_deg=rotation_step_deg, label=f"register {name}", **options,
            )
        )
    except RegistrationError as err:
        raise RegistrationError(f"automatic registration of {name!r} onto {fixed_name!r} failed: {err}") from None
    result.matrix = result.matrix @ np.linalg.inv(to0)  # level pixels -> level-0 pixels of the element
    result.parameters.update({"level": level, "domain": "image" if he_ref is not None else domain,
                              "reference": "he" if he_ref is not None else "visium", "fixed_element": fixed_name})
    _write(sdata, sample, modality, name, result)
    yield Progress(f"register {name}", 1, 1, f"wrote transformation {name} -> {sample}")
    return result


def iter_auto_register_all(sdata, samples, *, kind: str = "similarity", timings: dict | None = None):
    """Automatic registration of every sample's H&E, then its MSI (generator; returns ``{(sample, modality):
    RegistrationResult}``). H&E first: with ``reference="auto"`` the MSI is then aligned to the registered H&E,
    which shows the whole section (the Visium image may cut the tissue, leaving its shape ambiguous). Elements
    a sample lacks are skipped; ``timings`` (a dict) receives ``"register {sample} {modality}"`` seconds."""
    import time

    results = {}
    for s in samples:
        for modality, element in (("he", f"{s}_he"), ("msi", f"{s}_msi_tic")):
            if element in sdata.images:
                t = time.perf_counter()
                results[(s, modality)] = yield from iter_auto_register(sdata, s, modality, kind=kind)
                if timings is not None:
                    timings[f"register {s} {modality}"] = time.perf_counter() - t
    return results


def auto_register(sdata, sample: str, modality: str, *, kind: str = "similarity",
                  progress: bool | Callable[[Progress], None] = False, **options) -> RegistrationResult:
    """Plain-function form of :func:`iter_auto_register` (same parameters).

    ``progress=True`` shows a terminal progress bar; a callable receives every :class:`Progress` event.
    """
    return run(iter_auto_register(sdata, sample, modality, kind=kind, **options), progress=progress)


def register_landmarks(sdata, sample: str, modality: str, moving_xy, fixed_xy, *,
                       kind: str = "similarity") -> RegistrationResult:
    """Register a sample's MSI or H&E element onto its spots from landmark pairs, and write the result.

    Parameters
    ----------
    sdata
        SpatialData following ``docs/conventions.md``.
    sample
        Sample name (coordinate system).
    modality
        ``"msi"`` (element ``{sample}_msi_tic``) or ``"he"`` (``{sample}_he``).
    moving_xy
        (n, 2) landmark positions in the moving element's pixel coordinates (x = column, y = row, finest
        level, 0-based pixel centres).
    fixed_xy
        (n, 2) the same landmarks in the sample frame (micrometres).
    kind
        ``"similarity"`` or ``"affine"``.

    Returns
    -------
    RegistrationResult
        ``method="landmarks"``, ``rms_um`` = landmark RMS; the element's transformation into ``sample``
        and the record in ``sdata.attrs["spatialmix"]["registration"][sample][modality]`` are written.

    Raises
    ------
    RegistrationError
        Fewer than 3 pairs, mismatched lengths, NaN, collinear points.
    """
    _check_modality(modality)
    name = MODALITIES[modality].format(sample=sample)
    _image(sdata, name, "MSI TIC image" if modality == "msi" else "H&E image")
    fit = fit_landmarks(moving_xy, fixed_xy, kind=kind)
    result = RegistrationResult(
        matrix=fit.matrix, rms_um=fit.rms, method="landmarks", kind=kind,
        parameters={}, n_landmarks=fit.n, residuals_um=fit.residuals,
    )
    extra = {"landmarks": {"moving_xy": np.asarray(moving_xy, float).tolist(),
                           "fixed_xy": np.asarray(fixed_xy, float).tolist()}}
    _write(sdata, sample, modality, name, result, extra)
    return result


def registration_state(sdata, sample: str, modality: str) -> dict:
    """The current registration of a sample's MSI or H&E element: its transformation into ``sample`` and its
    record, to hand back to :func:`restore_registration` (undo)."""
    import copy

    from spatialdata.transformations import get_transformation

    _check_modality(modality)
    name = MODALITIES[modality].format(sample=sample)
    element = _image(sdata, name, "MSI TIC image" if modality == "msi" else "H&E image")
    transforms = get_transformation(element, get_all=True)
    record = sdata.attrs.get("spatialmix", {}).get("registration", {}).get(sample, {}).get(modality)
    return {"sample": sample, "modality": modality, "element": name,
            "transformation": copy.deepcopy(transforms.get(sample)), "record": copy.deepcopy(record)}


def restore_registration(sdata, state: dict) -> None:
    """Put back a registration saved by :func:`registration_state` (transformation and record)."""
    from spatialdata.transformations import remove_transformation, set_transformation

    sample, modality = state["sample"], state["modality"]
    element = _image(sdata, state["element"], "MSI TIC image" if modality == "msi" else "H&E image")
    if state["transformation"] is None:
        remove_transformation(element, sample)
    else:
        set_transformation(element, state["transformation"], to_coordinate_system=sample)
    block = sdata.attrs.setdefault("spatialmix", {}).setdefault("registration", {}).setdefault(sample, {})
    if state["record"] is None:
        block.pop(modality, None)
    else:
        block[modality] = state["record"]


def element_pixel_to_sample(sdata, sample: str, modality: str) -> np.ndarray:
    """3x3 matrix mapping the moving element's finest-level pixel (x, y) to the sample frame (x, y) um."""
    name = MODALITIES[_check_modality(modality)].format(sample=sample)
    m = _affine_to(_image(sdata, name, "image"), sample)
    if m is None:
        raise ProjectError(f"{name!r} has no transformation into {sample!r}; register it first")
    return m
