"""The MIMA paper's peer methods, run with their libraries' documented defaults, for ``spatialmix benchmark``.

Each peer follows the contract of :data:`spatialmix.models.baselines.BASELINES`: a function
``(data, *, seed=0, **options) -> {representation name: (n_rows, dims) float32 embedding}`` with one row per
row of ``data`` and NaN rows where the method's input is not defined (a modality it needs was not measured).

=================  ============================================================  ==================================
peer               what it runs                                                  representation(s)
=================  ============================================================  ==================================
``scanorama``      scanorama ``integrate`` on the concatenated model inputs,    ``scanorama``
                   one data set per batch
``scvi``           scvi-tools ``SCVI`` on raw counts, batch as ``batch_key``    ``scvi``
``totalvi``        scvi-tools ``TOTALVI`` on RNA + protein raw counts (MuData)  ``totalvi``
``multivi``        scvi-tools ``MULTIVI`` on RNA + chromatin raw counts         ``multivi``
``mofa``           MOFA+ (mofapy2 ``entry_point``), one view per modality,     ``mofa``
                   one group per batch, unmeasured rows given as missing
``mima_unimodal``  MIMA's architecture on one modality at a time (the MIMA     ``mima_unimodal_<modality>``
                   paper's unimodal baseline)
=================  ============================================================  ==================================

Registry
--------
:data:`PEERS` maps each name to a :class:`Peer`. A peer is callable with the contract above
(``PEERS["scvi"](data, seed=0)``), and it also answers, without running anything:

- ``PEERS[name].check(data, seed=..., **options)``: the parameters the run would use (library defaults filled in,
  e.g. scVI's number of epochs for this many cells), or the refusal (:class:`~spatialmix.errors.ParameterError`)
  that the run would raise. Every run starts with exactly this call, so a refusal always comes before any long
  work, and what is recorded is what ran.
- ``PEERS[name].versions()``: ``spatialmix``, ``torch``, ``python`` and the versions of the libraries it calls.
- ``PEERS[name].info(data, seed=..., **options)`` (also :func:`peer_info`): both, plus the reference and what
  the peer needs, ready for ``metrics.json``.

Options
-------
Every peer takes keyword options (listed in each function's docstring; an unknown one is refused with the list of
allowed ones). They override the documented defaults, e.g. ``max_epochs=2`` for a quick test of an scvi-tools
peer or ``train={"epochs": 2}`` for ``mima_unimodal``. The scvi-tools peers also pass ``model_kwargs`` to the
model's constructor and ``train_kwargs`` to ``train()`` for anything else.

Which modalities a peer uses
----------------------------
The peers read :attr:`MultiModalData.preprocessing` and :attr:`MultiModalData.raw`:

- the RNA modality of ``scvi`` / ``totalvi`` / ``multivi``: the one named ``rna``, declared ``"counts"`` with raw
  counts (``rna=`` chooses another); without one named ``rna``, the only other ``"counts"`` modality that is not
  chromatin;
- the chromatin modality of ``multivi``: declared ``"counts"`` with raw counts and named one of
  :data:`CHROMATIN_NAMES` (``atac=`` chooses another ``"counts"`` modality);
- the protein modality of ``totalvi``: the one declared ``"protein"`` with raw counts (``protein=`` chooses);
- ``scvi`` without ``modality=``: ``rna`` if it qualifies, otherwise every ``"counts"`` modality with raw counts,
  side by side;
- ``scanorama``, ``mofa``, ``mima_unimodal``: the model inputs ``data.X`` of every modality (``modalities=``
  restricts them).

Library progress bars, banners and INFO logging are silenced while a peer runs. Torch's thread count is left as
the caller set it (nothing here sets ``scvi.settings.num_threads``).

Debt: about 830 lines of six wrappers around different libraries that share only the helpers at the top and
:data:`PEERS` at the bottom. It could become a ``peers/`` package: ``_common`` (the helpers, :class:`Peer`),
``scvi_tools`` (scVI, totalVI, MultiVI, which also share ``_scvi_common``, ``_anndata``, ``_train_kwargs``),
``scanorama``, ``mofa``, ``mima_unimodal``, its ``__init__`` keeping today's names (tests use ``peers._scatter``).
"""

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

    from ._base import versions

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


def peer_info(name: str, data, *, seed: int = 0, **options) -> dict[str, Any]:
    """``PEERS[name].info(data, seed=seed, **options)``; an unknown name is refused with the list."""
    if name not in PEERS:
        raise ParameterError(f"unknown peer {name!r}; choose from {sorted(PEERS)}")
    return PEERS[name].info(data, seed=seed, **options)


# --------------------------------------------------------------------------------------------------------------
# scanorama
# --------------------------------------------------------------------------------------------------------------

