"""Per-spot features: MSI pixels -> spots (area-weighted) and H&E morphology under each spot."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

from spatialmix.errors import EncoderError, MissingFileError, ParameterError, ProjectError
from spatialmix.features import (
    aggregate_msi,
    iter_aggregate_msi,
    iter_morphology_features,
    morphology_features,
)
from spatialmix.progress import Progress

SPOT_R = 27.5
DISK = np.pi * SPOT_R**2


# ------------------------------------------------------------------------------------------ scene builders
def _affine(scale: float, angle_deg: float = 0.0, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    return np.array(
        [[scale * np.cos(t), -scale * np.sin(t), tx], [scale * np.sin(t), scale * np.cos(t), ty], [0, 0, 1.0]]
    )


def _spots_and_rna(sample: str, xy: np.ndarray, *, order: np.ndarray | None = None):
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    n = len(xy)
    spots = ShapesModel.parse(
        np.asarray(xy, float), geometry=0, radius=np.full(n, SPOT_R), index=np.arange(n),
        transformations={sample: Identity()},
    )
    ids = np.arange(n) if order is None else np.asarray(order)
    barcodes = [f"BC{i:05d}-1" for i in ids]
    obs = pd.DataFrame(
        {"sample": sample, "barcode": barcodes, "spot_id": ids, "region": f"{sample}_spots"},
        index=[f"{sample}_{b}" for b in barcodes],
    )
    return spots, ad.AnnData(X=np.ones((n, 2), np.float32), obs=obs)


def _msi_elements(sample: str, X, ix: np.ndarray, iy: np.ndarray, A: np.ndarray, shape: tuple[int, int]):
    from spatialdata.models import Image2DModel, TableModel
    from spatialdata.transformations import Affine

    tic = np.zeros((1, *shape), np.float32)
    tic[0, iy, ix] = np.asarray(X.sum(axis=1)).ravel()
    tic_el = Image2DModel.parse(
        tic, dims=("c", "y", "x"),
        transformations={sample: Affine(A, input_axes=("x", "y"), output_axes=("x", "y"))},
    )
    obs = pd.DataFrame({"x": ix.astype(int), "y": iy.astype(int)}, index=[f"p{i}" for i in range(len(ix))])
    mz = [700.0 + k for k in range(X.shape[1])]
    var = pd.DataFrame({"mz": mz}, index=[f"{m:.4f}" for m in mz])
    return tic_el, TableModel.parse(ad.AnnData(X=X, obs=obs, var=var))


def _sdata(samples: dict):
    """``samples``: {name: dict(xy=..., msi=(X, ix, iy, A, shape) or None, he=(rgb or levels, A, scale_factors))}."""
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, TableModel
    from spatialdata.transformations import Affine

    shapes, images, tables, rnas = {}, {}, {}, []
    for s, spec in samples.items():
        spots, rna = _spots_and_rna(s, spec["xy"], order=spec.get("order"))
        shapes[f"{s}_spots"] = spots
        rnas.append(rna)
        if spec.get("msi") is not None:
            tic, table = _msi_elements(s, *spec["msi"])
            images[f"{s}_msi_tic"] = tic
            tables[f"{s}_msi"] = table
        if spec.get("he") is not None:
            rgb, A, scale_factors = spec["he"]
            images[f"{s}_he"] = Image2DModel.parse(
                rgb, dims=("c", "y", "x"), scale_factors=scale_factors,
                transformations={s: Affine(A, input_axes=("x", "y"), output_axes=("x", "y"))},
            )
    rna = ad.concat(rnas)
    regions = [f"{s}_spots" for s in samples]
    rna.obs["region"] = pd.Categorical(rna.obs["region"], categories=regions)
    tables["rna"] = TableModel.parse(rna, region=regions, region_key="region", instance_key="spot_id")
    return SpatialData(shapes=shapes, images=images, tables=tables)


def _raster(nx: int, ny: int):
    iy, ix = np.mgrid[0:ny, 0:nx]
    return ix.ravel(), iy.ravel()


def _pixel_centres_um(A, ix, iy):
    return np.column_stack([ix, iy, np.ones_like(ix)]).astype(float) @ A.T[:, :2]


def _hex_spots(x0, x1, y0, y1, pitch=100.0):
    pts = []
    for r, y in enumerate(np.arange(y0, y1, pitch * np.sqrt(3) / 2)):
        for x in np.arange(x0 + (pitch / 2 if r % 2 else 0), x1, pitch):
            pts.append((x, y))
    return np.array(pts)


# ------------------------------------------------------------------------------------------------------ MSI
def test_constant_field_is_exact_and_coverage_is_one_inside():
    A = _affine(50.0)
    ix, iy = _raster(40, 40)  # pixel centres 0..1950 um, raster covers [-25, 1975]
    X = np.tile(np.array([[3.5, 7.0, 0.25]], np.float32), (ix.size, 1))
    xy = _hex_spots(100, 1850, 100, 1850)
    res = aggregate_msi(_sdata({"S1": {"xy": xy, "msi": (X, ix, iy, A, (40, 40))}}), "S1")
    assert res.shape == (len(xy), 3)
    assert list(res.var_names) == ["700.0000", "701.0000", "702.0000"]
    assert res.obs["msi_covered"].all()
    np.testing.assert_allclose(res.obs["msi_coverage"], 1.0, atol=1e-5)
    np.testing.assert_allclose(res.X, np.tile([[3.5, 7.0, 0.25]], (len(xy), 1)), rtol=1e-6)
    # 55 um disks on a 50 um raster touch a handful of pixels
    n = res.obs["msi_n_pixels"].to_numpy()
    assert n.min() >= 2 and n.max() <= 9, (n.min(), n.max())


def test_linear_field_gives_value_at_spot_centre_and_pixel_counts_10um():
    A = _affine(10.0, tx=3.0, ty=-4.0)
    ix, iy = _raster(200, 150)
    c = _pixel_centres_um(A, ix, iy)
    f = lambda x, y: 2.0 + 0.01 * x + 0.02 * y  # noqa: E731
    X = np.column_stack([f(c[:, 0], c[:, 1]), np.ones(ix.size)]).astype(np.float32)
    xy = _hex_spots(60, 1940, 60, 1440)
    res = aggregate_msi(_sdata({"S1": {"xy": xy, "msi": (X, ix, iy, A, (150, 200))}}), "S1")
    err = np.abs(res.X[:, 0] - f(xy[:, 0], xy[:, 1]))
    # the area-weighted centroid of 10 um pixel centres is within ~1 um of the spot centre
    assert err.max() < 0.03, err.max()
    np.testing.assert_allclose(res.X[:, 1], 1.0, rtol=1e-5)
    n = res.obs["msi_n_pixels"].to_numpy()
    assert 28 <= n.min() and n.max() <= 40, (n.min(), n.max())


def test_rotated_grid_constant_exact_linear_close():
    A = _affine(20.0, angle_deg=30.0, tx=800.0, ty=-300.0)
    ix, iy = _raster(90, 90)
    c = _pixel_centres_um(A, ix, iy)
    f = lambda x, y: 5.0 - 0.01 * x + 0.015 * y  # noqa: E731
    X = np.column_stack([np.full(ix.size, 4.0), f(c[:, 0], c[:, 1])]).astype(np.float32)
    # spots well inside the rotated raster
    tree = cKDTree(c)
    cand = _hex_spots(-1000, 2000, -300, 2500, pitch=100)
    d, _ = tree.query(cand)
    inv = np.linalg.inv(A)
    pix = np.column_stack([cand, np.ones(len(cand))]) @ inv.T
    inside = (pix[:, 0] > 3) & (pix[:, 0] < 86) & (pix[:, 1] > 3) & (pix[:, 1] < 86)
    xy = cand[inside]
    assert len(xy) > 50
    res = aggregate_msi(_sdata({"S1": {"xy": xy, "msi": (X, ix, iy, A, (90, 90))}}), "S1")
    np.testing.assert_allclose(res.obs["msi_coverage"], 1.0, atol=1e-5)
    np.testing.assert_allclose(res.X[:, 0], 4.0, rtol=1e-6)
    assert np.abs(res.X[:, 1] - f(xy[:, 0], xy[:, 1])).max() < 0.05


def test_spot_half_outside_is_flagged_zero_and_warned():
    A = _affine(10.0)
    ix, iy = _raster(100, 100)  # raster covers x in [-5, 995] um
    X = sp.csr_matrix(np.tile(np.array([[1.0, 0.0, 2.0]], np.float32), (ix.size, 1)))
    xy = np.array([[500.0, 500.0], [-6.0, 500.0], [-200.0, 500.0], [500.0, 990.0]])
    sdata = _sdata({"S1": {"xy": xy, "msi": (X, ix, iy, A, (100, 100))}})
    with pytest.warns(UserWarning, match=r"2 of 4 spots of sample 'S1'.*set to 0 and flagged"):
        res = aggregate_msi(sdata, "S1")
    assert sp.issparse(res.X) and res.X.format == "csr"
    cov = res.obs["msi_coverage"].to_numpy()
    # disk cut by a line 1 um from its centre: (r^2 acos(d/r) - d sqrt(r^2-d^2)) / (pi r^2)
    d = 1.0
    expected = (SPOT_R**2 * np.arccos(d / SPOT_R) - d * np.sqrt(SPOT_R**2 - d**2)) / DISK
    np.testing.assert_allclose(cov[1], expected, rtol=1e-4)
    assert cov[0] == pytest.approx(1.0, abs=1e-5) and cov[2] == 0.0
    assert 0.5 < cov[3] < 1.0  # centre 15 um inside the far edge
    assert res.obs["msi_covered"].tolist() == [True, False, False, True]
    assert res.obs["msi_n_pixels"].iloc[2] == 0
    dense = res.X.toarray()
    np.testing.assert_allclose(dense[[0, 3]], [[1, 0, 2], [1, 0, 2]], rtol=1e-6)
    assert not dense[[1, 2]].any()
    assert res.uns["msi_uncovered_spots"] == ["S1_BC00001-1", "S1_BC00002-1"]


def test_rows_follow_rna_order_across_samples_and_sparse_equals_dense():
    A = _affine(25.0)
    ix, iy = _raster(60, 60)
    c = _pixel_centres_um(A, ix, iy)
    Xd = np.column_stack([c[:, 0] / 100.0, (c[:, 1] > 700).astype(float), np.zeros(ix.size)]).astype(np.float32)
    xy = _hex_spots(100, 1400, 100, 1400)
    order = np.random.default_rng(1).permutation(len(xy))
    sdata = _sdata({
        "A1": {"xy": xy[::-1].copy(), "msi": (Xd, ix, iy, A, (60, 60))},
        "B2": {"xy": xy, "order": order, "msi": (sp.csr_matrix(Xd), ix, iy, A, (60, 60))},
    })
    res = aggregate_msi(sdata, "B2")
    rna = sdata.tables["rna"]
    assert list(res.obs_names) == list(rna.obs_names[rna.obs["sample"] == "B2"])
    assert res.obs["spot_id"].tolist() == order.tolist()
    # the value follows the spot the row names, not the spot index order
    np.testing.assert_allclose(res.X.toarray()[:, 0], xy[order, 0] / 100.0, atol=0.05)
    dense = aggregate_msi(sdata, "A1")
    assert isinstance(dense.X, np.ndarray)
    np.testing.assert_allclose(dense.X[:, 0], xy[::-1, 0] / 100.0, atol=0.05)
    assert (dense.obs["sample"] == "A1").all() and (res.obs["region"] == "B2_spots").all()


def test_supersample_agrees_with_exact_and_generator_yields_progress():
    A = _affine(10.0, angle_deg=12.0)
    ix, iy = _raster(80, 80)
    c = _pixel_centres_um(A, ix, iy)
    X = np.column_stack([np.sin(c[:, 0] / 40.0) + 2.0]).astype(np.float32)
    xy = np.array([[300.0, 400.0], [420.0, 380.0], [250.0, 600.0]])
    sdata = _sdata({"S1": {"xy": xy, "msi": (X, ix, iy, A, (80, 80))}})
    gen = iter_aggregate_msi(sdata, "S1")
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        exact = stop.value
    assert events and all(isinstance(e, Progress) for e in events) and events[-1].fraction == 1.0
    approx = aggregate_msi(sdata, "S1", method="supersample", supersample=8)
    np.testing.assert_allclose(approx.X, exact.X, rtol=0.02)
    np.testing.assert_allclose(approx.obs["msi_coverage"], exact.obs["msi_coverage"], atol=0.03)
    assert exact.uns["spatialmix"]["msi_aggregation"]["method"] == "exact"


def test_msi_errors_are_clear():
    from spatialdata.transformations import Identity, set_transformation

    A = _affine(50.0)
    ix, iy = _raster(10, 10)
    X = np.ones((ix.size, 1), np.float32)
    sdata = _sdata({"S1": {"xy": np.array([[100.0, 100.0]]), "msi": (X, ix, iy, A, (10, 10))},
                    "S2": {"xy": np.array([[100.0, 100.0]])}})
    with pytest.raises(ProjectError, match=r"No spots element 'nope_spots'.*\['S1', 'S2'\]"):
        aggregate_msi(sdata, "nope")
    with pytest.raises(ProjectError, match=r"no MSI pixel table 'S2_msi'"):
        aggregate_msi(sdata, "S2")
    with pytest.raises(ParameterError, match="min_coverage"):
        aggregate_msi(sdata, "S1", min_coverage=2)
    tic = sdata.images["S1_msi_tic"]
    set_transformation(tic, {"global": Identity()}, set_all=True)
    msg = r"'S1_msi_tic' has no transformation into coordinate system 'S1'.*[Rr]egister"
    with pytest.raises(ProjectError, match=msg):
        aggregate_msi(sdata, "S1")


# ------------------------------------------------------------------------------------------------ H&E scene
NUC_R = 3.0  # um


def _nuclei(rng, x0, x1, y0, y1, spacing):
    """Jittered lattice of nucleus centres (um) that never touch each other."""
    gx, gy = np.meshgrid(np.arange(x0, x1, spacing), np.arange(y0, y1, spacing))
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    jitter = (spacing - 2 * NUC_R - 2.0) / 2
    return pts + rng.uniform(-jitter, jitter, pts.shape)


def _render_he(A: np.ndarray, shape: tuple[int, int], nuclei: np.ndarray, rng) -> np.ndarray:
    """RGB (3, H, W) uint8 of the scene: pink eosin tissue, purple nuclei disks, drawn through pixel->um ``A``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    um = np.column_stack([xx.ravel(), yy.ravel(), np.ones(xx.size)]) @ A.T[:, :2]
    d, _ = cKDTree(nuclei).query(um)
    nuc = (d <= NUC_R).reshape(h, w)
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = (232, 160, 196)
    rgb[nuc] = (72, 40, 128)
    rgb += rng.normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def he_scene():
    rng = np.random.default_rng(7)
    # 400 x 240 um of tissue: dense nuclei (12 um lattice) left of x=200, sparse (30 um) right of it
    nuclei = np.vstack([_nuclei(rng, 6, 200, 6, 240, 12.0), _nuclei(rng, 215, 400, 15, 240, 30.0)])
    xy = np.array([[60.0, 60.0], [140.0, 60.0], [60.0, 170.0], [140.0, 170.0],
                   [260.0, 60.0], [340.0, 60.0], [260.0, 170.0], [340.0, 170.0]])
    return {"nuclei": nuclei, "xy": xy, "dense": np.arange(4), "sparse": np.arange(4, 8)}


