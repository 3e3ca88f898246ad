"""A Visium HD-sized project through tables -> MIMA (1 epoch) -> outputs -> one map, with the peak memory of
each stage (issue 16, item 4: 500,000 bins x 18,000 genes, sparse, plus a second modality, on a 24 GiB machine).

The project is synthetic and built in memory in the project's conventions (two samples of square 8 um bins,
``rna`` with raw counts in ``layers["counts"]`` and normalised log1p in ``X``, both CSR at ``--density``
non-zeros per bin — real 8 um bins detect ~50-200 genes — and a dense ``morphology`` table of 67 features).
Stages, one process: build the tables; ``MultiModalData.from_spatialdata``; ``MIMA(data).train(epochs=1)``;
``write_results`` with ``--outputs`` (default the latent and the expert weights: a batch-corrected or denoised
RNA layer of 500,000 x 18,000 would be 36 GB dense, more than this machine has; the RGB colouring is a 3D
UMAP of every bin and is left out unless asked for); the map of one latent dimension for one sample
(``render_result``) and the napari layer tuple of its spots (an image above ``POINTS_LIMIT``). A psutil thread
samples RSS every 20 ms; the JSON has each stage's wall time and peak RSS (total, and above the stage's start).

With ``--save PATH`` the project is also saved (a layer larger than ``spatialmix.lazy.LAZY_LAYER_BYTES``, e.g. a
corrected RNA of 36 GB, is a lazy layer: computed and written block by block), reopened (such layers lazily) and
one gene of the corrected RNA is read back.

Run: ``PYTHONPATH=src python benchmarks/visium_hd_scale.py [--bins 500000] [--genes 18000] [--density 0.005]
[--outputs latent,expert_weights] [--train-steps N] [--save PATH] [--threads 1]
[--out benchmarks/results/visium_hd_scale.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MB = 1024**2


def synthetic_hd_project(n_bins: int, n_genes: int, density: float, *, n_samples: int = 2, n_morph: int = 67,
                         bin_um: float = 8.0, seed: int = 0):
    """SpatialData with ``n_samples`` square-bin samples, tables ``rna`` (CSR) and ``morphology`` (dense)."""
    import anndata as ad
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    rng = np.random.default_rng(seed)
    per = n_bins // n_samples
    side = int(np.ceil(np.sqrt(per)))
    shapes, obs_parts, attrs = {}, [], {}
    for k in range(n_samples):
        s = f"HD{k + 1}"
        idx = np.arange(per)
        xy = np.c_[(idx % side + 0.5) * bin_um, (idx // side + 0.5) * bin_um]
        shapes[f"{s}_spots"] = ShapesModel.parse(xy, geometry=0, radius=np.full(per, bin_um / 2),
                                                 index=pd.Index(idx, name="spot_id"),
                                                 transformations={s: Identity()})
        obs_parts.append(pd.DataFrame({"sample": s, "patient": s, "batch": s, "barcode": [f"b{i}" for i in idx],
                                       "spot_id": idx, "region": f"{s}_spots"},
                                      index=[f"{s}_b{i}" for i in idx]))
        half = bin_um / 2
        attrs[s] = {"patient": s, "visium": {"platform": "visium_hd", "bin_size_um": bin_um, "spot_shape": "square",
                                             "capture_area_um": [float(xy[:, 0].min() - half),
                                                                 float(xy[:, 1].min() - half),
                                                                 float(xy[:, 0].max() + half),
                                                                 float(xy[:, 1].max() + half)]}}
    obs = pd.concat(obs_parts)
    for c in ("sample", "patient", "batch", "region"):
        obs[c] = pd.Categorical(obs[c])
    n = len(obs)
    nnz_per_row = max(1, int(round(density * n_genes)))
    # counts: nnz_per_row distinct genes per bin (gene popularity skewed like real data), 1-5 UMIs each
    popularity = rng.gamma(0.5, 1.0, n_genes)
    popularity /= popularity.sum()
    cols = rng.choice(n_genes, size=(n, nnz_per_row), p=popularity)
    cols.sort(axis=1)
    counts = sp.csr_matrix((rng.integers(1, 6, size=cols.size).astype(np.float32), cols.ravel(),
                            np.arange(0, cols.size + 1, nnz_per_row)), shape=(n, n_genes))
    counts.sum_duplicates()
    lib = np.asarray(counts.sum(axis=1)).ravel()
    X = counts.copy()
    X.data = np.log1p(X.data / np.repeat(lib, np.diff(X.indptr)) * 1e4).astype(np.float32)
    rna = ad.AnnData(X, obs=obs.copy(), var=pd.DataFrame(index=[f"GENE{i:05d}" for i in range(n_genes)]))
    rna.layers["counts"] = counts
    morph_obs = obs.copy()
    morph_obs["he_covered"] = True
    morph = ad.AnnData(rng.standard_normal((n, n_morph), dtype=np.float32), obs=morph_obs,
                       var=pd.DataFrame(index=[f"morph_{i:02d}" for i in range(n_morph)]))
    regions = list(shapes)
    tables = {name: TableModel.parse(t, region=regions, region_key="region", instance_key="spot_id")
              for name, t in (("rna", rna), ("morphology", morph))}
    sdata = SpatialData(shapes=shapes, tables=tables, attrs={"spatialmix": {"samples": attrs}})
    return sdata


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", type=int, default=500_000)
    ap.add_argument("--genes", type=int, default=18_000)
    ap.add_argument("--density", type=float, default=0.005)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--outputs", default="latent,expert_weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-steps", type=int, default=None,
                    help="optimiser steps instead of 1 epoch (the outputs' memory does not depend on it)")
    ap.add_argument("--save", default=None,
                    help="also save the project there (lazy layers written block by block), reopen it and read one "
                         "gene of the corrected RNA; the folder is replaced")
    ap.add_argument("--out", default=str(HERE / "results" / "visium_hd_scale.json"))
    args = ap.parse_args(argv)

    import psutil

    from train_speed import start_stages, write_report

    stage, sampler, stages = start_stages(threads=args.threads, interval=0.02)
    state: dict = {}

    from spatialmix.data import MultiModalData
    from spatialmix.models import MIMA
    from spatialmix.results import render_result, spot_values, write_results

    start_mb = psutil.Process().memory_info().rss / MB
    sdata = stage("build tables (synthetic)", lambda: synthetic_hd_project(args.bins, args.genes, args.density,
                                                                            n_samples=args.samples))
    rna = sdata.tables["rna"]
    sparse_mb = (rna.X.data.nbytes + rna.X.indices.nbytes + rna.X.indptr.nbytes) / MB
    data = stage("tables -> MultiModalData", lambda: MultiModalData.from_spatialdata(sdata, annotation_key=None))
    state["model"] = MIMA(data)
    train_opts = {"max_steps": args.train_steps} if args.train_steps else {"epochs": 1}
    history = stage(f"MIMA train, {args.train_steps or 1} {'steps' if args.train_steps else 'epoch'}",
                    lambda: state["model"].train(**train_opts))
    outputs = [o for o in args.outputs.split(",") if o]
    stage(f"write_results({','.join(outputs)})", lambda: write_results(sdata, state["model"], outputs=outputs))

    def one_map():
        import spatialmix.napari._layers as L

        values = spot_values(sdata, "rna", obsm="X_mima").iloc[:, 0]
        rendered = render_result(sdata, "HD1", values)
        layer = L.spots_layer(sdata, "HD1")
        return rendered.image.shape, layer[2]

    shape, kind = stage("one latent map + spots layer", one_map)
    saved = {}
    if args.save:
        import shutil

        from spatialmix.lazy import is_lazy
        from spatialmix.project import load_project, save_project

        shutil.rmtree(args.save, ignore_errors=True)
        layers = {t: {k: ("lazy" if is_lazy(v) else "in memory") for k, v in sdata.tables[t].layers.items()}
                  for t in sdata.tables}
        path = stage("save_project (lazy layers block by block)", lambda: save_project(sdata, args.save))
        disk = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        again = stage("load_project", lambda: load_project(path))
        if "mima_corrected" in again.tables["rna"].layers:
            col = stage("read one gene of the corrected RNA", lambda: np.asarray(
                again.tables["rna"].layers["mima_corrected"][:, 7]))
            saved["one_gene_finite"] = int(np.isfinite(col).sum())
            saved["reopened_lazy"] = bool(is_lazy(again.tables["rna"].layers["mima_corrected"]))
        saved.update({"path": str(path), "disk_gb": round(disk / 1024**3, 2), "layers": layers})
    sampler.stop()
    steps = getattr(state["model"], "history", None)
    out = {"benchmark": "visium_hd_scale", "n_bins": int(rna.n_obs), "n_genes": int(rna.n_vars),
           "samples": args.samples, "rna_nnz": int(rna.X.nnz), "rna_csr_mb": round(sparse_mb),
           "morphology_features": int(sdata.tables["morphology"].n_vars), "outputs": outputs,
           "threads": args.threads, "rss_at_start_mb": round(start_mb), "stages": stages,
           "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
           "map_pixels": list(map(int, shape)), "spots_layer_kind": kind,
           "train": train_opts, "saved": saved, "history_rows": None if steps is None else len(steps) if hasattr(steps, "__len__")
           else None, "machine": f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 1024**3:.0f} GiB"}
    del history
    write_report(out, args.out, indent=1)
    return out


if __name__ == "__main__":
    main()