#: scanorama 1.7.4 ``integrate`` defaults (its module constants KNN, SIGMA, ALPHA, APPROX, BATCH_SIZE, HVG), except
#: ``dimred``: 50 instead of its 100 (ours; the dimension of scanpy's default PCA, which scanpy's Scanorama recipe
#: integrates). On the STARmap development case dimred 50 gives scIB total 0.624 against the issue's reference
#: figure 0.610 for Scanorama, dimred 100 gives 0.584 (docs/benchmarks.md); ``dimred=100`` restores the library's.
SCANORAMA_DEFAULTS = {"dimred": 50, "knn": 20, "sigma": 15, "alpha": 0.10, "approx": True, "batch_size": 5000,
                      "hvg": None, "modalities": None}


def _plan_scanorama(data, seed: int, options: dict) -> dict[str, Any]:
    from .baselines import common_spots

    p = _options("scanorama", options, SCANORAMA_DEFAULTS)
    p["modalities"] = _modalities("scanorama", data, p["modalities"])
    keep = common_spots(data, p["modalities"])
    names, _ = _batch_groups(data, keep)
    if keep.sum() < 3:
        raise ParameterError(f"scanorama: only {int(keep.sum())} rows have every modality {p['modalities']}; "
                             "it needs at least 3")
    if len(names) < 2:
        raise ParameterError(f"scanorama integrates batches, but the rows with every modality {p['modalities']} "
                             f"are all in one batch ({names}); use a baseline such as pca instead")
    n_features = sum(data.n_vars(m) for m in p["modalities"])
    p.update(seed=int(seed), batches=names, n_rows=int(keep.sum()),
             dims=int(min(p["dimred"], keep.sum(), n_features)),
             input="model inputs of " + "+".join(p["modalities"]) + " side by side, as they are (e.g. log-normalised "
                   "counts: scanorama cosine-normalises each row itself), one data set per batch")
    return p


def scanorama_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``scanorama``: Scanorama (Hie, Bryson & Berger, Nat Biotechnol 2019) ``scanorama.integrate``.

    The input is the modalities' model inputs side by side on the rows that have them all, as they are (not
    centred: scanorama L2-normalises each row, then reduces with a randomized PCA and stitches the batches
    through mutual nearest neighbours), split into one data set per batch. The batches come back in batch order
    and are put back in the data's row order; rows lacking a modality are NaN.

    Options and defaults (scanorama 1.7.4 ``integrate``): ``knn=20``, ``sigma=15``, ``alpha=0.10``,
    ``approx=True`` (Annoy), ``batch_size=5000``, ``hvg=None``; ``dimred=50`` is ours (the library's is 100;
    see :data:`SCANORAMA_DEFAULTS` for the measurement); ``modalities`` (default all). Centred input (the
    ``pca_concat`` input) or scanpy's recipe on a centred PCA scored 0.54 on STARmap instead of 0.62.
    Refuses data whose complete rows fall in a single batch.
    """
    import scanorama
    import scipy.sparse as sp

    from .baselines import common_spots

    p = _plan_scanorama(data, seed, options)
    keep = common_spots(data, p["modalities"])
    rows = np.flatnonzero(keep)
    blocks = [data.X[m][rows] for m in p["modalities"]]
    X = (sp.hstack(blocks).tocsr() if any(sp.issparse(b) for b in blocks) else np.hstack(blocks)).astype(np.float32)
    _, groups = _batch_groups(data, keep)
    datasets = [X[np.searchsorted(rows, idx)] for idx in groups]
    genes = [f"f{i:07d}" for i in range(X.shape[1])]  # unique, so scanorama's gene intersection keeps every column
    with _quiet():
        integrated, _ = scanorama.integrate(datasets, [genes] * len(datasets), batch_size=p["batch_size"],
                                            verbose=0, dimred=p["dims"], approx=p["approx"], sigma=p["sigma"],
                                            alpha=p["alpha"], knn=p["knn"], hvg=p["hvg"], seed=int(seed))
    return {"scanorama": _scatter(data.n_obs, np.concatenate(groups), np.concatenate(integrated))}


# --------------------------------------------------------------------------------------------------------------
# scvi-tools: SCVI, TOTALVI, MULTIVI
# --------------------------------------------------------------------------------------------------------------

#: options shared by the scvi-tools peers. ``None`` keeps the library's default: n_latent SCVI 10, TOTALVI 20,
#: MULTIVI int(sqrt(n_hidden)) with n_hidden = min(128, int(sqrt(n_regions))); max_epochs SCVI / TOTALVI
#: ``get_max_epochs_heuristic`` = min(round(20000 / n_cells * 400), 400), MULTIVI 500; batch_size SCVI 128,
#: TOTALVI 256, MULTIVI 128. accelerator is "cpu" (not the library's "auto") so that a run is reproducible on any
#: machine; pass "auto" to use a GPU.
SCVI_TOOLS_OPTIONS = {"n_latent": None, "max_epochs": None, "batch_size": None, "accelerator": "cpu",
                      "model_kwargs": None, "train_kwargs": None}


def _scvi_common(peer: str, options: dict, extra: dict) -> dict:
    p = _options(peer, options, {**extra, **SCVI_TOOLS_OPTIONS})
    for key in ("n_latent", "max_epochs", "batch_size"):
        if p[key] is not None and (not isinstance(p[key], (int, np.integer)) or p[key] < 1):
            raise ParameterError(f"{peer}: {key} must be a whole number >= 1 or None (the library's default), "
                                 f"got {p[key]!r}")
    for key in ("model_kwargs", "train_kwargs"):
        if p[key] is not None and not isinstance(p[key], dict):
            raise ParameterError(f"{peer}: {key} must be a dict, got {type(p[key]).__name__}")
        p[key] = dict(p[key] or {})
    clash = sorted(({"n_latent"} & set(p["model_kwargs"])) |
                   ({"max_epochs", "batch_size", "accelerator"} & set(p["train_kwargs"])))
    if clash:
        raise ParameterError(f"{peer}: give {clash} as options of their own, not inside model_kwargs / train_kwargs")
    return p


def _epochs_rule(n_rows: int) -> int:
    """scvi-tools' default training length (``scvi.model._utils.get_max_epochs_heuristic``)."""
    from scvi.model._utils import get_max_epochs_heuristic

    return int(get_max_epochs_heuristic(n_rows))


