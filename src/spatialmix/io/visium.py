"""Read a 10x Visium Space Ranger ``outs/`` folder into SpatialData, following docs/conventions.md.

The actual parsing is done by :func:`spatialdata_io.visium`; this module finds the files (also the variants
found in the wild: ``tissue_positions_list.csv`` without header, gzip-compressed files, a library-id prefix on
the count matrix), checks that they are consistent, and renames / rescales the result to micrometres.

Why one file of about 430 lines: it is one reader. :func:`read_visium` runs the steps above it in order on the
same located ``files``, positions table and scale factors (find, check consistency, stage for spatialdata-io,
check the spots, rescale to micrometres); the spot table shared with Visium HD is already in ``_spots``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.errors import MissingVisiumFileError, VisiumFormatError
from spatialmix.io._spots import _rgb, spot_table  # noqa: F401 - spot_table re-exported

#: Visium spots are 55 um wide.
SPOT_DIAMETER_UM = 55.0
SPOT_RADIUS_UM = SPOT_DIAMETER_UM / 2
#: Centre-to-centre distance of neighbouring Visium spots.
SPOT_PITCH_UM = 100.0

_COUNTS = "filtered_feature_bc_matrix.h5"
_POSITIONS = ("tissue_positions.csv", "tissue_positions_list.csv")
_SCALEFACTORS = "scalefactors_json.json"
_IMAGES = {"hires": "tissue_hires_image.png", "lowres": "tissue_lowres_image.png"}
_POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz`` when one exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_counts(outs: Path) -> Path | None:
    found = _find(outs, _COUNTS)
    if found is not None:
        return found
    # Space Ranger run with a library id prefix: "<id>_filtered_feature_bc_matrix.h5" (spatialdata-io's convention)
    prefixed = sorted(p for p in outs.glob(f"*_{_COUNTS}*") if p.name.endswith((_COUNTS, f"{_COUNTS}.gz")))
    return prefixed[0] if prefixed else None


def locate_visium_files(path: str | Path) -> dict[str, Path | None]:
    """Find the files of a Space Ranger output folder.

    Parameters
    ----------
    path
        The ``outs/`` folder (or the Space Ranger run folder that contains ``outs/``).

    Returns
    -------
    dict with keys ``outs``, ``counts``, ``positions``, ``scalefactors``, ``hires``, ``lowres`` (images may be
    ``None``). Files may be gzip-compressed (``.gz``).

    Raises
    ------
    MissingVisiumFileError
        When the folder, the count matrix, the spot positions or the scale factors are missing.
    """
    outs = Path(path)
    if not outs.exists():
        raise MissingVisiumFileError(
            "Visium folder not found", outs, fix="Give the path of Space Ranger's outs/ folder of this sample"
        )
    if not outs.is_dir():
        raise VisiumFormatError(
            "Expected a Space Ranger outs/ folder, got a file", outs,
            fix="Give the folder that contains filtered_feature_bc_matrix.h5 and spatial/",
        )
    if _find_counts(outs) is None and (outs / "outs").is_dir():
        outs = outs / "outs"
    counts = _find_counts(outs)
    if counts is None:
        raw = " (only raw_feature_bc_matrix.h5 is there; the reader needs the filtered matrix)" if _find(
            outs, "raw_feature_bc_matrix.h5") else ""
        raise MissingVisiumFileError(
            f"No {_COUNTS} in the Visium folder{raw}", outs,
            fix="Point to Space Ranger's outs/ folder, which holds filtered_feature_bc_matrix.h5 and spatial/",
        )
    spatial = outs / "spatial"
    positions = next((p for p in (_find(spatial, n) for n in _POSITIONS) if p is not None), None)
    if positions is None:
        raise MissingVisiumFileError(
            "No spot positions (spatial/tissue_positions.csv or spatial/tissue_positions_list.csv)", outs,
            fix="Copy the complete spatial/ folder of the Space Ranger output next to the count matrix",
        )
    scalefactors = _find(spatial, _SCALEFACTORS)
    if scalefactors is None:
        raise MissingVisiumFileError(
            f"No spatial/{_SCALEFACTORS}", outs,
            fix="Copy the complete spatial/ folder of the Space Ranger output next to the count matrix",
        )
    files: dict[str, Path | None] = {"outs": outs, "counts": counts, "positions": positions,
                                     "scalefactors": scalefactors}
    for key, name in _IMAGES.items():
        files[key] = _find(spatial, name)
    return files


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def read_tissue_positions(path: str | Path) -> pd.DataFrame:
    """Read a Space Ranger tissue positions file (with or without header, plain or gzip) indexed by barcode."""
    path = Path(path)
    try:
        # pandas decompresses .gz itself
        table = pd.read_csv(path, header=None, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise VisiumFormatError(f"Cannot parse the spot positions ({err})", path,
                                fix="The file must be Space Ranger's tissue_positions CSV") from err
    if len(table) and "in_tissue" in table.iloc[0].tolist():  # Space Ranger >= 2.0 writes a header
        table = table.iloc[1:]
    if table.shape[1] != 6 or len(table) == 0:
        raise VisiumFormatError(
            f"The spot positions have {table.shape[1]} columns and {len(table)} rows; expected 6 columns "
            "(barcode, in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres)", path,
            fix="Use the tissue_positions file written by Space Ranger, unmodified",
        )
    table.columns = _POSITION_COLUMNS
    try:
        for col in _POSITION_COLUMNS[1:4]:
            table[col] = table[col].astype(np.int64)
        for col in _POSITION_COLUMNS[4:]:
            table[col] = table[col].astype(np.float64)
    except ValueError as err:
        raise VisiumFormatError(f"Non-numeric spot positions ({err})", path,
                                fix="Use the tissue_positions file written by Space Ranger, unmodified") from err
    return table.set_index("barcode")


def _matrix_barcodes(path: Path, shown: Path) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["matrix"] if "matrix" in f else f[next(iter(f.keys()))]  # v3 / v2 (per genome) layout
            return np.asarray([b.decode() if isinstance(b, bytes) else str(b) for b in group["barcodes"][:]])
    except (OSError, KeyError, StopIteration) as err:
        raise VisiumFormatError(
            f"Cannot read the barcodes of the count matrix ({type(err).__name__}: {err})", shown,
            fix="The file must be a 10x Genomics feature-barcode matrix in HDF5 format (Space Ranger output)",
        ) from err


def _few(items, n: int = 5) -> str:
    items = list(items)
    text = ", ".join(map(str, items[:n]))
    return text + (", ..." if len(items) > n else "")


def _check_consistency(files: dict[str, Path | None], positions: pd.DataFrame, barcodes: np.ndarray) -> None:
    dup_pos = positions.index[positions.index.duplicated()].unique()
    if len(dup_pos):
        raise VisiumFormatError(
            f"{len(dup_pos)} barcode(s) appear more than once in the spot positions (e.g. {_few(dup_pos)})",
            files["positions"], fix="Each spot must be listed once; use the tissue_positions file written by "
            "Space Ranger for this sample",
        )
    dup = pd.Index(barcodes)
    dup = dup[dup.duplicated()].unique()
    if len(dup):
        raise VisiumFormatError(
            f"{len(dup)} barcode(s) appear more than once in the count matrix (e.g. {_few(dup)})",
            files["counts"], fix="Use the filtered_feature_bc_matrix.h5 written by Space Ranger for this sample",
        )
    missing = pd.Index(barcodes).difference(positions.index)
    if len(missing):
        raise VisiumFormatError(
            f"{len(missing)} of {len(barcodes)} barcodes of the count matrix {files['counts']} have no spot "
            f"position (e.g. {_few(missing)})", files["positions"],
            fix="The spot positions and the count matrix come from different samples or Space Ranger runs; "
            "use the spatial/ folder of the same run",
        )


#: matrix spots out of tissue or outside the image: a warning above this fraction, an error above the next
WARN_MISPLACED_FRACTION = 0.01
REFUSE_MISPLACED_FRACTION = 0.5


def _check_spots_in_tissue(files: dict[str, Path | None], positions: pd.DataFrame, barcodes: np.ndarray,
                           images: dict[str, np.ndarray], scalefactors: dict[str, float]) -> None:
    """The count matrix's spots must be in tissue (``in_tissue = 1``) and inside the tissue images.

    Space Ranger's filtered matrix holds the in-tissue spots only, so matrix spots marked out of tissue, or lying
    outside the image, mean that the positions belong to another sample or run: a few are warned about, most
    are refused (the positions would put every value in the wrong place).
    """
    where = files["positions"]
    if not (positions["in_tissue"] == 1).any():
        raise VisiumFormatError(
            f"Every one of the {len(positions)} spots has in_tissue = 0, so no spot lies on the tissue", where,
            fix="Use the tissue_positions file Space Ranger wrote for this sample (it marks the spots under the "
            "tissue with in_tissue = 1)")
    pos = positions.loc[barcodes]
    problems = []
    out_of_tissue = (pos["in_tissue"] != 1).to_numpy()
    if out_of_tissue.any():
        problems.append((out_of_tissue, "are marked out of tissue (in_tissue = 0)"))
    for key, arr in images.items():
        scale = scalefactors[f"tissue_{key}_scalef"]
        h, w = arr.shape[1] / scale, arr.shape[2] / scale  # image extent in full-resolution pixels
        row, col = pos["pxl_row_in_fullres"].to_numpy(), pos["pxl_col_in_fullres"].to_numpy()
        outside = (row < 0) | (col < 0) | (row >= h) | (col >= w)
        if outside.any():
            name = files[key].name if files.get(key) is not None else key  # type: ignore[union-attr]
            problems.append((outside, f"lie outside the {name} image ({w:.0f} x {h:.0f} full-resolution px)"))
    n = len(barcodes)
    for bad, what in problems:
        frac = bad.sum() / n
        text = (f"{int(bad.sum())} of {n} spots of the count matrix ({frac:.0%}) {what} according to "
                f"{Path(where).name} (e.g. {_few(barcodes[bad])})")
        fix = (f"The spot positions and the count matrix {Path(files['counts']).name} probably come from different "
               "samples or Space Ranger runs; use the spatial/ folder of the same run")
        if frac > REFUSE_MISPLACED_FRACTION:
            raise VisiumFormatError(text, where, fix=fix)
        if frac > WARN_MISPLACED_FRACTION:
            warnings.warn(f"{text} ({where}). {fix}", UserWarning, stacklevel=3)


def _read_scalefactors(path: Path) -> dict[str, float]:
    try:
        with _open_text(path) as fh:
            sf = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise VisiumFormatError(f"Cannot parse the scale factors ({err})", path,
                                fix="Use the scalefactors_json.json written by Space Ranger") from err
    needed = ("spot_diameter_fullres", "tissue_hires_scalef", "tissue_lowres_scalef")
    missing = [k for k in needed if k not in sf]
    if missing:
        raise VisiumFormatError(f"The scale factors lack {missing}", path,
                                fix="Use the scalefactors_json.json written by Space Ranger")
    bad = [k for k in needed if not (isinstance(sf[k], (int, float)) and np.isfinite(sf[k]) and sf[k] > 0)]
    if bad:
        raise VisiumFormatError(f"The scale factors {bad} are not positive numbers", path,
                                fix="Use the scalefactors_json.json written by Space Ranger")
    return {k: float(v) for k, v in sf.items() if isinstance(v, (int, float))}


def _stage(files: dict[str, Path | None], folder: Path) -> Path:
    """Lay the files out as spatialdata-io expects them (decompressing ``.gz``); returns the staged folder."""
    (folder / "spatial").mkdir(parents=True)
    targets = {
        "counts": folder / _COUNTS,
        "positions": folder / "spatial" / files["positions"].name.removesuffix(".gz"),  # type: ignore[union-attr]
        "scalefactors": folder / "spatial" / _SCALEFACTORS,
        "hires": folder / "spatial" / _IMAGES["hires"],
        "lowres": folder / "spatial" / _IMAGES["lowres"],
    }
    for key, target in targets.items():
        src = files[key]
        if src is None:
            continue
        if src.suffix == ".gz":
            with gzip.open(src, "rb") as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            try:
                os.symlink(src.resolve(), target)
            except OSError:  # no symlinks (e.g. some Windows setups)
                shutil.copyfile(src, target)
    return folder


def fullres_microns_per_pixel(positions: pd.DataFrame, scalefactors: dict) -> float:
    """Micrometres per full-resolution pixel of a Visium slide.

    Visium spots sit on a hexagonal lattice whose neighbours are exactly 100 um apart (the slide's hardware
    geometry), so the scale is fitted on the positions of all listed spots: ``100 / pitch_px``. The scale
    factors' ``spot_diameter_fullres`` is not a reliable ruler: 10x defines it as the size of a *theoretical*
    65 um spot, and on real outputs it disagrees with the lattice (Seurat's test slide: 96.4 px per "spot" vs a
    137.7 px pitch, i.e. 55 / diameter would make spots 79 um apart). It is used only when the positions cannot
    give a pitch (fewer than 3 spots or a single array column): ``65 / spot_diameter_fullres``.
    """
    pitch_px = spot_pitch_um(positions, 1.0)
    if pitch_px is not None and np.isfinite(pitch_px) and pitch_px > 0:
        return SPOT_PITCH_UM / pitch_px
    return 65.0 / float(scalefactors["spot_diameter_fullres"])


def spot_pitch_um(positions: pd.DataFrame, mpp: float) -> float | None:
    """Centre-to-centre distance of neighbouring spots (2 array columns apart) in um, fitted on all spots.

    Visium spots are 100 um apart; a different value means ``spot_diameter_fullres`` does not describe a 55 um
    spot in this Space Ranger output (then every um in this sample is off by the same factor).
    """
    if len(positions) < 3 or positions["array_col"].nunique() < 2:
        return None
    design = np.c_[positions["array_row"], positions["array_col"], np.ones(len(positions))]
    per_col = []
    for col in ("pxl_col_in_fullres", "pxl_row_in_fullres"):
        coef = np.linalg.lstsq(design, positions[col].to_numpy(), rcond=None)[0]
        per_col.append(coef[1])
    return float(2 * np.hypot(*per_col) * mpp)


def read_visium(path: str | Path, *, sample: str, patient: str | None = None, bin_size_um: int | None = None):
    """Read one sample's Space Ranger ``outs/`` folder as SpatialData in micrometres.

    A Visium HD output (``binned_outputs/square_XXXum/``) is read by :func:`spatialmix.io.read_visium_hd`
    with ``bin_size_um`` (default 16 um bins); ``bin_size_um`` is an error for a Visium (55 um spot) folder.

    Parameters
    ----------
    path
        Space Ranger ``outs/`` folder (or the run folder containing it). Needs ``filtered_feature_bc_matrix.h5``,
        ``spatial/tissue_positions.csv`` (or ``tissue_positions_list.csv``) and
        ``spatial/scalefactors_json.json``; the hires / lowres PNGs are read when present. Any of these may be
        gzip-compressed (``.gz``).
    sample
        Sample name; names the coordinate system and the elements.
    patient
        Patient the sample comes from (default: the sample name).

    Returns
    -------
    SpatialData with shapes ``{sample}_spots`` (in-tissue spots as circles of radius 27.5 um, index
    ``spot_id``), images ``{sample}_visium_hires`` / ``{sample}_visium_lowres`` (when present) and table
    ``rna`` (raw counts in ``X`` and ``layers["counts"]``), all in the coordinate system ``sample``
    (micrometres, ``mpp_fullres = 100 um / fitted spot pitch``, see :func:`fullres_microns_per_pixel`). Metadata in
    ``attrs["spatialmix"]["samples"][sample]``.

    Raises
    ------
    MissingVisiumFileError, VisiumFormatError
        Missing files, unparsable files, or spot positions that do not match the count matrix (barcodes
        without a position; every ``in_tissue`` 0; more than half of the matrix spots out of tissue or outside
        the image, which a warning reports above 1%).
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel
    from spatialdata.transformations import Identity, Scale
    from spatialdata_io import visium as sdio_visium

    from spatialmix.io.visium_hd import DEFAULT_BIN_UM, is_visium_hd, read_visium_hd

    if is_visium_hd(path):
        return read_visium_hd(path, sample=sample, patient=patient,
                              bin_size_um=DEFAULT_BIN_UM if bin_size_um is None else bin_size_um)
    if bin_size_um is not None:
        from spatialmix.errors import ParameterError

        raise ParameterError(f"bin_size_um={bin_size_um} is for Visium HD outputs, but {path} is a Visium (55 um "
                             "spot) folder without binned_outputs/; leave bin_size_um out")
    sample = str(sample)
    patient = sample if patient is None or str(patient) == "" else str(patient)
    files = locate_visium_files(path)
    positions = read_tissue_positions(files["positions"])  # type: ignore[arg-type]
    scalefactors = _read_scalefactors(files["scalefactors"])  # type: ignore[arg-type]
    mpp = fullres_microns_per_pixel(positions, scalefactors)

    with tempfile.TemporaryDirectory(prefix="spatialmix-visium-") as tmp:
        try:
            staged = _stage(files, Path(tmp) / "outs")
        except (OSError, EOFError) as err:  # e.g. a corrupt .gz
            raise VisiumFormatError(f"Cannot read the Visium files ({type(err).__name__}: {err})", files["outs"],
                                    fix="Check that the (decompressed) Space Ranger files are complete") from err
        barcodes = _matrix_barcodes(staged / _COUNTS, files["counts"])  # type: ignore[arg-type]
        _check_consistency(files, positions, barcodes)
        try:
            with warnings.catch_warnings():  # duplicated gene symbols are made unique below; region is ours
                warnings.filterwarnings("ignore", message="Variable names are not unique")
                warnings.filterwarnings("ignore", message="Converting `region_key")
                raw = sdio_visium(staged, dataset_id=sample)
        except Exception as err:  # h5 / csv content spatialdata-io cannot parse
            raise VisiumFormatError(
                f"spatialdata-io could not read the Visium folder ({type(err).__name__}: {err})", files["outs"],
                fix="Check that the folder is an unmodified Space Ranger output",
            ) from err
        images_raw = {key: raw.images.get(f"{sample}_{key}_image") for key in _IMAGES}
        images_np = {key: _rgb(img) for key, img in images_raw.items() if img is not None}
    _check_spots_in_tissue(files, positions, barcodes, images_np, scalefactors)

    table = raw.tables["table"]
    n = table.n_obs
    coords_px = np.asarray(table.obsm["spatial"], dtype=np.float64)  # (x, y) = (pxl_col, pxl_row) in full res
    coords_um = coords_px * mpp
    spot_id = np.arange(n, dtype=np.int64)
    region = f"{sample}_spots"
    rna = spot_table(table, sample=sample, patient=patient, coords_um=coords_um)

    spots = ShapesModel.parse(
        coords_um, geometry=0, radius=np.full(n, SPOT_RADIUS_UM), index=pd.Index(spot_id, name="spot_id"),
        transformations={sample: Identity()},
    )
    spots.index.name = "spot_id"

    images = {}
    for key, arr in images_np.items():
        s = mpp / scalefactors[f"tissue_{key}_scalef"]  # image pixel -> full-res pixel -> um
        images[f"{sample}_visium_{key}"] = Image2DModel.parse(
            arr, dims=("c", "y", "x"), c_coords=["r", "g", "b"],
            transformations={sample: Scale([s, s], axes=("y", "x"))},
        )

    pitch = spot_pitch_um(positions, mpp)
    xs = positions["pxl_col_in_fullres"].to_numpy() * mpp
    ys = positions["pxl_row_in_fullres"].to_numpy() * mpp
    capture = [float(xs.min() - SPOT_RADIUS_UM), float(ys.min() - SPOT_RADIUS_UM),
               float(xs.max() + SPOT_RADIUS_UM), float(ys.max() + SPOT_RADIUS_UM)]
    meta: dict[str, Any] = {
        "patient": patient,
        "visium": {
            "path": str(Path(files["outs"]).resolve()),
            "scalefactors": scalefactors,
            "mpp_fullres": float(mpp),
            "capture_area_um": capture,
            "n_spots": int(n),
            "n_spots_listed": int(len(positions)),
            "spot_pitch_um": pitch,
        },
    }
    attrs = {k: v for k, v in raw.attrs.items() if k != "spatialmix"}
    attrs["spatialmix"] = {"samples": {sample: meta}}
    return SpatialData(images=images, shapes={region: spots}, tables={"rna": rna}, attrs=attrs)
