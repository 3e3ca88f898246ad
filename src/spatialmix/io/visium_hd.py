"""Read a 10x Visium HD Space Ranger ``outs/`` folder (one bin size) into SpatialData, following
docs/conventions.md: the bins become the sample's spots.

Parsing is done by :func:`spatialdata_io.visium_hd`; this module checks the folder first (so a missing file is
named before anything long starts), picks one bin size, and renames / rescales the result to micrometres the
way :func:`spatialmix.io.read_visium` does for Visium. Bins are squares: their side is recorded in
``attrs["spatialmix"]["samples"][sample]["visium"]`` (``bin_size_um``, ``spot_shape="square"``) and every
map of the sample draws them as squares (:func:`spatialmix.plotting.spot_geometry`).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.errors import MissingVisiumFileError, ParameterError, VisiumFormatError

#: Bin size read when none is given: 16 um bins are closest to a cell neighbourhood and keep a slide at a
#: few hundred thousand spots (8 um: ~600,000; 2 um: ~11 million).
DEFAULT_BIN_UM = 16
_COUNTS = "filtered_feature_bc_matrix.h5"
_FEATURE_SLICE = "feature_slice.h5"
_BIN_RE = re.compile(r"^square_(\d{3})um$")


def _bin_folders(outs: Path) -> dict[int, Path]:
    """{bin size in um: folder} of ``outs/binned_outputs/square_XXXum`` (or ``square_XXXum`` beside it)."""
    found: dict[int, Path] = {}
    for parent in (outs / "binned_outputs", outs):
        if parent.is_dir():
            for d in parent.iterdir():
                m = _BIN_RE.match(d.name)
                if m and d.is_dir():
                    found.setdefault(int(m.group(1)), d)
    return dict(sorted(found.items()))


def hd_bin_sizes(path: str | Path) -> list[int]:
    """The bin sizes (um) a Visium HD output (an ``outs/`` folder or the run folder holding it) holds, smallest
    first; empty when ``path`` is not Visium HD."""
    p = Path(path)
    for folder in (p, p / "outs"):
        if folder.is_dir() and (found := _bin_folders(folder)):
            return list(found)
    return []


def is_visium_hd(path: str | Path) -> bool:
    """Whether ``path`` (an ``outs/`` folder or the run folder holding it) is a Visium HD output: it has
    ``binned_outputs/square_XXXum`` folders."""
    return bool(hd_bin_sizes(path))


def bin_size_problem(path: str | Path, bin_size_um: float) -> tuple[str, str] | None:
    """What is wrong with reading ``bin_size_um`` um bins of ``path``, as ``(problem, fix)``; None when that bin
    size is there. Checked before any reading (samples.csv, the run configuration, ``prepare``), so that a wrong
    bin size of the last sample is named before the first one is read."""
    sizes = hd_bin_sizes(path)
    if not sizes:
        return (f"{Path(path).resolve()} is a Visium folder without binned_outputs/ (not Visium HD)",
                "Leave visium_bin_um empty for Visium (55 um spots); give it only for Visium HD outputs")
    if float(bin_size_um) not in sizes:  # 8.0 is 8 um; 8.5 is no bin size (never rounded to one)
        there = ", ".join(f"{b}" for b in sizes)
        return (f"{Path(path).resolve()} has no {bin_size_um:g} um bins (it has {there} um)",
                f"Give one of the bin sizes there are: {there}")
    return None


def locate_visium_hd_files(path: str | Path, bin_size_um: int = DEFAULT_BIN_UM) -> dict[str, Path | None]:
    """Find and check the files one bin size of a Visium HD output needs.

    Returns a dict with ``outs``, ``bin`` (the ``square_XXXum`` folder), ``counts``, ``positions``
    (``tissue_positions.parquet``), ``scalefactors`` (the bin's ``scalefactors_json.json``) and
    ``feature_slice``.

    Raises
    ------
    MissingVisiumFileError
        The folder, the bin size or one of its files is missing (the message lists the bin sizes there are).
    """
    outs = Path(path)
    if not outs.exists():
        raise MissingVisiumFileError("Visium HD folder not found", outs,
                                     fix="Give the path of Space Ranger's outs/ folder of this sample")
    if not _bin_folders(outs) and (outs / "outs").is_dir():
        outs = outs / "outs"
    bins = _bin_folders(outs)
    if not bins:
        raise MissingVisiumFileError(
            "No binned_outputs/square_XXXum folder: this is not a Visium HD output", outs,
            fix="Point to the outs/ folder of a Visium HD Space Ranger run (it holds binned_outputs/)")
    size = int(bin_size_um) if float(bin_size_um) == int(bin_size_um) else -1
    if size not in bins:
        raise MissingVisiumFileError(
            f"No {bin_size_um} um bins in this Visium HD output (it has {', '.join(f'{b} um' for b in bins)})",
            outs, fix=f"Choose one of the bin sizes there are, e.g. bin_size_um={max(bins)}")
    folder = bins[size]
    files: dict[str, Path | None] = {
        "outs": outs, "bin": folder, "counts": folder / _COUNTS,
        "positions": folder / "spatial" / "tissue_positions.parquet",
        "scalefactors": folder / "spatial" / "scalefactors_json.json",
        "feature_slice": next(iter(sorted(outs.glob(f"*{_FEATURE_SLICE}"))), None),
    }
    for key in ("counts", "positions", "scalefactors"):
        if not Path(files[key]).is_file():  # type: ignore[arg-type]
            raise MissingVisiumFileError(
                f"No {Path(files[key]).relative_to(outs)} in the Visium HD output", outs,  # type: ignore[arg-type]
                fix="Copy the complete binned_outputs/ folder of the Space Ranger output")
    if files["feature_slice"] is None:
        raise MissingVisiumFileError(
            f"No {_FEATURE_SLICE} in the Visium HD output (spatialdata-io reads the slide layout from it)", outs,
            fix="Copy the complete outs/ folder of the Space Ranger output")
    return files


def read_visium_hd(path: str | Path, *, sample: str, patient: str | None = None,
                   bin_size_um: int = DEFAULT_BIN_UM):
    """Read one bin size of a sample's Visium HD ``outs/`` folder as SpatialData in micrometres.

    Parameters
    ----------
    path
        Space Ranger ``outs/`` folder of a Visium HD run (or the run folder containing it): needs
        ``feature_slice.h5``, a scale-factor file and ``binned_outputs/square_XXXum/`` with
        ``filtered_feature_bc_matrix.h5`` and ``spatial/{tissue_positions.parquet, scalefactors_json.json}``;
        ``spatial/tissue_{hires,lowres}_image.png`` are read when present.
    sample, patient
        As for :func:`spatialmix.io.read_visium`.
    bin_size_um
        Which bins become the sample's spots (2, 8 or 16 um in Space Ranger's outputs; default 16).

    Returns
    -------
    SpatialData like :func:`spatialmix.io.read_visium`'s: shapes ``{sample}_spots`` (the in-tissue bins as
    points of radius ``bin_size_um / 2``, drawn as squares), table ``rna`` (raw counts, CSR, with
    ``array_row`` / ``array_col`` of the bin grid), images ``{sample}_visium_hires`` / ``_lowres``, coordinate
    system ``sample`` in um (Space Ranger's ``microns_per_pixel``).
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel
    from spatialdata.transformations import Identity, Scale
    from spatialdata_io import visium_hd as sdio_visium_hd

    from spatialmix.io._spots import _rgb, spot_table

    if not np.isfinite(float(bin_size_um)) or float(bin_size_um) <= 0:
        raise ParameterError(f"bin_size_um must be a positive bin size in um (2, 8 or 16), got {bin_size_um!r}")
    sample = str(sample)
    patient = sample if patient is None or str(patient) == "" else str(patient)
    files = locate_visium_hd_files(path, bin_size_um)
    outs = files["outs"]
    size = int(bin_size_um)
    try:
        scalefactors = json.loads(Path(files["scalefactors"]).read_text())  # type: ignore[arg-type]
        mpp = float(scalefactors["microns_per_pixel"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VisiumFormatError(
            f"Cannot read microns_per_pixel from the bins' scale factors ({type(err).__name__}: {err})",
            files["scalefactors"], fix="Use the scalefactors_json.json Space Ranger wrote for this bin size") from err
    if not np.isfinite(mpp) or mpp <= 0:
        raise VisiumFormatError(f"microns_per_pixel is {mpp}", files["scalefactors"],
                                fix="Use the scalefactors_json.json Space Ranger wrote for this bin size")
    prefix = Path(files["feature_slice"]).name[: -len(_FEATURE_SLICE)]  # type: ignore[arg-type]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Variable names are not unique")
            warnings.filterwarnings("ignore", message="No full resolution image found")
            warnings.filterwarnings("ignore", message="Converting `region_key")
            warnings.filterwarnings("ignore", category=FutureWarning)
            raw = sdio_visium_hd(outs, dataset_id=prefix.rstrip("_") or None, bin_size=size,
                                 load_segmentations_only=False, bins_as_squares=False,
                                 filtered_counts_file=True)
    except Exception as err:  # h5 / parquet / json content spatialdata-io cannot parse
        raise VisiumFormatError(
            f"spatialdata-io could not read the Visium HD folder ({type(err).__name__}: {err})", outs,
            fix="Check that the folder is an unmodified Space Ranger (Visium HD) output") from err
    key = f"square_{size:03d}um"
    if key not in raw.tables:
        raise VisiumFormatError(f"spatialdata-io read no table for {size} um bins (tables: {sorted(raw.tables)})",
                                outs, fix="Check the binned_outputs/ folder of this bin size")
    table = raw.tables[key]
    n = table.n_obs
    if n == 0:
        raise VisiumFormatError(f"The {size} um filtered matrix has no bins", files["counts"],
                                fix="Check that Space Ranger found tissue on this slide")
    coords_um = np.asarray(table.obsm["spatial"], dtype=np.float64) * mpp  # (x, y) full-res pixels -> um
    if not np.isfinite(coords_um).all():
        bad = int((~np.isfinite(coords_um).all(axis=1)).sum())
        raise VisiumFormatError(f"{bad} of {n} bins have no position in tissue_positions.parquet",
                                files["positions"], fix="Use the positions file of the same Space Ranger run")
    region = f"{sample}_spots"
    rna = spot_table(table, sample=sample, patient=patient, coords_um=coords_um, copy_counts=False)
    half = size / 2.0
    spots = ShapesModel.parse(coords_um, geometry=0, radius=np.full(n, half),
                              index=pd.Index(np.arange(n, dtype=np.int64), name="spot_id"),
                              transformations={sample: Identity()})
    spots.index.name = "spot_id"

    images = {}
    for which in ("hires", "lowres"):
        el = next((v for k, v in raw.images.items() if k.endswith(f"{which}_image")), None)
        factor = scalefactors.get(f"tissue_{which}_scalef")
        if el is None or not factor:
            continue
        s = mpp / float(factor)  # image pixel -> full-res pixel -> um
        images[f"{sample}_visium_{which}"] = Image2DModel.parse(
            _rgb(el), dims=("c", "y", "x"), c_coords=["r", "g", "b"],
            transformations={sample: Scale([s, s], axes=("y", "x"))})

    # the capture area: every bin Space Ranger lists (in and out of tissue), as read_visium does for spots
    try:
        listed = pd.read_parquet(files["positions"], columns=["pxl_row_in_fullres", "pxl_col_in_fullres"])
        xs, ys = listed["pxl_col_in_fullres"].to_numpy() * mpp, listed["pxl_row_in_fullres"].to_numpy() * mpp
        n_listed = len(listed)
    except Exception:  # noqa: BLE001 - spatialdata-io read it already; fall back on the in-tissue bins
        xs, ys, n_listed = coords_um[:, 0], coords_um[:, 1], n
    capture = [float(xs.min() - half), float(ys.min() - half), float(xs.max() + half), float(ys.max() + half)]
    meta: dict[str, Any] = {
        "patient": patient,
        "visium": {
            "platform": "visium_hd",
            "path": str(Path(outs).resolve()),
            "scalefactors": scalefactors,
            "mpp_fullres": mpp,
            "capture_area_um": capture,
            "n_spots": int(n),
            "n_spots_listed": int(n_listed),
            "spot_pitch_um": float(size),
            "bin_size_um": float(size),
            "spot_shape": "square",
        },
    }
    attrs = {k: v for k, v in raw.attrs.items() if k != "spatialmix"}
    attrs["spatialmix"] = {"samples": {sample: meta}}
    return SpatialData(images=images, shapes={region: spots}, tables={"rna": rna}, attrs=attrs)
