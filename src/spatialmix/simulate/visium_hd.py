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
import shutil
import uuid
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .writers import write_10x_h5


def _tissue(xn, yn):
    """The simulated tissue in coordinates normalised to the capture area: an ellipse with a notch cut out of its
    upper right, so that no rotation or mirror of it fits as well as the true pose (a registration test)."""
    ellipse = ((xn - 0.5) / 0.45) ** 2 + ((yn - 0.5) / 0.4) ** 2 <= 1.0
    return ellipse & (((xn - 0.82) ** 2 + (yn - 0.3) ** 2) > 0.15**2)


def _band(yn):
    """The banded programme: on in every other quarter along y."""
    return np.floor(yn * 4) % 2


def _programmes(yy: np.ndarray, xx: np.ndarray, n_genes: int, rng: np.random.Generator):
    """The Poisson means as a product: ``base`` (n_bins, 4) programme activities (a layered tissue: bands along
    y; a gradient along x; a spot-like cluster; a constant) and ``load`` (4, n_genes), each gene loading on them
    at random; the mean of bin i, gene g is ``base[i] @ load[:, g]``."""
    band = _band(yy).astype(float)
    grad = xx
    blob = np.exp(-(((xx - 0.7) ** 2 + (yy - 0.35) ** 2) / 0.01))
    base = np.column_stack([np.ones_like(xx), band, grad, blob])
    load = rng.gamma(0.6, 1.0, size=(4, n_genes)) * rng.binomial(1, 0.5, size=(4, n_genes))
    load[0] += 0.05
    return base, load