def _rna_modality(peer: str, data, given: str | None, exclude: Sequence[str] = ()) -> str:
    if given is not None:
        _check_raw(peer, data, given, "counts")
        return given
    counts = [m for m in _with_raw(data, "counts") if m not in exclude]
    if "rna" in counts:
        choice = "rna"
    elif len(counts) == 1:
        choice = counts[0]
    elif not counts:
        besides = f" besides {list(exclude)}" if exclude else ""
        raise ParameterError(f"{peer} needs RNA raw counts: a modality declared 'counts' with raw counts{besides}, "
                             f"and there is none. This data has {_kinds(data)}")
    else:
        raise ParameterError(f"{peer}: several modalities could be the RNA ({counts}) and none is named 'rna'; "
                             "pass rna=<modality>")
    _check_raw(peer, data, choice, "counts")
    return choice


def _plan_scvi(data, seed: int, options: dict) -> dict[str, Any]:
    p = _scvi_common("scvi", options, {"modality": None})
    if p["modality"] is not None:
        mods = _modalities("scvi", data, p["modality"])
        for m in mods:
            _check_raw("scvi", data, m, "counts")
    else:
        counts = _with_raw(data, "counts")
        if not counts:
            raise ParameterError("scvi needs raw counts: no modality is declared 'counts' with its raw counts in "
                                 f"data.raw (this data has {_kinds(data)}). Build the data with the raw counts of "
                                 "the RNA, or benchmark a peer that uses the model inputs (scanorama, mofa)")
        mods = ["rna"] if "rna" in counts else counts
        for m in mods:
            _check_raw("scvi", data, m, "counts")
    rows = _scvi_rows(data, mods)
    if rows.sum() < 2:
        raise ParameterError(f"scvi: only {int(rows.sum())} rows have {mods} measured with a positive total count")
    p["modality"] = mods
    p.update(seed=int(seed), n_rows=int(rows.sum()), batch_key=data.batch_key,
             n_latent=p["n_latent"] or 10,
             max_epochs=p["max_epochs"] or _epochs_rule(int(rows.sum())),
             rule="max_epochs = min(round(20000 / n_cells * 400), 400) (scvi-tools default)"
             if options.get("max_epochs") is None else "given")
    return p


def _scvi_rows(data, mods) -> np.ndarray:
    rows = _measured(data, mods)
    raw = sp.hstack([sp.csr_matrix(data.raw[m]) for m in mods]).tocsr()
    positions = np.flatnonzero(rows)
    rows[positions[~_nonzero_total(raw, positions)]] = False
    return rows


def _anndata(raw_blocks: list, names: list[list[str]], obs_names, batches) -> Any:
    import anndata as ad

    X = sp.hstack([sp.csr_matrix(b, dtype=np.float32) for b in raw_blocks]).tocsr()
    var = pd.DataFrame(index=pd.Index([n for block in names for n in block]).astype(str))
    obs = pd.DataFrame({"_batch": pd.Categorical(np.asarray(batches).astype(str))},
                       index=pd.Index(obs_names).astype(str))
    return ad.AnnData(X=X, obs=obs, var=var)


