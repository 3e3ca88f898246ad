"""read_annotations (Loupe Browser CSV exports) and add_annotations (labels onto the spots of one sample)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from spatialdata import SpatialData

from spatialmix.errors import AnnotationError, MissingAnnotationFileError, ProjectError
from spatialmix.io import add_annotations, read_annotations


def _loupe(path, text):
    path.write_text(text)
    return path


@pytest.fixture()
def sdata():
    """Two samples, A (4 spots) and B (3 spots), sharing one barcode string as real Visium slides do."""
    obs = pd.DataFrame(
        {
            "sample": ["A"] * 4 + ["B"] * 3,
            "barcode": ["AAAC-1", "AAAG-1", "AAAT-1", "CCCA-1", "AAAC-1", "GGGA-1", "GGGC-1"],
        },
        index=[f"A_{i}" for i in range(4)] + [f"B_{i}" for i in range(3)],
    )
    return SpatialData(tables={"rna": ad.AnnData(X=np.zeros((7, 2), np.float32), obs=obs)})


def test_read_loupe_export(tmp_path):
    text = "\ufeffBarcode,Pathologist\nAAAC-1,tumour\nAAAG-1,\nAAAT-1,stroma\nCCCA-1,tumour\n"  # Excel's BOM
    path = _loupe(tmp_path / "a.csv", text)
    s = read_annotations(path)
    assert s.name == "Pathologist" and s.index.name == "barcode"
    assert list(s.index) == ["AAAC-1", "AAAG-1", "AAAT-1", "CCCA-1"]
    assert isinstance(s.dtype, pd.CategoricalDtype) and set(s.cat.categories) == {"tumour", "stroma"}
    assert s.isna().tolist() == [False, True, False, False]  # empty label -> missing
    assert s.attrs["path"] == str(path)


def test_read_other_column_and_tabs(tmp_path):
    text = "Barcode\tGraph-based\tRegion\nAAAC-1\tCluster 1\tcortex\nAAAG-1\tCluster 2\tcortex\n"
    path = _loupe(tmp_path / "b.tsv", text)
    s = read_annotations(path, column="Region")
    assert s.name == "Region" and list(s) == ["cortex", "cortex"]
    assert read_annotations(path).name == "Graph-based"


def test_read_errors(tmp_path):
    with pytest.raises(MissingAnnotationFileError, match="Annotation file not found"):
        read_annotations(tmp_path / "none.csv")
    with pytest.raises(AnnotationError, match=r"at least two columns \(Barcode,<Name>\), found 1"):
        read_annotations(_loupe(tmp_path / "c.csv", "Barcode\nAAAC-1\n"))
    with pytest.raises(AnnotationError, match=r"No column 'Region'; the file has \['Pathologist'\]"):
        read_annotations(_loupe(tmp_path / "d.csv", "Barcode,Pathologist\nAAAC-1,x\n"), column="Region")
    with pytest.raises(AnnotationError, match=r"1 barcode\(s\) are listed more than once \(e.g. AAAC-1\)"):
        read_annotations(_loupe(tmp_path / "e.csv", "Barcode,Pathologist\nAAAC-1,x\nAAAC-1,y\n"))


def test_add_annotations_per_sample(sdata, tmp_path):
    a = read_annotations(_loupe(tmp_path / "a.csv", "Barcode,Pathologist\nAAAT-1,stroma\nAAAC-1,tumour\n"))
    add_annotations(sdata, "A", a)
    col = sdata.tables["rna"].obs["pathologist"]
    assert col.tolist()[:4] == ["tumour", np.nan, "stroma", np.nan]  # spots absent from the file: unlabelled
    assert col.iloc[4:].isna().all()  # sample B untouched although it has a spot AAAC-1 too
    b = read_annotations(_loupe(tmp_path / "b.csv", "Barcode,Pathologist\nGGGA-1,necrosis\nAAAC-1,tumour\n"))
    add_annotations(sdata, "B", b)
    col = sdata.tables["rna"].obs["pathologist"]
    assert isinstance(col.dtype, pd.CategoricalDtype)
    assert set(col.cat.categories) == {"tumour", "stroma", "necrosis"}  # categorical over all samples
    assert col.tolist()[:4] == ["tumour", np.nan, "stroma", np.nan]  # sample A kept
    assert col.tolist()[4:] == ["tumour", "necrosis", np.nan]


def test_add_annotations_from_path_with_other_key(sdata, tmp_path):
    path = _loupe(tmp_path / "a.csv", "Barcode,Pathologist\nCCCA-1,immune\n")
    add_annotations(sdata, "A", path, key="expert")
    assert sdata.tables["rna"].obs["expert"].tolist()[3] == "immune"


def test_barcodes_of_another_sample(sdata, tmp_path):
    path = _loupe(tmp_path / "wrong.csv", "Barcode,Pathologist\nGGGA-1,tumour\nGGGC-1,stroma\nAAAC-1,tumour\n")
    labels = read_annotations(path)
    before = sdata.tables["rna"].obs.copy()
    with pytest.raises(AnnotationError) as err:
        add_annotations(sdata, "A", labels)
    msg = str(err.value)
    assert "2 of 3 annotated barcodes are not spots of sample 'A'" in msg
    assert "GGGA-1" in msg and "wrong.csv" in msg and "belongs to this sample" in msg
    pd.testing.assert_frame_equal(sdata.tables["rna"].obs, before)  # nothing written


def test_project_errors(sdata):
    labels = pd.Series(["x"], index=["AAAC-1"])
    with pytest.raises(ProjectError, match=r"Sample 'C' has no spots in table 'rna'; samples are \['A', 'B'\]"):
        add_annotations(sdata, "C", labels)
    with pytest.raises(ProjectError, match="No table 'msi' to annotate"):
        add_annotations(sdata, "A", labels, table="msi")
