"""read_imzml on continuous and processed files written with pyimzML's ImzMLWriter."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest
import scipy.sparse as sp
from _fixtures import write_imzml
from spatialdata.transformations import get_transformation

from spatialmix.errors import ImzMLError, MissingImzMLFileError, ParameterError
from spatialmix.io import iter_read_imzml, mz_bin_centre, mz_bin_edge, mz_bin_index, read_imzml
from spatialmix.progress import Progress

R20 = 1 + 20e-6


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


# 3 x 2 raster with one pixel (x=2, y=1 in 0-based indices) not measured; known peaks
PEAKS = {
    (0, 0): ([100.0, 100.0005, 250.0, 700.0], [1.0, 2.0, 5.0, 4.0]),  # 100 and 100.0005 share a 20 ppm bin
    (1, 0): ([100.0002, 700.0], [3.0, 1.0]),
    (0, 1): ([250.0, 900.0], [2.0, 8.0]),
    (1, 1): ([900.0], [6.0]),
    (2, 1): ([100.0, 250.0, 700.0, 900.0], [1.0, 1.0, 1.0, 1.0]),
}


@pytest.fixture()
def processed(tmp_path):
    spectra = [(x + 1, y + 1, np.array(m), np.array(i)) for (x, y), (m, i) in PEAKS.items()]
    return write_imzml(tmp_path / "proc.imzML", spectra, mode="processed")


def test_bins_are_anchored_ppm_bins():
    k = mz_bin_index(np.array([50.0, 100.0, 100.0005, 250.0, 50 * R20**1000]), 20.0)
    assert k[0] == 0 and k[4] == 1000  # a value exactly on an edge opens its bin
    assert k[1] == k[2] == math.floor(math.log(2.0) / math.log(R20))
    assert mz_bin_edge(k[1], 20) <= 100.0 < mz_bin_edge(k[1] + 1, 20)
    assert mz_bin_centre(k[1], 20) == pytest.approx(math.sqrt(mz_bin_edge(k[1], 20) * mz_bin_edge(k[1] + 1, 20)))


def test_processed_known_peaks(processed):
    sdata = read_imzml(processed, sample="P1", pixel_size_um=50.0, normalize="none")
    assert set(sdata.tables) == {"P1_msi"} and set(sdata.images) == {"P1_msi_tic"}
    t = sdata.tables["P1_msi"]
    assert t.shape == (5, 4)  # 4 bins (100/100.0005/100.0002 fall together), empty bins dropped
    expected_bins = mz_bin_index(np.array([100.0, 250.0, 700.0, 900.0]), 20.0)
    np.testing.assert_array_equal(t.var["mz_bin"], expected_bins)
    np.testing.assert_allclose(t.var["mz"], mz_bin_centre(expected_bins, 20.0))
    assert list(t.var_names) == [f"{v:.4f}" for v in mz_bin_centre(expected_bins, 20.0)]
    assert t.var_names[0] == "99.9996"
    X = _dense(t.X)
    assert X.dtype == np.float32
    np.testing.assert_allclose(X, [[3, 5, 4, 0], [3, 0, 1, 0], [0, 2, 0, 8], [0, 0, 0, 6], [1, 1, 1, 1]])
    assert list(t.obs["x"]) == [0, 1, 0, 1, 2] and list(t.obs["y"]) == [0, 0, 1, 1, 1]
    np.testing.assert_allclose(t.obs["tic"], [12, 4, 10, 6, 4])
    np.testing.assert_allclose(t.obsm["spatial"], np.c_[t.obs["x"], t.obs["y"]] * 50.0)
    assert set(t.obs["sample"]) == {"P1"}
    meta = t.uns["spatialmix_msi"]
    assert meta["mode"] == "processed" and meta["n_pixels"] == 5 and meta["bin_ppm"] == 20.0
    assert meta["pixel_size_um"] == 50.0 and meta["normalize"] == "none"
    assert meta["path"].endswith("proc.imzML")

    tic = sdata.images["P1_msi_tic"]
    assert tic.dims == ("c", "y", "x") and tic.shape == (1, 2, 3) and tic.dtype == np.float32
    np.testing.assert_allclose(tic.values[0], [[12, 4, 0], [10, 6, 4]])  # (x=2, y=0) was not measured
    for cs in ("P1", "P1_msi"):
        a = get_transformation(tic, to_coordinate_system=cs).to_affine_matrix(("x", "y"), ("x", "y"))
        np.testing.assert_allclose(a, np.diag([50.0, 50.0, 1.0]))


def test_continuous_equals_processed(processed, tmp_path):
    axis = np.array([100.0, 100.0005, 250.0, 700.0, 900.0])
    spectra = []
    for (x, y), (mzs, ints) in PEAKS.items():
        dense = np.zeros(len(axis), np.float32)
        for m, i in zip(mzs, ints):
            dense[np.argmin(np.abs(axis - m))] += i
        spectra.append((x + 1, y + 1, axis, dense))
    cont = write_imzml(tmp_path / "cont.imzML", spectra, mode="continuous")
    a = read_imzml(cont, sample="C", pixel_size_um=20.0).tables["C_msi"]
    b = read_imzml(processed, sample="C", pixel_size_um=20.0).tables["C_msi"]
    assert a.uns["spatialmix_msi"]["mode"] == "continuous"
    np.testing.assert_allclose(_dense(a.X), _dense(b.X), rtol=1e-6)
    assert list(a.var_names) == list(b.var_names)


def test_normalisation(processed):
    tic = np.array([12.0, 4, 10, 6, 4])
    t = read_imzml(processed, sample="P1", pixel_size_um=50.0).tables["P1_msi"]  # default "tic"
    np.testing.assert_allclose(_dense(t.X).sum(1), np.median(tic), rtol=1e-6)  # every pixel sums to median TIC
    np.testing.assert_allclose(t.obs["tic"], tic)  # the raw TIC is kept
    raw = _dense(read_imzml(processed, sample="P1", pixel_size_um=50.0, normalize="none").tables["P1_msi"].X)
    rms = _dense(read_imzml(processed, sample="P1", pixel_size_um=50.0, normalize="rms").tables["P1_msi"].X)
    r = np.sqrt((raw**2).mean(1))
    np.testing.assert_allclose(rms, raw / r[:, None] * np.median(r), rtol=1e-6)


def test_mz_range_clips(processed):
    t = read_imzml(processed, sample="P1", pixel_size_um=50.0, mz_range=(200, 800), normalize="none").tables[
        "P1_msi"]
    assert list(t.var_names) == [f"{v:.4f}" for v in mz_bin_centre(mz_bin_index(np.array([250.0, 700.0]), 20), 20)]
    np.testing.assert_allclose(t.obs["tic"], [9, 1, 2, 0, 2])
    assert t.uns["spatialmix_msi"]["mz_range"] == [200.0, 800.0]
    with pytest.raises(ImzMLError, match=r"No non-zero peak within mz_range=\[1000.0, 2000.0\]"):
        read_imzml(processed, sample="P1", pixel_size_um=50.0, mz_range=(1000, 2000))


def test_chunking_does_not_change_results(tmp_path):
    rng = np.random.default_rng(3)
    library = np.sort(rng.uniform(150, 1200, 300))
    spectra = []
    for y in range(12):
        for x in range(15):
            sel = np.sort(rng.choice(len(library), 40, replace=False))
            mzs = library[sel] * (1 + rng.normal(0, 3e-6, 40))
            spectra.append((x + 1, y + 1, np.sort(mzs), rng.gamma(2.0, 100.0, 40)))
    path = write_imzml(tmp_path / "rand.imzML", spectra)
    events: list[Progress] = []
    gen = iter_read_imzml(path, sample="R", pixel_size_um=30.0, chunk_size=7)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        small = stop.value.tables["R_msi"]
    big = read_imzml(path, sample="R", pixel_size_um=30.0, chunk_size=10_000).tables["R_msi"]
    assert sp.issparse(small.X) and small.shape == big.shape
    assert small.shape[0] == 180 and 300 <= small.shape[1] < 600
    assert np.array_equal(small.X.toarray(), big.X.toarray())  # bit-identical
    assert np.array_equal(small.obs["tic"], big.obs["tic"])
    steps = [e.step for e in events if e.total == 180]
    assert steps[-1] == 180 and len(steps) == 1 + math.ceil(180 / 7) and steps == sorted(steps)


def _listing(folder):
    return sorted((p.name, p.stat().st_size) for p in folder.iterdir())


def test_missing_files(processed, tmp_path):
    with pytest.raises(MissingImzMLFileError, match="imzML file not found") as err:
        read_imzml(tmp_path / "nope.imzML", sample="P1", pixel_size_um=50)
    assert isinstance(err.value, FileNotFoundError)
    ibd = processed.with_suffix(".ibd")
    ibd.unlink()
    before = _listing(tmp_path)
    with pytest.raises(MissingImzMLFileError,
                       match=r"No \.ibd binary file next to proc\.imzML; looked for .*proc\.ibd"):
        read_imzml(processed, sample="P1", pixel_size_um=50)
    assert _listing(tmp_path) == before  # nothing written


def test_truncated_ibd(processed, tmp_path):
    ibd = processed.with_suffix(".ibd")
    full = ibd.stat().st_size
    with open(ibd, "r+b") as fh:
        fh.truncate(full - 10)
    before = _listing(tmp_path)
    with pytest.raises(ImzMLError, match=f"truncated: {full - 10} bytes, but proc.imzML references data up to "
                                         f"byte {full}"):
        read_imzml(processed, sample="P1", pixel_size_um=50)
    assert _listing(tmp_path) == before


def test_uuid_mismatch(processed, tmp_path):
    ibd = processed.with_suffix(".ibd")
    with open(ibd, "r+b") as fh:
        fh.write(uuid.uuid4().bytes)
    with pytest.raises(ImzMLError, match="UUID mismatch: proc.imzML declares .* but the first 16 bytes of proc.ibd"
                                         ".*different exports"):
        read_imzml(processed, sample="P1", pixel_size_um=50)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pixel_size_um": 0}, "pixel_size_um must be a positive number"),
        ({"pixel_size_um": float("nan")}, "pixel_size_um must be a positive number"),
        ({"pixel_size_um": float("inf")}, "pixel_size_um must be a positive number"),
        ({"bin_ppm": -5}, "bin_ppm must be a positive number"),
        ({"mz_range": (800, 200)}, "mz_range must satisfy 0 < low < high"),
        ({"mz_range": (100,)}, "mz_range must be a pair"),
        ({"normalize": "median"}, "normalize must be one of"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
    ],
)
def test_parameter_errors(processed, kwargs, match):
    args = {"sample": "P1", "pixel_size_um": 50.0} | kwargs
    with pytest.raises(ParameterError, match=match):
        read_imzml(processed, **args)


def test_large_sparse_table_is_csr(tmp_path):
    rng = np.random.default_rng(0)
    spectra = [(x + 1, 1, np.sort(rng.uniform(100, 1000, 5)), np.ones(5)) for x in range(40)]
    t = read_imzml(write_imzml(tmp_path / "s.imzML", spectra), sample="S", pixel_size_um=10,
                   normalize="none").tables["S_msi"]
    assert sp.isspmatrix_csr(t.X) and t.X.dtype == np.float32 and t.X.nnz == 200  # 200 of 40 x ~200 cells


def test_unsorted_peaks_are_summed_per_bin(tmp_path):
    spectra = [(1, 1, np.array([700.0, 100.0, 100.0005, 250.0]), np.array([4.0, 1.0, 2.0, 5.0]))]
    ordered = [(1, 1, np.array([100.0, 100.0005, 250.0, 700.0]), np.array([1.0, 2.0, 5.0, 4.0]))]
    a = read_imzml(write_imzml(tmp_path / "u.imzML", spectra), sample="U", pixel_size_um=5, normalize="none")
    b = read_imzml(write_imzml(tmp_path / "o.imzML", ordered), sample="U", pixel_size_um=5, normalize="none")
    np.testing.assert_array_equal(_dense(a.tables["U_msi"].X), [[3.0, 5.0, 4.0]])
    np.testing.assert_array_equal(_dense(a.tables["U_msi"].X), _dense(b.tables["U_msi"].X))


def test_large_files_are_parsed_in_a_child_process_with_the_same_result(processed, tmp_path, monkeypatch):
    """Big imzML metadata is parsed by pyimzML in a short-lived child process (its per-spectrum Python lists
    never enter the reading process); the result and the errors are the same as in-process."""
    import spatialmix.io.imzml as imzml_mod

    path = processed[0] if isinstance(processed, tuple) else processed
    here = read_imzml(path, sample="S", pixel_size_um=20)
    monkeypatch.setattr(imzml_mod, "SUBPROCESS_PARSE_BYTES", 0)
    child = read_imzml(path, sample="S", pixel_size_um=20)
    a, b = here.tables["S_msi"], child.tables["S_msi"]
    assert a.var_names.equals(b.var_names) and a.obs_names.equals(b.obs_names)
    np.testing.assert_array_equal(_dense(a.X), _dense(b.X))
    broken = tmp_path / "broken.imzML"
    broken.write_text(path.read_text()[:2000])  # XML cut in the middle
    (tmp_path / "broken.ibd").write_bytes(path.with_suffix(".ibd").read_bytes())
    with pytest.raises(ImzMLError, match=r"Cannot parse the imzML metadata.*broken\.imzML"):
        read_imzml(broken, sample="S", pixel_size_um=20)
