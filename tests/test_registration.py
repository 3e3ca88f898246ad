"""Registration: landmark fits, tissue masks, automatic registration on simulated samples, SpatialData wrappers."""

from __future__ import annotations

import json
import time
import warnings
from functools import lru_cache

import numpy as np
import pytest

from spatialmix.errors import ParameterError, ProjectError, RegistrationError
from spatialmix.progress import Progress, run
from spatialmix.registration import (
    apply_matrix,
    auto_register,
    fit_landmarks,
    iter_auto_register,
    iter_register_to_reference,
    register_landmarks,
    register_to_reference,
    tissue_mask,
    transform_error_um,
)

SPOT_RADIUS_UM = 27.5


def _similarity(deg: float, scale: float, t) -> np.ndarray:
    th = np.radians(deg)
    m = np.eye(3)
    m[:2, :2] = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    m[:2, 2] = t
    return m


# --------------------------------------------------------------------------------------------------------
# landmarks


def test_fit_landmarks_recovers_similarity_exactly():
    rng = np.random.default_rng(0)
    true = _similarity(17.0, 48.7, (1200.0, -300.0))
    moving = rng.uniform(0, 100, (6, 2))
    fit = fit_landmarks(moving, apply_matrix(true, moving))
    np.testing.assert_allclose(fit.matrix, true, atol=1e-6)
    assert fit.rms < 1e-6
    assert fit.residuals.shape == (6,) and fit.n == 6


def test_fit_landmarks_recovers_affine_exactly():
    rng = np.random.default_rng(1)
    true = np.array([[3.9, 0.4, 50.0], [-0.2, 4.3, 80.0], [0, 0, 1]])
    moving = rng.uniform(0, 500, (5, 2))
    fit = fit_landmarks(moving, apply_matrix(true, moving), kind="affine")
    np.testing.assert_allclose(fit.matrix, true, atol=1e-6)
    assert fit.rms < 1e-6
    # a similarity cannot follow the shear: it leaves a clear residual
    assert fit_landmarks(moving, apply_matrix(true, moving)).rms > 10


def test_fit_landmarks_reports_rms_of_noisy_points():
    rng = np.random.default_rng(2)
    true = _similarity(-8.0, 50.0, (500.0, 700.0))
    moving = rng.uniform(0, 120, (40, 2))
    fixed = apply_matrix(true, moving) + rng.normal(0, 10.0, (40, 2))  # 10 um per axis
    fit = fit_landmarks(moving, fixed)
    manual = np.sqrt(np.mean(np.sum((apply_matrix(fit.matrix, moving) - fixed) ** 2, axis=1)))
    assert fit.rms == pytest.approx(manual, rel=1e-9)
    np.testing.assert_allclose(fit.residuals, np.linalg.norm(apply_matrix(fit.matrix, moving) - fixed, axis=1))
    # 2-D noise of 10 um per axis -> ~14 um RMS, minus the 4 fitted parameters' share
    assert 10.0 < fit.rms < 16.0
    assert transform_error_um(fit.matrix, true, apply_matrix(true, moving)) < 6.0


@pytest.mark.parametrize(
    ("moving", "fixed", "kind", "expected"),
    [
        ([[0, 0], [1, 1]], [[0, 0], [1, 1]], "similarity", "2 landmark pair(s) given; at least 3 non-collinear"),
        ([[0, 0], [1, 0], [0, 1]], [[0, 0], [1, 0], [0, 1], [1, 1]], "similarity", "moving_xy has 3 points but fixed_xy has 4"),
        ([[0, 0], [1, 1], [2, 2], [3, 3]], [[0, 0], [1, 0], [0, 1], [1, 1]], "affine", "collinear"),
        ([[0, 0], [1, 0], [0, 1]], [[0, 0], [np.nan, 0], [0, 1]], "similarity", "NaN"),
        ([[0, 0], [1, 0]], [[0, 0]], "similarity", "has 2 points but fixed_xy has 1"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 0], [1, 0], [0, 1]], "similarity", "(n, 2) array"),
    ],
)
def test_fit_landmarks_errors(moving, fixed, kind, expected):
    with pytest.raises(RegistrationError) as err:
        fit_landmarks(moving, fixed, kind=kind)
    assert expected in str(err.value)


