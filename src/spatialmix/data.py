"""Paired per-row matrices of every modality, ready for the models.

:class:`MultiModalData` holds one matrix per modality (rows aligned), a mask per modality (False where the row
has no data for it, e.g. a spot without MSI coverage, or a cell measured in RNA only), the sample / batch /
annotation columns, the feature names, and how each modality was preprocessed (with the raw counts kept for
count modalities). Counts stay sparse until a model asks for dense tensors. It is built

- from a spatial project (:meth:`MultiModalData.from_spatialdata`): the modality tables ``rna``, ``msi``,
  ``morphology`` annotate the same spots in the same order. RNA is total-count normalised + log1p with the raw
  counts kept; MSI spot intensities (TIC-normalised per pixel) are log1p transformed; morphology features are
  standardised (z-scores computed on covered spots);
- from non-spatial multi-omics (CITE-seq, multiome, ...): one AnnData per modality
  (:meth:`MultiModalData.from_anndata`), a MuData (:meth:`MultiModalData.from_mudata`), or files
  (:func:`read_multimodal`: one ``.h5mu``, or ``.h5ad`` files). Rows are matched by ``obs_names`` and each
  modality's preprocessing is declared (``"counts"``, ``"protein"`` or ``"normalized"``), never guessed from
  its name.

The AnnData / MuData input's checks, row matching and preprocessing live in ``spatialmix._omics_input`` (plain
functions; split out in issue 18); the preprocessing kinds are re-exported here. Why one file of about 600 lines
still: :class:`MultiModalData`'s three constructors share ``_from_tables`` and the class's invariants (rows
aligned, one mask per modality, raw counts beside the model input), and ``read_multimodal`` /
``as_multimodal`` only open files into those constructors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmix.errors import InputFileError, MissingFileError, ParameterError, ProjectError
from spatialmix._omics_input import (  # noqa: F401 - PREPROCESSING_KINDS re-exported
    _ACCEPTED_FORMS, _KIND_SHORT, _ZSCORE_TEXT, PREPROCESSING_KINDS, _check_adatas,
    _check_values, _declared_kinds, _declared_zscore, _expand, _is_anndata, _match_rows, _matrix, _obs_column,
    _preprocess, _split_paths, _zscore,
)

COVERED_KEYS = {"msi": "msi_covered", "morphology": "he_covered"}



@dataclass
class MultiModalData:
    """Per-row (spot or cell) inputs of every modality for all samples.

    Attributes
    ----------
    modalities
        Modality names in model order.
    X
        ``{modality: (n_obs, n_features) float32}`` model inputs (CSR for sparse modalities). Rows where the
        modality was not measured (``mask`` False) are 0 and must be ignored.
    mask
        ``{modality: bool (n_obs,)}``: True where the row has data for that modality.
    var_names
        ``{modality: pandas.Index}`` feature names.
    obs
        Row table. Spatial projects: ``sample``, ``patient``, ``batch``, the annotation column, ``barcode``,
        ``spot_id``. AnnData / MuData input: ``sample``, ``batch`` and the label column, indexed by the cells'
        ``obs_names``.
    counts
        Raw RNA counts (CSR) when ``rna`` is a modality of kind ``"counts"`` (the same matrix as ``raw["rna"]``).
    batch_key
        ``obs`` column holding the batches (``"batch"`` for AnnData / MuData input).
    annotation_key
        ``obs`` column holding the labels (``None`` for unlabelled data; NaN marks an unlabelled row).
    transforms
        ``{modality: text}``: what was done to each modality, in words.
    preprocessing
        ``{modality: kind}``: how each modality was turned into the model input, declared by whoever built the
        data: ``"counts"`` (total-count normalised + log1p; raw counts in ``raw``), ``"protein"`` (CLR per row;
        raw counts in ``raw``), ``"log1p"``, ``"zscore"`` or ``"normalized"`` (used as given).
    raw
        ``{modality: matrix}``: the raw counts of the modalities whose kind is ``"counts"`` or ``"protein"``
        (what count models such as scVI / totalVI need), rows aligned with ``X`` (0 where not measured).
    row_kind
        What a row is, in words: ``"spots"`` (spatial projects) or ``"cells"`` (AnnData / MuData input).
    """

    modalities: list[str]
    X: dict[str, np.ndarray | sp.csr_matrix]
    mask: dict[str, np.ndarray]
    var_names: dict[str, pd.Index]
    obs: pd.DataFrame
    counts: sp.csr_matrix | None = None
    batch_key: str = "batch"
    annotation_key: str | None = None
    transforms: dict[str, str] = field(default_factory=dict)
    preprocessing: dict[str, str] = field(default_factory=dict)
    raw: dict[str, np.ndarray | sp.csr_matrix] = field(default_factory=dict)
    row_kind: str = "spots"

    @classmethod
    def from_spatialdata(
        cls,
        sdata,
        *,
        modalities: Sequence[str] | None = None,
        batch_key: str = "batch",
        annotation_key: str | None = "pathologist",
    ) -> "MultiModalData":
        """Collect the modality tables of a project.

        Parameters
        ----------
        sdata
            A project built by :func:`spatialmix.pipeline.prepare` (or reopened from its zarr).
        modalities
            Which tables to use (default: every one of ``rna``, ``msi``, ``morphology`` present).
        batch_key
            ``obs`` column identifying batches (default ``batch`` = sample).
        annotation_key
            ``obs`` column with the pathologist's labels (``None`` for none).
        """
        available = [m for m in ("rna", "msi", "morphology") if m in sdata.tables]
        if modalities is None:
            modalities = available
        modalities = list(modalities)
        unknown = [m for m in modalities if m not in sdata.tables]
        if unknown:
            raise ProjectError(
                f"modality table(s) {unknown} not in this project (it has {sorted(sdata.tables)}). "
                "Run spatialmix.pipeline.prepare with the matching files, or pick from the tables it has"
            )
        if not modalities:
            raise ProjectError("No modality tables (rna, msi, morphology) in this project; run prepare() first")
        ref = sdata.tables[modalities[0]]
        obs_names = ref.obs_names
        for m in modalities[1:]:
            if not sdata.tables[m].obs_names.equals(obs_names):
                raise ProjectError(
                    f"table {m!r} does not annotate the same spots in the same order as {modalities[0]!r}; "
                    "rebuild the tables with spatialmix.pipeline.prepare"
                )
        if batch_key not in ref.obs:
            raise ProjectError(f"batch column {batch_key!r} not in the spot table (columns: {list(ref.obs.columns)})")
        if annotation_key is not None and annotation_key not in ref.obs:
            raise ProjectError(
                f"annotation column {annotation_key!r} not in the spot table (columns: {list(ref.obs.columns)}). "
                "Pass annotation_key=None for unlabelled data"
            )
        X, mask, var_names, transforms, kinds, raw = {}, {}, {}, {}, {}, {}
        counts = None
        for m in modalities:
            table = sdata.tables[m]
            mat = table.X
            measured = table.obs[COVERED_KEYS[m]].to_numpy(bool) if COVERED_KEYS.get(m) in table.obs else \
                np.ones(table.n_obs, bool)
            if measured.any():  # NaN / Inf or nothing but zeros: say so now, not as a loss error while training
                _check_values(mat[np.flatnonzero(measured)], m, "normalized", table.var_names,
                              what=f"table {m!r} of the project")
            if m == "rna":
                counts = sp.csr_matrix(table.layers["counts"]) if "counts" in table.layers else None
                mat = sp.csr_matrix(mat, dtype=np.float32)
                transforms[m] = "normalize_total(1e4) + log1p (raw counts in .counts)"
                kinds[m] = "counts"
                if counts is not None:
                    raw[m] = counts
                mask[m] = np.ones(table.n_obs, bool)
            elif m == "msi":
                mat = sp.csr_matrix(mat, dtype=np.float32)
                mat.data = np.log1p(mat.data)
                transforms[m] = "log1p of TIC-normalised spot intensities"
                kinds[m] = "log1p"
                mask[m] = table.obs[COVERED_KEYS[m]].to_numpy(bool)
            else:
                dense = np.asarray(mat.toarray() if sp.issparse(mat) else mat, dtype=np.float32)
                key = COVERED_KEYS.get(m)
                mask[m] = table.obs[key].to_numpy(bool) if key in table.obs else np.ones(table.n_obs, bool)
                ok = mask[m]
                mu = dense[ok].mean(axis=0) if ok.any() else np.zeros(dense.shape[1], np.float32)
                sd = dense[ok].std(axis=0) if ok.any() else np.ones(dense.shape[1], np.float32)
                sd[sd == 0] = 1.0
                mat = ((dense - mu) / sd).astype(np.float32)
                mat[~ok] = 0.0
                transforms[m] = "z-score over covered spots"
                kinds[m] = "zscore"
            X[m] = mat
            var_names[m] = table.var_names.copy()
        cols = [c for c in ("sample", "patient", batch_key, annotation_key, "barcode", "spot_id") if c and c in ref.obs]
        obs = ref.obs[list(dict.fromkeys(cols))].copy()
        return cls(list(modalities), X, mask, var_names, obs, counts, batch_key, annotation_key, transforms, kinds,
                   raw)

    @classmethod
    def from_anndata(
        cls,
        adatas: Mapping,
        *,
        batch_key: str,
        label_key: str | None = None,
        preprocessing: Mapping[str, str] | str | None = None,
        sample_key: str | None = None,
        zscore: bool | Mapping[str, bool] = False,
    ) -> "MultiModalData":
        """Build the model inputs from one AnnData per modality (CITE-seq, multiome, any paired omics).

        Rows are matched by ``obs_names``: the rows are the union of every modality's cells (in the first
        modality's order, then the new names in order of appearance). A cell missing from a modality is kept and
        **masked** for it (``mask[m]`` False, its row of ``X[m]`` and ``raw[m]`` is 0 and the models ignore
        it); no cell is dropped.

        Parameters
        ----------
        adatas
            ``{modality: AnnData}`` in model order, e.g. ``{"rna": rna, "protein": adt}``. Each ``.X`` holds
            what ``preprocessing`` says (raw counts for ``"counts"`` / ``"protein"``).
        batch_key
            ``.obs`` column with each cell's batch (looked up in every modality's ``.obs``; values must agree for
            shared cells). ``"modality:column"`` takes it from that modality only. Written to ``obs["batch"]``.
        label_key
            ``.obs`` column with cell labels (``None``: unlabelled). NaN marks an unlabelled cell; at least two
            classes are needed. Written to ``obs[label_key]``.
        preprocessing
            ``{modality: kind}`` for every modality (a single kind applies to all), one of
            :data:`PREPROCESSING_KINDS`:

            - ``"counts"``: non-negative whole counts; total-count normalised to 1e4 and log1p transformed
              (as ``scanpy.pp.normalize_total(target_sum=1e4)`` + ``log1p``), sparse CSR float32. The counts are
              kept in ``raw[modality]`` (CSR float32).
            - ``"protein"``: non-negative whole antibody counts; centred log-ratio per cell as in the CITE-seq
              paper (Stoeckius et al. 2017): ``log1p(x) - mean over the cell's proteins of log1p(x)``, i.e.
              ``log((x + 1) / geometric mean of (x + 1))``. (``muon.prot.pp.clr(axis=1)`` and Seurat's CLR
              compute ``log1p(x / that geometric mean)`` instead: same ordering within a cell, other values.)
              Dense float32; the counts are kept in ``raw[modality]`` (dense float32).
            - ``"normalized"``: used as given (dense float32).
        sample_key
            ``.obs`` column with the sample of each cell (default: ``batch_key``), written to ``obs["sample"]``
            (leave-one-sample-out evaluation uses it).
        zscore
            ``True`` (every modality) or ``{modality: True}``: after the transform, z-score each feature over the
            cells measured in that modality (constant features get sd 1). Makes the matrix dense.

        Returns
        -------
        MultiModalData
            With ``preprocessing``, ``transforms`` and ``raw`` recording what was done, ``row_kind="cells"``.

        Raises
        ------
        ParameterError
            An argument is wrong: an input that is not AnnData, a preprocessing kind missing or unknown, a
            ``batch_key`` / ``label_key`` / ``sample_key`` that is no ``.obs`` column (the message lists them).
        ProjectError
            The data cannot be used: duplicated ``obs_names``, modalities sharing no ``obs_names``, a modality with
            no cells, no features, only zeros or NaN / Inf values, counts that are negative or not whole numbers,
            batch or label values that disagree between modalities, a cell without a batch, one label class.

        Examples
        --------
        >>> data = MultiModalData.from_anndata({"rna": rna, "protein": adt}, batch_key="donor",
        ...                                    label_key="cell_type",
        ...                                    preprocessing={"rna": "counts", "protein": "protein"})
        """
        mods = _check_adatas(adatas)
        return cls._from_tables(mods, None, batch_key=batch_key, label_key=label_key, preprocessing=preprocessing,
                                sample_key=sample_key, zscore=zscore, known=list(mods))

    @classmethod
    def from_mudata(
        cls,
        mdata,
        *,
        batch_key: str,
        label_key: str | None = None,
        modalities: Sequence[str] | None = None,
        preprocessing: Mapping[str, str] | str | None = None,
        sample_key: str | None = None,
        zscore: bool | Mapping[str, bool] = False,
    ) -> "MultiModalData":
        """Build the model inputs from a MuData (modalities sharing cells, ``axis=0``).

        Same rules as :meth:`from_anndata`, with the modalities taken from ``mdata.mod``. ``batch_key``,
        ``label_key`` and ``sample_key`` are looked up in ``mdata.obs`` and in every modality's ``.obs``;
        ``"modality:column"`` (MuData's prefixed form) names one modality's column.

        Parameters
        ----------
        mdata
            A :class:`mudata.MuData` (e.g. from ``mudata.read_h5mu``).
        batch_key, label_key, sample_key, preprocessing, zscore
            As in :meth:`from_anndata`. ``preprocessing`` and ``zscore`` may name modalities of ``mdata`` that
            ``modalities`` leaves out.
        modalities
            Which modalities, in model order (default: all of ``mdata.mod``, in its order).

        Examples
        --------
        >>> mdata = mudata.read_h5mu("citeseq.h5mu")
        >>> data = MultiModalData.from_mudata(mdata, batch_key="donor", label_key="rna:celltype",
        ...                                   preprocessing={"rna": "counts", "prot": "protein"})
        """
        if _is_anndata(mdata):
            raise ParameterError("from_mudata takes a MuData, got an AnnData. For one AnnData per modality use "
                                 "MultiModalData.from_anndata({'rna': adata_rna, 'protein': adata_protein}, ...)")
        if not (hasattr(mdata, "mod") and hasattr(mdata, "obs") and isinstance(getattr(mdata, "mod"), Mapping)):
            raise ParameterError(f"from_mudata takes a MuData, got a {type(mdata).__name__}. Read a .h5mu file "
                                 "with mudata.read_h5mu(path), or use MultiModalData.from_anndata for AnnData")
        axis = getattr(mdata, "axis", 0)
        if axis != 0:
            raise ParameterError(f"this MuData has axis={axis} (modalities sharing features, not cells); "
                                 "from_mudata needs modalities measured on the same cells (axis=0)")
        available = list(mdata.mod)
        if modalities is None:
            modalities = available
        elif isinstance(modalities, str):
            modalities = [m.strip() for m in modalities.split(",") if m.strip()]
        modalities = list(modalities)
        unknown = [m for m in modalities if m not in mdata.mod]
        if unknown:
            raise ProjectError(f"modality(ies) {unknown} not in this MuData (it has {available}); pick from those")
        if not modalities:
            raise ProjectError(f"no modalities selected (this MuData has {available})")
        if len(set(modalities)) != len(modalities):
            raise ParameterError(f"modalities lists a modality twice: {modalities}")
        gobs = mdata.obs
        if gobs.index.has_duplicates:
            dups = list(dict.fromkeys(gobs.index[gobs.index.duplicated()]))[:5]
            raise ProjectError(f"the MuData's obs_names have duplicates ({dups}); rows are matched by obs_names: "
                               "call mdata.obs_names_make_unique() or fix the names")
        mods = _check_adatas({m: mdata.mod[m] for m in modalities})
        return cls._from_tables(mods, gobs, batch_key=batch_key, label_key=label_key, preprocessing=preprocessing,
                                sample_key=sample_key, zscore=zscore, known=available)

    @classmethod
    def _from_tables(cls, mods: dict, gobs: pd.DataFrame | None, *, batch_key, label_key, preprocessing, sample_key,
                     zscore, known) -> "MultiModalData":
        """from_anndata / from_mudata: every check first, then the preprocessing."""
        names = list(mods)
        kinds = _declared_kinds(preprocessing, names, known)
        zscored = _declared_zscore(zscore, names, known)
        if not isinstance(batch_key, str) or not batch_key:
            raise ParameterError(f"batch_key must name an .obs column (got {batch_key!r})")
        sample_key = batch_key if sample_key is None else sample_key
        for what, key in (("label_key", label_key), ("sample_key", sample_key)):
            if key is not None and (not isinstance(key, str) or not key):
                raise ParameterError(f"{what} must name an .obs column or be None (got {key!r})")
        if label_key is not None:
            fills = {"batch": batch_key, "sample": sample_key}
            if label_key in fills and fills[label_key] != label_key:
                raise ParameterError(
                    f"label_key={label_key!r} would clash with obs[{label_key!r}], which holds the "
                    f"{fills[label_key]!r} column; rename the label column (e.g. adata.obs.rename(columns="
                    f"{{{label_key!r}: 'label'}}))")

        mats = {}
        for m, a in mods.items():
            if a.n_obs == 0:
                raise ProjectError(f"modality {m!r} has 0 cells; remove it or give it its data")
            if a.n_vars == 0:
                raise ProjectError(f"modality {m!r} has 0 features (shape {a.n_obs} x 0); remove it or give it its "
                                   "features")
            idx = a.obs_names
            if idx.has_duplicates:
                repeated = list(dict.fromkeys(idx[idx.duplicated()]))
                raise ProjectError(
                    f"modality {m!r} has {len(repeated)} duplicated obs_names (first: {repeated[:5]}); rows are "
                    f"matched by "
                    f"obs_names, so each cell needs a unique name: call .obs_names_make_unique() on {m!r} (same on "
                    "the other modalities so that the names still match) or fix the names")
            mats[m] = _matrix(a, m)
        union, positions = _match_rows(mods)

        batch = _obs_column(batch_key, "batch_key", mods, gobs, union, required=True)
        sample = batch if sample_key == batch_key else _obs_column(sample_key, "sample_key", mods, gobs, union,
                                                                   required=True)
        labels = None
        if label_key is not None:
            labels = _obs_column(label_key, "label_key", mods, gobs, union, required=False)
            classes = list(dict.fromkeys(labels.dropna().astype(str)))
            if len(classes) < 2:
                raise ProjectError(
                    f"label column {label_key!r} has {len(classes)} class(es) {classes[:1]} among "
                    f"{int(labels.notna().sum())} labelled cells; a label column needs at least two classes to "
                    "learn from. Pass label_key=None for unlabelled data")

        for m in names:
            _check_values(mats[m], m, kinds[m], mods[m].var_names)

        n = len(union)
        X, mask, var_names, transforms, raw = {}, {}, {}, {}, {}
        for m in names:
            x, r, text = _preprocess(mats[m], kinds[m], m)
            if zscored[m]:
                x = _zscore(x)
                text += f"; then {_ZSCORE_TEXT} ({mats[m].shape[0]})"
            pos = positions[m]
            X[m] = _expand(x, pos, n)
            if r is not None:
                raw[m] = _expand(r, pos, n)
            mask[m] = np.zeros(n, bool)
            mask[m][pos] = True
            var_names[m] = mods[m].var_names.copy()
            transforms[m] = text
        obs = pd.DataFrame(index=pd.Index(union, name=None))
        obs["sample"] = pd.Categorical(sample.to_numpy(object))
        obs["batch"] = pd.Categorical(batch.to_numpy(object))
        if labels is not None:
            obs[label_key] = pd.Categorical(labels.to_numpy(object))
        counts = raw.get("rna") if kinds.get("rna") == "counts" else None
        return cls(names, X, mask, var_names, obs, counts, "batch", label_key, transforms, dict(kinds), raw,
                   "cells")

    @property
    def n_obs(self) -> int:
        return len(self.obs)

    @property
    def batches(self) -> pd.Categorical:
        return pd.Categorical(self.obs[self.batch_key])

    @property
    def labels(self) -> pd.Series | None:
        return None if self.annotation_key is None else self.obs[self.annotation_key]

    def n_vars(self, modality: str) -> int:
        return self.X[modality].shape[1]

    def dense(self, modality: str) -> np.ndarray:
        """The model input of ``modality`` as a new dense float32 array (a copy: writing into it never changes
        the data; a caller once set masked rows to NaN in what was the model input itself)."""
        mat = self.X[modality]
        if sp.issparse(mat):
            return np.asarray(mat.toarray(), dtype=np.float32)
        return np.array(mat, dtype=np.float32, copy=True)

    def subset(self, index) -> "MultiModalData":
        """Rows ``index`` (boolean mask or integer positions) of every matrix."""
        idx = np.asarray(index)
        return MultiModalData(
            self.modalities,
            {m: x[idx] for m, x in self.X.items()},
            {m: k[idx] for m, k in self.mask.items()},
            self.var_names,
            self.obs.iloc[idx] if idx.dtype != bool else self.obs[idx],
            self.counts[idx] if self.counts is not None else None,
            self.batch_key,
            self.annotation_key,
            self.transforms,
            self.preprocessing,
            {m: r[idx] for m, r in self.raw.items()},
            self.row_kind,
        )

    def to_tensors(self, device: str = "cpu") -> dict:
        """Move every modality (dense), its mask and the batch codes to ``device`` once, as torch tensors."""
        import torch

        out = {m: torch.as_tensor(self.dense(m), device=device) for m in self.modalities}
        out.update({f"{m}_mask": torch.as_tensor(self.mask[m], device=device) for m in self.modalities})
        out["batch"] = torch.as_tensor(self.batches.codes.astype(np.int64), device=device)
        return out

    def _kind_text(self, modality: str) -> str:
        kind = self.preprocessing.get(modality)
        if kind is None:
            return ""
        text = _KIND_SHORT.get(kind, kind)
        if kind != "zscore" and _ZSCORE_TEXT in self.transforms.get(modality, ""):
            text += "+zscore" if "->" in text else " -> zscore"
        return text

    def __repr__(self) -> str:
        rows = self.row_kind
        parts = []
        for m in self.modalities:
            kind = self._kind_text(m)
            parts.append(f"{m}: {self.X[m].shape[1]} features ({int(self.mask[m].sum())} {rows}"
                         + (f", {kind})" if kind else ")"))
        n_b = self.obs[self.batch_key].nunique()
        return f"MultiModalData({self.n_obs} {rows}, {n_b} batches; {', '.join(parts)})"


def measured_only(values: np.ndarray, data, modalities: Sequence[str], *, inplace: bool = False) -> np.ndarray:
    """``values`` (one row per row of ``data``) with NaN rows where none of ``modalities`` was measured.

    A reconstruction of a modality at a row where it was not measured, or a translation from sources none of
    which was measured there, would be decoded from zero-filled input: an invented value. Every model output and
    the results writer go through this (a copy only when some row is masked; none with ``inplace=True`` and
    float32 ``values``, for an array the caller has just made)."""
    measured = np.zeros(len(values), bool)
    for m in modalities:
        measured |= np.asarray(data.mask[m], bool)
    if measured.all():
        return values
    if not (inplace and isinstance(values, np.ndarray) and values.dtype == np.float32):
        values = np.array(values, dtype=np.float32, copy=True)
    values[~measured] = np.nan
    return values


def as_multimodal(data, *, batch_key: str | None, **read_options) -> "MultiModalData":
    """``data`` itself when it is a :class:`MultiModalData`, else :func:`read_multimodal` of it (the batch column
    is required there: a clear error before any work). What ``spatialmix benchmark`` and ``spatialmix run --data``
    accept."""
    if isinstance(data, MultiModalData):
        return data
    if batch_key is None:
        raise ParameterError("non-spatial multi-omics input needs the batch column: pass batch_key= "
                             "(--batch-key), e.g. the donor, sample or section of each cell")
    return read_multimodal(data, batch_key=batch_key, **read_options)


def read_multimodal(
    paths,
    *,
    batch_key: str,
    label_key: str | None = None,
    preprocessing: Mapping[str, str] | str | None = None,
    modalities: Sequence[str] | None = None,
    sample_key: str | None = None,
    zscore: bool | Mapping[str, bool] = False,
) -> MultiModalData:
    """Read non-spatial multi-omics files into a :class:`MultiModalData` (what the CLI calls).

    Parameters
    ----------
    paths
        One ``.h5mu`` file (read with ``mudata.read_h5mu``), or ``.h5ad`` files, one per modality: a list of
        paths, or a comma-separated string. A modality is named after its file's stem (``rna.h5ad`` -> ``rna``),
        or explicitly with ``name=path`` (``"rna=run1_gex.h5ad,protein=run1_adt.h5ad"``).
    batch_key, label_key, preprocessing, sample_key, zscore
        As in :meth:`MultiModalData.from_anndata` (``preprocessing`` must declare every modality).
    modalities
        Which modalities, in model order (default: all, in the file's / the list's order).

    Returns
    -------
    MultiModalData

    Raises
    ------
    MissingFileError
        A file does not exist.
    InputFileError
        A path is not an ``.h5mu`` / ``.h5ad`` file (a spatial dataset folder or a project ``.zarr`` is read
        elsewhere), or a file cannot be read.
    ParameterError, ProjectError
        As in :meth:`MultiModalData.from_anndata`.

    Examples
    --------
    >>> data = read_multimodal("citeseq.h5mu", batch_key="donor",
    ...                        preprocessing={"rna": "counts", "prot": "protein"})
    >>> data = read_multimodal(["rna.h5ad", "protein.h5ad"], batch_key="donor",
    ...                        preprocessing={"rna": "counts", "protein": "protein"})
    """
    items = _split_paths(paths)
    for _, p in items:
        suffix = p.suffix.lower()
        if suffix not in (".h5mu", ".h5ad"):
            what = "a folder" if p.is_dir() else f"a {suffix or 'suffix-less'} path"
            raise InputFileError(
                f"read_multimodal cannot read {what}: it takes {_ACCEPTED_FORMS}", p,
                "A spatial dataset folder with samples.csv, or a project .zarr, is read by the spatial pipeline "
                "(spatialmix prepare / benchmark --data, MultiModalData.from_spatialdata), not by read_multimodal")
    suffixes = {p.suffix.lower() for _, p in items}
    if ".h5mu" in suffixes and len(items) > 1:
        raise ParameterError(f"give one .h5mu file, or .h5ad files only (got {[str(p) for _, p in items]}); "
                             f"accepted: {_ACCEPTED_FORMS}")
    for _, p in items:
        if not p.is_file():
            raise MissingFileError("multi-omics input file not found", p,
                                   "Check the path (a list or a comma-separated string of .h5mu / .h5ad files)")
    if ".h5mu" in suffixes:
        try:
            import mudata
        except ImportError as err:  # pragma: no cover - mudata ships with the scverse stack
            raise InputFileError("reading .h5mu needs the mudata package (pip install mudata)", items[0][1]) from err
        p = items[0][1]
        try:
            mdata = mudata.read_h5mu(p)
        except Exception as err:  # noqa: BLE001 - any reader failure is the file's problem
            raise InputFileError(f"cannot read this file as MuData ({type(err).__name__}: {err})", p,
                                 "Check that it is a .h5mu written by mudata / muon") from err
        return MultiModalData.from_mudata(mdata, batch_key=batch_key, label_key=label_key, modalities=modalities,
                                          preprocessing=preprocessing, sample_key=sample_key, zscore=zscore)
    import anndata

    adatas: dict = {}
    for name, p in items:
        name = name or p.stem
        if name in adatas:
            raise ParameterError(f"two files give modality {name!r}; name them with name=path, e.g. "
                                 f"'rna=run1.h5ad,protein=run1_adt.h5ad'")
        try:
            adatas[name] = anndata.read_h5ad(p)
        except Exception as err:  # noqa: BLE001
            raise InputFileError(f"cannot read this file as AnnData ({type(err).__name__}: {err})", p,
                                 "Check that it is a .h5ad written by anndata / scanpy") from err
    known = list(adatas)
    if modalities is not None:
        modalities = [m.strip() for m in modalities.split(",")] if isinstance(modalities, str) else list(modalities)
        unknown = [m for m in modalities if m not in adatas]
        if unknown:
            raise ProjectError(f"modality(ies) {unknown} not among the files' modalities {known}")
        adatas = {m: adatas[m] for m in modalities}
    return MultiModalData._from_tables(_check_adatas(adatas), None, batch_key=batch_key, label_key=label_key,
                                       preprocessing=preprocessing, sample_key=sample_key, zscore=zscore,
                                       known=known)
