"""The pieces the Visium and Visium HD readers share: Space Ranger images as uint8 RGB and the ``rna`` table
of one sample (a module of its own so that neither reader imports the other's internals)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _rgb(image) -> np.ndarray:
    """Space Ranger image (c, y, x) as a numpy uint8 RGB array (drops an alpha channel)."""
    arr = np.asarray(image.data.compute() if hasattr(image.data, "compute") else image.data)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] == 4:
        arr = arr[:3]
    if arr.dtype != np.uint8:
        arr = (arr / (np.iinfo(arr.dtype).max / 255.0)).round().astype(np.uint8) if arr.dtype.kind in "ui" \
            else np.clip(arr * 255.0 if arr.max() <= 1.0 else arr, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def spot_table(table, *, sample: str, patient: str, coords_um: np.ndarray, copy_counts: bool = True):
    """The ``rna`` table of one sample from spatialdata-io's Space Ranger table (Visium spots or Visium HD bins):
    raw counts (CSR float32) in ``X`` and ``layers["counts"]``, obs ``sample``, ``patient``, ``batch``,
    ``barcode``, ``in_tissue``, ``array_row``, ``array_col``, ``region`` = ``{sample}_spots``, ``spot_id``
    (0..n-1), obsm ``spatial`` in um; obs names ``{sample}_{barcode}``. ``copy_counts=False`` shares one CSR
    between ``X`` and the layer (a Visium HD slide's counts are not held twice)."""
    import anndata as ad
    import scipy.sparse as sp
    from spatialdata.models import TableModel

    n = table.n_obs
    counts = table.X if sp.issparse(table.X) else sp.csr_matrix(table.X)
    counts = sp.csr_matrix(counts, dtype=np.float32)
    counts.sort_indices()
    region = f"{sample}_spots"
    bc = table.obs_names.astype(str).to_numpy()
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical([sample] * n),
            "patient": pd.Categorical([patient] * n),
            "batch": pd.Categorical([sample] * n),
            "barcode": bc,
            "in_tissue": table.obs["in_tissue"].to_numpy().astype(np.int64),
            "array_row": table.obs["array_row"].to_numpy().astype(np.int64),
            "array_col": table.obs["array_col"].to_numpy().astype(np.int64),
            "region": pd.Categorical([region] * n),
            "spot_id": np.arange(n, dtype=np.int64),
        },
        index=pd.Index([f"{sample}_{b}" for b in bc]),
    )
    var = table.var.copy()
    if "gene_ids" not in var:
        var["gene_ids"] = var.index.astype(str)
    if "feature_types" not in var:
        var["feature_types"] = "Gene Expression"
    adata = ad.AnnData(X=counts, obs=obs, var=var, obsm={"spatial": coords_um})
    adata.layers["counts"] = counts.copy() if copy_counts else counts
    adata.var_names_make_unique()
    return TableModel.parse(adata, region=region, region_key="region", instance_key="spot_id")