def test_fit_landmarks_rejects_unknown_kind():
    with pytest.raises(ParameterError, match="kind must be one of"):
        fit_landmarks([[0, 0], [1, 0], [0, 1]], [[0, 0], [1, 0], [0, 1]], kind="rigid")


def test_transform_error_um():
    a = np.eye(3)
    b = np.eye(3)
    b[:2, 2] = (3.0, 4.0)
    assert transform_error_um(b, a, [[0, 0], [100, 50]]) == pytest.approx(5.0)
    # a rotation about the origin: error grows with the distance to it
    assert transform_error_um(_similarity(90, 1, (0, 0)), a, [[10, 0]]) == pytest.approx(np.sqrt(200))


# --------------------------------------------------------------------------------------------------------
# tissue masks


def test_tissue_mask_rgb_and_tic_find_a_disk():
    yy, xx = np.mgrid[0:200, 0:200]
    disk = (yy - 90) ** 2 + (xx - 110) ** 2 < 60**2
    rng = np.random.default_rng(3)
    rgb = np.full((200, 200, 3), (248, 246, 244), np.float64)
    stain = np.where(rng.random((200, 200, 1)) < 0.5, (200, 120, 190), (120, 60, 150))  # pale + dark pixels
    rgb[disk] = stain[disk]
    rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
    mask = tissue_mask(rgb, "rgb")
    assert mask.dtype == bool
    assert abs(int(mask.sum()) - int(disk.sum())) < 0.03 * disk.sum()
    assert np.mean(mask == disk) > 0.99
    # channel-first input gives the same mask
    np.testing.assert_array_equal(tissue_mask(np.moveaxis(rgb, -1, 0), "rgb"), mask)

    tic = np.where(disk, 2e4, 300.0) * rng.lognormal(0, 0.3, disk.shape)
    tmask = tissue_mask(tic.astype(np.float32), "tic")
    assert np.mean(tmask == disk) > 0.99
    soft = tissue_mask(tic.astype(np.float32), "tic", soft=True)
    assert soft.dtype == np.float32 and soft.min() >= 0 and soft.max() <= 1
    assert soft[~disk].mean() < 0.02 and soft[disk].mean() > 0.8


def test_tissue_mask_errors():
    with pytest.raises(RegistrationError, match="uniform"):
        tissue_mask(np.full((50, 50, 3), 250, np.uint8), "rgb")
    with pytest.raises(ParameterError, match="kind must be one of"):
        tissue_mask(np.zeros((5, 5)), "hne")
    with pytest.raises(ParameterError, match="RGB image must have shape"):
        tissue_mask(np.zeros((5, 5)), "rgb")


# --------------------------------------------------------------------------------------------------------
# automatic registration on simulated samples (array level)


@lru_cache(maxsize=4)
def _small_scene(index: int):
    from spatialmix.simulate import sample_scene

    return sample_scene(seed=0, size="small", sample_index=index, n_samples=4)


def _hires_to_um(scene) -> np.ndarray:
    sf = scene.scalefactors
    mpp = (55.0 / sf["spot_diameter_fullres"]) / sf["tissue_hires_scalef"]
    return np.diag([mpp, mpp, 1.0])


def _capture_area(scene):
    xy = scene.spots[["x_um", "y_um"]].to_numpy()
    return (xy[:, 0].min() - SPOT_RADIUS_UM, xy[:, 1].min() - SPOT_RADIUS_UM,
            xy[:, 0].max() + SPOT_RADIUS_UM, xy[:, 1].max() + SPOT_RADIUS_UM)