def _obs_names(positions) -> list[str]:
    return [f"r{i}" for i in positions]


def _train_kwargs(p: dict) -> dict:
    kw = {"max_epochs": int(p["max_epochs"]), "accelerator": p["accelerator"], "enable_progress_bar": False}
    if p["batch_size"] is not None:
        kw["batch_size"] = int(p["batch_size"])
    return {**kw, **p["train_kwargs"]}


def scvi_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``scvi``: scVI (Lopez et al., Nat Methods 2018), scvi-tools ``SCVI`` with its documented defaults.

    Input: the raw counts (``data.raw``) of the modality declared ``"counts"`` named ``rna``, otherwise of every
    ``"counts"`` modality with raw counts side by side (``modality=`` chooses), with the batch column as scVI's
    ``batch_key``, on the rows where they are measured and have a positive total count (NaN elsewhere: scVI's
    library size is log(total)). Returns the posterior means ``get_latent_representation()``.

    Defaults (scvi-tools 1.4.2 ``SCVI`` / ``SCVI.train`` signatures): ``n_latent=10`` (also ``n_hidden=128``,
    ``n_layers=1``, ``gene_likelihood="zinb"``), ``max_epochs=None`` resolved as scvi-tools does
    (``get_max_epochs_heuristic``: min(round(20000 / n_cells * 400), 400)), ``batch_size=128``, train_size 0.9,
    no early stopping. Ours: ``accelerator="cpu"``, no progress bar, ``scvi.settings.seed = seed``. Options:
    ``modality``, ``n_latent``, ``max_epochs``, ``batch_size``, ``accelerator``, ``model_kwargs``,
    ``train_kwargs``. Refuses data without raw counts.
    """
    p = _plan_scvi(data, seed, options)
    import scvi

    mods = p["modality"]
    rows = _scvi_rows(data, mods)
    pos = np.flatnonzero(rows)
    adata = _anndata([data.raw[m][pos] for m in mods], [[f"{m}:{v}" for v in data.var_names[m]] for m in mods],
                     _obs_names(pos), _batch_labels(data, pos))
    with _quiet():
        scvi.settings.seed = int(seed)
        scvi.model.SCVI.setup_anndata(adata, batch_key="_batch")
        model = scvi.model.SCVI(adata, **{"n_latent": int(p["n_latent"]), **p["model_kwargs"]})
        model.train(**_train_kwargs(p))
        z = model.get_latent_representation()
    return {"scvi": _scatter(data.n_obs, pos, z)}


def _mudata(blocks: dict, names: dict, positions, batches):
    import anndata as ad
    import mudata as md

    obs_names = pd.Index(_obs_names(positions))
    mods = {m: ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=pd.DataFrame(index=obs_names),
                          var=pd.DataFrame(index=pd.Index([f"{m}:{v}" for v in names[m]]).astype(str)))
            for m, X in blocks.items()}
    with md.set_options(pull_on_update=False):  # mudata 0.4's behaviour (the modalities carry no obs columns)
        mdata = md.MuData(mods)
    mdata.obs["_batch"] = pd.Categorical(np.asarray(batches).astype(str))
    return mdata


def _plan_totalvi(data, seed: int, options: dict) -> dict[str, Any]:
    p = _scvi_common("totalvi", options, {"rna": None, "protein": None})
    if p["protein"] is None:
        proteins = [m for m in data.modalities if data.preprocessing.get(m) == "protein"]
        if not proteins:
            raise ParameterError(f"totalvi needs a modality declared 'protein' (with raw counts); this data has "
                                 f"{_kinds(data)}. Use scvi for RNA alone")
        if len(proteins) > 1:
            raise ParameterError(f"totalvi: several modalities are declared 'protein' ({proteins}); pass protein=")
        p["protein"] = proteins[0]
    _check_raw("totalvi", data, p["protein"], "protein")
    p["rna"] = _rna_modality("totalvi", data, p["rna"])
    rows = _totalvi_rows(data, p["rna"], p["protein"])
    if rows.sum() < 2:
        raise ParameterError(f"totalvi: only {int(rows.sum())} rows have both {p['rna']!r} and {p['protein']!r}")
    p.update(seed=int(seed), n_rows=int(rows.sum()), batch_key=data.batch_key, n_latent=p["n_latent"] or 20,
             max_epochs=p["max_epochs"] or _epochs_rule(int(rows.sum())),
             rule="max_epochs = min(round(20000 / n_cells * 400), 400) (scvi-tools default), early stopping on"
             if options.get("max_epochs") is None else "given")
    return p


def _totalvi_rows(data, rna: str, protein: str) -> np.ndarray:
    rows = _measured(data, [rna, protein])
    positions = np.flatnonzero(rows)
    rows[positions[~_nonzero_total(sp.csr_matrix(data.raw[rna]), positions)]] = False
    return rows


def totalvi_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``totalvi``: totalVI (Gayoso, Steier et al., Nat Methods 2021), scvi-tools ``TOTALVI`` with its defaults.

    Input: raw counts of the RNA modality (see the module notes; ``rna=``) and of the modality declared
    ``"protein"`` (``protein=``), as a MuData registered with ``TOTALVI.setup_mudata`` (the API scvi-tools 1.4
    recommends; ``setup_anndata`` with ``protein_expression_obsm_key`` is deprecated there), the batch column as
    ``batch_key``, on the rows where both are measured and the RNA total is positive (NaN elsewhere: totalVI
    treats proteins as missing per batch, not per cell).

    Defaults (scvi-tools 1.4.2 ``TOTALVI`` / ``TOTALVI.train``): ``n_latent=20``, ``gene_likelihood="nb"``,
    empirical protein background prior when > 10 proteins, ``max_epochs`` by ``get_max_epochs_heuristic``,
    ``lr=4e-3``, ``batch_size=256``, early stopping and learning-rate reduction on plateau. Ours:
    ``accelerator="cpu"``, no progress bar, ``scvi.settings.seed = seed``. Options: ``rna``, ``protein``,
    ``n_latent``, ``max_epochs``, ``batch_size``, ``accelerator``, ``model_kwargs``, ``train_kwargs``. Refuses data
    without a ``"protein"`` modality or without RNA raw counts.
    """
    p = _plan_totalvi(data, seed, options)
    import scvi

    rows = _totalvi_rows(data, p["rna"], p["protein"])
    pos = np.flatnonzero(rows)
    mdata = _mudata({"rna": data.raw[p["rna"]][pos], "protein": data.raw[p["protein"]][pos]},
                    {"rna": data.var_names[p["rna"]], "protein": data.var_names[p["protein"]]}, pos,
                    _batch_labels(data, pos))
    with _quiet():
        scvi.settings.seed = int(seed)
        scvi.model.TOTALVI.setup_mudata(mdata, batch_key="_batch",
                                        modalities={"rna_layer": "rna", "protein_layer": "protein"})
        model = scvi.model.TOTALVI(mdata, **{"n_latent": int(p["n_latent"]), **p["model_kwargs"]})
        model.train(**_train_kwargs(p))
        z = model.get_latent_representation()
    return {"totalvi": _scatter(data.n_obs, pos, z)}


