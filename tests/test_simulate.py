"""The simulator writes a dataset that the real readers open, with the geometry and truth it claims."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile
from pyimzml.ImzMLParser import ImzMLParser
from scipy.spatial import cKDTree

from spatialmix.errors import ParameterError
from spatialmix.progress import Progress
from spatialmix.simulate import iter_simulate, sample_scene, simulate

SAMPLES = ["P1_S1", "P1_S2", "P2_S1", "P2_S2"]


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> tuple[Path, list[Progress]]:
    out = tmp_path_factory.mktemp("sim") / "data"
    gen = iter_simulate(out, n_samples=4, seed=0, size="small")
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        assert stop.value == out
    return out, events


@pytest.fixture(scope="session")
def scenes():
    return {s: sample_scene(seed=0, size="small", sample_index=i, n_samples=4) for i, s in enumerate(SAMPLES)}


def _msi(path: Path) -> ImzMLParser:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImzMLParser(str(path))


def _tic_image(p: ImzMLParser) -> np.ndarray:
    nx = max(c[0] for c in p.coordinates)
    ny = max(c[1] for c in p.coordinates)
    tic = np.zeros((ny, nx))
    for k, (x, y, _) in enumerate(p.coordinates):
        tic[y - 1, x - 1] = p.getspectrum(k)[1].astype(np.float64).sum()
    return tic


def test_layout_and_samples_csv(dataset):
    out, events = dataset
    table = pd.read_csv(out / "samples.csv")
    assert list(table.columns) == ["sample", "patient", "visium", "imzml", "msi_pixel_size_um", "he",
                                   "he_microns_per_pixel", "annotations"]
    assert table["sample"].tolist() == SAMPLES
    assert table["patient"].tolist() == ["P1", "P1", "P2", "P2"]
    assert (table.msi_pixel_size_um == 50).all() and (table.he_microns_per_pixel == 4).all()
    for _, row in table.iterrows():
        s = row["sample"]
        for col in ("visium", "imzml", "he", "annotations"):
            assert (out / row[col]).exists(), row[col]
        outs = out / row.visium
        for f in ("filtered_feature_bc_matrix.h5", "spatial/tissue_positions.csv", "spatial/scalefactors_json.json",
                  "spatial/tissue_hires_image.png", "spatial/tissue_lowres_image.png"):
            assert (outs / f).is_file(), f
        assert (out / s / "msi" / f"{s}.ibd").is_file()
        for f in ("transforms.json", "spots.csv", "signals.npz"):
            assert (out / s / "truth" / f).is_file()
    # progress: one event per sample and step, monotonic, ending at the total
    steps = [e.step for e in events]
    assert steps == sorted(steps) and events[-1].step == events[-1].total == 20
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size < 25e6, f"small dataset is {size / 1e6:.1f} MB"


def test_visium_reads_with_spatialdata_io_and_scanpy(dataset):
    import scanpy as sc
    import spatialdata_io

    out, _ = dataset
    n_in = []
    for s in SAMPLES:
        outs = out / s / "outs"
        pos = pd.read_csv(outs / "spatial" / "tissue_positions.csv")
        assert list(pos.columns) == ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres",
                                     "pxl_col_in_fullres"]
        assert len(pos) == 34 * 30  # whole capture area
        assert ((pos.array_row + pos.array_col) % 2 == 0).all()
        assert 300 <= pos.in_tissue.sum() <= 450
        n_in.append(int(pos.in_tissue.sum()))

        ad = sc.read_10x_h5(outs / "filtered_feature_bc_matrix.h5")
        assert ad.shape == (pos.in_tissue.sum(), 1500)
        assert set(ad.obs_names) == set(pos.barcode[pos.in_tissue == 1])
        assert all(len(b) == 18 and b.endswith("-1") for b in ad.obs_names)
        assert ad.var.gene_ids.str.match(r"^ENSG\d{11}$").all()
        assert (ad.var.feature_types == "Gene Expression").all()
        assert {"KLK3", "AMACR", "PTPRC", "MT-CO1"} <= set(ad.var_names)
        zeros = 1 - ad.X.nnz / np.prod(ad.shape)
        assert zeros > 0.55, zeros

        sd = spatialdata_io.visium(outs, dataset_id=s)
        assert sd.tables["table"].n_obs == pos.in_tissue.sum()
        assert len(sd.shapes[s]) == pos.in_tissue.sum()
        hires = sd.images[f"{s}_hires_image"]
        assert hires.shape[0] == 3 and max(hires.shape[1:]) == 800
        assert max(sd.images[f"{s}_lowres_image"].shape[1:]) == 600
    assert len(set(n_in)) > 1


def test_spot_lattice_geometry(dataset):
    out, _ = dataset
    for s in SAMPLES:
        sf = json.loads((out / s / "outs" / "spatial" / "scalefactors_json.json").read_text())
        mpp = 55.0 / sf["spot_diameter_fullres"]
        pos = pd.read_csv(out / s / "outs" / "spatial" / "tissue_positions.csv")
        xy = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy() * mpp
        d, _ = cKDTree(xy).query(xy, k=7)
        assert np.allclose(d[:, 1:3], 100.0, atol=1.0)  # neighbouring spots 100 um apart
        assert np.allclose(np.median(d[:, 1:7]), 100.0, atol=0.5)


def test_imzml_modes_pixels_and_tic(dataset, scenes):
    out, _ = dataset
    for s in SAMPLES:
        p = _msi(out / s / "msi" / f"{s}.imzML")
        scene = scenes[s]
        ny, nx = scene.msi_tic.shape
        assert len(p.coordinates) == nx * ny
        assert p.imzmldict["pixel size x"] == 50.0
        mode = "continuous" if s.startswith("P1") else "processed"
        assert mode in p.metadata.file_description.param_by_name
        lengths = set(p.mzLengths)
        mz0, i0 = p.getspectrum(0)
        assert mz0.dtype == np.float32 and i0.dtype == np.float32
        if mode == "continuous":
            assert lengths == {300}
            assert len(set(p.mzOffsets)) == 1  # one shared m/z axis
        else:
            assert len(lengths) > 10
        mz, _ = p.getspectrum(len(p.coordinates) // 2)
        assert mz.min() >= 400 and mz.max() <= 1000 and np.all(np.diff(mz) >= 0)
        # the scene's TIC image is the one computed from the written spectra
        np.testing.assert_allclose(_tic_image(p), scene.msi_tic, rtol=1e-5)


def test_raw_msi_tic_distributions_differ_between_samples(scenes):
    from scipy.stats import ks_2samp

    tissue_tic = []
    for s in SAMPLES:
        t = scenes[s].msi_tic.ravel()
        tissue_tic.append(t[t > np.quantile(t, 0.5)])
    med = [np.median(t) for t in tissue_tic]
    assert max(med) / min(med) > 3
    for i in range(4):
        for j in range(i + 1, 4):
            assert ks_2samp(tissue_tic[i], tissue_tic[j]).statistic > 0.5


def test_raw_msi_spectra_cluster_by_sample(dataset):
    """Before any correction, TIC-normalised spectra of tissue pixels group by sample (batch effect)."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    out, _ = dataset
    step = np.log1p(20e-6)  # 20 ppm bins anchored at m/z 50 (docs/conventions.md)
    rows, batch = [], []
    for b, s in enumerate(SAMPLES):
        p = _msi(out / s / "msi" / f"{s}.imzML")
        spectra = [p.getspectrum(k) for k in range(len(p.coordinates))]
        tic = np.array([i.sum() for _, i in spectra])
        for k in np.flatnonzero(tic > np.quantile(tic, 0.5))[::2]:
            mz, inten = spectra[k]
            rows.append((np.floor(np.log(mz / 50.0) / step).astype(np.int64), inten / inten.sum()))
            batch.append(b)
    bins, counts = np.unique(np.concatenate([r[0] for r in rows]), return_counts=True)
    bins = bins[counts > 0.1 * len(rows)]
    X = np.zeros((len(rows), bins.size))
    for n, (k, v) in enumerate(rows):
        pos = np.searchsorted(bins, k)
        ok = (pos < bins.size) & (bins[np.minimum(pos, bins.size - 1)] == k)
        np.add.at(X[n], pos[ok], v[ok])
    assert bins.size >= 150  # the lipid features (some split over two bins by the calibration shifts)
    pcs = PCA(10, random_state=0).fit_transform(np.log1p(1e4 * X))
    assert silhouette_score(pcs, batch) > 0.3


