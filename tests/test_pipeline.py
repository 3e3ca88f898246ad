"""End to end on the bundled sample data: real files -> readers -> registration -> per-spot tables -> zarr."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmix.data import MultiModalData
from spatialmix.errors import ProjectError
from spatialmix.pipeline import read_samples_csv
from spatialmix.project import load_project, save_project, samples_of
from spatialmix.registration import transform_error_um

pytestmark = pytest.mark.slow


def test_samples_csv_lists_four_samples_of_two_patients(sample_data_dir):
    specs = read_samples_csv(sample_data_dir)
    assert [s.sample for s in specs] == ["P1_S1", "P1_S2", "P2_S1", "P2_S2"]
    assert sorted({s.patient for s in specs}) == ["P1", "P2"]
    assert all(s.imzml.exists() and s.he.exists() and s.annotations.exists() for s in specs)


def test_bundled_sample_data_is_within_25_mb(sample_data_dir):
    size = sum(p.stat().st_size for p in sample_data_dir.rglob("*") if p.is_file())
    assert size <= 25 * 1024**2, f"sample_data is {size / 1e6:.1f} MB"


def test_modality_tables_are_aligned_on_the_same_spots(prepared):
    rna, msi, morph = (prepared.tables[k] for k in ("rna", "msi", "morphology"))
    assert rna.obs_names.equals(msi.obs_names) and rna.obs_names.equals(morph.obs_names)
    assert rna.n_obs > 4 * 250
    # every sample contributes its in-tissue spots, with sample / patient / batch / annotation columns
    for col in ("sample", "patient", "batch", "pathologist", "barcode", "spot_id", "region"):
        assert col in rna.obs, col
    assert set(rna.obs["sample"]) == {"P1_S1", "P1_S2", "P2_S1", "P2_S2"}
    assert set(rna.obs["region"].astype(str)) == {f"{s}_spots" for s in samples_of(prepared)}
    # annotation: >= 6 classes, roughly 10 % unlabelled
    labels = rna.obs["pathologist"]
    assert labels.cat.categories.size >= 6
    assert 0.03 < labels.isna().mean() < 0.2
    # morphology: >= 30 features, finite
    assert morph.n_vars >= 30 and np.isfinite(np.asarray(morph.X)).all()
    # msi: m/z features named by m/z, spots flagged when not covered by the MSI raster, never silently zero
    assert msi.n_vars >= 50
    assert {"msi_n_pixels", "msi_coverage", "msi_covered"} <= set(msi.obs)
    covered = msi.obs["msi_covered"].to_numpy()
    assert 0.3 < covered.mean() < 1.0  # the MSI section covers the tissue only partly
    x = msi.X.toarray() if sp.issparse(msi.X) else msi.X
    assert (x[covered].sum(axis=1) > 0).all()
    assert (msi.obs.loc[covered, "msi_n_pixels"] >= 1).all()


def test_rna_is_normalised_with_raw_counts_kept(prepared):
    rna = prepared.tables["rna"]
    counts = rna.layers["counts"]
    assert np.allclose(counts.data, np.round(counts.data))
    recovered = np.expm1(rna.X[:5].toarray()).sum(axis=1)
    assert np.allclose(recovered, 1e4, rtol=1e-3)


def test_automatic_registration_is_within_one_spot_radius_of_the_truth(prepared, sample_data_dir):
    """The transforms written into the project, checked against the simulator's truth/ on every sample."""
    from spatialmix._elements import element_affine

    for s in samples_of(prepared):
        truth = json.loads((sample_data_dir / s / "truth" / "transforms.json").read_text())
        spots = pd.read_csv(sample_data_dir / s / "truth" / "spots.csv")
        pts = spots.loc[spots["in_tissue"] == 1, ["x_um", "y_um"]].to_numpy()
        for modality, element in (("msi", f"{s}_msi_tic"), ("he", f"{s}_he")):
            est = element_affine(prepared.images[element], s)
            err = transform_error_um(est, np.asarray(truth[modality]), pts)
            assert err < 27.5, f"{s} {modality}: {err:.1f} um"
            rec = prepared.attrs["spatialmix"]["registration"][s][modality]
            assert rec["method"] == "auto" and np.isfinite(rec["rms_um"])