def _plan_multivi(data, seed: int, options: dict) -> dict[str, Any]:
    p = _scvi_common("multivi", options, {"rna": None, "atac": None})
    if p["atac"] is None:
        chromatin = [m for m in _with_raw(data, "counts") if m.lower() in CHROMATIN_NAMES]
        if not chromatin:
            raise ParameterError("multivi needs a chromatin accessibility modality: one declared 'counts' with raw "
                                 f"counts and named one of {list(CHROMATIN_NAMES)} (or pass atac=<modality>); this "
                                 f"data has {_kinds(data)}")
        if len(chromatin) > 1:
            raise ParameterError(f"multivi: several chromatin modalities {chromatin}; pass atac=")
        p["atac"] = chromatin[0]
    _check_raw("multivi", data, p["atac"], "counts")
    p["rna"] = _rna_modality("multivi", data, p["rna"], exclude=[p["atac"]])
    if p["rna"] == p["atac"]:
        raise ParameterError(f"multivi: rna and atac are the same modality {p['rna']!r}")
    rows = _multivi_rows(data, p["rna"], p["atac"])
    if rows.sum() < 2:
        raise ParameterError(f"multivi: only {int(rows.sum())} rows have {p['rna']!r} or {p['atac']!r} measured")
    p.update(seed=int(seed), n_rows=int(rows.sum()), n_paired=int(_measured(data, [p["rna"], p["atac"]]).sum()),
             batch_key=data.batch_key, max_epochs=p["max_epochs"] or 500,
             rule="max_epochs = 500 with early stopping (scvi-tools MULTIVI.train default)"
             if options.get("max_epochs") is None else "given")
    # MULTIVAE's own rule, recorded here (the model is built with n_latent only when it was given)
    n_hidden = p["model_kwargs"].get("n_hidden") or int(min(128, int(np.sqrt(data.n_vars(p["atac"])))))
    p["n_hidden"] = n_hidden
    p["n_latent_given"] = p["n_latent"] is not None
    p["n_latent"] = int(p["n_latent"]) if p["n_latent"] is not None else int(np.sqrt(n_hidden))
    return p