def _register_scene(scene):
    """H&E onto Visium, MSI onto the registered H&E and MSI directly onto Visium; errors (um) and times (s)."""
    pts = scene.in_tissue[["x_um", "y_um"]].to_numpy()
    he_nominal = np.diag([scene.he_microns_per_pixel] * 2 + [1.0])
    msi_nominal = np.diag([scene.msi_pixel_size_um] * 2 + [1.0])
    out = {}
    t = time.perf_counter()
    he = register_to_reference(scene.visium_hires, _hires_to_um(scene), scene.he_image, he_nominal)
    out["he"] = (transform_error_um(he.matrix, scene.he_to_um, pts), time.perf_counter() - t, he)
    t = time.perf_counter()
    msi = register_to_reference(scene.he_image, he.matrix, scene.msi_tic, msi_nominal)
    out["msi"] = (transform_error_um(msi.matrix, scene.msi_to_um, pts), time.perf_counter() - t, msi)
    return out


def _report(label: str, errors: dict[str, list[float]], times: dict[str, list[float]]) -> None:
    for mod, errs in errors.items():
        print(f"{label} {mod}: max {max(errs):.2f} um, mean {np.mean(errs):.2f} um, "
              f"errors {[round(e, 1) for e in errs]}, seconds max {max(times[mod]):.1f} mean {np.mean(times[mod]):.1f}")


def test_auto_registration_small_samples_within_a_spot_radius():
    errors = {"he": [], "msi": [], "msi direct": []}
    times = {"he": [], "msi": [], "msi direct": []}
    for i in range(4):
        scene = _small_scene(i)
        res = _register_scene(scene)
        for mod in ("he", "msi"):
            err, dt, result = res[mod]
            errors[mod].append(err)
            times[mod].append(dt)
            assert result.method == "auto"
            assert 0.85 < result.score <= 1.0  # Dice of the tissue masks
            assert np.isfinite(result.rms_um) and result.rms_um < 2 * SPOT_RADIUS_UM
            assert result.parameters["ambiguous"] is False
        # the MSI straight onto the Visium image (no H&E), as when a sample has no H&E
        t = time.perf_counter()
        direct = register_to_reference(scene.visium_hires, _hires_to_um(scene), scene.msi_tic,
                                       np.diag([scene.msi_pixel_size_um] * 2 + [1.0]))
        times["msi direct"].append(time.perf_counter() - t)
        errors["msi direct"].append(transform_error_um(direct.matrix, scene.msi_to_um,
                                                       scene.in_tissue[["x_um", "y_um"]].to_numpy()))
        # the nominal pixel sizes are off by up to 5 % (MSI) and 3 % (H&E): the registration measures them
        for mod, true in (("msi", scene.msi_to_um), ("he", scene.he_to_um)):
            assert res[mod][2].pixel_size_um == pytest.approx(np.sqrt(np.linalg.det(true[:2, :2])), rel=0.005)
    _report("small", errors, times)
    for mod, errs in errors.items():
        assert max(errs) < SPOT_RADIUS_UM, (mod, errs)


def test_auto_registration_msi_covering_tissue_outside_the_capture_area():
    scene = _small_scene(2)
    cap = _capture_area(scene)
    # a fifth of the MSI tissue lies outside the capture area (the Visium tissue is only "known" inside it)
    yy, xx = np.nonzero(tissue_mask(scene.msi_tic, "tic"))
    um = apply_matrix(scene.msi_to_um, np.column_stack([xx, yy]))
    outside = ~((um[:, 0] > cap[0]) & (um[:, 0] < cap[2]) & (um[:, 1] > cap[1]) & (um[:, 1] < cap[3]))
    assert outside.mean() > 0.15
    result = register_to_reference(scene.visium_hires, _hires_to_um(scene), scene.msi_tic,
                                   np.diag([50.0, 50.0, 1.0]), cap)
    err = transform_error_um(result.matrix, scene.msi_to_um, scene.in_tissue[["x_um", "y_um"]].to_numpy())
    print(f"MSI with {outside.mean():.0%} of its tissue outside the capture area: error {err:.2f} um")
    assert err < SPOT_RADIUS_UM
    assert result.parameters["domain_um"] == pytest.approx(list(cap))


