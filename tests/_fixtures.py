"""Tiny writers for the real file formats used by the reader tests (10x h5, Space Ranger folder, imzML)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_10x_h5(path: Path, counts: np.ndarray, barcodes: list[str], gene_ids: list[str],
                 gene_names: list[str]) -> None:
    """Write a Cell Ranger v3 feature-barcode matrix (``counts`` is spots x genes)."""
    import h5py
    import scipy.sparse as sp

    csc = sp.csc_matrix(np.asarray(counts).T)  # genes x barcodes, stored column-major like 10x does
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=csc.data.astype(np.int32))
        g.create_dataset("indices", data=csc.indices.astype(np.int64))
        g.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
        feat = g.create_group("features")
        feat.create_dataset("id", data=np.array(gene_ids, dtype="S"))
        feat.create_dataset("name", data=np.array(gene_names, dtype="S"))
        feat.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(gene_ids), dtype="S"))
        feat.create_dataset("genome", data=np.array(["GRCh38"] * len(gene_ids), dtype="S"))
        feat.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))


def write_spaceranger(outs: Path, *, n_rows: int = 6, n_cols: int = 8, spot_diameter_fullres: float = 110.0,
                      origin_px: tuple[float, float] = (500.0, 400.0),
                      hires_scalef: float = 0.25, lowres_scalef: float = 0.05, seed: int = 0,
                      gene_names: list[str] | None = None) -> dict:
    """Write a small Space Ranger >= 2.0 ``outs/`` folder; returns what was written.

    Spots lie on Visium's hexagonal lattice (array_col = 2 * i + row parity, 100 um between neighbours with
    the 55 um spot of ``spot_diameter_fullres``); the first two rows are out of tissue.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    (outs / "spatial").mkdir(parents=True, exist_ok=True)
    rows, i = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    rows, i = rows.ravel(), i.ravel()
    cols = 2 * i + rows % 2
    px_per_col = 50.0 / (55.0 / spot_diameter_fullres)  # 50 um per array column
    px_per_row = px_per_col * np.sqrt(3.0)  # 86.6 um per array row
    barcodes = [f"{''.join(rng.choice(list('ACGT'), 16))}-1" for _ in range(len(rows))]
    in_tissue = (rows >= 2).astype(int)
    pxl_row = np.round(origin_px[1] + rows * px_per_row, 3)
    pxl_col = np.round(origin_px[0] + cols * px_per_col, 3)
    with open(outs / "spatial" / "tissue_positions.csv", "w") as fh:
        fh.write("barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres\n")
        for b, t, r, c, pr, pc in zip(barcodes, in_tissue, rows, cols, pxl_row, pxl_col):
            fh.write(f"{b},{t},{r},{c},{pr:.3f},{pc:.3f}\n")
    sf = {"spot_diameter_fullres": spot_diameter_fullres, "tissue_hires_scalef": hires_scalef,
          "fiducial_diameter_fullres": spot_diameter_fullres * 1.6, "tissue_lowres_scalef": lowres_scalef}
    (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    full_w = int(origin_px[0] * 2 + 2 * n_cols * px_per_col)
    full_h = int(origin_px[1] * 2 + n_rows * px_per_row)
    for name, s in (("hires", hires_scalef), ("lowres", lowres_scalef)):
        img = np.full((round(full_h * s), round(full_w * s), 3), 230, np.uint8)
        img[..., 0] = 180
        Image.fromarray(img).save(outs / "spatial" / f"tissue_{name}_image.png")
    sel = np.flatnonzero(in_tissue)
    gene_names = gene_names or ["GENE1", "GENE2", "GENE2", "MT-CO1", "ACTB"]
    counts = rng.poisson(3.0, size=(len(sel), len(gene_names)))
    write_10x_h5(outs / "filtered_feature_bc_matrix.h5", counts, [barcodes[i] for i in sel],
                 [f"ENSG{i:011d}" for i in range(len(gene_names))], gene_names)
    return {
        "barcodes": [barcodes[i] for i in sel],
        "all_barcodes": barcodes,
        "counts": counts,
        "pxl_row": pxl_row[sel],
        "pxl_col": pxl_col[sel],
        "all_pxl_row": pxl_row,
        "all_pxl_col": pxl_col,
        "scalefactors": sf,
        "mpp": 55.0 / spot_diameter_fullres,
        "image_shapes": {"hires": (round(full_h * hires_scalef), round(full_w * hires_scalef)),
                         "lowres": (round(full_h * lowres_scalef), round(full_w * lowres_scalef))},
    }


def write_imzml(path: Path, spectra: list[tuple[int, int, np.ndarray, np.ndarray]], *,
                mode: str = "processed") -> Path:
    """Write ``(x, y, mzs, intensities)`` spectra (x, y 1-based) with pyimzML's writer; returns the .imzML path."""
    from pyimzml.ImzMLWriter import ImzMLWriter

    path = Path(path)
    with ImzMLWriter(str(path), mode=mode, mz_dtype=np.float64, intensity_dtype=np.float32) as w:
        for x, y, mzs, ints in spectra:
            w.addSpectrum(np.asarray(mzs, dtype=np.float64), np.asarray(ints, dtype=np.float32), (int(x), int(y)))
    return path.with_suffix(".imzML")