def _multivi_rows(data, rna: str, atac: str) -> np.ndarray:
    """Rows with RNA or chromatin (MULTIVI takes unpaired cells: a modality with zero counts is 'not measured')."""
    rows = np.zeros(data.n_obs, bool)
    for m in (rna, atac):
        measured = np.asarray(data.mask[m], bool).copy()
        positions = np.flatnonzero(measured)
        measured[positions[~_nonzero_total(sp.csr_matrix(data.raw[m]), positions)]] = False
        rows |= measured
    return rows


def multivi_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``multivi``: MultiVI (Ashuach, Gabitto et al., Nat Methods 2023), scvi-tools ``MULTIVI`` with its defaults.

    Which modality is chromatin: the one declared ``"counts"`` (with raw counts) whose name is one of
    :data:`CHROMATIN_NAMES` (``atac``, ``chromatin``, ``peaks``, ``accessibility``, any case), or the one given as
    ``atac=``; the RNA modality as in the module notes (``rna=``). Both go in as raw counts in a MuData registered
    with ``MULTIVI.setup_mudata`` (scvi-tools 1.4 supports MULTIVI only through MuData), the batch column as
    ``batch_key``. Rows with either modality are used; where one is not measured its counts are zero, which is how
    MultiVI marks an unpaired cell (it treats a modality with zero total as missing). Rows with neither are NaN.

    Defaults (scvi-tools 1.4.2 ``MULTIVI`` / ``MULTIVI.train``): ``n_latent`` = int(sqrt(n_hidden)),
    ``n_hidden`` = min(128, int(sqrt(number of regions))), ``modality_weights="equal"``,
    ``modality_penalty="Jeffreys"``, ``max_epochs=500``, ``lr=1e-4``, ``batch_size=128``, ``weight_decay=1e-3``,
    early stopping, KL warm-up 50 epochs, adversarial mixing. Ours: ``accelerator="cpu"``, no progress bar,
    ``scvi.settings.seed = seed``. Options: ``rna``, ``atac``, ``n_latent``, ``max_epochs``, ``batch_size``,
    ``accelerator``, ``model_kwargs``, ``train_kwargs``. Refuses data without a chromatin modality.
    """
    p = _plan_multivi(data, seed, options)
    import scvi

    rna, atac = p["rna"], p["atac"]
    rows = _multivi_rows(data, rna, atac)
    pos = np.flatnonzero(rows)
    blocks = {}
    for key, m in (("rna", rna), ("atac", atac)):
        X = sp.csr_matrix(data.raw[m][pos], dtype=np.float32)
        absent = ~np.asarray(data.mask[m], bool)[pos]
        if absent.any():  # unmeasured rows: zero counts, which MultiVI reads as "not measured"
            X.data[absent[np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))]] = 0.0
            X.eliminate_zeros()
        blocks[key] = X
    mdata = _mudata(blocks, {"rna": data.var_names[rna], "atac": data.var_names[atac]}, pos, _batch_labels(data, pos))
    model_kwargs = {**({"n_latent": p["n_latent"]} if p["n_latent_given"] else {}), **p["model_kwargs"]}
    with _quiet():
        scvi.settings.seed = int(seed)
        scvi.model.MULTIVI.setup_mudata(mdata, batch_key="_batch",
                                        modalities={"rna_layer": "rna", "atac_layer": "atac"})
        model = scvi.model.MULTIVI(mdata, **model_kwargs)
        model.train(**_train_kwargs(p))
        z = model.get_latent_representation()
    return {"multivi": _scatter(data.n_obs, pos, z)}


# --------------------------------------------------------------------------------------------------------------
# MOFA+
# --------------------------------------------------------------------------------------------------------------

#: mofapy2 0.7.5 ``entry_point`` defaults: ``set_model_options(factors=10, spikeslab_weights=True,
#: ard_weights=True)``, ``set_train_options(iter=1000, convergence_mode="fast", dropR2=None)``,
#: ``set_data_options(scale_views=False, center_groups=True)``, likelihoods guessed from the data (Gaussian for
#: these inputs). ``ard_factors=None``: True exactly when there are several groups (MOFA2's
#: ``get_default_model_options``; mofapy2 warns that it "should be set to True if using multiple groups").
#: ``groups="batch"``: one MOFA+ group per batch (``None``: a single group).
MOFA_DEFAULTS = {"factors": 10, "iter": 1000, "convergence_mode": "fast", "groups": "batch", "modalities": None,
                 "likelihoods": None, "scale_views": False, "ard_factors": None}


def _plan_mofa(data, seed: int, options: dict) -> dict[str, Any]:
    p = _options("mofa", options, MOFA_DEFAULTS)
    p["modalities"] = _modalities("mofa", data, p["modalities"])
    if p["groups"] not in ("batch", None):
        raise ParameterError(f"mofa: groups must be 'batch' (one group per batch) or None (one group), "
                             f"got {p['groups']!r}")
    for key in ("factors", "iter"):
        if not isinstance(p[key], (int, np.integer)) or p[key] < 1:
            raise ParameterError(f"mofa: {key} must be a whole number >= 1, got {p[key]!r}")
    if p["convergence_mode"] not in ("fast", "medium", "slow"):
        raise ParameterError(f"mofa: convergence_mode must be 'fast', 'medium' or 'slow', "
                             f"got {p['convergence_mode']!r}")
    rows = _measured(data, p["modalities"], how="any")
    names, groups = _batch_groups(data, rows)
    small = [n for n, g in zip(names, groups) if len(g) < 2]
    if rows.sum() < 3 or (p["groups"] == "batch" and small):
        raise ParameterError(f"mofa needs at least 3 measured rows and, with groups='batch', 2 per batch "
                             f"(batches {small} have fewer); pass groups=None for one group")
    n_features = sum(data.n_vars(m) for m in p["modalities"])
    if p["factors"] >= min(int(rows.sum()), n_features):
        raise ParameterError(f"mofa: factors={p['factors']} must be below the number of measured rows "
                             f"({int(rows.sum())}) and of features ({n_features})")
    group_names = names if p["groups"] == "batch" else ["all"]
    if p["ard_factors"] is None:  # MOFA2's default: ARD prior on the factors exactly when there are several groups
        p["ard_factors"] = len(group_names) > 1
    p.update(seed=int(seed), n_rows=int(rows.sum()), group_names=group_names,
             input="model inputs (data.X) per modality; rows where a modality was not measured are missing "
                   "values (NaN) of that view")
    return p


def mofa_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``mofa``: MOFA+ (Argelaguet et al., Genome Biol 2020) through mofapy2's ``entry_point``.

    Each modality is one view (its model input ``data.X``, dense), each batch one group (``groups="batch"``; the
    multi-group model centres every group, removing batch-level offsets; ``groups=None`` for one group); a row
    where a modality was not measured is given as missing values (NaN) in that view, which MOFA+ handles in its
    likelihood. Rows with no modality at all are NaN. Returns the factors (posterior means of Z), put back in the
    data's row order.

    Defaults (mofapy2 0.7.5 ``entry_point`` signatures; the same as muon's ``mu.tl.mofa``): ``factors=10`` (the R
    package MOFA2 defaults to 15; mofapy2's Python entry point to 10), ``iter=1000``, ``convergence_mode="fast"``,
    ``scale_views=False``, ``center_groups=True``, spike-and-slab + ARD priors on the weights, an ARD prior on the
    factors when there are several groups (MOFA2's default; mofapy2 warns without it), no factor dropping,
    likelihoods guessed (``likelihoods=None``; Gaussian for log / z-scored inputs). ``seed`` goes to
    ``set_train_options``. Options: ``factors``, ``iter``, ``convergence_mode``, ``groups``, ``modalities``,
    ``likelihoods``, ``scale_views``, ``ard_factors``. MOFA+ runs on a single modality too (a factor analysis).
    """
    p = _plan_mofa(data, seed, options)
    from mofapy2.run.entry_point import entry_point

    rows = _measured(data, p["modalities"], how="any")
    if p["groups"] == "batch":
        names, groups = _batch_groups(data, rows)
    else:
        names, groups = ["all"], [np.flatnonzero(rows)]
    views = []
    for m in p["modalities"]:
        X = data.dense(m).astype(np.float64)
        X[~np.asarray(data.mask[m], bool)] = np.nan
        views.append([X[g] for g in groups])
    with _quiet():
        ent = entry_point()
        ent.set_data_options(scale_views=bool(p["scale_views"]))
        ent.set_data_matrix(views, likelihoods=p["likelihoods"], views_names=list(p["modalities"]),
                            groups_names=list(names), samples_names=[[f"r{i}" for i in g] for g in groups],
                            features_names=[[f"{m}:{v}" for v in data.var_names[m]] for m in p["modalities"]])
        ent.set_model_options(factors=int(p["factors"]), ard_factors=bool(p["ard_factors"]))
        ent.set_train_options(iter=int(p["iter"]), convergence_mode=p["convergence_mode"], seed=int(seed),
                              quiet=True)
        ent.build()
        ent.run()
        Z = ent.model.nodes["Z"].getExpectation()
    return {"mofa": _scatter(data.n_obs, np.concatenate(groups), Z)}