def test_auto_registration_msi_with_unacquired_pixels():
    # imzML readers leave pixels without a spectrum at TIC 0: an irregular acquisition region must not look
    # like background (here a corner of the raster, a fifth of it, tissue included)
    scene = _small_scene(3)
    tic = scene.msi_tic.copy()
    ny, nx = tic.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    tic[(xx + yy) > 0.675 * (nx + ny)] = 0
    assert 0.15 < np.mean(tic == 0) < 0.3
    result = register_to_reference(scene.visium_hires, _hires_to_um(scene), tic, np.diag([50.0, 50.0, 1.0]))
    err = transform_error_um(result.matrix, scene.msi_to_um, scene.in_tissue[["x_um", "y_um"]].to_numpy())
    print(f"MSI with {np.mean(tic == 0):.0%} unacquired pixels: error {err:.2f} um")
    assert err < SPOT_RADIUS_UM and result.score > 0.9


def test_auto_registration_affine_and_progress_events():
    scene = _small_scene(1)
    events: list[Progress] = []
    gen = iter_register_to_reference(scene.visium_hires, _hires_to_um(scene), scene.he_image,
                                     np.diag([scene.he_microns_per_pixel] * 2 + [1.0]), kind="affine")
    result = run(gen, progress=events.append)
    assert result.kind == "affine"
    err = transform_error_um(result.matrix, scene.he_to_um, scene.in_tissue[["x_um", "y_um"]].to_numpy())
    assert err < SPOT_RADIUS_UM
    assert len(events) > 70 and events[-1].step == events[-1].total
    assert any("coarse search" in ev.message for ev in events)
    json.dumps(result.to_record())  # the record is JSON


def test_symmetric_tissue_is_flagged_ambiguous():
    # a plain disk fits every rotation equally well: the result must say so
    yy, xx = np.mgrid[0:300, 0:300]
    fixed = ((yy - 150) ** 2 + (xx - 150) ** 2 < 90**2).astype(np.float32)
    moving = ((yy - 140) ** 2 + (xx - 160) ** 2 < 90**2)[::2, ::2].astype(np.float32)
    with pytest.warns(UserWarning, match="two different poses"):
        result = register_to_reference(fixed, np.diag([10.0, 10.0, 1.0]), moving, np.diag([20.0, 20.0, 1.0]))
    assert result.parameters["ambiguous"] is True
    # the disk itself is still found: its centre lands on the fixed disk's centre
    centre = apply_matrix(result.matrix, [[80.0, 70.0]])[0]
    np.testing.assert_allclose(centre, [1500.0, 1500.0], atol=15.0)


def test_register_to_reference_errors():
    blank = np.full((100, 100, 3), 250, np.uint8)
    scene = _small_scene(0)
    with pytest.raises(RegistrationError, match="fixed image: .*no tissue"):
        register_to_reference(blank, np.eye(3), scene.msi_tic, np.diag([50.0, 50.0, 1.0]))
    with pytest.raises(ParameterError, match="scale_range must bracket 1"):
        register_to_reference(scene.visium_hires, _hires_to_um(scene), scene.msi_tic, np.diag([50.0, 50, 1]),
                              scale_range=(1.1, 1.2))
    with pytest.raises(ParameterError, match="moving_to_um_initial must be an invertible 3x3 matrix"):
        register_to_reference(scene.visium_hires, _hires_to_um(scene), scene.msi_tic, np.zeros((3, 3)))


@pytest.mark.slow
def test_auto_registration_paper_samples_within_a_spot_radius():
    from spatialmix.simulate import sample_scene

    errors = {"he": [], "msi": []}
    times = {"he": [], "msi": []}
    for i in range(16):
        scene = sample_scene(seed=0, size="paper", sample_index=i, n_samples=16)
        res = _register_scene(scene)
        for mod in ("he", "msi"):
            errors[mod].append(res[mod][0])
            times[mod].append(res[mod][1])
        del scene, res
    _report("paper", errors, times)
    for mod, errs in errors.items():
        assert max(errs) < SPOT_RADIUS_UM, (mod, errs)