def _he_sdata(scene, A, shape, *, scale_factors=None, xy=None, rng_seed=0):
    rgb = _render_he(A, shape, scene["nuclei"], np.random.default_rng(rng_seed))
    return _sdata({"S1": {"xy": scene["xy"] if xy is None else xy, "he": (rgb, A, scale_factors)}})


@pytest.fixture(scope="module")
def he_base(he_scene):
    A = _affine(0.5)  # 0.5 um per pixel, axis aligned
    sdata = _he_sdata(he_scene, A, (480, 800))
    return sdata, morphology_features(sdata, "S1")


def _true_counts(scene, xy):
    d = np.linalg.norm(scene["nuclei"][None, :, :] - xy[:, None, :], axis=2)
    return (d <= SPOT_R).sum(axis=1)


def test_morphology_features_names_groups_and_nuclei(he_scene, he_base):
    _, res = he_base
    assert res.n_obs == 8 and res.n_vars >= 30
    assert np.isfinite(res.X).all()
    assert set(res.var["group"]) == {"color", "texture", "nuclei"}
    for name in ("color_R_mean", "color_hematoxylin_p90", "color_saturation_std", "glcm_contrast",
                 "glcm_correlation", "glcm_ASM", "lbp_0", "nuclei_count", "nuclei_density_per_1000um2",
                 "nuclei_mean_area_um2", "nuclei_mean_eccentricity", "nuclei_mean_solidity", "nuclei_area_fraction"):
        assert name in res.var_names, name
    assert (res.var.loc[["color_R_mean", "glcm_contrast", "nuclei_count"], "group"].tolist()
            == ["color", "texture", "nuclei"])
    assert res.obs["he_covered"].all()
    np.testing.assert_allclose(res.obs["he_coverage"], 1.0)
    count = res[:, "nuclei_count"].X.ravel()
    truth = _true_counts(he_scene, he_scene["xy"])
    # separated nuclei: counted one by one (nuclei cut by the spot edge may go either way)
    assert np.abs(count - truth).max() <= 2, (count, truth)
    assert count[he_scene["dense"]].min() > 2 * count[he_scene["sparse"]].max()
    area = res[:, "nuclei_mean_area_um2"].X.ravel()
    np.testing.assert_allclose(area, np.pi * NUC_R**2, rtol=0.25)
    solidity = res[:, "nuclei_mean_solidity"].X.ravel()
    assert (solidity > 0.9).all() and (solidity <= 1.0).all()
    ecc = res[:, "nuclei_mean_eccentricity"].X.ravel()
    assert (ecc < 0.6).all()  # round nuclei
    dens = res[:, "nuclei_density_per_1000um2"].X.ravel()
    np.testing.assert_allclose(dens, count / DISK * 1000, rtol=0.03)
    frac = res[:, "nuclei_area_fraction"].X.ravel()
    assert frac[he_scene["dense"]].min() > frac[he_scene["sparse"]].max()
    assert res.uns["spatialmix"]["morphology"]["patch_px"] == 55


