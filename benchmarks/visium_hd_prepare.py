"""``prepare`` on Visium HD slides with MSI and H&E: read the 8 um bins, register the H&E and the MSI onto them,
build the three spot tables, then a short MIMA training and its latent (issue 16, item 4, with the project's own
reading and registration instead of synthetic tables; ``visium_hd_scale.py`` covers the model side at 500,000 bins).

The dataset is written once into ``--cache`` (never into the repository), in the layout a user has:

- ``HD<k>/outs``: a Space Ranger HD ``outs/`` folder of ``--side`` x ``--side`` bins of 8 um
  (:func:`spatialmix.simulate.visium_hd.write_visium_hd`: an elliptical tissue, ~57 % of the bins, ``--genes``
  genes with counts drawn sparsely from four spatial programmes);
- ``HD<k>/he/HD<k>_HE.tif``: a pyramidal H&E TIFF at ``--he-mpp`` um/px on a canvas larger than the capture
  area, the tissue shifted by a known offset (pink tissue, darker bands where the counts' banded programme is on,
  pixel noise), so the nominal placement is off by hundreds of micrometres and the registration has to find it;
- ``HD<k>/msi/HD<k>.imzML``: a continuous imzML raster at ``--msi-um`` um with ``--mz`` peaks (some following the
  bands, some the gradient, the rest noise), with its own offset;
- ``truth/transforms.json`` and ``truth/spots.csv`` per sample, as ``spatialmix simulate`` writes them, so the
  registration is scored against the true transforms (``spatialmix.jobs.registration_error_vs_truth``).

Stages, one process, a psutil thread sampling RSS every 50 ms: ``iter_prepare`` (its own per-step timings are
kept: read, register, tables), ``MultiModalData.from_spatialdata``, ``MIMA(data).train(max_steps=...)``,
``write_results(latent)``. The JSON has each stage's seconds and peak RSS, the table shapes and the registration
error against the truth.

Run: ``PYTHONPATH=src python benchmarks/visium_hd_prepare.py [--side 672] [--samples 2] [--genes 18000]
[--he-mpp 0.5] [--msi-um 20] [--train-steps 200] [--threads 1] [--cache /tmp/spatialmix-hd-prepare]
[--out benchmarks/results/visium_hd_prepare.json]``; ``--side 672 --samples 2`` is ~510,000 bins in tissue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=672, help="bins of 8 um along each side of a capture area")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--genes", type=int, default=18_000)
    ap.add_argument("--depth", type=float, default=0.008,
                    help="mean counts per gene and bin scale (0.008: ~120 molecules per 8 um bin at 18,000 genes)")
    ap.add_argument("--he-mpp", type=float, default=0.5)
    ap.add_argument("--msi-um", type=float, default=20.0)
    ap.add_argument("--mz", type=int, default=200, help="m/z peaks in every spectrum")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/spatialmix-hd-prepare"))
    ap.add_argument("--out", default=str(HERE / "results" / "visium_hd_prepare.json"))
    args = ap.parse_args(argv)

    import psutil

    from train_speed import start_stages, write_report

    stage, sampler, stages = start_stages(threads=args.threads, interval=0.05, width=40)


    from spatialmix.data import MultiModalData
    from spatialmix.jobs import registration_error_vs_truth
    from spatialmix.models import MIMA
    from spatialmix.pipeline import iter_prepare
    from spatialmix.progress import run
    from spatialmix.results import write_results
    from spatialmix.simulate.visium_hd import write_visium_hd_dataset

    root = args.cache / f"side{args.side}_s{args.samples}_g{args.genes}"
    stage("write the dataset (cached)", lambda: write_visium_hd_dataset(
        root, side=args.side, samples=args.samples, genes=args.genes, depth=args.depth, he_mpp=args.he_mpp,
        msi_um=args.msi_um, n_mz=args.mz, seed=args.seed))
    disk_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1024**2
    sdata = stage("prepare (read, register, tables)", lambda: run(iter_prepare(root)))
    meta = sdata.attrs["spatialmix"]
    shapes = {t: list(map(int, sdata.tables[t].shape)) for t in ("rna", "msi", "morphology") if t in sdata.tables}
    errors = registration_error_vs_truth(sdata, root)
    residuals = {s: {m: round(float(r.get("rms_um", float("nan"))), 1) for m, r in rec.items()}
                 for s, rec in meta.get("registration", {}).items()}
    msi = sdata.tables["msi"]
    covered = int(np.asarray(msi.obs["msi_covered"]).sum()) if "msi_covered" in msi.obs else None
    print("tables:", shapes, "| registration error vs truth (um):", errors, "| MSI-covered bins:", covered, flush=True)
    data = stage("tables -> MultiModalData", lambda: MultiModalData.from_spatialdata(sdata, annotation_key=None))
    model = MIMA(data)
    stage(f"MIMA train, {args.train_steps} steps", lambda: model.train(max_steps=args.train_steps))
    stage("write_results(latent)", lambda: write_results(sdata, model, outputs=["latent"]))
    latent = np.asarray(sdata.tables["rna"].obsm["X_mima"])
    sampler.stop()
    out = {"benchmark": "visium_hd_prepare", "bins_in_tissue": shapes["rna"][0], "tables": shapes,
           "dataset": {"side_bins": args.side, "bin_um": 8, "samples": args.samples, "genes": args.genes,
                       "he_microns_per_pixel": args.he_mpp, "msi_pixel_um": args.msi_um, "mz_peaks": args.mz,
                       "disk_mb": round(disk_mb), "rna_nnz": int(sdata.tables["rna"].X.nnz)},
           "prepare_timings_s": meta["prepare"]["timings_s"], "registration_error_vs_truth_um": errors,
           "registration_residual_um": residuals, "msi_covered_bins": covered,
           "latent_finite_rows": int(np.isfinite(latent).all(axis=1).sum()), "threads": args.threads,
           "stages": stages, "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
           "machine": f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 1024**3:.0f} GiB"}
    write_report(out, args.out, indent=1)
    return out


if __name__ == "__main__":
    main()
