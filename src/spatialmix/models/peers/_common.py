"""Helpers every peer wrapper shares: option checks, which modality a peer reads, rows, batches, versions,
silenced library output, and :class:`Peer` (the registry entry)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmix.errors import ParameterError

#: names that mark a ``"counts"`` modality as chromatin accessibility (lower case) for ``multivi``
CHROMATIN_NAMES = ("atac", "chromatin", "peaks", "accessibility")

# --------------------------------------------------------------------------------------------------------------
# helpers shared by the peers
# --------------------------------------------------------------------------------------------------------------


def _options(peer: str, given: dict, defaults: dict) -> dict:
    """``defaults`` overridden by ``given``; an option the peer does not know is refused, naming the allowed."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ParameterError(f"{peer} does not take option(s) {unknown}; allowed: {sorted(defaults)}")
    return {**defaults, **given}


def _kinds(data) -> str:
    """``rna: 'counts' with raw counts, msi: 'log1p'``: what each modality was declared as, for refusals."""
    parts = []
    for m in data.modalities:
        kind = data.preprocessing.get(m, "undeclared")
        raw = " with raw counts" if m in data.raw else (" without raw counts" if kind in ("counts", "protein") else "")
        parts.append(f"{m}: {kind!r}{raw}")
    return ", ".join(parts)


def _modalities(peer: str, data, given) -> list[str]:
    mods = list(data.modalities) if given is None else ([given] if isinstance(given, str) else list(given))
    missing = [m for m in mods if m not in data.modalities]
    if missing or not mods:
        raise ParameterError(f"{peer}: modalities {mods} must be a non-empty selection of the data's {data.modalities}")
    return mods


def _with_raw(data, kind: str) -> list[str]:
    """Modalities declared ``kind`` whose raw counts are in ``data.raw``."""
    return [m for m in data.modalities if data.preprocessing.get(m) == kind and m in data.raw]


def _check_raw(peer: str, data, modality: str, kind: str) -> None:
    """``modality`` is in the data, declared ``kind``, and has raw counts that are non-negative integers."""
    if modality not in data.modalities:
        raise ParameterError(f"{peer}: modality {modality!r} is not in the data ({data.modalities})")
    declared = data.preprocessing.get(modality)
    if declared != kind:
        raise ParameterError(f"{peer} needs the raw counts of a modality declared {kind!r}; {modality!r} is declared "
                             f"{declared!r}. This data has {_kinds(data)}")
    if modality not in data.raw:
        raise ParameterError(f"{peer} needs the raw counts of {modality!r}, but data.raw has none for it; build the "
                             "data with the raw counts (e.g. the 'counts' layer of the RNA table)")
    raw = data.raw[modality][np.asarray(data.mask[modality], bool)]  # unmeasured rows are never used
    values = raw.data if sp.issparse(raw) else np.asarray(raw)
    if values.size and (np.nanmin(values) < 0 or not np.all(np.isfinite(values)) or np.any(values % 1)):
        raise ParameterError(f"{peer} models raw counts (non-negative whole numbers), but data.raw[{modality!r}] has "
                             "negative, fractional or non-finite values")


def _measured(data, modalities: Sequence[str], *, how: str = "all") -> np.ndarray:
    """Rows where all (``how="all"``) or any (``"any"``) of ``modalities`` were measured."""
    masks = np.array([np.asarray(data.mask[m], bool) for m in modalities])
    return masks.all(axis=0) if how == "all" else masks.any(axis=0)


def _nonzero_total(raw, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` have a positive total count (scVI's library size is log(total))."""
    total = np.asarray(raw[rows].sum(axis=1)).ravel()
    return total > 0


def _batch_groups(data, rows: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """The positions (into ``data``) of ``rows`` grouped by batch: batch names in category order, and for each
    the row positions in their original order. Batches without any of ``rows`` are left out."""
    positions = np.flatnonzero(rows)
    batches = pd.Categorical(data.obs[data.batch_key].astype(str))
    codes = batches.codes[positions]
    names, groups = [], []
    for code, name in enumerate(batches.categories):
        idx = positions[codes == code]
        if len(idx):
            names.append(str(name))
            groups.append(idx)
    return names, groups


def _scatter(n_obs: int, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """An ``(n_obs, dims)`` float32 embedding: ``values[i]`` at row ``positions[i]``, NaN in every other row.
    Undoes any reordering (e.g. rows grouped by batch) as long as ``positions`` follows ``values``."""
    values = np.asarray(values, dtype=np.float32)
    out = np.full((n_obs, values.shape[1]), np.nan, np.float32)
    out[np.asarray(positions)] = values
    return out


def _batch_labels(data, positions: np.ndarray) -> np.ndarray:
    return data.obs[data.batch_key].astype(str).to_numpy()[positions]


def _versions(*distributions: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .._base import versions

    out = versions()
    for d in distributions:
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = "not installed"
    return out


#: loggers set to WARNING while a peer runs (scvi-tools' INFO lines, Lightning's "GPU available" banner)
_LOGGERS = ("scvi", "lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "mofapy2", "anndata",
            "mudata")


@contextlib.contextmanager
def _quiet():
    """Silence library chatter: stdout (MOFA's banner and iterations, scanorama's prints), INFO logging, and the
    deprecation / Lightning 'possible user' warnings that say nothing about the data. Other warnings (e.g.
    totalVI's proteins missing in a batch) still show."""
    levels = {}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
                warnings.simplefilter("ignore", category)
            warnings.filterwarnings("ignore", message=r".*(does not have many workers|num_workers|"
                                                      r"Trying to infer the `batch_size`|"
                                                      r"The number of training batches|"
                                                      r"The lr scheduler dict contains the key|"
                                                      r"Initializing zero-element tensors).*")
            # MOFA+'s spike-and-slab entropy S log S at S = 0 or 1 (the limit is 0; only its ELBO print is NaN)
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"mofapy2\.core\.nodes\.W_nodes")
            try:
                from lightning.fabric.utilities.warnings import PossibleUserWarning

                warnings.simplefilter("ignore", PossibleUserWarning)
            except ImportError:  # pragma: no cover - lightning comes with scvi-tools
                pass
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One peer method.

    Attributes
    ----------
    name
        The name ``spatialmix benchmark --models`` uses.
    fn
        ``(data, *, seed=0, **options) -> {representation: embedding}`` (the :data:`BASELINES` contract).
    plan
        ``(data, seed, options) -> parameters``: validates (raising the peer's refusal) and resolves every
        parameter the run will use; ``fn`` starts with it.
    packages
        Distributions whose versions are recorded.
    needs
        What the data must offer, in words.
    reference
        The method's paper and the documentation its defaults come from.
    """

    name: str
    fn: Callable[..., dict[str, np.ndarray]]
    plan: Callable[[Any, int, dict], dict[str, Any]]
    packages: tuple[str, ...]
    needs: str
    reference: str

    def __call__(self, data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
        return self.fn(data, seed=seed, **options)

    def check(self, data, *, seed: int = 0, **options) -> dict[str, Any]:
        """The parameters a run with these options would use; raises the refusal the run would raise."""
        return self.plan(data, seed, dict(options))

    def versions(self) -> dict[str, str]:
        return _versions(*self.packages)

    def info(self, data, *, seed: int = 0, **options) -> dict[str, Any]:
        """What ``metrics.json`` records for this peer: name, reference, needs, versions, parameters."""
        return {"peer": self.name, "reference": self.reference, "needs": self.needs, "versions": self.versions(),
                "parameters": self.check(data, seed=seed, **options)}