def test_project_roundtrip_reopens_identically(prepared, tmp_path):
    path = save_project(prepared, tmp_path / "p.zarr")
    back = load_project(path)
    assert set(back.images) == set(prepared.images) and set(back.shapes) == set(prepared.shapes)
    assert set(back.tables) == set(prepared.tables)
    for name, t in prepared.tables.items():
        b = back.tables[name]
        assert b.obs_names.equals(t.obs_names) and b.var_names.equals(t.var_names)
        xa = t.X.toarray() if sp.issparse(t.X) else np.asarray(t.X)
        xb = b.X.toarray() if sp.issparse(b.X) else np.asarray(b.X)
        np.testing.assert_allclose(xa, xb)
    assert back.attrs["spatialmix"]["registration"] == prepared.attrs["spatialmix"]["registration"]
    from spatialmix._elements import element_affine

    for s in samples_of(prepared):
        np.testing.assert_allclose(element_affine(back.images[f"{s}_he"], s),
                                   element_affine(prepared.images[f"{s}_he"], s))
    # MultiModalData from the reopened project equals the one from memory
    a = MultiModalData.from_spatialdata(prepared)
    b = MultiModalData.from_spatialdata(back)
    assert a.modalities == b.modalities == ["rna", "msi", "morphology"]
    for m in a.modalities:
        np.testing.assert_allclose(a.dense(m), b.dense(m), rtol=1e-6)
        assert (a.mask[m] == b.mask[m]).all()


def test_save_refuses_to_overwrite_and_keeps_the_old_project(prepared, tmp_path):
    path = save_project(prepared, tmp_path / "p.zarr")
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(ProjectError, match="already exists"):
        save_project(prepared, path)
    assert sorted(p.name for p in path.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]  # no temporary leftovers


def test_multimodal_data_masks_and_batches(prepared):
    data = MultiModalData.from_spatialdata(prepared)
    assert data.n_obs == prepared.tables["rna"].n_obs
    assert data.mask["rna"].all()
    assert data.mask["msi"].sum() == prepared.tables["msi"].obs["msi_covered"].sum()
    assert data.batches.categories.size == 4
    z = data.dense("morphology")[data.mask["morphology"]]
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    tensors = data.to_tensors("cpu")
    assert tensors["rna"].shape == (data.n_obs, data.n_vars("rna"))
    assert tensors["batch"].max().item() == 3
    with pytest.raises(ProjectError, match="not in this project"):
        MultiModalData.from_spatialdata(prepared, modalities=["rna", "protein"])
    with pytest.raises(ProjectError, match="annotation column 'grade'"):
        MultiModalData.from_spatialdata(prepared, annotation_key="grade")


def test_load_project_rejects_a_folder_that_is_not_a_project(tmp_path):
    with pytest.raises(ProjectError, match="No project"):
        load_project(tmp_path / "missing.zarr")


def test_samples_csv_errors_name_the_file_and_the_fix(tmp_path):
    from spatialmix.errors import InputFileError, MissingFileError, ParameterError

    with pytest.raises(MissingFileError, match="No samples.csv found"):
        read_samples_csv(tmp_path)
    (tmp_path / "samples.csv").write_text("sample,visium,imzml\nA,A/outs,A/a.imzML\n")
    with pytest.raises(ParameterError, match="sample A: an imzML file is given but no msi_pixel_size_um"):
        read_samples_csv(tmp_path)
    (tmp_path / "samples.csv").write_text("sample,patient\nA,P1\n")
    with pytest.raises(InputFileError, match=r"lacks the column\(s\) \['visium'\]"):
        read_samples_csv(tmp_path)
    (tmp_path / "samples.csv").write_text("sample,visium\nA,A/outs\nA,B/outs\n")
    with pytest.raises(InputFileError, match="line 3: sample name 'A' is empty or repeated"):
        read_samples_csv(tmp_path)