# --------------------------------------------------------------------------------------------------------
# SpatialData wrappers


def _scene_sdata(scene, *, he_scale_factors=(2, 2)):
    """One sample as the readers build it: hires + MSI TIC + (multiscale) H&E, nominal scales, attrs."""
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    s = scene.sample
    mpp = _hires_to_um(scene)[0, 0]
    px, he = scene.msi_pixel_size_um, scene.he_microns_per_pixel
    images = {
        f"{s}_visium_hires": Image2DModel.parse(np.moveaxis(scene.visium_hires, -1, 0), dims=("c", "y", "x"),
                                                transformations={s: Scale([mpp, mpp], axes=("y", "x"))}),
        f"{s}_msi_tic": Image2DModel.parse(scene.msi_tic[None], dims=("c", "y", "x"), c_coords=["tic"],
                                           transformations={s: Scale([px, px], axes=("y", "x")),
                                                            f"{s}_msi": Scale([px, px], axes=("y", "x"))}),
        f"{s}_he": Image2DModel.parse(np.moveaxis(scene.he_image, -1, 0), dims=("c", "y", "x"),
                                      transformations={s: Scale([he, he], axes=("y", "x"))},
                                      scale_factors=list(he_scale_factors) or None),
    }
    attrs = {"spatialmix": {"samples": {s: {"msi": {"pixel_size_um": px}, "he": {"microns_per_pixel": he},
                                            "visium": {"capture_area_um": list(_capture_area(scene))}}}}}
    return SpatialData(images=images, attrs=attrs)


def _written(sdata, element: str, sample: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    tr = get_transformation(sdata.images[element], to_coordinate_system=sample)
    return np.asarray(tr.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))


def test_auto_register_writes_transform_and_record(monkeypatch):
    import spatialmix.registration._sdata as sd_mod

    scene = _small_scene(1)
    s = scene.sample
    sdata = _scene_sdata(scene)
    pts = scene.in_tissue[["x_um", "y_um"]].to_numpy()
    # register the H&E on pyramid level 2 (~16 um/px): the matrix must still address level-0 pixels
    monkeypatch.setattr(sd_mod, "HE_LEVEL_UM", 17.0)
    events = []
    he = auto_register(sdata, s, "he", progress=events.append)
    assert he.parameters["level"] == 2 and he.parameters["reference"] == "visium"
    # level 2 of a spatialdata pyramid is offset by the coarsening remainders: mapping it with the level's
    # own Scale transform (or without the offsets) is 6-11 um off; the exact mapping stays below 3 um
    assert transform_error_um(he.matrix, scene.he_to_um, pts) < 3.0
    np.testing.assert_allclose(_written(sdata, f"{s}_he", s), he.matrix)
    assert any(f"{s}_he" in ev.stage for ev in events)

    msi = auto_register(sdata, s, "msi")  # reference "auto": the registered H&E
    assert msi.parameters["reference"] == "he"
    err = transform_error_um(_written(sdata, f"{s}_msi_tic", s), scene.msi_to_um, pts)
    print(f"SpatialData wrapper: H&E {transform_error_um(he.matrix, scene.he_to_um, pts):.2f} um, MSI {err:.2f} um")
    assert err < SPOT_RADIUS_UM

    rec = sdata.attrs["spatialmix"]["registration"][s]
    assert set(rec) == {"msi", "he"}
    assert rec["msi"]["method"] == "auto" and rec["msi"]["element"] == f"{s}_msi_tic"
    assert rec["msi"]["rms_um"] == pytest.approx(msi.rms_um)
    np.testing.assert_allclose(rec["msi"]["matrix"], msi.matrix)
    json.loads(json.dumps(sdata.attrs["spatialmix"]))  # serialisable for the zarr writer
    # the nominal transform into the MSI frame is untouched
    np.testing.assert_allclose(_written(sdata, f"{s}_msi_tic", f"{s}_msi")[:2, :2], 50.0 * np.eye(2))

    # straight onto the Visium capture area
    direct = auto_register(sdata, s, "msi", reference="visium", domain="capture")
    assert direct.parameters["reference"] == "visium" and direct.parameters["domain"] == "capture"
    assert transform_error_um(direct.matrix, scene.msi_to_um, pts) < SPOT_RADIUS_UM