def test_he_tiff_is_rgb_and_matches_scene(dataset, scenes):
    out, _ = dataset
    for s in SAMPLES:
        with tifffile.TiffFile(out / s / "he" / f"{s}_HE.tif") as tf:
            page = tf.pages[0]
            img = page.asarray()
            assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            x_res = page.tags["XResolution"].value
            assert x_res[0] / x_res[1] == pytest.approx(1e4 / 4.0)  # px per cm at the nominal 4 um/px
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
        np.testing.assert_array_equal(img, scenes[s].he_image)
        assert img[:5, :5].mean() > 235  # white background


def test_annotations(dataset):
    out, _ = dataset
    classes_per_sample = {}
    for s in SAMPLES:
        ann = pd.read_csv(out / s / "annotations.csv", keep_default_na=False)
        assert list(ann.columns) == ["Barcode", "Pathologist"]
        truth = pd.read_csv(out / s / "truth" / "spots.csv", keep_default_na=False)
        truth = truth[truth.in_tissue == 1].set_index("barcode")
        assert sorted(ann.Barcode) == ann.Barcode.tolist() and set(ann.Barcode) == set(truth.index)
        unlabelled = (ann.Pathologist == "").mean()
        assert 0.05 <= unlabelled <= 0.17, unlabelled
        labelled = ann[ann.Pathologist != ""]
        noise = (labelled.Pathologist.to_numpy() != truth.loc[labelled.Barcode, "region"].to_numpy()).mean()
        assert 0.005 < noise < 0.12, noise
        classes_per_sample[s] = set(labelled.Pathologist)
    all_classes = set().union(*classes_per_sample.values())
    assert len(all_classes) >= 6
    in_one = [c for c in all_classes if sum(c in v for v in classes_per_sample.values()) == 1]
    assert "Nerve" in in_one