def test_morphology_invariant_to_he_rotation(he_scene, he_base):
    sdata0, res0 = he_base
    rgb = np.asarray(sdata0.images["S1_he"].data)
    h, w = rgb.shape[1:]
    # the same pixels rotated by 90 degrees; the transform accounts for it
    rot = np.ascontiguousarray(np.rot90(rgb, k=1, axes=(1, 2)))
    M = np.array([[0.0, -1.0, w - 1], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    sd90 = _sdata({"S1": {"xy": he_scene["xy"], "he": (rot, _affine(0.5) @ M, None)}})
    res90 = morphology_features(sd90, "S1")
    np.testing.assert_allclose(res90.X, res0.X, rtol=1e-3, atol=1e-4)
    # an independent scan of the same tissue at 30 degrees and 0.4 um/px: close, not identical
    A30 = _affine(0.4, angle_deg=30.0)
    tissue = np.array([[0, 0], [400, 0], [0, 240], [400, 240.0]])
    lo = (tissue @ np.linalg.inv(A30[:2, :2]).T).min(axis=0) - 5  # place the tissue 5 px from the border
    A30[:2, 2] = A30[:2, :2] @ lo
    corners = np.column_stack([tissue, np.ones(4)]) @ np.linalg.inv(A30).T
    w30, h30 = int(corners[:, 0].max()) + 6, int(corners[:, 1].max()) + 6
    res30 = morphology_features(_he_sdata(he_scene, A30, (h30, w30), rng_seed=3), "S1")
    col = lambda r, n: r[:, n].X.ravel()  # noqa: E731
    assert np.abs(col(res30, "nuclei_count") - col(res0, "nuclei_count")).max() <= 2
    for name in ("color_R_mean", "color_eosin_mean", "color_hematoxylin_mean", "nuclei_area_fraction"):
        np.testing.assert_allclose(col(res30, name), col(res0, name), rtol=0.1, atol=0.005, err_msg=name)


def test_morphology_uncovered_spots_flagged_and_multiscale(he_scene, he_base):
    xy = np.vstack([he_scene["xy"][:2], [[0.0, 120.0], [-100.0, 120.0], [378.0, 120.0]]])
    rgb = np.asarray(he_base[0].images["S1_he"].data)
    sdata = _sdata({"S1": {"xy": xy, "he": (rgb, _affine(0.5), [2, 2])}})
    with pytest.warns(UserWarning, match=r"2 of 5 spots of sample 'S1'.*H&E patch"):
        res = morphology_features(sdata, "S1")
    cov = res.obs["he_coverage"].to_numpy()
    assert cov[0] == 1.0 and cov[1] == 1.0
    # the image covers x in [-0.25, 399.75] um: a disk centred on the edge is half inside; one centred
    # 21.75 um inside the edge loses a circular segment of 5.6 % of its area
    d = 399.75 - 378.0
    seg = (SPOT_R**2 * np.arccos(d / SPOT_R) - d * np.sqrt(SPOT_R**2 - d**2)) / DISK
    assert cov[2] == pytest.approx(0.5, abs=0.03) and cov[3] == 0.0
    assert cov[4] == pytest.approx(1 - seg, abs=0.01)
    assert res.obs["he_covered"].tolist() == [True, True, False, False, True]
    assert not res.X[[2, 3]].any() and res.X[[0, 1, 4]].any()
    assert res.uns["he_uncovered_spots"] == [res.obs_names[2], res.obs_names[3]]
    # pyramid levels 0.5, 1, 2 um/px: the 1 um/px level is read, features agree with the full resolution
    meta = res.uns["spatialmix"]["morphology"]
    assert meta["he_level"] == 1 and meta["he_level_um_per_px"] == pytest.approx(1.0)
    base = he_base[1]
    np.testing.assert_allclose(res[:2, "nuclei_count"].X.ravel(), base[:2, "nuclei_count"].X.ravel(), atol=2)
    np.testing.assert_allclose(res[:2, "color_R_mean"].X.ravel(), base[:2, "color_R_mean"].X.ravel(), rtol=0.03)


def test_large_slides_read_batch_by_batch_give_the_same_features(he_base, monkeypatch):
    import spatialmix.features.morphology as morph

    sdata, res = he_base
    monkeypatch.setattr(morph, "_CACHE_BYTES", 0)  # as for a whole-slide level too large to hold in memory
    again = morphology_features(sdata, "S1", batch_size=3)
    np.testing.assert_allclose(again.X, res.X, rtol=1e-5, atol=1e-6)


def test_square_patch_and_parameter_errors(he_base):
    sdata, _ = he_base
    res = morphology_features(sdata, "S1", patch_um=80, resolution_um=2.0)
    meta = res.uns["spatialmix"]["morphology"]
    assert meta["patch_shape"] == "square" and meta["patch_px"] == 40 and meta["patch_um"] == 80.0
    assert np.isfinite(res.X).all()
    with pytest.raises(ParameterError, match="patch_um must be a positive number"):
        morphology_features(sdata, "S1", patch_um=-5)
    with pytest.raises(ProjectError, match=r"no image element 'S2_he'|No spots element 'S2_spots'"):
        morphology_features(sdata, "S2")


def test_nucleus_shape_measures_match_skimage_regionprops():
    from skimage.draw import disk, ellipse
    from skimage.measure import label, regionprops

    from spatialmix.features.morphology import _nuclei_features

    rng = np.random.default_rng(3)
    for _ in range(12):
        m = np.zeros((40, 40), bool)
        a, b = rng.uniform(2, 7, 2)
        m[ellipse(20, 20, a, b, rotation=rng.uniform(0, 3))] = True
        if rng.random() < 0.5:  # a non-convex blob
            m[disk((20 + rng.uniform(-5, 5), 20 + rng.uniform(-5, 5)), 2.5)] = True
        lab = label(m)
        if lab.max() != 1:
            continue
        ref = regionprops(lab)[0]
        f = _nuclei_features(m[None].astype(np.float32), np.ones_like(m), 0.5, 1.0, 1.0)[0]
        assert f[0] == 1 and f[2] == ref.area
        assert f[4] == pytest.approx(ref.eccentricity, abs=1e-6)
        assert f[5] == pytest.approx(ref.solidity, abs=0.06)


# -------------------------------------------------------------------------------------------------- encoder
def _tiny_encoder(path, *, flatten: bool = True):
    import torch

    class Enc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 6, kernel_size=3, stride=2)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.flatten = flatten

        def forward(self, x):
            y = self.pool(torch.relu(self.conv(x)))
            if self.flatten:
                return y.flatten(1)
            return y

    torch.jit.script(Enc()).save(str(path))
    return path


def test_encoder_features_and_errors(he_scene, he_base, tmp_path):
    sdata, _ = he_base
    path = _tiny_encoder(tmp_path / "enc.pt")
    gen = iter_morphology_features(sdata, "S1", encoder=path, encoder_input_size=32, batch_size=3)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        res = stop.value
    assert sum(e.message == "encoder" for e in events) == 3  # 8 spots in batches of 3
    assert res.shape == (8, 6)
    assert list(res.var_names) == [f"enc_{i}" for i in range(6)]
    assert set(res.var["group"]) == {"encoder"}
    assert np.isfinite(res.X).all() and res.obs["he_covered"].all()
    # dense and sparse tissue embed differently, similar tissue similarly
    d, s = res.X[he_scene["dense"]], res.X[he_scene["sparse"]]
    assert np.linalg.norm(d.mean(0) - s.mean(0)) > 3 * max(d.std(0).max(), s.std(0).max())

    with pytest.raises(MissingFileError, match=r"Image-encoder checkpoint not found.*missing\.pt"):
        morphology_features(sdata, "S1", encoder=tmp_path / "missing.pt")
    bad = tmp_path / "weights.pt"
    bad.write_text("not a model")
    msg = r"Cannot load the image encoder as a TorchScript model.*weights\.pt.*torch\.jit\.script"
    with pytest.raises(EncoderError, match=msg):
        morphology_features(sdata, "S1", encoder=bad)
    with pytest.raises(ParameterError, match="device must be a torch device"):
        morphology_features(sdata, "S1", encoder=path, device="gpu0")
    wrong = _tiny_encoder(tmp_path / "no_flatten.pt", flatten=False)
    with pytest.raises(EncoderError, match=r"returned \(8, 6, 1, 1\).*expected a tensor \(N, D\)"):
        morphology_features(sdata, "S1", encoder=wrong, encoder_input_size=32, batch_size=8)


def test_features_use_rna_rows_without_warnings(he_base):
    sdata, res = he_base
    rna = sdata.tables["rna"]
    assert list(res.obs_names) == list(rna.obs_names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        morphology_features(sdata, "S1", batch_size=5)
