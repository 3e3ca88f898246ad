"""Writers for the simulated files, in the formats the real instruments and pipelines produce."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pandas as pd
import scipy.sparse as sp
import tifffile
from pyimzml.ImzMLWriter import IMZML_TEMPLATE, ImzMLWriter
from wheezy.template import CoreExtension, DictLoader, Engine

SOFTWARE = "spatialmix.simulate 0.1.0"


# ------------------------------------------------------------------------------------------- Visium
def _bytes(values, *, dtype: str | None = None) -> np.ndarray:
    arr = np.asarray([str(v).encode("ascii") for v in values])
    return arr.astype(dtype) if dtype else arr


def write_10x_h5(path: Path, counts: sp.csr_matrix, barcodes, gene_ids, gene_names, *, library_id: str,
                 genome: str = "GRCh38") -> None:
    """A Space Ranger / Cell Ranger v3+ feature-barcode matrix (CSC genes x barcodes, gzip).

    ``counts`` is barcodes x genes CSR, which is exactly the CSC layout of the genes x barcodes matrix.
    """
    counts = counts.tocsr()
    counts.sort_indices()
    n_bc, n_genes = counts.shape
    ds = {"compression": "gzip", "compression_opts": 4, "shuffle": True, "track_times": False}
    with h5py.File(path, "w") as f:
        f.attrs["chemistry_description"] = np.bytes_("Spatial 3' v1")
        f.attrs["filetype"] = np.bytes_("matrix")
        f.attrs["library_ids"] = _bytes([library_id])
        f.attrs["original_gem_groups"] = np.array([1], dtype=np.int64)
        f.attrs["software_version"] = np.bytes_(SOFTWARE)
        f.attrs["version"] = np.int64(2)
        g = f.create_group("matrix", track_order=False)
        g.create_dataset("barcodes", data=_bytes(barcodes), **ds)
        g.create_dataset("data", data=counts.data.astype(np.int32), **ds)
        g.create_dataset("indices", data=counts.indices.astype(np.int64), **ds)
        g.create_dataset("indptr", data=counts.indptr.astype(np.int64), **ds)
        g.create_dataset("shape", data=np.array([n_genes, n_bc], dtype=np.int32), track_times=False)
        feat = g.create_group("features", track_order=False)
        feat.create_dataset("_all_tag_keys", data=_bytes(["genome"]), track_times=False)
        feat.create_dataset("feature_type", data=_bytes(["Gene Expression"] * n_genes), **ds)
        feat.create_dataset("genome", data=_bytes([genome] * n_genes), **ds)
        feat.create_dataset("id", data=_bytes(gene_ids), **ds)
        feat.create_dataset("name", data=_bytes(gene_names), **ds)


def write_spaceranger_spatial(spatial: Path, spots: pd.DataFrame, scalefactors: dict, hires: np.ndarray,
                              lowres: np.ndarray) -> None:
    """``spatial/`` of Space Ranger >= 2.0: tissue_positions.csv (with header), scalefactors, images."""
    spatial.mkdir(parents=True, exist_ok=True)
    cols = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    spots[cols].to_csv(spatial / "tissue_positions.csv", index=False, lineterminator="\n")
    (spatial / "scalefactors_json.json").write_text(json.dumps(scalefactors, indent=4) + "\n")
    iio.imwrite(spatial / "tissue_hires_image.png", hires, compress_level=9)
    iio.imwrite(spatial / "tissue_lowres_image.png", lowres, compress_level=9)


# ---------------------------------------------------------------------------------------------- MSI
def _compact_template(pixel_size_um: float | None) -> str:
    """pyimzML's imzML template without indentation and without the optional per-spectrum
    lowest/highest/base-peak parameters (they made the XML ~2.3 kB per pixel, more than the data of a
    small spectrum), plus the raster's pixel size in the scan settings (IMS:1000046/47, micrometres)."""
    drop = ('name="lowest observed m/z"', 'name="highest observed m/z"', 'name="base peak m/z"',
            'name="base peak intensity"')
    lines = [ln.strip() for ln in IMZML_TEMPLATE.splitlines() if not any(d in ln for d in drop)]
    out = []
    for ln in lines:
        out.append(ln)
        if 'name="max count of pixels y"' in ln and pixel_size_um is not None:
            # names as the imzML ontology spells them (pyimzML warns on anything else)
            for name, acc in (("pixel size (x)", "IMS:1000046"), ("pixel size y", "IMS:1000047")):
                out.append(f'<cvParam cvRef="IMS" accession="{acc}" name="{name}" '
                           f'value="{pixel_size_um:g}" unitCvRef="UO" unitAccession="UO:0000017" '
                           'unitName="micrometer"/>')
    return "\n".join(out) + "\n"


