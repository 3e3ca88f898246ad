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

A package by library (issue 18; it was one 830-line module): ``_common`` (the helpers every wrapper shares and
:class:`Peer`), ``_scanorama``, ``_scvi`` (scVI, totalVI, MultiVI), ``_mofa``, ``_mima_unimodal``; this module
holds the registry. Every name is importable from ``spatialmix.models.peers`` as before.
"""

from __future__ import annotations

from typing import Any

from spatialmix.errors import ParameterError

from ._common import (CHROMATIN_NAMES, Peer, _batch_groups, _batch_labels, _measured, _modalities,  # noqa: F401
                      _options, _scatter)
from ._mima_unimodal import MIMA_UNIMODAL_DEFAULTS, mima_unimodal_embedding, _plan_mima_unimodal  # noqa: F401
from ._mofa import MOFA_DEFAULTS, mofa_embedding, _plan_mofa  # noqa: F401
from ._scanorama import SCANORAMA_DEFAULTS, scanorama_embedding, _plan_scanorama  # noqa: F401
from ._scvi import (SCVI_TOOLS_OPTIONS, multivi_embedding, scvi_embedding, totalvi_embedding,  # noqa: F401
                    _plan_multivi, _plan_scvi, _plan_totalvi)


def peer_info(name: str, data, *, seed: int = 0, **options) -> dict[str, Any]:
    """``PEERS[name].info(data, seed=seed, **options)``; an unknown name is refused with the list."""
    if name not in PEERS:
        raise ParameterError(f"unknown peer {name!r}; choose from {sorted(PEERS)}")
    return PEERS[name].info(data, seed=seed, **options)


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
