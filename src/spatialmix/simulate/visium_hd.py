"""A simulated Visium HD Space Ranger ``outs/`` folder in the real layout (for tests and benchmarks).

Space Ranger 3 writes, per bin size, ``binned_outputs/square_XXXum/`` with ``filtered_feature_bc_matrix.h5``
(only in-tissue bins), ``spatial/tissue_positions.parquet`` (every bin of the capture area: barcode,
in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres) and ``spatial/scalefactors_json.json``
(``bin_size_um``, ``spot_diameter_fullres`` = the bin side in full-resolution pixels, ``microns_per_pixel``);
beside them ``feature_slice.h5`` (the slide layout, in the attribute ``metadata_json``) and ``spatial/`` with the
hires / lowres tissue images. This writes that layout for a small square grid: counts are simulated at the
smallest bin size (Poisson around a few spatial gene programmes inside an elliptical tissue) and summed into
the larger bins, as Space Ranger bins 2 um squares.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .writers import write_10x_h5


def _programmes(yy: np.ndarray, xx: np.ndarray, n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """(n_bins, n_genes) Poisson means: a layered tissue (bands along y), a gradient along x and a spot-like
    cluster, each gene loading on them at random."""
    band = (np.floor(yy * 4) % 2).astype(float)
    grad = xx
    blob = np.exp(-(((xx - 0.7) ** 2 + (yy - 0.35) ** 2) / 0.01))
    base = np.column_stack([np.ones_like(xx), band, grad, blob])
    load = rng.gamma(0.6, 1.0, size=(4, n_genes)) * rng.binomial(1, 0.5, size=(4, n_genes))
    load[0] += 0.05
    return base @ load


def write_visium_hd(outs: str | Path, *, n_rows: int = 48, n_cols: int = 48, n_genes: int = 60,
                    bin_sizes: tuple[int, ...] = (8, 16), microns_per_pixel: float = 0.5, depth: float = 0.4,
                    seed: int = 0, prefix: str = "") -> Path:
    """Write a Visium HD ``outs/`` folder of ``n_rows x n_cols`` bins of the smallest size in ``bin_sizes``.

    ``depth`` scales the mean counts per gene and smallest bin. Every larger bin size must be a multiple of
    the smallest and divide the grid. ``prefix`` names the feature slice file ``<prefix>feature_slice.h5``.
    Returns ``outs``.
    """
    outs = Path(outs)
    rng = np.random.default_rng(seed)
    sizes = sorted(int(b) for b in bin_sizes)
    b0 = sizes[0]
    for b in sizes[1:]:
        f = b // b0
        if b % b0 or n_rows % f or n_cols % f:
            raise ValueError(f"bin size {b} um must be a multiple of {b0} um that tiles the {n_rows}x{n_cols} grid")
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    yy, xx = (rows + 0.5) / n_rows, (cols + 0.5) / n_cols
    tissue = ((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.4) ** 2 <= 1.0
    mu = _programmes(yy.ravel(), xx.ravel(), n_genes, rng) * depth
    counts0 = rng.poisson(mu).astype(np.int64) * tissue.ravel()[:, None]
    gene_ids = [f"ENSMUSG{i:011d}" for i in range(n_genes)]
    gene_names = [f"Gene{i}" for i in range(n_genes)]
    full_px = n_cols * b0 / microns_per_pixel
    hires_scalef = min(1.0, 600.0 / full_px)
    lowres_scalef = hires_scalef / 4
    spatial = outs / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)

    for b in sizes:
        f = b // b0
        nr, nc = n_rows // f, n_cols // f
        # sum f x f blocks of the smallest bins
        grid = counts0.reshape(nr, f, nc, f, n_genes).sum(axis=(1, 3)).reshape(nr * nc, n_genes)
        r, c = np.meshgrid(np.arange(nr), np.arange(nc), indexing="ij")
        r, c = r.ravel(), c.ravel()
        in_tissue = tissue.reshape(nr, f, nc, f).any(axis=(1, 3)).ravel()
        barcodes = np.array([f"s_{b:03d}um_{i:05d}_{j:05d}-1" for i, j in zip(r, c)])
        positions = pd.DataFrame({
            "barcode": barcodes, "in_tissue": in_tissue.astype(np.int32), "array_row": r.astype(np.int32),
            "array_col": c.astype(np.int32),
            "pxl_row_in_fullres": (r + 0.5) * b / microns_per_pixel,
            "pxl_col_in_fullres": (c + 0.5) * b / microns_per_pixel,
        })
        folder = outs / "binned_outputs" / f"square_{b:03d}um"
        (folder / "spatial").mkdir(parents=True, exist_ok=True)
        positions.to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
        keep = np.flatnonzero(in_tissue)
        write_10x_h5(folder / "filtered_feature_bc_matrix.h5", sp.csr_matrix(grid[keep]), barcodes[keep],
                     gene_ids, gene_names, library_id="simulated_hd", genome="GRCm39")
        scalefactors = {"spot_diameter_fullres": b / microns_per_pixel, "bin_size_um": float(b),
                        "microns_per_pixel": microns_per_pixel, "tissue_hires_scalef": hires_scalef,
                        "tissue_lowres_scalef": lowres_scalef, "fiducial_diameter_fullres": 0.0,
                        "regist_target_img_scalef": hires_scalef}
        (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    top = {"spot_diameter_fullres": 2 / microns_per_pixel, "bin_size_um": 2.0, "microns_per_pixel": microns_per_pixel,
           "tissue_hires_scalef": hires_scalef, "tissue_lowres_scalef": lowres_scalef,
           "fiducial_diameter_fullres": 0.0, "regist_target_img_scalef": hires_scalef}
    (spatial / "scalefactors_json.json").write_text(json.dumps(top))

    # H&E-like images: pink tissue with darker bands on white
    for name, scalef in (("hires", hires_scalef), ("lowres", lowres_scalef)):
        side = max(8, int(round(full_px * scalef)))
        gy, gx = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
        inside = ((gx - 0.5) / 0.45) ** 2 + ((gy - 0.5) / 0.4) ** 2 <= 1.0
        band = (np.floor(gy * 4) % 2)[..., None]
        rgb = np.where(inside[..., None], np.array([225, 160, 200]) - band * np.array([60, 70, 30]), 245)
        iio.imwrite(spatial / f"tissue_{name}_image.png", rgb.astype(np.uint8))

    layout = {"file_format": "1.0", "schema_version": "1.0", "num_rows": n_rows * b0 // 2,
              "num_cols": n_cols * b0 // 2, "spot_pitch": 2.0}
    with h5py.File(outs / f"{prefix}feature_slice.h5", "w") as h5:
        h5.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps(layout),
                                                "software": "spatialmix.simulate"})
    return outs
