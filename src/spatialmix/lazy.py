"""Layers too large for memory (Visium HD: 500,000 bins x 18,000 genes is 36 GB of float32), kept lazy.

A *lazy layer* is a dask array whose row blocks are computed by the model's own inference, one block at a
time (:func:`lazy_layer`): :func:`spatialmix.results.write_results` stages a corrected, denoised or translated layer
this way when its dense size exceeds :data:`LAZY_LAYER_BYTES` (or always / never with ``lazy_layers=``), and
:func:`spatialmix.project.save_project` then writes it block by block (SpatialData's writer stores dask arrays
chunk-wise), so writing a layer costs one block of memory, not the layer. :func:`spatialmix.project.load_project`
opens such layers lazily again (:func:`read_table_lazily`). Every value is the one the in-memory path gives (the
same inference on the same rows; masked where the modality was not measured).

Why dask and not our own chunk loop: SpatialData / anndata already write dask arrays chunk-wise into zarr and
read zarr arrays back as dask (``anndata.experimental.read_elem_lazy``); napari and numpy slice them like arrays.
What dask cannot do for us is a PCA without the whole matrix: :func:`chunked_pca` z-scores and fits scikit-learn's
``IncrementalPCA`` block by block (scanpy's ``pca(chunked=True)`` does the same on an in-memory AnnData).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

#: a layer larger than this (dense float32 bytes) is written lazily by default (``lazy_layers=None``)
LAZY_LAYER_BYTES = 2 * 1024**3
#: rows per block of a lazy layer (one inference chunk) and columns per zarr chunk when it is saved
ROWS_PER_BLOCK = 4096
COLUMNS_PER_CHUNK = 2048


def is_lazy(x) -> bool:
    """Whether ``x`` is a dask array (a lazy layer)."""
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask comes with spatialdata
        return False
    return isinstance(x, da.Array)


def frozen_model(model):
    """A shallow copy of ``model`` with its own copy of the trained network: a lazy layer computed later (when the
    project is saved) gives the values of the weights at the time it was written, even if the model is trained
    further in between. The data are shared, not copied."""
    frozen = copy.copy(model)
    frozen.module = copy.deepcopy(model.module)
    # in eval mode for good: dask may compute blocks in several threads at once, and an inference call that found
    # the module in training mode would put it back there while another thread is still decoding
    frozen.module.eval()
    return frozen


def lazy_layer(model, data, request: tuple, n_cols: int, *, rows_per_block: int = ROWS_PER_BLOCK,
               columns_per_chunk: int = COLUMNS_PER_CHUNK):
    """The layer ``request`` (a ``get_outputs`` request: ``("corrected", m)``, ``("denoised", m)``,
    ``("translation", (sources, target))``) of ``model`` (use :func:`frozen_model`) on ``data``, as a dask array of
    ``data.n_obs`` x ``n_cols`` float32. Each row block runs ``model.get_outputs([request], data=rows)`` when it is
    needed (the same inference and NaN rule as the in-memory output) and is split into zarr chunks of
    ``columns_per_chunk`` columns, so one column of the saved layer is read without reading every gene."""
    import dask.array as da

    n = data.n_obs
    row_chunks = tuple(min(rows_per_block, n - r) for r in range(0, n, rows_per_block)) or (0,)

    def block(block_info=None):
        (r0, r1), _ = block_info[None]["array-location"]
        rows = data.subset(np.arange(r0, r1))
        out = model.get_outputs([request], data=rows)
        return np.asarray(next(iter(out.values())), dtype=np.float32)

    arr = da.map_blocks(block, chunks=(row_chunks, (n_cols,)), dtype=np.float32,
                        meta=np.empty((0, 0), dtype=np.float32))
    return arr.rechunk((row_chunks, columns_per_chunk))


def dense_rows(x, sl: slice) -> np.ndarray:
    """Rows ``sl`` of ``x`` (numpy, sparse or dask) as a dense float32 array (a dask block is computed)."""
    b = x[sl]
    b = b.compute() if hasattr(b, "compute") else b
    b = b.toarray() if hasattr(b, "toarray") else b
    return np.asarray(b, dtype=np.float32)


def row_blocks(x, rows: int = ROWS_PER_BLOCK):
    """``(slice, float32 block)`` over the rows of ``x`` (numpy, sparse or dask), one block in memory at a time."""
    n = x.shape[0]
    for r0 in range(0, n, rows):
        sl = slice(r0, min(r0 + rows, n))
        yield sl, dense_rows(x, sl)


#: above this many rows, :func:`chunked_pca` fits its components on a random subset of row blocks this large and
#: projects every row in one pass (Visium HD: 500,000 bins)
PCA_FIT_ROWS = 100_000


def chunked_pca(arrays: list[Any], n_components: int, *, seed: int = 0, rows: int = ROWS_PER_BLOCK,
                fit_rows: int | None = PCA_FIT_ROWS) -> np.ndarray:
    """The first ``n_components`` principal components of the column-wise concatenation of ``arrays`` (numpy or
    dask, same rows), each column z-scored, NaN rows where any array is not finite. Memory: one block of rows,
    never the matrix.

    Up to ``fit_rows`` rows (or with ``fit_rows=None``) the means / SDs and the components come from every row
    finite in every array: one statistics pass, one ``IncrementalPCA.partial_fit`` pass and one transform pass; the
    result spans the same subspace as a full PCA to rounding, its signs may differ
    (``tests/test_results.py::test_lazy_layers_...``). Above ``fit_rows`` the statistics and the components are fit on a
    random subset of whole row blocks (``seed``) holding about ``fit_rows`` rows, and every row is then projected
    in one pass: a lazy layer is decoded 1 + 2 x fit_rows / n times instead of 3 times, and the fit costs
    ``fit_rows`` rows instead of all of them. Why blocks and not single rows: a lazy layer is decoded a block at a
    time, and rows drawn at random would touch every block. Blocks are contiguous rows, so a project whose samples
    are stored one after another is sampled across its samples in proportion (``tests/test_results.py::
    test_chunked_pca_fits_on_a_subset_of_blocks_...`` measures the subspace against the full fit)."""
    from sklearn.decomposition import IncrementalPCA

    from spatialmix.errors import ModelError, ParameterError

    if fit_rows is not None and fit_rows < 1:
        raise ParameterError(f"fit_rows must be >= 1 or None, got {fit_rows}")
    n = arrays[0].shape[0]
    width = sum(x.shape[1] for x in arrays)
    starts = np.arange(0, n, rows)
    if fit_rows is not None and n > fit_rows:
        n_fit = min(len(starts), -(-int(fit_rows) // rows))
        starts_fit = np.sort(np.random.default_rng(seed).choice(starts, n_fit, replace=False))
    else:
        starts_fit = starts
    fit_slices = [slice(r0, min(r0 + rows, n)) for r0 in starts_fit]

    stats, ok = [], {}
    for x in arrays:  # pass 1 (over the fit blocks): per-column sums over finite values, and which rows are finite
        s = np.zeros(x.shape[1]), np.zeros(x.shape[1]), np.zeros(x.shape[1])
        for sl in fit_slices:
            b = dense_rows(x, sl)
            fin = np.isfinite(b)
            ok[sl.start] = ok.get(sl.start, True) & fin.all(axis=1)
            v = np.where(fin, b, 0.0).astype(np.float64)
            s[0][:] += v.sum(axis=0)
            s[1][:] += (v * v).sum(axis=0)
            s[2][:] += fin.sum(axis=0)
        cnt = np.maximum(s[2], 1)
        mu = s[0] / cnt
        sd = np.sqrt(np.maximum(s[1] / cnt - mu * mu, 0.0))
        stats.append((mu.astype(np.float32), np.where(sd > 0, sd, 1.0).astype(np.float32)))
    n_ok = int(sum(int(v.sum()) for v in ok.values()))
    k = min(int(n_components), n_ok - 1, width)
    if k < 1:
        raise ModelError(f"only {n_ok} spots have every input finite; a PCA needs at least 2")

    def z(sl):
        return np.hstack([(dense_rows(x, sl) - mu) / sd for x, (mu, sd) in zip(arrays, stats)])

    ipca = IncrementalPCA(n_components=k)
    # pass 2: fit on the finite rows of the fit blocks, in batches of `step` rows (each partial_fit needs >= k
    # rows). Each batch costs an SVD of (k + step) x features, so small batches are cheaper per row: at 18,000
    # features, batches of 4,096 rows would take ~10 s each, batches of 5k rows a fraction of a second
    step = max(5 * k, 256)
    pending = np.empty((0, width), dtype=np.float32)
    for sl in fit_slices:
        pending = np.vstack([pending, z(sl)[ok[sl.start]]])
        while len(pending) >= 2 * step:  # keep >= step rows back, so the last batch is never smaller than k
            ipca.partial_fit(pending[:step])
            pending = pending[step:]
    ipca.partial_fit(pending)  # step..2*step rows, or all n_ok > k rows when there are fewer
    out = np.full((n, k), np.nan, dtype=np.float32)
    for r0 in starts:  # pass 3: project every finite row
        sl = slice(r0, min(r0 + rows, n))
        block = z(sl)
        keep = np.isfinite(block).all(axis=1)
        if keep.any():
            o = out[sl]
            o[keep] = ipca.transform(block[keep]).astype(np.float32)
            out[sl] = o
    return out


def read_table_lazily(path, lazy_bytes: int | None = None):
    """The AnnData table stored in the zarr group ``path`` (a table of a saved project), with every dense layer
    larger than ``lazy_bytes`` (float32) opened as a dask array over its zarr chunks and everything else read
    as SpatialData reads it."""
    import anndata as ad
    import zarr
    from anndata.experimental import read_elem_lazy

    lazy_bytes = LAZY_LAYER_BYTES if lazy_bytes is None else lazy_bytes
    g = zarr.open_group(str(path), mode="r")
    parts = {k: ad.io.read_elem(g[k]) for k in ("X", "obs", "var", "obsm", "varm", "obsp", "varp", "uns") if k in g}
    layers = {}
    for name in (g["layers"] if "layers" in g else []):
        node = g["layers"][name]
        layers[name] = read_elem_lazy(node) if _large(node, lazy_bytes) else ad.io.read_elem(node)
    table = ad.AnnData(**parts, layers=layers)
    raw = ad.io.read_elem(g["raw"]) if "raw" in g else None
    if isinstance(raw, dict) and raw.get("X") is not None:
        table.raw = ad.AnnData(X=raw["X"], var=raw.get("var"), varm=raw.get("varm"))
    attrs = table.uns.get("spatialdata_attrs")
    if isinstance(attrs, dict):  # as SpatialData's table reader does: keys omitted because they were None
        for key in ("region", "region_key", "instance_key"):
            attrs.setdefault(key, None)
        if isinstance(attrs.get("region"), np.ndarray):
            attrs["region"] = attrs["region"].tolist()
    return table


def tables_with_large_layers(path, lazy_bytes: int | None = None) -> list[str]:
    """The tables of the saved project ``path`` with a dense layer larger than ``lazy_bytes`` (zarr metadata
    only; nothing is read)."""
    from pathlib import Path

    import zarr

    lazy_bytes = LAZY_LAYER_BYTES if lazy_bytes is None else lazy_bytes
    root = Path(path) / "tables"
    if not root.is_dir():
        return []
    found = []
    for t in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            layers = zarr.open_group(str(root / t / "layers"), mode="r")
        except Exception:  # noqa: BLE001 - no layers group (or not a table): nothing to open lazily
            continue
        if any(_large(layers[name], lazy_bytes) for name in layers):
            found.append(t)
    return found


def _large(node, lazy_bytes: int) -> bool:
    """Whether the zarr node of a layer is a dense 2-D array larger than ``lazy_bytes`` as float32 (a sparse
    layer is a group, never lazy)."""
    shape = getattr(node, "shape", None)
    return hasattr(node, "dtype") and shape is not None and len(shape) == 2 and shape[0] * shape[1] * 4 > lazy_bytes


def open_saved_layers(sdata, path) -> None:
    """After ``sdata`` was saved to ``path``: each lazy layer of its tables now reads the saved zarr array (block
    by block) instead of recomputing it from the model, and no longer depends on a folder a save replaced."""
    from pathlib import Path

    import zarr
    from anndata.experimental import read_elem_lazy

    for t, table in sdata.tables.items():
        for name in [n for n, v in table.layers.items() if is_lazy(v)]:
            node = zarr.open_group(str(Path(path) / "tables" / t / "layers"), mode="r")[name]
            table.layers[name] = read_elem_lazy(node)