def test_truth_transforms_map_spots_into_tissue(dataset, scenes):
    out, _ = dataset
    for s in SAMPLES:
        tr = json.loads((out / s / "truth" / "transforms.json").read_text())
        assert tr["msi_pixel_size_um"] == 50.0 and tr["he_microns_per_pixel"] == 4.0
        msi, he = np.array(tr["msi"]), np.array(tr["he"])
        assert 0.95 * 50 <= np.sqrt(abs(np.linalg.det(msi[:2, :2]))) <= 1.05 * 50
        assert abs(np.sqrt(abs(np.linalg.det(he[:2, :2]))) / 4.0 - 1) <= 0.03
        spots = pd.read_csv(out / s / "truth" / "spots.csv", keep_default_na=False)
        tic = scenes[s].msi_tic
        he_img = tifffile.imread(out / s / "he" / f"{s}_HE.tif")
        xy = spots[["x_um", "y_um"]].to_numpy()
        # spots deep in the tissue: all 6 neighbours in tissue too
        nbr = cKDTree(xy).query_ball_point(xy, r=105)
        deep = [i for i, nb in enumerate(nbr) if spots.in_tissue[i] == 1 and len(nb) == 7
                and spots.in_tissue[nb].all()]
        assert len(deep) > 50
        p = np.c_[xy, np.ones(len(xy))]
        m_px = p @ np.linalg.inv(msi).T  # um -> 0-based MSI (x, y)
        h_px = p @ np.linalg.inv(he).T
        background = np.quantile(tic, 0.05)
        inside_msi = [i for i in deep if 0 <= round(m_px[i, 0]) < tic.shape[1] and 0 <= round(m_px[i, 1]) < tic.shape[0]]
        assert len(inside_msi) > 20
        tic_at = np.array([tic[int(round(m_px[i, 1])), int(round(m_px[i, 0]))] for i in inside_msi])
        assert np.median(tic_at) > 5 * background
        out_spots = np.flatnonzero(spots.in_tissue.to_numpy() == 0)
        grey = []
        for i in deep:
            c, r = int(round(h_px[i, 0])), int(round(h_px[i, 1]))
            grey.append(he_img[r - 7 : r + 8, c - 7 : c + 8].mean())
        assert np.median(grey) < 215  # stained tissue, not white glass
        assert len(out_spots) > 0