def _poisson_counts(base: np.ndarray, load: np.ndarray, depth: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Poisson counts with means ``depth * base @ load``, drawn sparsely: the sum of one Poisson process per
    programme k (bin i draws Poisson(depth * base[i, k] * load[k].sum()) molecules, each a gene drawn with
    probability load[k] / load[k].sum()), which has exactly that distribution. Memory and time follow the
    number of molecules, not bins x genes (a dense draw of 500,000 bins x 18,000 genes would be 72 GB)."""
    n_bins, n_genes = base.shape[0], load.shape[1]
    rows, cols = [], []
    for k in range(load.shape[0]):
        total = load[k].sum()
        if total <= 0:
            continue
        n = rng.poisson(depth * base[:, k] * total)
        rows.append(np.repeat(np.arange(n_bins, dtype=np.int64), n))
        cols.append(rng.choice(n_genes, size=int(n.sum()), p=load[k] / total))
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    out = sp.coo_matrix((np.ones(len(r), np.int64), (r, c)), shape=(n_bins, n_genes)).tocsr()
    out.sum_duplicates()
    return out


def write_visium_hd(outs: str | Path, *, n_rows: int = 48, n_cols: int = 48, n_genes: int = 60,
                    bin_sizes: tuple[int, ...] = (8, 16), microns_per_pixel: float = 0.5, depth: float = 0.4,
                    seed: int = 0, prefix: str = "", hires_px: int = 600) -> Path:
    """Write a Visium HD ``outs/`` folder of ``n_rows x n_cols`` bins of the smallest size in ``bin_sizes``.

    ``depth`` scales the mean counts per gene and smallest bin. ``hires_px`` is the longest side of
    ``tissue_hires_image.png`` (Space Ranger writes 6,000 px for a 6.5 mm HD capture area; the default keeps
    small test folders small). Every larger bin size must be a multiple of
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
    tissue = _tissue(xx, yy)
    base, load = _programmes(yy.ravel(), xx.ravel(), n_genes, rng)
    counts0 = _poisson_counts(base * tissue.ravel()[:, None], load, depth, rng)
    gene_ids = [f"ENSMUSG{i:011d}" for i in range(n_genes)]
    gene_names = [f"Gene{i}" for i in range(n_genes)]
    full_px = n_cols * b0 / microns_per_pixel
    hires_scalef = min(1.0, hires_px / full_px)
    lowres_scalef = min(hires_scalef / 4, 600.0 / full_px)  # Space Ranger: at most 600 px
    spatial = outs / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)

    for b in sizes:
        f = b // b0
        nr, nc = n_rows // f, n_cols // f
        # sum f x f blocks of the smallest bins (a sparse aggregation matrix: small bin -> its large bin)
        big = ((rows.ravel() // f) * nc + cols.ravel() // f)
        agg = sp.csr_matrix((np.ones(big.size, np.int64), (big, np.arange(big.size))), shape=(nr * nc, big.size))
        grid = (agg @ counts0).tocsr()
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
        write_10x_h5(folder / "filtered_feature_bc_matrix.h5", grid[keep], barcodes[keep],
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
        inside = _tissue(gx, gy)
        band = _band(gy)[..., None]
        rgb = np.where(inside[..., None], np.array([225, 160, 200]) - band * np.array([60, 70, 30]), 245)
        iio.imwrite(spatial / f"tissue_{name}_image.png", rgb.astype(np.uint8))

    layout = {"file_format": "1.0", "schema_version": "1.0", "num_rows": n_rows * b0 // 2,
              "num_cols": n_cols * b0 // 2, "spot_pitch": 2.0}
    with h5py.File(outs / f"{prefix}feature_slice.h5", "w") as h5:
        h5.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps(layout),
                                                "software": "spatialmix.simulate"})
    return outs


_HD_BIN_UM = 8
_MARGIN_UM = 400.0  # the H&E canvas and the MSI raster reach this far beyond the capture area


def _write_he(path: Path, extent_um: float, mpp: float, offset_um: tuple[float, float], seed: int) -> np.ndarray:
    """A pyramidal RGB TIFF; returns its true pixel -> um matrix (pixel j, i: x = mpp * j - offset_x)."""
    from spatialmix.simulate.writers import write_he_tiff

    rng = np.random.default_rng(seed)
    side = int(np.ceil((extent_um + 2 * _MARGIN_UM) / mpp))
    tile = rng.normal(0, 9, size=(256, 256, 3))
    img = np.empty((side, side, 3), np.uint8)
    x_um = np.arange(side) * mpp - offset_um[0]
    tile_cols = np.arange(side) % 256
    for start in range(0, side, 1024):  # strips: the float intermediates of a whole slide would not fit
        rows = np.arange(start, min(side, start + 1024))
        y_um = rows * mpp - offset_um[1]
        yn, xn = np.meshgrid(y_um / extent_um, x_um / extent_um, indexing="ij")
        inside = _tissue(xn, yn)[..., None]
        band = _band(yn)[..., None]
        rgb = np.where(inside, np.array([225.0, 160.0, 200.0]) - band * np.array([60.0, 70.0, 30.0]), 245.0)
        noise = tile[np.ix_(rows % 256, tile_cols)]  # the tile repeated over the strip, no larger copy
        img[rows] = np.clip(rgb + noise * inside, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_he_tiff(path, img, mpp, pyramid=True)
    return np.array([[mpp, 0, -offset_um[0]], [0, mpp, -offset_um[1]], [0, 0, 1.0]])


def _write_msi(path: Path, extent_um: float, step_um: float, offset_um: tuple[float, float], n_mz: int,
              seed: int) -> np.ndarray:
    """A continuous imzML raster; returns its true 0-based pixel -> um matrix (x = step * x_px - offset_x)."""
    from spatialmix.simulate.writers import write_imzml

    rng = np.random.default_rng(seed)
    n = int(np.ceil((extent_um + 2 * _MARGIN_UM) / step_um))
    mz = np.sort(rng.uniform(400, 1000, n_mz)).astype(np.float32)
    kind = rng.integers(0, 3, n_mz)  # 0: follows the bands, 1: the gradient along x, 2: tissue only
    base = rng.uniform(50, 500, n_mz)
    yy, xx = np.meshgrid(np.arange(n) * step_um - offset_um[1], np.arange(n) * step_um - offset_um[0],
                         indexing="ij")
    yn, xn = yy / extent_um, xx / extent_um
    inside, band = _tissue(xn, yn).ravel(), _band(yn).ravel()
    grad = np.clip(xn, 0, 1).ravel()

    def spectra():
        chunk = 4096
        for start in range(0, n * n, chunk):
            sl = slice(start, min(n * n, start + chunk))
            prog = np.where(kind == 0, band[sl, None], np.where(kind == 1, grad[sl, None], 1.0))
            tissue = inside[sl, None] * (0.3 + prog)
            inten = base * (0.05 + tissue) * rng.lognormal(0, 0.3, (tissue.shape[0], n_mz))
            yield start, [(mz, row.astype(np.float32)) for row in inten]

    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in write_imzml(path, spectra(), (n, n), mode="continuous", file_uuid=uuid.UUID(int=seed),
                         run_id=path.stem, pixel_size_um=step_um):
        pass
    return np.array([[step_um, 0, -offset_um[0]], [0, step_um, -offset_um[1]], [0, 0, 1.0]])


def write_visium_hd_dataset(root: str | Path, *, side: int = 96, samples: int = 2, genes: int = 2000,
                            depth: float = 0.008, he_mpp: float = 0.5, msi_um: float = 20.0, n_mz: int = 200,
                            seed: int = 0, hires_px: int = 6000) -> Path:
    """A dataset folder of ``samples`` Visium HD slides with MSI and H&E, as a user has it (for benchmarks and
    tests of ``prepare`` at Visium HD scale).

    Per sample ``HD<k>``: ``outs/`` (:func:`write_visium_hd`, ``side`` x ``side`` bins of 8 um only, a hires image
    of ``hires_px`` as Space Ranger writes for HD);
    ``he/HD<k>_HE.tif``, a pyramidal H&E at ``he_mpp`` um/px on a canvas reaching 400 um beyond the capture
    area, the tissue drawn at a known offset (pink, darker bands where the counts' banded programme is on, pixel
    noise), so the nominal placement is off by hundreds of micrometres; ``msi/HD<k>.imzML``, a continuous raster at
    ``msi_um`` um with ``n_mz`` peaks (following the bands, the gradient along x, or the tissue only), at its own
    offset; ``truth/transforms.json`` (true pixel -> um matrices) and ``truth/spots.csv`` (up to ~20,000 in-tissue
    bin centres), as :func:`spatialmix.simulate.simulate` writes them, so the registration can be scored
    (:func:`spatialmix.jobs.registration_error_vs_truth`). ``samples.csv`` names the bin size (``visium_bin_um``).
    The folder is replaced, unless ``parameters.json`` there records the same parameters (then it is reused).
    Returns ``root``.
    """
    params = dict(side=side, samples=samples, genes=genes, depth=depth, he_mpp=he_mpp, msi_um=msi_um, n_mz=n_mz,
                  seed=seed, hires_px=hires_px, version=2)
    root = Path(root)
    stamp = root / "parameters.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    extent = side * _HD_BIN_UM
    rows = []
    for k in range(samples):
        name = f"HD{k + 1}"
        sdir = root / name
        write_visium_hd(sdir / "outs", n_rows=side, n_cols=side, n_genes=genes, bin_sizes=(_HD_BIN_UM,),
                        microns_per_pixel=he_mpp, depth=depth, seed=seed + k, hires_px=hires_px)
        he_offset = (_MARGIN_UM - 150 + 60 * k, _MARGIN_UM + 90)  # tissue shifted against the nominal placement
        he_true = _write_he(sdir / "he" / f"{name}_HE.tif", extent, he_mpp, he_offset, seed + 100 + k)
        msi_offset = (_MARGIN_UM - 70, _MARGIN_UM - 130 + 40 * k)
        msi_true = _write_msi(sdir / "msi" / f"{name}.imzML", extent, msi_um, msi_offset, n_mz, seed + 200 + k)
        truth = sdir / "truth"
        truth.mkdir()
        (truth / "transforms.json").write_text(json.dumps({"he": he_true.tolist(), "msi": msi_true.tolist(),
                                                           "he_microns_per_pixel": he_mpp,
                                                           "msi_pixel_size_um": msi_um}, indent=2))
        r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        x_um, y_um = (c.ravel() + 0.5) * _HD_BIN_UM, (r.ravel() + 0.5) * _HD_BIN_UM
        in_tissue = _tissue(x_um / extent, y_um / extent)
        pick = np.flatnonzero(in_tissue)[:: max(1, int(in_tissue.sum()) // 20_000)]  # 20,000 points suffice
        pd.DataFrame({"in_tissue": 1, "x_um": x_um[pick], "y_um": y_um[pick]}).to_csv(truth / "spots.csv", index=False)
        rows.append({"sample": name, "patient": name, "visium": f"{name}/outs", "visium_bin_um": _HD_BIN_UM,
                     "imzml": f"{name}/msi/{name}.imzML", "msi_pixel_size_um": msi_um,
                     "he": f"{name}/he/{name}_HE.tif", "he_microns_per_pixel": he_mpp})
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)
    stamp.write_text(json.dumps(params))
    return root