class _DeterministicImzMLWriter(ImzMLWriter):
    """pyimzML's writer with a given UUID (it draws a random one), a run id that is not the file path (so
    that the same seed gives byte-identical files) and a compact XML template (see _compact_template)."""

    def __init__(self, output_filename, *, file_uuid: uuid.UUID, run_id: str, pixel_size_um: float | None,
                 **kwargs):
        super().__init__(str(output_filename), **kwargs)
        # the base class already wrote its random UUID as the first 16 bytes of the .ibd: redo them
        self.ibd.seek(0)
        self.ibd.truncate()
        self.sha1 = hashlib.sha1()
        self.uuid = file_uuid
        self._write_ibd(self.uuid.bytes)
        self.run_id = run_id
        engine = Engine(loader=DictLoader({"imzml": _compact_template(pixel_size_um)}), extensions=[CoreExtension()])
        self.imzml_template = engine.get_template("imzml")


def write_imzml(path: Path, spectra: Iterator[tuple[int, list]], shape: tuple[int, int], *, mode: str,
                file_uuid: uuid.UUID, run_id: str, pixel_size_um: float | None = None) -> Iterator[int]:
    """Write spectra (row-major pixel order) with pyimzML; yields the number of pixels written so far."""
    ny, nx = shape
    with _DeterministicImzMLWriter(path, file_uuid=file_uuid, run_id=run_id, pixel_size_um=pixel_size_um,
                                   mz_dtype=np.float32,
                                   intensity_dtype=np.float32, mode=mode, spec_type="centroid",
                                   polarity="positive") as w:
        for start, chunk in spectra:
            for k, (mz, inten) in enumerate(chunk):
                y, x = divmod(start + k, nx)
                w.addSpectrum(mz, inten, (x + 1, y + 1))  # imzML coordinates are 1-based
            yield start + len(chunk)


# ---------------------------------------------------------------------------------------------- H&E
def _halve(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    a = img[:h, :w].astype(np.uint16)
    return ((a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4).astype(np.uint8)


def write_he_tiff(path: Path, img: np.ndarray, mpp: float, *, pyramid: bool) -> None:
    """RGB TIFF, deflate (zlib) compressed and tiled, with the (nominal) resolution in the TIFF tags;
    with ``pyramid`` the 2x-downsampled levels are stored as SubIFDs (the layout tifffile, QuPath and
    bioformats read as a pyramid)."""
    levels = [img]
    if pyramid:
        while max(levels[-1].shape[:2]) > 1024:
            levels.append(_halve(levels[-1]))
    opts = {"photometric": "rgb", "compression": "zlib", "compressionargs": {"level": 9}, "predictor": True,
            "tile": (256, 256), "resolutionunit": "CENTIMETER", "metadata": None, "software": SOFTWARE}
    big = img.nbytes > 2**31
    with tifffile.TiffWriter(path, bigtiff=big) as tif:
        tif.write(levels[0], subifds=len(levels) - 1 or None, resolution=(1e4 / mpp, 1e4 / mpp), **opts)
        for k, lvl in enumerate(levels[1:], 1):
            f = 1e4 / (mpp * 2**k)
            tif.write(lvl, subfiletype=1, resolution=(f, f), **opts)


# -------------------------------------------------------------------------------------------- tables
def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but byte-identical for identical arrays (fixed zip timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=1)


def write_csv(path: Path, df: pd.DataFrame) -> None:
    df.to_csv(path, index=False, lineterminator="\n")