def test_signals_npz(dataset):
    out, _ = dataset
    for s in SAMPLES:
        d = np.load(out / s / "truth" / "signals.npz")
        ann = pd.read_csv(out / s / "annotations.csv", keep_default_na=False)
        n = len(ann)
        assert d["barcodes"].tolist() == ann.Barcode.tolist()
        assert d["factors"].shape == (n, 8)
        assert d["rna_mean"].shape == (n, 1500) and d["rna_mean"].dtype == np.float16
        assert d["msi_mean"].shape == (n, d["msi_mz"].size) and 100 <= d["msi_mz"].size <= 200
        np.testing.assert_allclose(d["rna_mean"].astype(float).sum(1), 1e4, rtol=0.02)
        truth = pd.read_csv(out / s / "truth" / "spots.csv", keep_default_na=False).set_index("barcode")
        assert (d["region_names"][d["region"]] == truth.loc[ann.Barcode, "region"].to_numpy()).all()
        iso = d["msi_isotope"]
        assert set(np.unique(iso)) == {0, 1, 2}
    # the marker genes follow the true regions (batch-free truth, pooled over samples)
    frames = []
    for s in SAMPLES:
        d = np.load(out / s / "truth" / "signals.npz")
        genes = list(d["gene_names"])
        frames.append(pd.DataFrame({"KLK3": d["rna_mean"][:, genes.index("KLK3")].astype(float),
                                    "region": d["region_names"][d["region"]]}))
    means = pd.concat(frames).groupby("region").KLK3.mean()
    assert means["Normal epithelium"] > 2 * means["Stroma"]


def test_sample_scene_matches_written_files(dataset, scenes):
    out, _ = dataset
    for s in SAMPLES[:2]:
        scene = scenes[s]
        spatial = out / s / "outs" / "spatial"
        np.testing.assert_array_equal(iio.imread(spatial / "tissue_hires_image.png"), scene.visium_hires)
        np.testing.assert_array_equal(iio.imread(spatial / "tissue_lowres_image.png"), scene.visium_lowres)
        assert json.loads((spatial / "scalefactors_json.json").read_text()) == scene.scalefactors
        pos = pd.read_csv(spatial / "tissue_positions.csv")
        cols = list(pos.columns)
        pd.testing.assert_frame_equal(pos, scene.spots[cols].reset_index(drop=True), check_dtype=False)
        tr = json.loads((out / s / "truth" / "transforms.json").read_text())
        np.testing.assert_allclose(tr["msi"], scene.msi_to_um)
        np.testing.assert_allclose(tr["he"], scene.he_to_um)
        assert scene.mpp_fullres == pytest.approx(55 / scene.scalefactors["spot_diameter_fullres"])


def test_same_seed_same_bytes(tmp_path):
    def digest(folder: Path) -> dict[str, str]:
        return {str(f.relative_to(folder)): hashlib.sha1(f.read_bytes()).hexdigest()
                for f in sorted(folder.rglob("*")) if f.is_file()}

    a = simulate(tmp_path / "a", n_samples=1, seed=3)
    b = simulate(tmp_path / "b", n_samples=1, seed=3)
    assert digest(a) == digest(b)
    other = sample_scene(seed=4, sample_index=0, n_samples=1)
    assert hashlib.sha1(other.he_image.tobytes()).hexdigest() != digest_of_he(a)


def digest_of_he(folder: Path) -> str:
    return hashlib.sha1(tifffile.imread(folder / "P1_S1" / "he" / "P1_S1_HE.tif").tobytes()).hexdigest()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": "huge"}, "size must be one of"),
        ({"n_samples": 0}, "n_samples must be a whole number >= 1"),
        ({"seed": -1}, "seed must be a non-negative"),
    ],
)
def test_parameter_errors(tmp_path, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        simulate(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_sample_index_out_of_range():
    with pytest.raises(ParameterError, match="sample_index must be in 0..3"):
        sample_scene(sample_index=4, n_samples=4)