def test_register_landmarks_writes_transform_and_record():
    scene = _small_scene(0)
    s = scene.sample
    sdata = _scene_sdata(scene, he_scale_factors=())
    moving = np.array([[3.0, 4.0], [25.0, 6.0], [12.0, 30.0], [28.0, 27.0]])
    fixed = apply_matrix(scene.msi_to_um, moving)
    res = register_landmarks(sdata, s, "msi", moving, fixed)
    assert res.method == "landmarks" and res.n_landmarks == 4 and res.rms_um < 1e-6
    np.testing.assert_allclose(_written(sdata, f"{s}_msi_tic", s), scene.msi_to_um, atol=1e-6)
    rec = sdata.attrs["spatialmix"]["registration"][s]["msi"]
    assert rec["method"] == "landmarks" and rec["n_landmarks"] == 4 and rec["rms_um"] < 1e-6
    assert rec["landmarks"]["moving_xy"] == moving.tolist()
    json.dumps(rec)
    with pytest.raises(RegistrationError, match="2 landmark pair"):
        register_landmarks(sdata, s, "he", moving[:2], fixed[:2])


def test_sdata_wrapper_errors():
    scene = _small_scene(0)
    s = scene.sample
    sdata = _scene_sdata(scene, he_scale_factors=())
    with pytest.raises(ParameterError, match="modality must be one of"):
        auto_register(sdata, s, "rna")
    with pytest.raises(ProjectError, match="no image element 'P9_S9_msi_tic'"):
        auto_register(sdata, "P9_S9", "msi")
    with pytest.raises(ProjectError, match="reference='he' needs a registered"):
        auto_register(sdata, s, "msi", reference="he")
    with pytest.raises(ParameterError, match="domain must be"):
        next(iter_auto_register(sdata, s, "msi", domain="slide"))


def test_auto_register_on_files_read_by_the_readers(tmp_path):
    """End to end: the simulator writes Space Ranger / imzML / TIFF files, spatialmix.io reads them."""
    pytest.importorskip("pyimzml")
    import pandas as pd

    from spatialmix import io as smio
    from spatialmix.simulate import simulate

    simulate(tmp_path, n_samples=1, size="small", seed=0)
    row = pd.read_csv(tmp_path / "samples.csv").iloc[0]
    s = row["sample"]
    sdata = smio.read_visium(tmp_path / row["visium"], sample=s)
    for part in (smio.read_histology(tmp_path / row["he"], sample=s, microns_per_pixel=row["he_microns_per_pixel"]),
                 smio.read_imzml(tmp_path / row["imzml"], sample=s, pixel_size_um=row["msi_pixel_size_um"])):
        for name, el in part.images.items():
            sdata.images[name] = el
        sdata.attrs["spatialmix"]["samples"][s].update(part.attrs["spatialmix"]["samples"][s])
    truth = json.loads((tmp_path / s / "truth" / "transforms.json").read_text())
    spots = pd.read_csv(tmp_path / s / "truth" / "spots.csv")
    pts = spots.loc[spots["in_tissue"] == 1, ["x_um", "y_um"]].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no ambiguity warning on a normal sample
        he = auto_register(sdata, s, "he")
        msi = auto_register(sdata, s, "msi")
    e_he = transform_error_um(he.matrix, np.array(truth["he"]), pts)
    e_msi = transform_error_um(msi.matrix, np.array(truth["msi"]), pts)
    print(f"read from files: H&E {e_he:.2f} um, MSI {e_msi:.2f} um")
    assert e_he < SPOT_RADIUS_UM and e_msi < SPOT_RADIUS_UM
