"""read_visium on real Space Ranger data (Seurat's test folder) and on small folders written here."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _fixtures import write_10x_h5, write_spaceranger
from spatialdata.transformations import get_transformation

from spatialmix.errors import MissingVisiumFileError, VisiumFormatError
from spatialmix.io import read_visium


def _affine(element, cs):
    return get_transformation(element, to_coordinate_system=cs).to_affine_matrix(input_axes=("x", "y"),
                                                                               output_axes=("x", "y"))


# --------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def seurat_sdata(seurat_visium):
    # Seurat's scale factors give spot_diameter_fullres = 96.36 px while neighbouring spots are 137.66 px apart:
    # the reader takes the scale from the lattice (100 um pitch), not from the "theoretical 65 um spot" diameter
    return read_visium(seurat_visium, sample="brain", patient="mouse1")


def test_real_visium_counts_and_names(seurat_sdata):
    sdata = seurat_sdata
    assert set(sdata.shapes) == {"brain_spots"}
    assert set(sdata.images) == {"brain_visium_lowres"}  # Seurat ships no hires image
    assert set(sdata.tables) == {"rna"}
    assert sdata.coordinate_systems == ["brain"]
    rna = sdata.tables["rna"]
    assert rna.shape == (2695, 100)
    assert sp.isspmatrix_csr(rna.X) and rna.X.dtype == np.float32
    assert (rna.X != rna.layers["counts"]).nnz == 0
    assert np.all(rna.X.data == np.round(rna.X.data)) and rna.X.sum() > 0  # raw integer counts
    assert rna.var_names[0] == "Xkr4" and rna.var_names.is_unique
    assert rna.var["gene_ids"].iloc[0] == "ENSMUSG00000051951"
    assert set(rna.var["feature_types"]) == {"Gene Expression"}
    assert rna.obs_names[0] == "brain_AAACAAGTATCTCCCA-1"
    assert rna.obs["barcode"].iloc[0] == "AAACAAGTATCTCCCA-1"
    assert list(rna.obs["spot_id"]) == list(range(2695))
    assert set(rna.obs["sample"]) == {"brain"} and set(rna.obs["batch"]) == {"brain"}
    assert set(rna.obs["patient"]) == {"mouse1"}
    assert set(rna.obs["region"]) == {"brain_spots"}
    assert (rna.obs["in_tissue"] == 1).all()
    attrs = rna.uns["spatialdata_attrs"]
    assert attrs["region"] == "brain_spots" and attrs["instance_key"] == "spot_id"


def test_real_visium_geometry_in_micrometres(seurat_sdata, seurat_visium):
    sdata = seurat_sdata
    spots = sdata.shapes["brain_spots"]
    assert spots.index.name == "spot_id" and len(spots) == 2695
    assert np.allclose(spots["radius"], 27.5)
    np.testing.assert_allclose(_affine(spots, "brain"), np.eye(3))
    meta = sdata.attrs["spatialmix"]["samples"]["brain"]
    sf = meta["visium"]["scalefactors"]
    assert sf["spot_diameter_fullres"] == pytest.approx(96.3607212981978)
    mpp = meta["visium"]["mpp_fullres"]
    assert mpp == pytest.approx(100 / 137.66, rel=2e-3)  # 0.7264 um per full-res pixel, from the 100 um pitch
    assert meta["patient"] == "mouse1"

    # first spot of the file: AAACAAGTATCTCCCA-1 at full-res (row, col) looked up in the raw positions
    pos = pd.read_csv(seurat_visium / "spatial" / "tissue_positions_list.csv.gz", header=None, index_col=0)
    row, col = pos.loc["AAACAAGTATCTCCCA-1", [4, 5]]
    x, y = spots.geometry.iloc[0].x, spots.geometry.iloc[0].y
    assert (x, y) == pytest.approx((col * mpp, row * mpp))
    np.testing.assert_allclose(sdata.tables["rna"].obsm["spatial"][0], [x, y])

    # nearest neighbours on the hexagonal lattice are one spot pitch (100 um) apart
    xy = np.c_[spots.geometry.x, spots.geometry.y]
    d = np.sqrt(((xy[:200, None] - xy[None]) ** 2).sum(-1))
    d[d == 0] = np.inf
    assert meta["visium"]["spot_pitch_um"] == pytest.approx(100.0, abs=1e-6)
    assert np.median(d.min(1)) == pytest.approx(meta["visium"]["spot_pitch_um"], abs=0.5)

    # capture area from all 4,992 listed spots, padded by one radius; a Visium slide area is 6.5 mm wide
    xmin, ymin, xmax, ymax = meta["visium"]["capture_area_um"]
    # 78 rows x 64 spots per row: 127 x 50 um wide, 77 x 86.6 um high, plus one radius each side (~6.5 mm slide)
    assert 6350 < xmax - xmin < 6500 and 6650 < ymax - ymin < 6800
    assert xmin <= xy[:, 0].min() - 27.5 and xy[:, 0].max() + 27.5 <= xmax
    assert meta["visium"]["n_spots_listed"] == 4992

    lowres = sdata.images["brain_visium_lowres"]
    assert lowres.shape == (3, 599, 600) and lowres.dtype == np.uint8
    a = _affine(lowres, "brain")
    s = mpp / sf["tissue_lowres_scalef"]
    np.testing.assert_allclose(a, np.diag([s, s, 1.0]))
    assert 600 * s == pytest.approx(6632.4 * (100 / 137.66) / (55 / 96.3607212981978), rel=2e-3)  # whole slide
    assert xmax <= 600 * s and ymax <= 599 * s


# --------------------------------------------------------------------------------------------- written here
@pytest.fixture()
def outs(tmp_path):
    folder = tmp_path / "S1" / "outs"
    info = write_spaceranger(folder)
    return folder, info


def test_spaceranger2_layout_with_hires(outs, tmp_path):
    folder, info = outs
    sdata = read_visium(folder.parent, sample="S1")  # the run folder holding outs/ works too
    assert sdata.attrs["spatialmix"]["samples"]["S1"]["visium"]["spot_pitch_um"] == pytest.approx(100.0)
    assert set(sdata.images) == {"S1_visium_hires", "S1_visium_lowres"}
    rna = sdata.tables["rna"]
    assert rna.shape == (32, 5)
    assert list(rna.var_names) == ["GENE1", "GENE2", "GENE2-1", "MT-CO1", "ACTB"]
    np.testing.assert_array_equal(rna.X.toarray(), info["counts"])
    assert list(rna.obs["barcode"]) == info["barcodes"]
    assert set(rna.obs["patient"]) == {"S1"}  # default patient = sample
    mpp = info["mpp"]
    np.testing.assert_allclose(rna.obsm["spatial"], np.c_[info["pxl_col"], info["pxl_row"]] * mpp)
    for key in ("hires", "lowres"):
        img = sdata.images[f"S1_visium_{key}"]
        assert img.shape[1:] == info["image_shapes"][key]
        assert img.values[0, 0, 0] == 180
        s = mpp / info["scalefactors"][f"tissue_{key}_scalef"]
        np.testing.assert_allclose(_affine(img, "S1"), np.diag([s, s, 1.0]))
    xs, ys = info["all_pxl_col"] * mpp, info["all_pxl_row"] * mpp
    assert sdata.attrs["spatialmix"]["samples"]["S1"]["visium"]["capture_area_um"] == pytest.approx(
        [xs.min() - 27.5, ys.min() - 27.5, xs.max() + 27.5, ys.max() + 27.5])
    # the SpatialData zarr writer accepts everything (attrs included) and reads it back
    sdata.write(tmp_path / "s1.zarr")
    import spatialdata as sd

    back = sd.read_zarr(tmp_path / "s1.zarr")
    assert back.tables["rna"].shape == (32, 5)
    assert back.attrs["spatialmix"]["samples"]["S1"]["visium"]["mpp_fullres"] == pytest.approx(mpp)


def test_gzip_and_headerless_positions(outs):
    folder, info = outs
    spatial = folder / "spatial"
    table = pd.read_csv(spatial / "tissue_positions.csv")
    with gzip.open(spatial / "tissue_positions_list.csv.gz", "wt") as fh:
        table.to_csv(fh, header=False, index=False)
    (spatial / "tissue_positions.csv").unlink()
    with open(folder / "filtered_feature_bc_matrix.h5", "rb") as fin, \
            gzip.open(folder / "filtered_feature_bc_matrix.h5.gz", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    (folder / "filtered_feature_bc_matrix.h5").unlink()
    sdata = read_visium(folder, sample="S1")
    np.testing.assert_array_equal(sdata.tables["rna"].X.toarray(), info["counts"])
    np.testing.assert_allclose(sdata.tables["rna"].obsm["spatial"][:, 1], info["pxl_row"] * info["mpp"])


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("filtered_feature_bc_matrix.h5", "No filtered_feature_bc_matrix.h5"),
        ("spatial/tissue_positions.csv", "No spot positions"),
        ("spatial/scalefactors_json.json", "No spatial/scalefactors_json.json"),
    ],
)
def test_missing_files(outs, remove, expected):
    folder, _ = outs
    (folder / remove).unlink()
    with pytest.raises(MissingVisiumFileError, match=expected) as err:
        read_visium(folder, sample="S1")
    assert str(folder) in str(err.value) and "Space Ranger" in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, VisiumFormatError)


def test_missing_folder(tmp_path):
    with pytest.raises(MissingVisiumFileError, match="Visium folder not found.*outs/ folder"):
        read_visium(tmp_path / "nope", sample="S1")


def test_positions_from_another_sample(outs, tmp_path):
    folder, info = outs
    other = tmp_path / "other"
    write_spaceranger(other, seed=7)
    shutil.copyfile(other / "spatial" / "tissue_positions.csv", folder / "spatial" / "tissue_positions.csv")
    with pytest.raises(VisiumFormatError) as err:
        read_visium(folder, sample="S1")
    msg = str(err.value)
    assert "32 of 32 barcodes of the count matrix" in msg and "have no spot position" in msg
    assert info["barcodes"][0] in msg  # a few examples are listed
    assert "tissue_positions.csv" in msg and "same run" in msg


def test_duplicated_barcodes(outs):
    folder, info = outs
    pos = folder / "spatial" / "tissue_positions.csv"
    lines = pos.read_text().splitlines()
    pos.write_text("\n".join(lines + [lines[-1]]) + "\n")
    with pytest.raises(VisiumFormatError, match=r"1 barcode\(s\) appear more than once in the spot positions"):
        read_visium(folder, sample="S1")
    pos.write_text("\n".join(lines) + "\n")
    bcs = list(info["barcodes"])
    bcs[1] = bcs[0]
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", info["counts"], bcs, [f"g{i}" for i in range(5)],
                 [f"G{i}" for i in range(5)])
    with pytest.raises(VisiumFormatError, match=r"more than once in the count matrix.*" + bcs[0]):
        read_visium(folder, sample="S1")


def test_broken_scalefactors(outs):
    folder, _ = outs
    sf = folder / "spatial" / "scalefactors_json.json"
    sf.write_text(json.dumps({"tissue_hires_scalef": 0.2, "tissue_lowres_scalef": 0.05}))
    with pytest.raises(VisiumFormatError, match=r"lack \['spot_diameter_fullres'\]"):
        read_visium(folder, sample="S1")
