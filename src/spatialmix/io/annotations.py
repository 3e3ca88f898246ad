"""Pathologist annotations: Loupe Browser CSV exports (``Barcode,<Name>``) and writing them onto the spots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spatialmix.errors import AnnotationError, MissingAnnotationFileError, ProjectError


def _few(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (", ..." if len(items) > n else "")


def read_annotations(path: str | Path, *, column: str | None = None) -> pd.Series:
    """Read a Loupe Browser export (``Barcode,<Name>``, comma- or tab-separated) as a categorical Series.

    Parameters
    ----------
    path
        CSV file whose first column holds the spot barcodes.
    column
        Which label column to use (default: the second column).

    Returns
    -------
    pandas.Series indexed by barcode (index name ``barcode``), named after the column, categorical; empty
    labels are missing (NaN). ``series.attrs["path"]`` holds the file path.

    Raises
    ------
    MissingAnnotationFileError, AnnotationError
        Missing file, fewer than two columns, unknown ``column``, missing or duplicated barcodes.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingAnnotationFileError("Annotation file not found", path,
                                         fix="Give the CSV exported from Loupe Browser (Barcode,<Name>)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if table.shape[1] == 1 and "\t" in str(table.columns[0]):
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise AnnotationError(f"Cannot parse the annotation file ({err})", path,
                              fix="Export the annotation from Loupe Browser as CSV: Barcode,<Name>") from err
    table.columns = [str(c).strip() for c in table.columns]
    if table.shape[1] < 2:
        raise AnnotationError(
            f"Expected at least two columns (Barcode,<Name>), found {table.shape[1]}: {list(table.columns)}", path,
            fix="Export the annotation from Loupe Browser as CSV: Barcode,<Name>")
    if len(table) == 0:
        raise AnnotationError("The annotation file lists no spots (only its header line)", path,
                              fix="Export the annotation again from Loupe Browser (Barcode,<Name>, one row per spot)")
    if column is None:
        column = table.columns[1]
    elif column not in table.columns[1:]:
        raise AnnotationError(f"No column {column!r}; the file has {list(table.columns[1:])}", path,
                              fix="Pass one of these as column=")
    barcodes = table.iloc[:, 0].str.strip()
    if (barcodes == "").any():
        rows = (np.flatnonzero((barcodes == "").to_numpy()) + 2).tolist()
        raise AnnotationError(f"{len(rows)} row(s) have no barcode (lines {_few(rows)})", path,
                              fix="Every row needs a spot barcode in the first column")
    dup = barcodes[barcodes.duplicated()].unique()
    if len(dup):
        raise AnnotationError(f"{len(dup)} barcode(s) are listed more than once (e.g. {_few(dup)})", path,
                              fix="Each spot may carry one label; remove the duplicated rows")
    labels = table[column].str.strip().replace("", np.nan)
    series = pd.Series(pd.Categorical(labels), index=pd.Index(barcodes.to_numpy(), name="barcode"), name=column)
    series.attrs["path"] = str(path)
    return series


def add_annotations(
    sdata,
    sample: str,
    labels: pd.Series | str | Path,
    *,
    table: str = "rna",
    key: str = "pathologist",
    path: str | Path | None = None,
) -> pd.Series:
    """Write a sample's labels into ``sdata.tables[table].obs[key]``, matching ``obs["barcode"]``.

    Parameters
    ----------
    sdata
        SpatialData holding ``table`` with ``obs["sample"]`` and ``obs["barcode"]``.
    sample
        The sample the labels belong to; only its rows are changed.
    labels
        Series indexed by barcode (from :func:`read_annotations`), or the path of a Loupe CSV.
    table
        Table to annotate.
    key
        ``obs`` column receiving the labels (categorical over all samples).
    path
        File the labels came from, for error messages (default: ``labels.attrs["path"]`` when present).

    Returns
    -------
    The new ``obs[key]`` column. Spots of ``sample`` absent from ``labels`` are unlabelled (NaN); other samples
    keep their labels.

    Raises
    ------
    AnnotationError
        Barcodes in ``labels`` that are not spots of ``sample`` (nothing is written then).
    ProjectError
        ``table`` is missing or lacks ``sample`` / ``barcode`` columns, or ``sample`` has no rows in it.
    """
    if isinstance(labels, (str, Path)):
        path = labels if path is None else path
        labels = read_annotations(labels)
    if path is None:
        path = labels.attrs.get("path")
    if table not in sdata.tables:
        raise ProjectError(f"No table {table!r} to annotate; tables are {list(sdata.tables)}. "
                           "Read the Visium data first (spatialmix.io.read_visium)")
    adata = sdata.tables[table]
    for col in ("sample", "barcode"):
        if col not in adata.obs:
            raise ProjectError(f"Table {table!r} has no obs[{col!r}] column, so spots cannot be matched to "
                               "barcodes. Build it with spatialmix.io.read_visium")
    rows = (adata.obs["sample"].astype(str) == str(sample)).to_numpy()
    if not rows.any():
        known = sorted(adata.obs["sample"].astype(str).unique())
        raise ProjectError(f"Sample {sample!r} has no spots in table {table!r}; samples are {known}")
    spot_barcodes = pd.Index(adata.obs["barcode"].astype(str).to_numpy()[rows])
    labels = pd.Series(labels)
    if not labels.notna().any():  # never replace a sample's labels with nothing
        had = int(adata.obs[key].iloc[np.flatnonzero(rows)].notna().sum()) if key in adata.obs else 0
        raise AnnotationError(
            f"The annotation for sample {sample!r} holds no label ({len(labels)} rows, all empty); nothing was "
            f"written" + (f" and the {had} existing {key!r} labels of the sample are kept" if had else ""), path,
            fix="Check that the file is the complete Loupe Browser export (Barcode,<Name>) for this sample")
    labels.index = labels.index.astype(str)
    unknown = labels.index.difference(spot_barcodes)
    if len(unknown):
        raise AnnotationError(
            f"{len(unknown)} of {len(labels)} annotated barcodes are not spots of sample {sample!r} "
            f"(e.g. {_few(unknown)})", path,
            fix="Check that the annotation file belongs to this sample (and that the Visium folder is the right one)",
        )
    new_values = labels.reindex(spot_barcodes).astype(object).to_numpy()
    if key in adata.obs:
        current = adata.obs[key]
        values = current.astype(object).to_numpy().copy()
        old_cats = list(current.cat.categories) if isinstance(current.dtype, pd.CategoricalDtype) else \
            [v for v in pd.unique(current.dropna())]
    else:
        values = np.full(adata.n_obs, np.nan, dtype=object)
        old_cats = []
    values[rows] = new_values
    new_cats = list(labels.cat.categories) if isinstance(labels.dtype, pd.CategoricalDtype) else \
        [v for v in pd.unique(labels.dropna())]
    present = set(pd.Series(values).dropna().tolist())
    categories = [c for c in dict.fromkeys(old_cats + new_cats) if c in present]
    column = pd.Categorical(values, categories=categories)
    adata.obs[key] = column
    return adata.obs[key]