# --------------------------------------------------------------------------------------------------------------
# MIMA on one modality at a time
# --------------------------------------------------------------------------------------------------------------

MIMA_UNIMODAL_DEFAULTS = {"train": None, "modalities": None, "params": None}


def _plan_mima_unimodal(data, seed: int, options: dict) -> dict[str, Any]:
    from spatialmix.conventions import DEMO_TRAIN

    from .mima import DEFAULTS

    p = _options("mima_unimodal", options, MIMA_UNIMODAL_DEFAULTS)
    p["modalities"] = _modalities("mima_unimodal", data, p["modalities"])
    for key in ("train", "params"):
        if p[key] is not None and not isinstance(p[key], dict):
            raise ParameterError(f"mima_unimodal: {key} must be a dict, got {type(p[key]).__name__}")
    params = dict(p["params"] or {})
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ParameterError(f"mima_unimodal: unknown MIMA parameter(s) {unknown} in params=; allowed: "
                             f"{sorted(DEFAULTS)}")
    empty = [m for m in p["modalities"] if not np.asarray(data.mask[m], bool).any()]
    if empty:
        raise ParameterError(f"mima_unimodal: modalities {empty} are measured in no row")
    p["params"] = params
    p["train"] = {**DEMO_TRAIN, "seed": int(seed), **(p["train"] or {})}
    p["seed"] = int(seed)
    return p


