"""Paired per-spot matrices of every modality, ready for the models.

:class:`MultiModalData` is built from a project's modality tables (``rna``, ``msi``, ``morphology``), which
annotate the same spots in the same order. It holds one matrix per modality (rows aligned on spots), a mask
per modality (False where the spot has no data for it, e.g. no MSI coverage), the sample / batch / annotation
columns, and the feature names. RNA is total-count normalised + log1p with the raw counts kept; MSI spot
intensities (TIC-normalised per pixel) are log1p transformed; morphology features are standardised
(z-scores computed on covered spots). Counts stay sparse until a model asks for dense tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmix.errors import ProjectError

COVERED_KEYS = {"msi": "msi_covered", "morphology": "he_covered"}


@dataclass
class MultiModalData:
    """Per-spot inputs of every modality for all samples.

    Attributes
    ----------
    modalities
        Modality names in model order.
    X
        ``{modality: (n_spots, n_features) float32}`` model inputs (CSR for sparse modalities).
    mask
        ``{modality: bool (n_spots,)}``: True where the spot has data for that modality.
    var_names
        ``{modality: pandas.Index}`` feature names.
    obs
        Spot table: ``sample``, ``patient``, ``batch``, the annotation column, ``barcode``, ``spot_id``.
    counts
        Raw RNA counts (CSR) when ``rna`` is a modality (the same matrix as ``raw["rna"]``).
    preprocessing
        ``{modality: kind}``: how each modality was turned into the model input, declared by whoever built the
        data: ``"counts"`` (total-count normalised + log1p; raw counts in ``raw``), ``"protein"`` (CLR per spot;
        raw counts in ``raw``), ``"log1p"``, ``"zscore"`` or ``"normalized"`` (used as given).
    raw
        ``{modality: matrix}``: the raw counts of the modalities whose kind is ``"counts"`` or ``"protein"``
        (what count models such as scVI / totalVI need), rows aligned with ``X``.
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
        """The model input of ``modality`` as a dense float32 array."""
        mat = self.X[modality]
        return np.asarray(mat.toarray() if sp.issparse(mat) else mat, dtype=np.float32)

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
        )

    def to_tensors(self, device: str = "cpu") -> dict:
        """Move every modality (dense), its mask and the batch codes to ``device`` once, as torch tensors."""
        import torch

        out = {m: torch.as_tensor(self.dense(m), device=device) for m in self.modalities}
        out.update({f"{m}_mask": torch.as_tensor(self.mask[m], device=device) for m in self.modalities})
        out["batch"] = torch.as_tensor(self.batches.codes.astype(np.int64), device=device)
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{m}: {self.X[m].shape[1]} features ({int(self.mask[m].sum())} spots)" for m in self.modalities)
        n_b = self.obs[self.batch_key].nunique()
        return f"MultiModalData({self.n_obs} spots, {n_b} batches; {parts})"