def mima_unimodal_embedding(data, *, seed: int = 0, **options) -> dict[str, np.ndarray]:
    """``mima_unimodal_<m>``: MIMA's architecture trained on modality ``m`` alone, for each modality (the MIMA
    paper's unimodal baseline): ``MIMA(data, modalities=[m], **params)`` trained with
    ``{**spatialmix.integrate.DEMO_TRAIN, "seed": seed, **train}`` (the benchmark's MIMA training: 200 epochs,
    lr 1e-3), its PoE embedding (= that modality's shared latent), NaN where ``m`` was not measured.

    Options: ``train`` (training options merged over the demo's), ``params`` (MIMA constructor parameters; default
    the paper's, :data:`spatialmix.models.mima.DEFAULTS`), ``modalities`` (default all). Every model is built
    before the first is trained, so a bad parameter is refused at once.
    """
    p = _plan_mima_unimodal(data, seed, options)
    from .mima import MIMA

    models = {m: MIMA(data, modalities=[m], **p["params"]) for m in p["modalities"]}
    out = {}
    for m, model in models.items():
        model.train(**p["train"])
        z = model.get_latent_representation()
        z[~np.asarray(data.mask[m], bool)] = np.nan
        out[f"mima_unimodal_{m}"] = z.astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------------------------

_SCVI_PACKAGES = ("scvi-tools", "lightning", "anndata")

#: every peer by the name ``spatialmix benchmark --models`` would use
PEERS: dict[str, Peer] = {
    "scanorama": Peer("scanorama", scanorama_embedding, _plan_scanorama, ("scanorama", "annoy", "fbpca"),
                      "two or more batches with rows where every modality was measured",
                      "Hie, Bryson & Berger, Nat Biotechnol 2019; scanorama 1.7.4 integrate() defaults"),
    "scvi": Peer("scvi", scvi_embedding, _plan_scvi, _SCVI_PACKAGES,
                 "a modality declared 'counts' with raw counts",
                 "Lopez et al., Nat Methods 2018; scvi-tools SCVI / SCVI.train defaults"),
    "totalvi": Peer("totalvi", totalvi_embedding, _plan_totalvi, (*_SCVI_PACKAGES, "mudata"),
                    "RNA declared 'counts' and a modality declared 'protein', both with raw counts",
                    "Gayoso, Steier et al., Nat Methods 2021; scvi-tools TOTALVI / TOTALVI.train defaults"),
    "multivi": Peer("multivi", multivi_embedding, _plan_multivi, (*_SCVI_PACKAGES, "mudata"),
                    "RNA and chromatin (named one of " + "/".join(CHROMATIN_NAMES) + ") declared 'counts' with raw "
                    "counts",
                    "Ashuach, Gabitto et al., Nat Methods 2023; scvi-tools MULTIVI / MULTIVI.train defaults"),
    "mofa": Peer("mofa", mofa_embedding, _plan_mofa, ("mofapy2",), "any modalities (model inputs)",
                 "Argelaguet et al., Genome Biol 2020; mofapy2 entry_point defaults"),
    "mima_unimodal": Peer("mima_unimodal", mima_unimodal_embedding, _plan_mima_unimodal, (),
                          "any modality (model inputs)",
                          "MIMA (bioRxiv 2025.10.21.683449) unimodal baseline; spatialmix MIMA defaults, demo "
                          "training"),
}

__all__ = ["CHROMATIN_NAMES", "PEERS", "Peer", "mima_unimodal_embedding", "mofa_embedding", "multivi_embedding",
           "peer_info", "scanorama_embedding", "scvi_embedding", "totalvi_embedding"]
